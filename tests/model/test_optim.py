"""Optimisers and gradient clipping, checked against their formulas written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.network.layers import NonFiniteError, RowSparse
from model.training.optim import SGD, Adam, clip_grad_norm, clip_scale, global_norm, make_optimizer


def test_global_norm_covers_dense_and_row_sparse_gradients() -> None:
    grads = {
        "a": np.array([3.0, 0.0]),
        "b": RowSparse(np.array([2]), np.array([[4.0, 12.0]]), (5, 2)),
    }
    assert global_norm(grads) == pytest.approx(13.0)


def test_clip_grad_norm_scales_to_the_maximum_and_leaves_small_gradients_alone() -> None:
    grads = {"a": np.array([3.0, 4.0]), "b": np.array([[12.0]])}
    assert clip_grad_norm(grads, 6.5) == pytest.approx(13.0)
    assert global_norm(grads) == pytest.approx(6.5, rel=1e-6)
    np.testing.assert_allclose(grads["a"] / grads["b"][0, 0], [3 / 12, 4 / 12])  # direction kept
    small = {"a": np.array([0.3, 0.4])}
    assert clip_grad_norm(small, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(small["a"], [0.3, 0.4])


def test_non_finite_gradients_raise_and_name_the_parameter() -> None:
    grads = {"rnn.0.Wh": np.array([1.0, np.nan]), "output.b": np.array([1.0])}
    with pytest.raises(NonFiniteError, match="non-finite gradient in \\['rnn.0.Wh'\\]"):
        clip_scale(grads, 5.0)


def test_sgd_step_and_learning_rate_decay() -> None:
    params = {"w": np.array([1.0, 2.0])}
    opt = SGD(lr=0.5)
    opt.step(params, {"w": np.array([2.0, -2.0])}, grad_scale=0.5)
    np.testing.assert_allclose(params["w"], [1.0 - 0.5 * 0.5 * 2.0, 2.0 + 0.5 * 0.5 * 2.0])
    opt.decay(0.25)
    assert opt.lr == pytest.approx(0.125)


def test_sgd_on_a_row_sparse_gradient_equals_the_dense_update() -> None:
    rng = np.random.default_rng(0)
    start = rng.normal(size=(6, 3))
    sparse = RowSparse(np.array([1, 4]), rng.normal(size=(2, 3)), (6, 3))
    dense_params, sparse_params = {"E": start.copy()}, {"E": start.copy()}
    SGD(lr=0.3).step(dense_params, {"E": sparse.to_dense()}, grad_scale=0.7)
    SGD(lr=0.3).step(sparse_params, {"E": sparse}, grad_scale=0.7)
    np.testing.assert_allclose(sparse_params["E"], dense_params["E"], atol=1e-15)


def test_sgd_with_momentum() -> None:
    params = {"w": np.array([0.0])}
    opt = SGD(lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.step(params, {"w": np.array([1.0])})
    assert params["w"][0] == pytest.approx(-0.1 * 1.0 - 0.1 * (0.9 * 1.0 + 1.0))


def test_adam_matches_the_paper_for_three_steps() -> None:
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    params = {"w": np.array([0.5, -1.0])}
    grads_seq = [np.array([0.1, -0.2]), np.array([0.3, 0.0]), np.array([-0.2, 0.4])]
    opt = Adam(lr, b1, b2, eps)
    w, m, v = params["w"].copy(), np.zeros(2), np.zeros(2)
    for t, g in enumerate(grads_seq, start=1):
        opt.step(params, {"w": g.copy()})
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    np.testing.assert_allclose(params["w"], w, rtol=1e-12)


def test_adam_state_round_trips() -> None:
    params = {"w": np.array([1.0, 2.0])}
    a = Adam(0.1)
    a.step(params, {"w": np.array([0.5, 0.5])})
    b = Adam(0.1)
    b.load_state_dict({k: np.array(v) for k, v in a.state_dict().items()})
    p1, p2 = {"w": params["w"].copy()}, {"w": params["w"].copy()}
    a.step(p1, {"w": np.array([1.0, -1.0])})
    b.step(p2, {"w": np.array([1.0, -1.0])})
    np.testing.assert_array_equal(p1["w"], p2["w"])
    assert b.t == 2


def test_make_optimizer() -> None:
    assert isinstance(make_optimizer("sgd", 1.0), SGD)
    assert isinstance(make_optimizer("adam", 1e-3), Adam)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        make_optimizer("rmsprop", 1.0)
    with pytest.raises(ValueError, match="learning rate must be positive"):
        SGD(lr=0.0)
    assert math.isclose(make_optimizer("sgd", 2.0).lr, 2.0)
