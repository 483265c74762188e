"""Numerical gradients by central differences, to check every hand-written backward pass."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """d f / d x by central differences, (f(x + h) - f(x - h)) / 2h for each element of ``x``.

    ``f`` reads ``x`` (modified in place and restored); use float64 so that rounding error
    (about 1e-16 / h) stays far below the truncation error (about h²).
    """
    grad = np.zeros_like(x, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        plus = f()
        x[i] = old - h
        minus = f()
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
        it.iternext()
    return grad


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / (||a|| + ||b||): scale-free agreement of two whole gradient arrays.

    Taken over the whole array rather than element by element, so that entries that are nearly
    zero, where rounding dominates the difference, do not mask the agreement of the rest.
    """
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))
