"""``nextword combine``: several left-to-right models as one, mixed per token with EM weights.

    nextword ngram --train ptb.train.txt --vocab-from runs/ptb --out runs/kn5
    nextword combine --model runs/ptb --model runs/kn5 --valid ptb.valid.txt --out runs/mix

The weights maximise the likelihood of the validation text, read the way the service reads it
(each sentence alone; ``--fit-on stream`` for the running-text convention). Without ``--valid``
they are fitted on the held-out part the first model's training recorded. The output directory
is a checkpoint (``nextword serve``, ``eval`` and ``info`` load it) holding a verified copy of
every component under ``components/``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import model
from model.inference.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.inference.evaluation import evaluate_file, finite_perplexity
from model.inference.interpolated_lm import InterpolatedLM, fit_weights
from model.inference.language_model import LanguageModel
from model.inference.spelling import SpellingModel
from model.network.layers import NonFiniteError
from model.text.corpus import SPLITS, CorpusError, load_sentences
from model.training.snapshot import TrainingError
from model.training.trainer import check_output_dir

FIT_ON = ("isolated", "stream")


def add_combine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        required=True,
        metavar="DIR",
        help="a left-to-right checkpoint (RNN or n-gram); give two or more",
    )
    parser.add_argument("--out", required=True, help="output directory (a checkpoint)")
    parser.add_argument(
        "--valid", help="text to fit the weights on (default: the first model's held-out text)"
    )
    parser.add_argument("--test", help="a corpus to report the perplexities of")
    parser.add_argument("--split", choices=SPLITS, help="(default: the first model's)")
    parser.add_argument(
        "--fit-on",
        choices=FIT_ON,
        default="isolated",
        help="isolated: each sentence from a fresh state, as /v1/score reads text; stream: the "
        "text read on, as published perplexities are (isolated)",
    )
    parser.add_argument(
        "--weights",
        type=float,
        nargs="+",
        metavar="W",
        help="fixed weights, one per --model, instead of fitting (normalised to sum to 1)",
    )
    parser.add_argument("--force", action="store_true", help="replace a model already in --out")


def run_combine(args: argparse.Namespace) -> int:
    """Exit codes: 0 done, 2 bad input or an output that cannot be written."""
    try:
        build(args)
    except (ValueError, CorpusError, CheckpointError, TrainingError, NonFiniteError,
            OSError) as e:  # fmt: skip
        sys.stderr.write(f"nextword combine: error: {e}\n")
        return 2
    sys.stderr.write(f"model: {args.out}\n")
    return 0


def build(args: argparse.Namespace) -> InterpolatedLM:
    out = Path(args.out)
    dirs = [Path(d) for d in args.models]
    if len(dirs) < 2:
        raise ValueError("give two models or more (--model DIR --model DIR)")
    if any(d.resolve() == out.resolve() or out.resolve() in d.resolve().parents for d in dirs):
        raise ValueError(f"--out {out} is, or holds, one of the --model directories")
    check_output_dir(out, resume=False, force=args.force)
    components = [load_checkpoint(d) for d in dirs]
    names = unique_names(dirs)
    try:
        lm = InterpolatedLM(components, [1.0] * len(dirs), names, sources=dirs)
    except ValueError as e:
        raise ValueError(f"{e} ({', '.join(map(str, dirs))})") from None
    split = args.split or str(components[0].metadata.get("training", {}).get("split", "lines"))
    metadata: dict[str, Any] = {
        "training": {"method": "linear interpolation", "components": names, "split": split},
        "corpus": components[0].metadata.get("corpus"),  # the first model's, as /v1/models shows
    }
    if args.weights is not None:
        lm = lm.with_weights(args.weights)
        metadata["fit"] = {"weights": "given with --weights"}
        log(f"weights {format_weights(names, lm.weights)} (given)")
    else:
        where, sentences = validation_text(args.valid, components[0], split)
        for i, (name, c) in enumerate(zip(names, components, strict=True)):
            if (args.valid or i > 0) and trained_on(c, where):  # model 1 held this part out
                log(
                    f"warning: {name} was trained on the text the weights are fitted on; its "
                    "weight will come out too high (give --valid a text no model has seen)"
                )
        stream = args.fit_on == "stream"
        started = time.perf_counter()
        per_component = [c.text_log_probs(sentences, stream) for c in components]
        weights, history = fit_weights(per_component)
        lm = lm.with_weights(weights)
        tokens = len(per_component[0])
        alone = [finite_perplexity(-math.fsum(lp) / tokens) for lp in per_component]
        mixed = finite_perplexity(history[-1])
        log(f"fitted on {where} ({args.fit_on}, {tokens:,} tokens) in "
            f"{time.perf_counter() - started:.1f} s, {len(history)} EM iterations: weights "
            f"{format_weights(names, lm.weights)}")  # fmt: skip
        for name, ppl in zip(names, alone, strict=True):
            log(f"  {name}: perplexity {ppl:.2f}")
        log(f"  combined: perplexity {mixed:.2f}")
        metadata["fit"] = {"on": args.fit_on, "text": where, "tokens": tokens,
                           "iterations": len(history), "component_perplexities": alone,
                           "perplexity": mixed}  # fmt: skip
        metadata["valid_perplexity"] = mixed
    metadata |= {"task": lm.task, "nextword_version": model.__version__,
                 "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    # the open vocabulary: the components share one vocabulary, so the first spelling model
    # among them serves the mixture (its P(<unk> | h) shared out by spelling); none has one:
    # one from the vocabulary's words
    spelling = next((c.spelling for c in components if c.spelling is not None), None)
    lm.use_spelling(spelling or SpellingModel.train(lm.vocab.tokens, source="vocabulary"))
    if args.test:
        result = evaluate_file(lm, args.test, split)
        metadata |= {f"test_{k}": v for k, v in result.items()}
        log(f"test: perplexity {result['perplexity']:.2f} (each sentence alone: "
            f"{result['isolated_perplexity']:.2f}), {result['tokens']:,} tokens")  # fmt: skip
    save_checkpoint(out, lm, metadata)
    return lm


def validation_text(
    path: str | None, first: LanguageModel, split: str
) -> tuple[str, list[list[str]]]:
    """The text the weights are fitted on: ``path``, or the held-out part of the first model's
    training (its --valid file, or the end of its corpus cut as training cut it)."""
    if path:
        return path, load_sentences(path, first.tokenizer, split)
    training = first.metadata.get("training", {})
    if isinstance(training, dict) and isinstance(training.get("valid"), str):
        return training["valid"], load_sentences(training["valid"], first.tokenizer, split)
    train, fraction = training.get("train"), training.get("valid_fraction")
    if not (isinstance(train, str) and isinstance(fraction, float) and Path(train).is_file()):
        raise ValueError("the first model records no held-out text that can be read: give --valid")
    sentences = load_sentences(train, first.tokenizer, split)
    cut = round(len(sentences) * (1 - fraction))
    return f"the last {len(sentences) - cut:,} sentences of {train}", sentences[cut:]


def trained_on(lm: LanguageModel, text: str) -> bool:
    """Whether ``lm``'s recorded training corpus is ``text`` (a path, or "the last … of PATH")."""
    corpus = lm.metadata.get("corpus")
    train = corpus.get("train") if isinstance(corpus, dict) else None
    if not isinstance(train, str):
        return False
    named = text.rsplit(" of ", 1)[-1]
    try:
        return Path(named).resolve() == Path(train).resolve()
    except OSError:
        return False


def unique_names(dirs: list[Path]) -> list[str]:
    """Each model's directory name, numbered where two are alike."""
    names = [d.resolve().name or str(d) for d in dirs]
    return [n if names.count(n) == 1 else f"{n}-{i + 1}" for i, n in enumerate(names)]


def format_weights(names: list[str], weights: np.ndarray) -> str:
    return ", ".join(f"{n} {w:.4f}" for n, w in zip(names, weights, strict=True))


def log(message: str) -> None:
    sys.stderr.write(message + "\n")
