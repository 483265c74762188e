"""The orientation of the output product: ``x Wᵀ`` against ``times_rows`` (issue 14).

    OPENBLAS_NUM_THREADS=1 python bench/product_orientation.py
    OPENBLAS_NUM_THREADS=1 python bench/product_orientation.py --model runs/ptb1-short

OpenBLAS multiplies a few rows by a transposed weight matrix far slower than it multiplies the
matrix by their transpose, once the product is too big for its small-matrix kernels. A serving
call has a few output rows (a candidates query: the context's and one per continuation), so
``model.network.layers.times_rows`` picks the orientation. This script measures both on a grid
of rows M × weight rows R (hidden 200, float32), in alternating rounds, and reports the median
time of each and the ratio. With ``--model``, it also times a whole candidates query
(``bench/serve_speed.py``'s workload) with ``times_rows`` and with ``x Wᵀ`` everywhere
(``FEW_ROWS = 0``), in alternating rounds: what the choice is worth end to end. Beside the
grid, float16 storage of the output matrix, which issue 14 asked to try for serving.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import model.network.layers as layers  # noqa: E402
from model.network.layers import times_rows  # noqa: E402


def best_of(call: Callable[[], object], seconds: float = 0.05) -> float:
    """Seconds per call: the fastest of 3 batches of about ``seconds`` each."""
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 5:
        call()
        n += 1
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n * 5):
            call()
        times.append((time.perf_counter() - start) / (n * 5))
    return min(times)


def grid(rounds: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(0)
    rows = []
    for R in (200, 1000, 2089, 10_000, 100_000):
        W = rng.standard_normal((R, 200)).astype(np.float32)
        for M in (1, 2, 3, 4, 8, 16, 32):
            x = rng.standard_normal((M, 200)).astype(np.float32)
            plain: list[float] = []
            chosen: list[float] = []
            for r in range(rounds):
                pair = [
                    (plain, lambda x=x, W=W: x @ W.T),
                    (chosen, lambda x=x, W=W: times_rows(x, W)),
                ]
                for times, call in pair if r % 2 == 0 else pair[::-1]:
                    times.append(best_of(call))
            a, b = statistics.median(plain), statistics.median(chosen)
            rows.append({"R": R, "M": M, "xWT_us": round(a * 1e6, 1),
                         "times_rows_us": round(b * 1e6, 1), "ratio": round(a / b, 2)})  # fmt: skip
    return rows


def float16_storage(rounds: int) -> list[dict[str, float]]:
    """The output matrix stored as float16 (half the memory and bandwidth): numpy has no
    float16 BLAS, so a product either runs in numpy's own loops or converts the rows first."""
    rng = np.random.default_rng(1)
    rows = []
    for R in (2089, 10_000):
        W = rng.standard_normal((R, 200)).astype(np.float32)
        W16 = W.astype(np.float16)
        x = rng.standard_normal((2, 200)).astype(np.float32)
        calls = {
            "float32_us": lambda x=x, W=W: times_rows(x, W),
            "float16_converted_us": lambda x=x, W16=W16: times_rows(x, W16.astype(np.float32)),
            "float16_direct_us": lambda x=x, W16=W16: x.astype(np.float16) @ W16.T,
        }
        times: dict[str, list[float]] = {name: [] for name in calls}
        for r in range(rounds):
            for name in list(calls) if r % 2 == 0 else list(calls)[::-1]:
                times[name].append(best_of(calls[name]))
        rows.append(
            {"R": R, "M": 2} | {k: round(statistics.median(v) * 1e6, 1) for k, v in times.items()}
        )
    return rows


def candidates(model: Path, rounds: int, n: int) -> dict[str, float]:
    from serve_speed import DEFAULT_VALID, workload

    from model.inference.checkpoint import load_checkpoint

    lm = load_checkpoint(model)
    requests, _ = workload(lm, DEFAULT_VALID, n)
    times: dict[int, list[float]] = {layers.FEW_ROWS: [], 0: []}
    for r in range(rounds):
        for few in list(times) if r % 2 == 0 else list(times)[::-1]:
            layers.FEW_ROWS = few  # 0: x Wᵀ for every product
            for request in requests:
                start = time.perf_counter()
                lm.score_candidates_batch([request])
                times[few].append(time.perf_counter() - start)
    new, old = (statistics.median(t) * 1e3 for t in times.values())
    return {"times_rows_p50_ms": round(new, 3), "xWT_p50_ms": round(old, 3),
            "speedup": round(old / new, 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="also time candidates queries on this model")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    results: dict[str, object] = {
        "benchmark": "product_orientation",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "numpy": np.__version__,
        "grid": grid(args.rounds),
        "float16_storage": float16_storage(args.rounds),
    }
    if args.model:
        results["candidates"] = candidates(args.model, args.rounds, args.requests)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
