"""Recurrent cells (vanilla RNN, LSTM, GRU) as forward/backward pairs, time-major.

Shape letters: T time steps, N batch, D input size, H hidden size, G = gates × H.

Each cell has a step pair (one time step) and a sequence pair (T steps). The sequence functions
are vectorised where the maths allows: the input projection ``x_t Wx + b`` of all T steps is one
matrix product before the loop, and the weight gradients, summed over all steps, are one matrix
product each after the backward loop. Only the recurrence ``h_{t-1} → h_t`` runs step by step.

A cell's state is a tuple: ``(h,)`` for RNN and GRU, ``(h, c)`` for LSTM, each of shape (N, H).
Sequence functions have one signature for every cell::

    forward(x (T, N, D), state0, params, keep_cache) -> hs (T, N, H), stateT, cache
    backward(dhs (T, N, H), dstateT or None, cache) -> dx (T, N, D), dstate0, grads

so the network stacks any cell without knowing which it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import numpy as np

Params = Mapping[str, np.ndarray]
State = tuple[np.ndarray, ...]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function via tanh: exact, and no overflow warning for large |x|."""
    return 0.5 * np.tanh(0.5 * x) + 0.5


def _sigmoid_inplace(x: np.ndarray) -> None:
    """``x[...] = sigmoid(x)`` without temporaries (the recurrence runs it every step)."""
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5


def _transposed(W: np.ndarray) -> np.ndarray:
    """A C-contiguous Wᵀ: BLAS multiplies by it faster than by a transposed view."""
    return np.ascontiguousarray(W.T)


