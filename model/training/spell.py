"""``nextword spell``: give a checkpoint an open vocabulary without retraining it.

    nextword spell --model runs/ptb                      # from the vocabulary's words
    nextword spell --model runs/ptb --text train.txt     # and the words of a text
    nextword spell --model runs/ptb --none               # take it away again

``nextword train`` and ``nextword ngram`` build one by default (from every word type of their
training text); this adds one to a checkpoint made before, or rebuilds it: the character model
of ``model.inference.spelling``, from the vocabulary's words (a checkpoint keeps no text) plus,
with ``--text``, every word of a text read with the model's own tokenizer. The checkpoint is
given the spelling model's file and a new config.json (atomically); its weights, metadata and
checksum stay as they were.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model.inference.checkpoint import CheckpointError, load_checkpoint, save_spelling
from model.inference.spelling import DEFAULT_ORDER, SpellingError, SpellingModel
from model.text.corpus import SPLITS, CorpusError, load_sentences


def add_spell_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="checkpoint directory")
    parser.add_argument(
        "--text", type=Path, help="a UTF-8 text whose words are learnt too (e.g. the training text)"
    )
    parser.add_argument("--split", choices=SPLITS, help="how --text is cut (default: the model's)")
    parser.add_argument(
        "--order", type=int, default=DEFAULT_ORDER,
        help=f"the character n-gram's order, 1 to 10 ({DEFAULT_ORDER})",
    )  # fmt: skip
    parser.add_argument("--none", action="store_true", help="remove the spelling model")


def run_spell(args: argparse.Namespace) -> int:
    """Exit codes: 0 written, 2 bad input (nothing written)."""
    try:
        if not 1 <= args.order <= 10:
            raise SpellingError(f"--order must be 1 to 10, got {args.order}")
        lm = load_checkpoint(args.model)
        if args.none:
            save_spelling(args.model, None)
            what = "removed the spelling model"
        else:
            words: list[str] = []
            source = "vocabulary"
            if args.text is not None:
                split = args.split or lm.metadata.get("training", {}).get("split", "lines")
                words = [w for s in load_sentences(args.text, lm.tokenizer, split) for w in s]
                source = f"vocabulary and {args.text.name}"
            spelling = SpellingModel.train([*lm.vocab.tokens, *words], args.order, source)
            lm.use_spelling(spelling)  # refused here, before writing, if it cannot fit
            save_spelling(args.model, spelling)
            what = (f"a spelling model: order {spelling.order}, "
                    f"{spelling.trained_on['types']:,} word types ({source})")  # fmt: skip
    except (CheckpointError, CorpusError, SpellingError, OSError) as e:
        sys.stderr.write(f"nextword spell: {e}\n")
        return 2
    sys.stdout.write(f"{args.model}: {what}\n")
    return 0
