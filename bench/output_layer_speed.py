"""The output layer of one training step, full softmax beside the class-factored one (issue 14).

    OPENBLAS_NUM_THREADS=1 python bench/output_layer_speed.py --counts runs/ptb-kn5

Both layers take the same top-layer outputs of one PTB-sized window (batch 20 × BPTT 35, hidden
200) and targets drawn from the vocabulary's unigram distribution, and compute the loss with
every gradient (``softmax_output_loss`` / ``class_softmax_loss``), in alternating rounds.
Reported: ms per window (median of rounds) and the ratio, for each class count asked for.
The counts come from a checkpoint's vocabulary (its ``vocab.*.json``); without ``--counts``, a
Zipf vocabulary of ``--vocab`` words.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.network.class_softmax import WordClasses, class_softmax_loss
from model.network.layers import softmax_output_loss


def vocabulary_counts(directory: Path | None, vocab: int) -> list[int]:
    if directory is None:
        return [int(1e6 / (rank + 1)) + 1 for rank in range(vocab)]
    (path,) = directory.glob("vocab.*.json")
    counts: list[int] = json.loads(path.read_text())["counts"]
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=Path, help="a checkpoint directory (its vocabulary)")
    parser.add_argument("--vocab", type=int, default=10_000, help="Zipf vocabulary size")
    parser.add_argument("--classes", type=int, nargs="+", default=[0], help="0: √V")
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    counts = vocabulary_counts(args.counts, args.vocab)
    V, H = len(counts), args.hidden
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (35, 20, H)).astype(np.float32)
    W = rng.normal(0, 0.1, (V, H)).astype(np.float32)
    b = np.zeros(V, np.float32)
    p = np.asarray(counts, dtype=np.float64) + 1
    targets = rng.choice(V, size=(35, 20), p=p / p.sum())
    print(f"{platform.machine()}, {os.cpu_count()} cores, OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'default')}, V = {V}, H = {H}")  # fmt: skip
    print("| classes | largest class | full softmax ms | class softmax ms | ratio |")
    print("|---|---|---|---|---|")
    for asked in args.classes:
        classes = WordClasses.by_frequency(counts, asked or WordClasses.default_count(V))
        Wc = rng.normal(0, 0.1, (classes.num_bands, H)).astype(np.float32)
        bc = np.zeros(classes.num_bands, np.float32)
        full, factored = [], []
        for _ in range(args.rounds):  # alternating rounds: the same window, one after the other
            start = time.perf_counter()
            softmax_output_loss(x, W, b, targets)
            full.append(time.perf_counter() - start)
            start = time.perf_counter()
            class_softmax_loss(x, W, b, Wc, bc, classes, targets)
            factored.append(time.perf_counter() - start)
        f, c = statistics.median(full) * 1e3, statistics.median(factored) * 1e3
        largest = int(np.diff(classes.bounds).max())
        print(f"| {classes.num_classes} | {largest} | {f:.1f} | {c:.1f} | {f / c:.2f} |")


if __name__ == "__main__":
    main()
