"""The ``nextword`` command line.

nextword train --train FILE --out DIR [options]     train a model (see nextword train --help)
nextword ngram --train FILE --order N --out DIR     a Kneser-Ney n-gram model (or --import ARPA)
nextword combine --model DIR --model DIR --out DIR  several models mixed per token (EM weights)
nextword spell --model DIR                          an open vocabulary for an existing checkpoint
nextword tune --model DIR --text FILE --out DIR     a neural cache over the history, fitted
nextword eval --model DIR --data FILE               perplexity of a model on a file, as JSON
nextword info DIR                                   what a checkpoint holds, as JSON
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import model
from model.inference.checkpoint import CheckpointError, load_checkpoint
from model.inference.evaluation import evaluate_file
from model.network.layers import NonFiniteError
from model.text.corpus import SPLITS, CorpusError
from model.training.combine import add_combine_arguments, run_combine
from model.training.command import add_train_arguments, run_train
from model.training.ngram import add_ngram_arguments, run_ngram
from model.training.spell import add_spell_arguments, run_spell
from model.training.tune import add_tune_arguments, run_tune


def info(args: argparse.Namespace) -> int:
    """Print what a checkpoint holds; exit code 2 with a message when it cannot be loaded."""
    try:
        lm = load_checkpoint(args.model_dir)
    except CheckpointError as e:
        sys.stderr.write(f"nextword info: {e}\n")
        return 2
    summary = {
        "model": lm.architecture(),
        "task": lm.task,
        "tokenizer": lm.tokenizer.to_dict(),
        "vocab_size": len(lm.vocab),
        "parameters": lm.num_parameters(),
        "checksum": lm.checksum,
        "open_vocabulary": None if lm.spelling is None else lm.spelling.describe(),
        "cache": None if (cache := lm.neural_cache()) is None else cache.to_dict(),
        "metadata": lm.metadata,
    }
    sys.stdout.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Print {"tokens", "cross_entropy", "perplexity", "oov_rate"} for a model on a file.

    Exit codes: 0 done, 1 no perplexity (the model's output is not finite on this text, or its
    perplexity overflows a float: JSON has no Infinity), 2 bad input.
    """
    try:
        lm = load_checkpoint(args.model)
        split = args.split or lm.metadata.get("training", {}).get("split", "lines")
        result = evaluate_file(lm, args.data, split, batch_size=args.batch_size)
    except (CheckpointError, CorpusError) as e:
        sys.stderr.write(f"nextword eval: {e}\n")
        return 2
    except NonFiniteError as e:
        sys.stderr.write(f"nextword eval: {args.model} on {args.data}: {e}; no perplexity\n")
        return 1
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nextword", description="Recurrent neural-network language model"
    )
    parser.add_argument("--version", action="version", version=f"nextword {model.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser("train", help="train a model on a text corpus")
    add_train_arguments(train_parser)
    train_parser.set_defaults(run=run_train)

    ngram_parser = commands.add_parser(
        "ngram", help="a Kneser-Ney n-gram model from a corpus, or imported from an ARPA file"
    )
    add_ngram_arguments(ngram_parser)
    ngram_parser.set_defaults(run=run_ngram)

    combine_parser = commands.add_parser(
        "combine", help="mix left-to-right models per token, weights fitted on held-out text"
    )
    add_combine_arguments(combine_parser)
    combine_parser.set_defaults(run=run_combine)

    spell_parser = commands.add_parser(
        "spell", help="give a checkpoint an open vocabulary: words outside it scored by spelling"
    )
    add_spell_arguments(spell_parser)
    spell_parser.set_defaults(run=run_spell)

    tune_parser = commands.add_parser(
        "tune", help="fit a neural cache over the history on held-out running text"
    )
    add_tune_arguments(tune_parser)
    tune_parser.set_defaults(run=run_tune)

    eval_parser = commands.add_parser("eval", help="perplexity of a model on a text file")
    eval_parser.add_argument("--model", required=True, help="checkpoint directory")
    eval_parser.add_argument("--data", required=True, help="UTF-8 text file")
    eval_parser.add_argument(
        "--split", choices=SPLITS, help="default: the split the model was trained with"
    )
    eval_parser.add_argument(
        "--batch-size", type=int, default=1, help="1 reads the file as one sequence (1)"
    )
    eval_parser.set_defaults(run=run_eval)

    info_parser = commands.add_parser("info", help="describe a checkpoint directory")
    info_parser.add_argument("model_dir", help="checkpoint directory (holds config.json)")
    info_parser.set_defaults(run=info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
