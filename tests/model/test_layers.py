"""Feed-forward layers: values, numerical stability, and gradients against central differences."""

from __future__ import annotations

import numpy as np
import pytest

from model.network.layers import (
    FEW_ROWS,
    SAFE_EXP_RANGE,
    NonFiniteError,
    RowSparse,
    dropout_backward,
    dropout_forward,
    embedding_backward,
    embedding_forward,
    log_softmax,
    softmax,
    softmax_cross_entropy,
    softmax_output_loss,
    sum_rows_by_id,
    temporal_affine_backward,
    temporal_affine_forward,
    times_rows,
)
from tests.gradcheck import numerical_gradient, relative_error

TOL = 1e-7
rng = np.random.default_rng(0)


def test_softmax_of_1_2_3_4_matches_the_textbook_values() -> None:
    p = softmax(np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_allclose(p, [0.0320586, 0.0871443, 0.2368828, 0.6439142], atol=1e-7)
    assert p.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_and_log_softmax_do_not_overflow_at_plus_minus_1e4(dtype: type) -> None:
    x = np.array([[1e4, -1e4, 0.0, 1e4 - 1.0]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        p = softmax(x)
        lp = log_softmax(x)
    assert np.isfinite(lp).all()
    np.testing.assert_allclose(
        p[0], [1 / (1 + np.exp(-1)), 0, 0, np.exp(-1) / (1 + np.exp(-1))], atol=1e-6
    )
    np.testing.assert_allclose(np.exp(lp), p, atol=1e-6)


def test_log_softmax_equals_log_of_softmax() -> None:
    x = rng.normal(size=(3, 7))
    np.testing.assert_allclose(log_softmax(x), np.log(softmax(x)), atol=1e-12)


def test_embedding_lookup_equals_one_hot_product() -> None:
    W = rng.normal(size=(9, 4))
    ids = np.array([[0, 3], [8, 3]])
    out, _ = embedding_forward(ids, W)
    one_hot = np.eye(9)[ids]  # (T, N, V)
    np.testing.assert_allclose(out, one_hot @ W)


def test_embedding_gradient_matches_numerical() -> None:
    W = rng.normal(size=(6, 3))
    ids = np.array([[1, 4], [1, 5], [0, 1]])  # a repeated id must accumulate
    dout = rng.normal(size=(3, 2, 3))
    _, cache = embedding_forward(ids, W)
    grad = embedding_backward(dout, cache)
    num = numerical_gradient(lambda: float(np.sum(embedding_forward(ids, W)[0] * dout)), W)
    assert isinstance(grad, RowSparse)
    assert sorted(grad.ids.tolist()) == [0, 1, 4, 5]
    assert relative_error(grad.to_dense(), num) < TOL


def test_sum_rows_by_id_equals_numpy_add_at() -> None:
    ids = rng.integers(0, 9, size=40)
    rows = rng.normal(size=(40, 3))
    expected = np.zeros((9, 3))
    np.add.at(expected, ids, rows)
    distinct, sums = sum_rows_by_id(ids, rows)
    assert distinct.tolist() == sorted(set(ids.tolist()))
    np.testing.assert_allclose(sums, expected[distinct], atol=1e-12)


def test_temporal_affine_gradients_match_numerical() -> None:
    x, W, b = rng.normal(size=(3, 2, 4)), rng.normal(size=(5, 4)), rng.normal(size=5)
    dout = rng.normal(size=(3, 2, 5))
    _, cache = temporal_affine_forward(x, W, b)
    dx, dW, db = temporal_affine_backward(dout, cache)
    f = lambda: float(np.sum(temporal_affine_forward(x, W, b)[0] * dout))  # noqa: E731
    for analytic, param in ((dx, x), (dW, W), (db, b)):
        assert relative_error(analytic, numerical_gradient(f, param)) < TOL


def test_cross_entropy_gradient_matches_numerical_with_mask() -> None:
    logits = rng.normal(size=(3, 2, 6))
    targets = rng.integers(0, 6, size=(3, 2))
    mask = np.array([[1, 1], [1, 0], [0, 1]], dtype=float)
    loss, dlogits = softmax_cross_entropy(logits, targets, mask)
    num = numerical_gradient(lambda: softmax_cross_entropy(logits, targets, mask)[0], logits)
    assert relative_error(dlogits, num) < TOL
    # the loss is the mean negative log-probability of the counted targets
    lp = log_softmax(logits)
    picked = np.take_along_axis(lp, targets[..., None], -1)[..., 0]
    assert loss == pytest.approx(-(picked * mask).sum() / mask.sum(), rel=1e-12)


def test_cross_entropy_is_finite_for_huge_logits_and_raises_on_nan() -> None:
    logits = np.array([[[1e4, -1e4, 0.0]]], dtype=np.float32)
    loss, grad = softmax_cross_entropy(logits, np.array([[1]]))
    assert loss == pytest.approx(2e4, rel=1e-6)
    assert np.isfinite(grad).all()
    with pytest.raises(NonFiniteError, match="cross-entropy is nan"):
        softmax_cross_entropy(np.array([[[np.nan, 0.0]]]), np.array([[0]]))


@pytest.mark.parametrize("scale", [1.0, 3 * SAFE_EXP_RANGE])  # without and with the max shift
def test_fused_output_loss_equals_affine_then_cross_entropy(scale: float) -> None:
    x, W, b = rng.normal(size=(4, 3, 5)), rng.normal(size=(9, 5)) * scale, rng.normal(size=9)
    targets = rng.integers(0, 9, size=(4, 3))
    targets[0, :] = 2  # repeated targets must accumulate in dW and db
    mask = (rng.random((4, 3)) > 0.3).astype(float)
    loss, dx, dW, db = softmax_output_loss(x, W, b, targets, mask)
    logits, cache = temporal_affine_forward(x, W, b)
    ref_loss, dlogits = softmax_cross_entropy(logits, targets, mask)
    ref = temporal_affine_backward(dlogits, cache)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for got, want in zip((dx, dW, db), ref, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_fused_output_loss_gradients_match_numerical() -> None:
    x, W, b = rng.normal(size=(3, 2, 4)), rng.normal(size=(7, 4)), rng.normal(size=7)
    targets = rng.integers(0, 7, size=(3, 2))
    _, dx, dW, db = softmax_output_loss(x, W, b, targets)
    f = lambda: softmax_output_loss(x, W, b, targets)[0]  # noqa: E731
    for analytic, param in ((dx, x), (dW, W), (db, b)):
        assert relative_error(analytic, numerical_gradient(f, param)) < TOL


def test_inverted_dropout_keeps_the_expected_value_and_is_off_at_inference() -> None:
    x = np.ones((200, 50, 10), dtype=np.float32)
    out, mask = dropout_forward(x, 0.4, np.random.default_rng(1))
    assert mask is not None
    assert (out == 0).mean() == pytest.approx(0.4, abs=0.01)  # units dropped
    assert out.mean() == pytest.approx(1.0, abs=0.01)  # survivors scaled by 1/(1-p)
    same, no_mask = dropout_forward(x, 0.4, None)  # inference
    assert same is x and no_mask is None


def test_dropout_gradient_uses_the_same_mask() -> None:
    x = rng.normal(size=(3, 2, 4))
    dout = rng.normal(size=(3, 2, 4))
    _, mask = dropout_forward(x, 0.5, np.random.default_rng(2))
    dx = dropout_backward(dout, mask)
    num = numerical_gradient(lambda: float(np.sum(x * mask * dout)), x)
    assert relative_error(dx, num) < TOL


@pytest.mark.parametrize("rows", [0, 1, 2, 3, FEW_ROWS, FEW_ROWS + 1])
@pytest.mark.parametrize("words", [30, 3000])  # below and past SMALL_PRODUCT: every branch
def test_times_rows_is_the_product_with_the_transpose_in_every_orientation(
    rows: int, words: int
) -> None:
    x = rng.standard_normal((rows, 50))
    W = rng.standard_normal((words, 50))
    product = times_rows(x, W)
    np.testing.assert_allclose(product, x @ W.T, rtol=1e-10, atol=1e-10)
    assert product.shape == (rows, words) and product.flags.c_contiguous  # rows read in place
    if rows == 1:  # one state without the batch axis
        np.testing.assert_allclose(times_rows(x[0], W), product[0], rtol=1e-10, atol=1e-10)