def project_inputs(x: np.ndarray, Wx: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``x_t Wx + b`` for all steps in one product: x (T, N, D) → (T, N, G)."""
    T, N, D = x.shape
    xw = x.reshape(T * N, D) @ Wx
    xw += b  # in place: no second (T*N, G) temporary
    projected: np.ndarray = xw.reshape(T, N, -1)
    return projected


def project_inputs_backward(
    dxw: np.ndarray, x: np.ndarray, Wx: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx (T, N, D), dWx (D, G), db (G,)) of the input projection, summed over steps."""
    T, N, D = x.shape
    dxw2 = dxw.reshape(T * N, -1)
    db = np.ones(T * N, dtype=dxw.dtype) @ dxw2  # column sums; BLAS is faster than .sum(axis=0)
    return (dxw2 @ Wx.T).reshape(T, N, D), x.reshape(T * N, D).T @ dxw2, db


def _previous_hidden(h0: np.ndarray, hs: np.ndarray) -> np.ndarray:
    """h_{t-1} for every step: h0 followed by hs[:-1], shape (T, N, H)."""
    return np.concatenate([h0[None], hs[:-1]], axis=0)


def _recurrent_weight_grad(hprev: np.ndarray, dhw: np.ndarray) -> np.ndarray:
    """dWh = Σ_t h_{t-1}ᵀ · d(h_{t-1} Wh), as one product over all steps, shape (H, G)."""
    H = hprev.shape[-1]
    dWh: np.ndarray = hprev.reshape(-1, H).T @ dhw.reshape(-1, dhw.shape[-1])
    return dWh


# ---------------------------------------------------------------- vanilla RNN
def rnn_step_forward(
    xw: np.ndarray, prev_h: np.ndarray, Wh: np.ndarray, activation: str = "tanh"
) -> tuple[np.ndarray, Any]:
    """s_t = f(U x_t + W s_{t-1} + b) with f = tanh or relu.

    - xw: input projection ``x_t Wx + b`` of this step, shape (N, H).
    - prev_h: previous hidden state, shape (N, H); Wh: recurrent weights, shape (H, H).
    Returns next_h (N, H) and the cache.
    """
    a = xw + prev_h @ Wh  # pre-activation
    next_h = np.tanh(a) if activation == "tanh" else np.maximum(a, 0)
    return next_h, (next_h, Wh, activation)


def rnn_step_backward(
    dnext_h: np.ndarray, cache: Any, WhT: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (da (N, H): gradient of the pre-activation, dprev_h (N, H)).

    ``WhT`` optionally gives Whᵀ precomputed, when called for many steps.
    """
    next_h, Wh, activation = cache
    # backprop through tanh (tanh' = 1 - tanh²) or relu (1 where the output is positive)
    da = dnext_h * (1 - next_h * next_h) if activation == "tanh" else dnext_h * (next_h > 0)
    return da, da @ (Wh.T if WhT is None else WhT)


def rnn_forward(
    x: np.ndarray,
    state0: State,
    params: Params,
    keep_cache: bool = True,  # noqa: ARG001 - the common cell signature; the cache is hs anyway
    activation: str = "tanh",
) -> tuple[np.ndarray, State, Any]:
    """Run a vanilla RNN over x (T, N, D) from state (h0,); params Wx (D, H), Wh (H, H), b (H,).

    Its cache is the outputs themselves, so ``keep_cache`` changes nothing here.
    """
    xw = project_inputs(x, params["Wx"], params["b"])  # (T, N, H)
    (h,) = state0
    hs = np.empty(xw.shape, dtype=xw.dtype)
    for t in range(x.shape[0]):
        h, _ = rnn_step_forward(xw[t], h, params["Wh"], activation)
        hs[t] = h
    return hs, (h,), (x, state0[0], hs, params, activation)


def rnn_backward(
    dhs: np.ndarray, dstate: State | None, cache: Any
) -> tuple[np.ndarray, State, dict[str, Any]]:
    """Backprop through time for ``rnn_forward``: returns dx, (dh0,), {Wx, Wh, b} gradients."""
    x, h0, hs, params, activation = cache
    Wh, WhT = params["Wh"], _transposed(params["Wh"])
    da = np.empty_like(hs)
    dh = np.zeros_like(h0) if dstate is None else dstate[0]
    for t in reversed(range(x.shape[0])):
        da[t], dh = rnn_step_backward(dhs[t] + dh, (hs[t], Wh, activation), WhT)
    dx, dWx, db = project_inputs_backward(da, x, params["Wx"])
    dWh = _recurrent_weight_grad(_previous_hidden(h0, hs), da)
    return dx, (dh,), {"Wx": dWx, "Wh": dWh, "b": db}


# ---------------------------------------------------------------- LSTM
# Gate order in the G = 4H columns: input i, forget f, output o (sigmoids), cell g (tanh).
# The step works on whole (N, 4H) arrays with per-column constants rather than on gate slices:
# strided slices cost numpy two to three times as much per element, and this runs every step.
@lru_cache(maxsize=32)
def _lstm_columns(H: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-column constants (each shape (4H,)) that apply σ to i, f, o and tanh to g at once.

    σ(a) = ½ tanh(½ a) + ½, so ``tanh(a * half) * half + shift`` gives σ on the first 3H columns
    and tanh on the last H. Their derivatives σ(1 - σ) and 1 - tanh² are both
    ``y * (slope - y) + offset`` with slope 1, offset 0 (σ) and slope 0, offset 1 (tanh).
    """
    sig, tanh = np.ones(3 * H, dtype=dtype), np.ones(H, dtype=dtype)
    half = np.concatenate([0.5 * sig, tanh])
    shift = np.concatenate([0.5 * sig, 0 * tanh])
    slope = np.concatenate([sig, 0 * tanh])
    offset = np.concatenate([0 * sig, tanh])
    return half, shift, slope, offset


def lstm_step_forward(
    xw: np.ndarray, prev_h: np.ndarray, prev_c: np.ndarray, Wh: np.ndarray
) -> tuple[np.ndarray, np.ndarray, Any]:
    """One LSTM step.

    - xw: input projection ``x_t Wx + b``, shape (N, 4H).
    - prev_h, prev_c: previous hidden and cell state, shape (N, H); Wh: shape (H, 4H).
    Returns next_h (N, H), next_c (N, H) and the cache.
    """
    H = prev_h.shape[1]
    half, shift, _, _ = _lstm_columns(H, xw.dtype)
    gates = prev_h @ Wh
    gates += xw  # (N, 4H) gate pre-activations a, activated in place:
    gates *= half
    np.tanh(gates, out=gates)
    gates *= half
    gates += shift  # i, f, o = σ(a), g = tanh(a)
    i, f, o, g = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H : 3 * H], gates[:, 3 * H :]
    next_c = f * prev_c  # forget part of the old memory ...
    next_c += i * g  # ... and write the new
    tanh_c = np.tanh(next_c)
    next_h = o * tanh_c  # expose part of the memory
    return next_h, next_c, (prev_c, gates, tanh_c, Wh)


def lstm_step_backward(
    dnext_h: np.ndarray, dnext_c: np.ndarray, cache: Any, WhT: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (da (N, 4H): gradient of the gate pre-activations, dprev_h, dprev_c).

    ``WhT`` optionally gives Whᵀ precomputed, when called for many steps.
    """
    prev_c, gates, tanh_c, Wh = cache
    H = prev_c.shape[1]
    _, _, slope, offset = _lstm_columns(H, gates.dtype)
    i, f, o, g = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H : 3 * H], gates[:, 3 * H :]
    dc = tanh_c * tanh_c
    np.subtract(1, dc, out=dc)
    dc *= o
    dc *= dnext_h
    dc += dnext_c  # through h = o * tanh(c), plus the carried cell gradient
    # gradient reaching each activated gate: c = f*c' + i*g and h = o*tanh(c)
    da = np.concatenate((dc * g, dc * prev_c, dnext_h * tanh_c, dc * i), axis=1)
    deriv = slope - gates
    deriv *= gates
    deriv += offset  # σ(1 - σ) for i, f, o and 1 - g² for g
    da *= deriv  # through the activations
    return da, da @ (Wh.T if WhT is None else WhT), dc * f


def lstm_forward(
    x: np.ndarray, state0: State, params: Params, keep_cache: bool = True
) -> tuple[np.ndarray, State, Any]:
    """Run an LSTM over x (T, N, D) from (h0, c0); params Wx (D, 4H), Wh (H, 4H), b (4H,)."""
    xw = project_inputs(x, params["Wx"], params["b"])  # (T, N, 4H)
    h, c = state0
    hs = np.empty((x.shape[0], *h.shape), dtype=xw.dtype)
    steps = []
    for t in range(x.shape[0]):
        h, c, step_cache = lstm_step_forward(xw[t], h, c, params["Wh"])
        hs[t] = h
        if keep_cache:  # inference keeps no per-step activations: memory O(T·H), not O(T·G)
            steps.append(step_cache)
    return hs, (h, c), (x, state0[0], hs, params, steps)


def lstm_backward(
    dhs: np.ndarray, dstate: State | None, cache: Any
) -> tuple[np.ndarray, State, dict[str, Any]]:
    """Backprop through time for ``lstm_forward``: returns dx, (dh0, dc0), {Wx, Wh, b} gradients."""
    x, h0, hs, params, steps = cache
    dh, dc = (np.zeros_like(h0), np.zeros_like(h0)) if dstate is None else dstate
    da = np.empty((x.shape[0], h0.shape[0], params["Wh"].shape[1]), dtype=hs.dtype)
    WhT = _transposed(params["Wh"])
    for t in reversed(range(x.shape[0])):
        da[t], dh, dc = lstm_step_backward(dhs[t] + dh, dc, steps[t], WhT)
    dx, dWx, db = project_inputs_backward(da, x, params["Wx"])
    dWh = _recurrent_weight_grad(_previous_hidden(h0, hs), da)
    return dx, (dh, dc), {"Wx": dWx, "Wh": dWh, "b": db}


# ---------------------------------------------------------------- GRU
# Gate order in the G = 3H columns: reset r, update z, candidate n. As in cuDNN and PyTorch, the
# reset gate multiplies (h Wh_n + bhn), so h Wh for all three gates is one matrix product.
def gru_step_forward(
    xw: np.ndarray, prev_h: np.ndarray, Wh: np.ndarray, bhn: np.ndarray
) -> tuple[np.ndarray, Any]:
    """One GRU step.

    - xw: input projection ``x_t Wx + b``, shape (N, 3H); prev_h: shape (N, H).
    - Wh: recurrent weights, shape (H, 3H); bhn: recurrent bias of the candidate, shape (H,).
    Returns next_h (N, H) and the cache.
    """
    H = prev_h.shape[1]
    hw = prev_h @ Wh  # (N, 3H)
    rz = xw[:, : 2 * H] + hw[:, : 2 * H]
    _sigmoid_inplace(rz)  # reset and update gates
    r, z = rz[:, :H], rz[:, H:]
    hn = hw[:, 2 * H :] + bhn  # recurrent part of the candidate
    n = np.tanh(xw[:, 2 * H :] + r * hn)  # candidate state
    next_h = n + z * (prev_h - n)  # (1 - z) * n + z * h_{t-1}
    return next_h, (prev_h, r, z, n, hn, Wh)


def gru_step_backward(
    dnext_h: np.ndarray, cache: Any, WhT: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (dxw (N, 3H), dhw (N, 3H): gradients of the two projections, dprev_h (N, H)).

    ``WhT`` optionally gives Whᵀ precomputed, when called for many steps.
    """
    prev_h, r, z, n, hn, Wh = cache
    H = prev_h.shape[1]
    dan = dnext_h * (1 - z) * (1 - n * n)  # through (1-z)*n, then tanh
    dxw = np.empty((prev_h.shape[0], 3 * H), dtype=dnext_h.dtype)
    dxw[:, :H] = dan * hn * r * (1 - r)  # through r * hn, then sigmoid(r)
    dxw[:, H : 2 * H] = dnext_h * (prev_h - n) * z * (1 - z)  # through z, then sigmoid(z)
    dxw[:, 2 * H :] = dan
    dhw = dxw.copy()
    dhw[:, 2 * H :] = dan * r  # hn enters the candidate scaled by r
    return dxw, dhw, dnext_h * z + dhw @ (Wh.T if WhT is None else WhT)


def gru_forward(
    x: np.ndarray, state0: State, params: Params, keep_cache: bool = True
) -> tuple[np.ndarray, State, Any]:
    """Run a GRU over x (T, N, D) from (h0,); params Wx (D, 3H), Wh (H, 3H), b (3H,), bhn (H,)."""
    xw = project_inputs(x, params["Wx"], params["b"])  # (T, N, 3H)
    (h,) = state0
    hs = np.empty((x.shape[0], *h.shape), dtype=xw.dtype)
    steps = []
    for t in range(x.shape[0]):
        h, step_cache = gru_step_forward(xw[t], h, params["Wh"], params["bhn"])
        hs[t] = h
        if keep_cache:  # inference keeps no per-step activations: memory O(T·H), not O(T·G)
            steps.append(step_cache)
    return hs, (h,), (x, state0[0], hs, params, steps)


def gru_backward(
    dhs: np.ndarray, dstate: State | None, cache: Any
) -> tuple[np.ndarray, State, dict[str, Any]]:
    """Backprop through time for ``gru_forward``: dx, (dh0,), {Wx, Wh, b, bhn} gradients."""
    x, h0, hs, params, steps = cache
    dh = np.zeros_like(h0) if dstate is None else dstate[0]
    dxw = np.empty((x.shape[0], h0.shape[0], params["Wh"].shape[1]), dtype=hs.dtype)
    dhw = np.empty_like(dxw)
    WhT = _transposed(params["Wh"])
    for t in reversed(range(x.shape[0])):
        dxw[t], dhw[t], dh = gru_step_backward(dhs[t] + dh, steps[t], WhT)
    dx, dWx, db = project_inputs_backward(dxw, x, params["Wx"])
    dWh = _recurrent_weight_grad(_previous_hidden(h0, hs), dhw)
    dbhn = dhw[..., 2 * h0.shape[1] :].reshape(-1, h0.shape[1]).sum(axis=0)
    return dx, (dh,), {"Wx": dWx, "Wh": dWh, "b": db, "bhn": dbhn}


# ---------------------------------------------------------------- registry
@dataclass(frozen=True)
class Cell:
    """What the network needs to know about a cell type."""

    name: str
    gates: int  # G = gates × H columns in Wx, Wh, b
    num_states: int  # 1 for (h,), 2 for (h, c)
    param_names: tuple[str, ...]
    forward: Callable[..., tuple[np.ndarray, State, Any]]  # (x, state0, params, keep_cache=True)
    backward: Callable[[np.ndarray, State | None, Any], tuple[np.ndarray, State, dict[str, Any]]]


def get_cell(name: str, activation: str = "tanh") -> Cell:
    """The cell called ``name`` (rnn, lstm, gru); ``activation`` (tanh, relu) applies to rnn."""
    if name == "rnn":
        if activation not in ("tanh", "relu"):
            raise ValueError(f"unknown activation {activation!r}: expected 'tanh' or 'relu'")
        forward = partial(rnn_forward, activation=activation)
        return Cell("rnn", 1, 1, ("Wx", "Wh", "b"), forward, rnn_backward)
    if name == "lstm":
        return Cell("lstm", 4, 2, ("Wx", "Wh", "b"), lstm_forward, lstm_backward)
    if name == "gru":
        return Cell("gru", 3, 1, ("Wx", "Wh", "b", "bhn"), gru_forward, gru_backward)
    raise ValueError(f"unknown cell {name!r}: expected 'rnn', 'lstm' or 'gru'")
