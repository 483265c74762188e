"""Top-k next words from a class-factored model: pruned search beside the whole distribution
(issue 14).

    OPENBLAS_NUM_THREADS=1 python bench/predict_top_k.py runs/ptb-class --text ptb.valid.txt

Both ways read the same contexts (the first words of validation sentences, cut at a random
length) from the same model: ``RecurrentLM.top_k`` opens classes from the most probable down
and stops when no class left can hold a better word; the peer forms all V log-probabilities
(``LanguageModel.top_k`` over ``next_log_probs``) and partitions them. Their answers are
checked equal on every context; rounds alternate. Reported: µs per call (median of rounds),
the ratio, and how many classes the pruned search opened.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import load_checkpoint
from model.inference.language_model import LanguageModel
from model.inference.recurrent_lm import RecurrentLM
from model.network.class_softmax import class_top_k
from model.text.vocab import SPECIALS


def contexts_from(path: Path, count: int, rng: np.random.Generator) -> list[list[str]]:
    lines = [line.split() for line in path.read_text().splitlines() if line.split()]
    picked = rng.choice(len(lines), size=count, replace=False)
    return [lines[i][: rng.integers(0, len(lines[i]))] for i in picked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a checkpoint trained with --softmax class")
    parser.add_argument("--text", type=Path, required=True, help="sentences, one per line")
    parser.add_argument("--contexts", type=int, default=200)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    lm = load_checkpoint(args.model)
    assert isinstance(lm, RecurrentLM) and lm.net.classes is not None, "a class-softmax model"
    classes = lm.net.classes
    contexts = contexts_from(args.text, args.contexts, np.random.default_rng(0))
    print(f"{platform.machine()}, {os.cpu_count()} cores, OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'default')}, V = {classes.vocab_size}, "
          f"K = {classes.num_classes}, {len(contexts)} contexts")  # fmt: skip
    print("| k | whole distribution µs | pruned µs | ratio | classes opened (mean / max) |")
    print("|---|---|---|---|---|")
    p = lm.net.params
    specials = [lm.vocab.id(t) for t in SPECIALS]
    for k in args.k:
        for c in contexts:  # the same answers, word for word
            want = LanguageModel.top_k(lm, c, k)
            got = lm.top_k(c, k)
            assert [w for w, _ in got] == [w for w, _ in want], (c, k)
            assert np.allclose([x for _, x in got], [x for _, x in want], atol=1e-5)
        opened = []
        for c in contexts:
            (read,) = lm.read_contexts([c])
            opened.append(
                class_top_k(
                    read.hidden, lm.net.output_weight, p["output.b"],
                    p["output.class.W"], p["output.class.b"], classes, k, specials,
                )[2]
            )  # fmt: skip
        times: dict[str, list[float]] = {"whole": [], "pruned": []}
        for _ in range(args.rounds):
            for name, call in (("whole", LanguageModel.top_k), ("pruned", RecurrentLM.top_k)):
                start = time.perf_counter()
                for c in contexts:
                    call(lm, c, k)
                times[name].append((time.perf_counter() - start) / len(contexts) * 1e6)
        whole, pruned = statistics.median(times["whole"]), statistics.median(times["pruned"])
        print(f"| {k} | {whole:.0f} | {pruned:.0f} | {whole / pruned:.2f}× | "
              f"{statistics.mean(opened):.1f} / {max(opened)} |")  # fmt: skip


if __name__ == "__main__":
    main()
