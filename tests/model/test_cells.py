"""Recurrent cells: step and sequence gradients against central differences, and the vectorised
sequence code against a plain per-step implementation of the textbook equations."""

from __future__ import annotations

import numpy as np
import pytest

from model.network.cells import (
    get_cell,
    gru_step_backward,
    gru_step_forward,
    lstm_step_backward,
    lstm_step_forward,
    rnn_step_backward,
    rnn_step_forward,
)
from model.network.init import init_cell
from tests.gradcheck import numerical_gradient, relative_error

TOL = 1e-7
N, D, H, T = 3, 4, 5, 4
CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]


def random_params(cell: str, activation: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = init_cell(cell, activation, D, H, rng)
    return {k: v + rng.normal(0, 0.3, v.shape) for k, v in params.items()}


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


# ---------------------------------------------------------------- step functions
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_rnn_step_gradients(activation: str) -> None:
    rng = np.random.default_rng(1)
    xw, h, Wh = rng.normal(size=(N, H)), rng.normal(size=(N, H)), rng.normal(size=(H, H))
    dnext = rng.normal(size=(N, H))
    _, cache = rnn_step_forward(xw, h, Wh, activation)
    dxw, dh = rnn_step_backward(dnext, cache)
    f = lambda: float(np.sum(rnn_step_forward(xw, h, Wh, activation)[0] * dnext))  # noqa: E731
    assert relative_error(dxw, numerical_gradient(f, xw)) < TOL
    assert relative_error(dh, numerical_gradient(f, h)) < TOL


def test_lstm_step_gradients() -> None:
    rng = np.random.default_rng(2)
    xw, h, c = rng.normal(size=(N, 4 * H)), rng.normal(size=(N, H)), rng.normal(size=(N, H))
    Wh = rng.normal(size=(H, 4 * H)) * 0.5
    dh_next, dc_next = rng.normal(size=(N, H)), rng.normal(size=(N, H))

    def f() -> float:
        nh, nc, _ = lstm_step_forward(xw, h, c, Wh)
        return float(np.sum(nh * dh_next) + np.sum(nc * dc_next))

    _, _, cache = lstm_step_forward(xw, h, c, Wh)
    dxw, dh, dc = lstm_step_backward(dh_next, dc_next, cache)
    assert relative_error(dxw, numerical_gradient(f, xw)) < TOL
    assert relative_error(dh, numerical_gradient(f, h)) < TOL
    assert relative_error(dc, numerical_gradient(f, c)) < TOL


def test_gru_step_gradients() -> None:
    rng = np.random.default_rng(3)
    xw, h = rng.normal(size=(N, 3 * H)), rng.normal(size=(N, H))
    Wh, bhn = rng.normal(size=(H, 3 * H)) * 0.5, rng.normal(size=H)
    dnext = rng.normal(size=(N, H))
    f = lambda: float(np.sum(gru_step_forward(xw, h, Wh, bhn)[0] * dnext))  # noqa: E731
    _, cache = gru_step_forward(xw, h, Wh, bhn)
    dxw, dhw, dh = gru_step_backward(dnext, cache)
    assert relative_error(dxw, numerical_gradient(f, xw)) < TOL
    assert relative_error(dh, numerical_gradient(f, h)) < TOL
    # d(h Wh) is checked through the weight: dWh = h_prevᵀ dhw
    assert relative_error(h.T @ dhw, numerical_gradient(f, Wh)) < TOL


# ---------------------------------------------------------------- sequences
@pytest.mark.parametrize(("cell_name", "activation"), CELLS)
def test_sequence_gradients_for_inputs_weights_and_both_ends_of_the_state(
    cell_name: str, activation: str
) -> None:
    """BPTT over T steps: gradients of x, every weight (summed over steps) and the initial state,
    with an upstream gradient arriving both from every output and from the final state."""
    cell = get_cell(cell_name, activation)
    params = random_params(cell_name, activation)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(T, N, D))
    state0 = tuple(rng.normal(size=(N, H)) for _ in range(cell.num_states))
    dhs = rng.normal(size=(T, N, H))
    dstate = tuple(rng.normal(size=(N, H)) for _ in range(cell.num_states))

    def f() -> float:
        hs, stateT, _ = cell.forward(x, state0, params)
        return float(
            np.sum(hs * dhs) + sum(np.sum(s * d) for s, d in zip(stateT, dstate, strict=True))
        )

    _, _, cache = cell.forward(x, state0, params)
    dx, dstate0, grads = cell.backward(dhs, dstate, cache)
    assert set(grads) == set(params)
    assert relative_error(dx, numerical_gradient(f, x)) < TOL
    for s, ds in zip(state0, dstate0, strict=True):
        assert relative_error(ds, numerical_gradient(f, s)) < TOL
    for name, p in params.items():
        assert relative_error(grads[name], numerical_gradient(f, p)) < TOL, name


