"""``nextword tune``: fit a model's serving settings to the user's own data, written into a
copy of the model. ``--text``: a neural cache over the history, on held-out running text;
``--nbest``: ``/v1/rerank``'s weights, on N-best lists with references
(``model.training.nbest``).

    nextword tune --model runs/ptb --text ptb.valid.txt --out runs/ptb-cache
    nextword tune --model runs/mix --text ptb.valid.txt --out runs/mix-cache   # RNN + KN5
    nextword tune --model runs/ptb-cache --nbest dev.jsonl --out runs/ptb-tuned

The text is read as one stream, as the service reads a sentence after its ``history``; at
every position the cache (``model.inference.neural_cache``) is scored for each θ and size of a
grid, and its weight is fitted by EM with the model (for an interpolation, with every
component's weight too: the cache is mixed into the recurrent component, so the result is the
general mixture Σ_i λ_i P_i + λ_cache P_cache). The (θ, size) with the lowest perplexity wins;
the output is a copy of the model with a ``cache`` section (and, for an interpolation, the new
weights), which the service mixes into every score. Requests can still override it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from model.inference.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.inference.evaluation import finite_perplexity
from model.inference.gap_filling_lm import GapFillingLM
from model.inference.history import MAX_HISTORY_TOKENS
from model.inference.interpolated_lm import InterpolatedLM, fit_weights
from model.inference.language_model import LanguageModel
from model.inference.neural_cache import MAX_SIZE, MAX_THETA, CacheSettings, cache_probs_grid
from model.inference.ngram_lm import NgramLM
from model.inference.recurrent_lm import RecurrentLM
from model.inference.rerank_weights import RerankWeights
from model.network.layers import NonFiniteError
from model.text.corpus import SPLITS, CorpusError, load_sentences
from model.training.nbest import read_nbest, tune_nbest
from model.training.snapshot import TrainingError
from model.training.trainer import check_output_dir

THETAS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5)
SIZES = (100, 200, 500, 1000, 2000)
MAX_WEIGHT = 0.999  # a cache's share: the network keeps some, so no word gets 0
MAX_FIT_TOKENS = 200_000  # held-out positions read (their outputs are kept: n × H floats)


@dataclass
class CacheFit:
    """The fitted cache, the interpolation weights fitted with it, and how it did."""

    settings: CacheSettings
    weights: np.ndarray | None  # an interpolation's component weights, else None
    tokens: int
    perplexity_without: float
    perplexity: float
    grid: dict[tuple[float, int], float]  # (θ, size) → perplexity with the best weight


def add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="checkpoint directory")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument(
        "--text", type=Path,
        help="held-out running text a cache over the history is fitted on (no model saw it)",
    )  # fmt: skip
    data.add_argument(
        "--nbest", type=Path,
        help="N-best lists with references (JSON lines: reference, hypotheses [{text, score}], "
        "optional bias): /v1/rerank's lm_weight and length_bonus are fitted on them",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="the tuned copy (a checkpoint)")
    parser.add_argument("--split", choices=SPLITS, help="how --text is cut (default: the model's)")
    parser.add_argument("--test", type=Path, help="a text to report the perplexities of")
    parser.add_argument("--thetas", type=float, nargs="+", default=list(THETAS), metavar="θ")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), metavar="N")
    parser.add_argument(
        "--max-tokens", type=int, default=MAX_FIT_TOKENS,
        help=f"read at most this many tokens of --text ({MAX_FIT_TOKENS:,})",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="replace a model already in --out")


def run_tune(args: argparse.Namespace) -> int:
    """Exit codes: 0 written, 2 bad input or an output that cannot be written."""
    try:
        if args.nbest is not None:
            tune_rerank(args)
        else:
            tune_cache(args)
    except (ValueError, CorpusError, CheckpointError, TrainingError, NonFiniteError,
            OSError) as e:  # fmt: skip
        sys.stderr.write(f"nextword tune: error: {e}\n")
        return 2
    sys.stderr.write(f"model: {args.out}\n")
    return 0


def tune_cache(args: argparse.Namespace) -> LanguageModel:
    check_grid(args.thetas, args.sizes)
    if args.max_tokens < 2:
        raise ValueError(f"--max-tokens must be at least 2, got {args.max_tokens}")
    if args.out.resolve() == args.model.resolve():
        raise ValueError("--out must be a new directory: the tuned model is a copy of --model")
    check_output_dir(args.out, resume=False, force=args.force)
    lm = load_checkpoint(args.model)
    split = args.split or str(lm.metadata.get("training", {}).get("split", "lines"))
    sentences = first_tokens(load_sentences(args.text, lm.tokenizer, split), args.max_tokens)
    started = time.perf_counter()
    fit = fit_cache(lm, sentences, args.thetas, args.sizes)
    tuned = lm if fit.weights is None else lm.with_weights(fit.weights)
    tuned.use_neural_cache(fit.settings)
    log(f"fitted on {args.text} ({fit.tokens:,} tokens, running text) in "
        f"{time.perf_counter() - started:.1f} s: theta {fit.settings.theta:g}, weight "
        f"{fit.settings.weight:.4f}, size {fit.settings.size}")  # fmt: skip
    if fit.weights is not None:
        assert isinstance(tuned, InterpolatedLM)
        log("  component weights: " + ", ".join(
            f"{n} {w:.4f}" for n, w in zip(tuned.names, tuned.weights, strict=True)))  # fmt: skip
    log(f"  perplexity {fit.perplexity_without:.2f} without the cache, {fit.perplexity:.2f} with")
    metadata: dict[str, Any] = dict(lm.metadata)
    metadata["cache_fit"] = {
        "text": str(args.text), "tokens": fit.tokens, "split": split,
        "perplexity_without": fit.perplexity_without, "perplexity": fit.perplexity,
        "thetas": list(args.thetas), "sizes": list(args.sizes),
    }  # fmt: skip
    if args.test:
        test = load_sentences(args.test, lm.tokenizer, split)
        for label, model in (("without the cache", lm.with_cache(None)), ("with", tuned)):
            evaluation = model.evaluate(test)
            ppl = finite_perplexity(evaluation.cross_entropy)
            log(f"test ({args.test}): perplexity {ppl:.2f} {label}")
            key = "test_perplexity" if model is tuned else "test_perplexity_without"
            metadata["cache_fit"][key] = ppl
    assert isinstance(tuned, RecurrentLM | InterpolatedLM)  # what fit_cache accepts
    save_checkpoint(args.out, tuned, metadata)
    load_checkpoint(args.out)  # what was written loads
    return tuned


def tune_rerank(args: argparse.Namespace) -> LanguageModel:
    """The rerank weights fitted on ``--nbest``, written into a copy of the model."""
    if args.out.resolve() == args.model.resolve():
        raise ValueError("--out must be a new directory: the tuned model is a copy of --model")
    check_output_dir(args.out, resume=False, force=args.force)
    lm = load_checkpoint(args.model)
    lists = read_nbest(args.nbest)
    report = tune_nbest(lm, lists, log)
    lm.rerank = RerankWeights(report["lm_weight"], report["length_bonus"])
    metadata: dict[str, Any] = dict(lm.metadata) | {"rerank_fit": {"nbest": str(args.nbest)}
                                                     | report}  # fmt: skip
    assert isinstance(lm, RecurrentLM | InterpolatedLM | NgramLM | GapFillingLM)
    save_checkpoint(args.out, lm, metadata)
    load_checkpoint(args.out)  # what was written loads
    return lm


def check_grid(thetas: list[float], sizes: list[int]) -> None:
    for theta in thetas:
        if not (math.isfinite(theta) and 0 <= theta <= MAX_THETA):
            raise ValueError(f"--thetas: each must be in [0, {MAX_THETA:g}], got {theta}")
    for size in sizes:
        if not 1 <= size <= MAX_SIZE:
            raise ValueError(f"--sizes: each must be in [1, {MAX_SIZE}], got {size}")
    if max(sizes) > MAX_HISTORY_TOKENS:
        log(f"note: sizes above {MAX_HISTORY_TOKENS} reach further back than the service's "
            "default history bound (NEXTWORD_MAX_HISTORY_TOKENS)")  # fmt: skip


def first_tokens(sentences: list[list[str]], limit: int) -> list[list[str]]:
    """The first sentences of the text holding at most ``limit`` tokens (``</s>`` counted)."""
    out: list[list[str]] = []
    count = 0
    for sentence in sentences:
        count += len(sentence) + 1
        if count > limit and out:
            break
        out.append(sentence)
    return out


def recurrent_part(lm: LanguageModel) -> tuple[RecurrentLM, int | None]:
    """The network whose outputs key the cache, and its index in an interpolation (None for a
    single model); ValueError unless there is exactly one."""
    if isinstance(lm, RecurrentLM):
        return lm, None
    if isinstance(lm, InterpolatedLM):
        found = [(c, i) for i, c in enumerate(lm.components) if isinstance(c, RecurrentLM)]
        if len(found) == 1:
            return found[0]
        raise ValueError(
            f"the interpolation has {len(found)} recurrent components; a cache is fitted to "
            "exactly one"
        )
    raise ValueError(
        f"a cache needs a left-to-right network's outputs; this model "
        f"({lm.architecture().get('kind', 'bidirectional network')}) has none"
    )


def fit_cache(
    lm: LanguageModel, sentences: list[list[str]], thetas: list[float], sizes: list[int]
) -> CacheFit:
    """The (θ, size) of the grid and the weights (EM) that give ``sentences``, read as one
    stream, the lowest perplexity."""
    rnn, index = recurrent_part(lm)
    outputs = rnn.stream_outputs(sentences)
    n = len(outputs.targets)
    if n < 2:
        raise ValueError("the text is too short to fit a cache on: give at least two tokens")
    models = [outputs.log_probs]  # per component: log P of every counted target
    if isinstance(lm, InterpolatedLM) and index is not None:
        models = [
            outputs.log_probs if i == index else c.text_log_probs(sentences, stream=True)
            for i, c in enumerate(lm.components)
        ]
        if {len(m) for m in models} != {n}:
            raise ValueError("the components scored different numbers of tokens")
    fixed = lm.weights if isinstance(lm, InterpolatedLM) else np.ones(1)
    with np.errstate(divide="ignore"):
        without = -float(np.log(np.exp(np.asarray(models)).T @ fixed).mean())
    log(f"scoring the cache at {n:,} positions for {len(thetas)} θ × {len(sizes)} sizes")
    with tqdm(total=n, unit="tok", file=sys.stderr, disable=None) as bar:
        grid_probs = cache_probs_grid(outputs.hidden, outputs.targets, thetas, sizes, bar.update)
    r = 0 if index is None else index
    best: tuple[float, tuple[float, int], np.ndarray] | None = None
    grid: dict[tuple[float, int], float] = {}
    for key, p_cache in grid_probs.items():
        with np.errstate(divide="ignore"):
            cache = np.log(p_cache)
        cache[0] = models[r][0]  # nothing remembered: the cache's weight goes to the network
        weights, history = fit_weights([*models, cache])
        grid[key] = history[-1]
        if best is None or history[-1] < best[0]:
            best = (history[-1], key, weights)
    assert best is not None
    cross_entropy, (theta, size), weights = best
    share = weights[r] + weights[-1]  # the network's weight, its cache included
    settings = CacheSettings(theta, min(float(weights[-1] / share), MAX_WEIGHT), size)
    if settings.weight == MAX_WEIGHT:  # the bound moved the optimum: say what it gives
        weights[r], weights[-1] = share * (1 - MAX_WEIGHT), share * MAX_WEIGHT
        with np.errstate(divide="ignore"):
            cache = np.log(grid_probs[(theta, size)])
        cache[0] = models[r][0]
        stacked = np.exp(np.asarray([*models, cache]))
        cross_entropy = -float(np.log(weights @ stacked).mean())
    component_weights = None
    if isinstance(lm, InterpolatedLM):
        component_weights = weights[:-1].copy()
        component_weights[r] = share
    return CacheFit(
        settings, component_weights, n, finite_perplexity(without),
        finite_perplexity(cross_entropy), {k: finite_perplexity(v) for k, v in grid.items()},
    )  # fmt: skip


def log(message: str) -> None:
    sys.stderr.write(message + "\n")
