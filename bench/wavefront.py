"""The wavefront over layers for reading a context, against layer by layer (issue 14).

    OPENBLAS_NUM_THREADS=1 python bench/wavefront.py

Layer by layer (``RecurrentStack.forward``): layer 0 runs all T steps, then layer 1 does, and
each layer's input projection is one matrix product over all steps. The wavefront runs layer 0
at step k and layer 1 at step k − 1 together: one product ``h0 [Wh0 | Wx1]`` gives layer 0's
recurrent part and layer 1's input part at once, and the gate activations of both layers are
one pass over a (N, 8H) array, so a 2-layer read takes T + 1 rounds of Python instead of 2T.
It saves call overhead and pays with layer 1's input projection done row by row instead of as
one product. This script builds the wavefront for a 2-layer LSTM (inference only: no caches),
checks it against ``lstm_forward`` layer by layer, and times both in alternating rounds for a
cold 21-token context (``<s>`` + 20 words) at batch 1 and 10, hidden 200, float32.
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
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.network.cells import lstm_forward, lstm_step_forward, project_inputs

H = 200
Params = list[dict[str, np.ndarray]]
State = list[tuple[np.ndarray, np.ndarray]]


def layer_by_layer(x: np.ndarray, state: State, params: Params) -> tuple[np.ndarray, State]:
    h, s0, _ = lstm_forward(x, state[0], params[0], keep_cache=False)
    h, s1, _ = lstm_forward(h, state[1], params[1], keep_cache=False)
    return h, [s0, s1]


def wavefront(x: np.ndarray, state: State, params: Params, Wcat: np.ndarray) -> Any:
    """The same read as ``layer_by_layer``, two layers a round; Wcat = [Wh0 | Wx1] (H, 8H)."""
    T, N, _ = x.shape
    half = np.tile(np.r_[np.full(3 * H, 0.5), np.ones(H)], 2).astype(x.dtype)
    shift = np.tile(np.r_[np.full(3 * H, 0.5), np.zeros(H)], 2).astype(x.dtype)
    xw0 = project_inputs(x, params[0]["Wx"], params[0]["b"])
    (h0, c0), (h1, c1) = state
    Wh1, b1 = params[1]["Wh"], params[1]["b"]
    out = np.empty((T, N, H), dtype=x.dtype)
    h0, c0, _ = lstm_step_forward(xw0[0], h0, c0, params[0]["Wh"])  # round 0: layer 0 only
    c = np.stack([c0, c1], axis=1)  # (N, 2, H): both layers' cells
    for k in range(1, T):
        gates = h0 @ Wcat  # layer 0 step k's recurrent part, layer 1 step k − 1's input part
        gates[:, : 4 * H] += xw0[k]
        second = gates[:, 4 * H :]
        second += h1 @ Wh1
        second += b1
        gates *= half
        np.tanh(gates, out=gates)
        gates *= half
        gates += shift  # σ on i, f, o and tanh on g of both layers
        g = gates.reshape(N, 2, 4 * H)
        c *= g[:, :, H : 2 * H]
        c += g[:, :, :H] * g[:, :, 3 * H :]
        h = g[:, :, 2 * H : 3 * H] * np.tanh(c)  # (N, 2, H)
        h0, h1 = h[:, 0], h[:, 1]
        out[k - 1] = h1
    xw1 = h0 @ params[1]["Wx"] + b1  # last round: layer 1 only
    h1, c1, _ = lstm_step_forward(xw1, np.ascontiguousarray(h1), c[:, 1].copy(), Wh1)
    out[T - 1] = h1
    return out, [(np.ascontiguousarray(h0), c[:, 0].copy()), (h1, c1)]


def median_ms(times: list[float]) -> float:
    return round(statistics.median(times) * 1e3, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=300, help="reads per round and method")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shapes = (("Wx", (H, 4 * H)), ("Wh", (H, 4 * H)), ("b", (4 * H,)))
    params = [
        {k: (rng.standard_normal(s) * 0.1).astype(np.float32) for k, s in shapes} for _ in range(2)
    ]
    Wcat = np.ascontiguousarray(np.concatenate([params[0]["Wh"], params[1]["Wx"]], axis=1))
    results: dict[str, Any] = {
        "benchmark": "wavefront",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
    }
    for N in (1, 10):
        x = rng.standard_normal((21, N, H)).astype(np.float32)
        state = [(np.zeros((N, H), np.float32), np.zeros((N, H), np.float32)) for _ in range(2)]
        (a, sa), (b, sb) = layer_by_layer(x, state, params), wavefront(x, state, params, Wcat)
        pairs = [(a, b)]
        for p, q in zip(sa, sb, strict=True):
            pairs += zip(p, q, strict=True)
        gap = max(float(np.abs(u - v).max()) for u, v in pairs)
        assert gap < 1e-5, f"the wavefront disagrees with layer by layer by {gap}"
        times: dict[str, list[float]] = {"layer_by_layer": [], "wavefront": []}
        for r in range(args.rounds):
            order = (
                ["layer_by_layer", "wavefront"] if r % 2 == 0 else ["wavefront", "layer_by_layer"]
            )
            for name in order:
                for _ in range(args.calls):
                    start = time.perf_counter()
                    if name == "wavefront":
                        wavefront(x, state, params, Wcat)
                    else:
                        layer_by_layer(x, state, params)
                    times[name].append(time.perf_counter() - start)
        base, wave = median_ms(times["layer_by_layer"]), median_ms(times["wavefront"])
        results[f"batch_{N}"] = {"layer_by_layer_ms": base, "wavefront_ms": wave,
                                 "speedup": round(base / wave, 2), "max_abs_gap": gap}  # fmt: skip
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
