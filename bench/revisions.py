"""Speed of this checkout beside another revision, on the same work, in alternating rounds.

    git worktree add /tmp/nextword-base 2f3b30b
    python bench/revisions.py --baseline /tmp/nextword-base --rounds 5

A refactor must not move the numbers: this times the hot paths of both trees on identical
inputs, each round in a fresh process per tree (order alternating between rounds, one BLAS
thread), and reports the median of the per-round ratios (this tree's time / the baseline's).

Workloads, on a 2×200 LSTM with the Penn Treebank vocabulary (random weights: the arithmetic is
the same as a trained model's), contexts and hypotheses drawn from ``ptb.train.txt``:

- candidates: a 20-word context and 5 candidates (one of two tokens), one request at a time;
- N-best: ``score_sentences`` with 10 hypotheses per call;
- training: ``train_step`` on a 20 × 35 window (SGD, clip 0.25).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRAIN = ROOT.parent / "shared" / "data" / "ptb" / "ptb.train.txt"
WORKLOADS = ("candidates_ms", "nbest_ms", "train_step_ms")


def build_model(corpus: Path, out: Path) -> None:
    """A random 2×200 LSTM over the corpus's vocabulary, saved with this tree's code."""
    from model import RNNLM, ModelConfig, RecurrentLM, Tokenizer, Vocabulary, save_checkpoint

    lines = corpus.read_text(encoding="utf-8").splitlines()
    vocab = Vocabulary.from_corpus([line.split() for line in lines])
    net = RNNLM(ModelConfig(len(vocab), "lstm", num_layers=2, embed_size=200, hidden_size=200))
    save_checkpoint(out, RecurrentLM(net, vocab, Tokenizer("whitespace")))


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median milliseconds per call, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def worker(model_dir: Path, corpus: Path, repeats: int) -> dict[str, float]:
    """Time the workloads with whatever ``model`` package is first on sys.path."""
    try:  # this tree's layout, or the flat one before it (issue 11)
        from model.inference.checkpoint import load_checkpoint
        from model.training.optim import SGD
        from model.training.steps import train_step
    except ImportError:
        from model.checkpoint import load_checkpoint  # type: ignore[no-redef]
        from model.optim import SGD  # type: ignore[no-redef]

        from model.training import train_step  # type: ignore[no-redef]

    lm = load_checkpoint(model_dir)
    rng = np.random.default_rng(0)
    lines = [line.split() for line in corpus.read_text(encoding="utf-8").splitlines()[-3000:]]
    long = [words for words in lines if len(words) >= 21]
    words = [w for line in lines for w in line]
    contexts = [long[i][:20] for i in rng.integers(0, len(long), 64)]
    candidates = [
        [*rng.choice(words, 4).tolist(), " ".join(rng.choice(words, 2))] for _ in contexts
    ]
    nbest = [[lines[j] for j in rng.integers(0, len(lines), 10)] for _ in range(16)]
    ids = rng.integers(3, len(lm.vocab), (36, 20))
    state = lm.net.init_state(20)
    optimizer = SGD(1.0)
    k = iter(range(10**9))

    def one_candidates() -> None:
        i = next(k) % len(contexts)
        lm.score_candidates(contexts[i], candidates[i])

    def one_nbest() -> None:
        lm.score_sentences(nbest[next(k) % len(nbest)])

    def one_step() -> None:
        train_step(lm.net, optimizer, ids[:-1], ids[1:], None, state, 0.25, None)

    return {
        "candidates_ms": timed(one_candidates, repeats * 10),
        "nbest_ms": timed(one_nbest, repeats),
        "train_step_ms": timed(one_step, repeats),
    }


def run_tree(tree: Path, model_dir: Path, corpus: Path, repeats: int) -> dict[str, float]:
    env = os.environ | {"PYTHONPATH": str(tree), "OPENBLAS_NUM_THREADS": "1",
                        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # fmt: skip
    args = [sys.executable, __file__, "--worker", str(model_dir), "--corpus", str(corpus),
            "--repeats", str(repeats)]  # fmt: skip
    out = subprocess.run(args, env=env, cwd=tree, check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="a checkout of the revision to compare with")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_TRAIN)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.corpus, args.repeats)))
        return
    if args.baseline is None:
        parser.error("--baseline is required")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "lstm"
        build_model(args.corpus, model_dir)
        trees = {"this": ROOT, "baseline": args.baseline.resolve()}
        rounds: list[dict[str, dict[str, float]]] = []
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]  # alternate who goes first
            rounds.append({name: run_tree(trees[name], model_dir, args.corpus, args.repeats)
                           for name in order})  # fmt: skip
            ratios = {w: rounds[-1]["this"][w] / rounds[-1]["baseline"][w] for w in WORKLOADS}
            print(f"round {r + 1}: " + ", ".join(f"{w} {x:.3f}x" for w, x in ratios.items()),
                  file=sys.stderr)  # fmt: skip
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "rounds": args.rounds,
        "ratio_this_over_baseline_median": {
            w: round(statistics.median(x["this"][w] / x["baseline"][w] for x in rounds), 3)
            for w in WORKLOADS
        },
        **{
            f"{name}_ms_median": {
                w: round(statistics.median(x[name][w] for x in rounds), 3) for w in WORKLOADS
            }
            for name in ("this", "baseline")
        },
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