def reference_sequence(cell: str, activation: str, x: np.ndarray, params: dict) -> np.ndarray:
    """The textbook equations, one step and one gate at a time, no shared code with model/."""
    Wx, Wh, b = params["Wx"], params["Wh"], params["b"]
    h, c, out = np.zeros((N, H)), np.zeros((N, H)), []
    for t in range(x.shape[0]):
        if cell == "rnn":
            a = x[t] @ Wx + h @ Wh + b
            h = np.tanh(a) if activation == "tanh" else np.maximum(a, 0)
        elif cell == "lstm":
            a = [
                x[t] @ Wx[:, k * H : (k + 1) * H]
                + h @ Wh[:, k * H : (k + 1) * H]
                + b[k * H : (k + 1) * H]
                for k in range(4)
            ]
            i, f, o, g = sigmoid(a[0]), sigmoid(a[1]), sigmoid(a[2]), np.tanh(a[3])
            c = f * c + i * g
            h = o * np.tanh(c)
        else:
            xs = [x[t] @ Wx[:, k * H : (k + 1) * H] + b[k * H : (k + 1) * H] for k in range(3)]
            hs = [h @ Wh[:, k * H : (k + 1) * H] for k in range(3)]
            r, z = sigmoid(xs[0] + hs[0]), sigmoid(xs[1] + hs[1])
            n = np.tanh(xs[2] + r * (hs[2] + params["bhn"]))
            h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out)


@pytest.mark.parametrize(("cell_name", "activation"), CELLS)
def test_vectorised_sequence_equals_the_textbook_equations(cell_name: str, activation: str) -> None:
    cell = get_cell(cell_name, activation)
    params = random_params(cell_name, activation, seed=7)
    x = np.random.default_rng(8).normal(size=(T, N, D))
    state0 = tuple(np.zeros((N, H)) for _ in range(cell.num_states))
    hs, _, _ = cell.forward(x, state0, params)
    np.testing.assert_allclose(hs, reference_sequence(cell_name, activation, x, params), atol=1e-12)


@pytest.mark.parametrize(("cell_name", "activation"), CELLS)
def test_carrying_the_state_across_windows_equals_one_long_sequence(
    cell_name: str, activation: str
) -> None:
    cell = get_cell(cell_name, activation)
    params = random_params(cell_name, activation, seed=9)
    x = np.random.default_rng(10).normal(size=(6, N, D))
    state0 = tuple(np.zeros((N, H)) for _ in range(cell.num_states))
    whole, end_whole, _ = cell.forward(x, state0, params)
    first, mid, _ = cell.forward(x[:2], state0, params)
    second, end_parts, _ = cell.forward(x[2:], mid, params)
    np.testing.assert_allclose(np.concatenate([first, second]), whole, atol=1e-12)
    for a, b in zip(end_parts, end_whole, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_unknown_cell_and_activation_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown cell 'transformer'"):
        get_cell("transformer")
    with pytest.raises(ValueError, match="unknown activation 'sigmoid'"):
        get_cell("rnn", "sigmoid")
