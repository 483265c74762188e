"""Feed-forward layers as pure forward/backward pairs, time-major.

Shape letters: T time steps, N batch, D input size, H hidden size, V vocabulary size.
Every ``*_forward`` returns ``(out, cache)``; the matching ``*_backward`` takes the upstream
gradient and that cache and returns the gradients of the forward's inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Softmax is shift-invariant, so the row max is subtracted only when exp could overflow or the
# whole row underflow: |max| ≤ 60 keeps exp(max) within float32 (overflow at 88.7) with room for a
# sum over a large vocabulary. Skipping the shift saves a full pass over the (T*N, V) logits.
SAFE_EXP_RANGE = 60.0
FEW_ROWS = 16  # up to this many rows of x, ``times_rows`` may take the product as W xᵀ
SMALL_PRODUCT = 64**3  # multiply-adds up to which OpenBLAS's small-matrix kernels take either


def times_rows(x: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``x Wᵀ`` (M, R) for x (M, H) and weight rows W (R, H), C-contiguous; x (H,) gives (R,).

    OpenBLAS (numpy's wheels) multiplies a few rows by a transposed matrix 1.5–3× slower than it
    multiplies the matrix by their transpose: at M = 2 and R = 10,000, 1.0 ms against 0.4 ms
    (bench/RESULTS.md, "The orientation of the output product"). So once the product is past
    ``SMALL_PRODUCT`` (below it the small-matrix kernels are fast either way), two rows are
    two matrix-vector products and up to ``FEW_ROWS`` are ``(W xᵀ)ᵀ``. One row is a
    matrix-vector product either way, and many rows are as fast as ``x Wᵀ``.
    """
    M, H = x.shape if x.ndim == 2 else (1, len(x))
    if M < 2 or M > FEW_ROWS or M * len(W) * H <= SMALL_PRODUCT:
        product: np.ndarray = x @ W.T
        return product
    if M == 2:
        out = np.empty((M, len(W)), dtype=np.result_type(x, W))
        for row in range(M):
            np.matmul(W, x[row], out=out[row])
        return out
    return np.ascontiguousarray((W @ x.T).T)


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN or infinite: training must stop rather than go on silently."""


def sum_rows_by_id(ids: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct ids in increasing order, the sum of the rows of each), shapes (K,), (K, D).

    Rows are sorted by id and summed per id with one ``reduceat``: about three times faster
    than ``np.add.at`` for a batch of a few hundred ids.
    """
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    return sorted_ids[starts], np.add.reduceat(rows[order], starts, axis=0)


@dataclass
class RowSparse:
    """A gradient that is zero outside a few rows: the embedding rows of the words a batch read.

    Dense equivalent: ``zeros(shape)`` with ``[ids] = rows``. Clipping and SGD work on the rows
    alone instead of on a (V, D) array that is almost all zeros.
    """

    ids: np.ndarray  # (K,) distinct row ids
    rows: np.ndarray  # (K, D)
    shape: tuple[int, int]  # (V, D)

    def to_dense(self) -> np.ndarray:
        dense = np.zeros(self.shape, dtype=self.rows.dtype)
        dense[self.ids] = self.rows
        return dense

    def __imul__(self, scale: float) -> RowSparse:
        self.rows *= scale
        return self


Grad = np.ndarray | RowSparse


def embedding_forward(ids: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, Any]:
    """Word vectors: each one-hot vector times ``W``, computed as a row lookup.

    - ids: integer ids, shape (T, N).
    - W: embedding matrix, shape (V, D).
    Returns out (T, N, D) and the cache.
    """
    return W[ids], (ids, W.shape)


def embedding_backward(dout: np.ndarray, cache: Any) -> RowSparse:
    """Gradient of the embedding matrix (V, D): rows of ``dout`` summed by id, kept row-sparse."""
    ids, shape = cache
    distinct, sums = sum_rows_by_id(ids.ravel(), dout.reshape(-1, shape[1]))
    return RowSparse(distinct, sums, shape)


def temporal_affine_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, Any]:
    """Output projection for all time steps in one matrix product.

    - x: hidden states, shape (T, N, H).
    - W: output weights, shape (V, H) (the layout of the embedding, so the two can be tied).
    - b: output bias, shape (V,).
    Returns logits (T, N, V) and the cache.
    """
    T, N, H = x.shape
    out = x.reshape(T * N, H) @ W.T  # (T*N, V)
    out += b  # in place: a second (T*N, V) temporary would cost as much as the product
    return out.reshape(T, N, -1), (x, W)


def temporal_affine_backward(
    dout: np.ndarray, cache: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx (T, N, H), dW (V, H), db (V,)) of the output projection."""
    x, W = cache
    T, N, H = x.shape
    dout2 = dout.reshape(T * N, -1)  # (T*N, V)
    dx = (dout2 @ W).reshape(T, N, H)
    dW = dout2.T @ x.reshape(T * N, H)  # summed over all time steps and batch rows
    return dx, dW, dout2.sum(axis=0)


def exp_rows(
    z: np.ndarray, shift: bool = True, blas_sum: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The softmax normaliser of each row of logits ``z`` (..., V), computed in place.

    ``z`` becomes ``exp(z − c)`` and ``(c, total)`` come back, both of shape (...,), with
    ``total = Σ_j exp(z_j − c)``; so ``log p_j = z_j − c − log total`` (z as it was) and
    ``p = z / total`` (z as it is now). With ``shift``, ``c`` is the row's max, so exp cannot
    overflow and ``total ≥ 1``; without, ``c`` is 0, for callers that know the logits are small.
    This is the one place the log-normaliser is written; every softmax in the project uses it.
    The row sums are numpy's pairwise ``.sum``, or with ``blas_sum`` a BLAS product with a vector
    of ones: about twice as fast on (m, V) logits, and a little less exact (float32 sums differ
    by up to ~1e-6), so the hot scoring and training paths use it and the others do not.
    """
    if shift:
        c = z.max(axis=-1)
        z -= c[..., None]
    else:
        c = np.zeros(z.shape[:-1], dtype=z.dtype)
    np.exp(z, out=z)
    return c, (z @ np.ones(z.shape[-1], dtype=z.dtype)) if blas_sum else z.sum(axis=-1)


def log_softmax_at(
    z: np.ndarray, rows: np.ndarray, cols: np.ndarray, shift: bool = True, blas_sum: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``log softmax(z)[rows, cols]`` for logits ``z`` (M, V), and each row's ``total``.

    Only the wanted entries and the normaliser are formed, never the (M, V) log-probabilities;
    ``z`` is overwritten with ``exp(z − c)`` (``exp_rows``), which a gradient can reuse.
    """
    shifted = z[rows, cols]
    c, total = exp_rows(z, shift, blas_sum)
    shifted -= c[rows]
    return shifted - np.log(total)[rows], total


def _float_type(x: np.ndarray) -> np.dtype[Any]:
    """x's own float type; float64 for integers (as ``np.exp`` would give)."""
    x = np.asarray(x)
    return x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)


def softmax(x: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis (a new array; ``x`` is kept)."""
    z = np.array(x, dtype=_float_type(x))
    _, total = exp_rows(z)
    probabilities: np.ndarray = z / total[..., None]
    return probabilities


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis: ``x − c − log Σ exp(x − c)`` (a new array)."""
    z = np.array(x, dtype=_float_type(x))
    c, total = exp_rows(z)
    log_p: np.ndarray = x - c[..., None] - np.log(total)[..., None]
    return log_p


def softmax_cross_entropy(
    logits: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray | None = None,
    overwrite_logits: bool = False,
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy (nats per counted token) and its gradient with respect to the logits.

    - logits: shape (T, N, V); with ``overwrite_logits`` its memory is reused for the gradient
      (saves a (T, N, V) copy in training, where the logits are not needed afterwards).
    - targets: ids, shape (T, N).
    - mask: shape (T, N), true (or a weight) where the target counts; padding and positions that
      are not predicted (e.g. ``<s>`` after ``</s>``) are 0. ``None`` counts every position.
    Returns (loss, dlogits of shape (T, N, V)). Raises NonFiniteError on a NaN or infinite loss.
    """
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)
    rows = np.arange(flat.shape[0])
    y = targets.ravel()
    weight = np.ones(flat.shape[0], dtype=flat.dtype) if mask is None else mask.ravel()
    count = float(weight.sum())
    if count == 0:
        raise ValueError("softmax_cross_entropy: the mask selects no position")
    z = flat if overwrite_logits else flat.copy()  # (T*N, V)
    shift = bool(np.abs(z.max(axis=1)).max() > SAFE_EXP_RANGE)  # else exp cannot overflow
    log_p, total = log_softmax_at(z, rows, y, shift)
    nll = -log_p  # -log p(target)
    loss = float(np.dot(weight.astype(np.float64), nll.astype(np.float64)) / count)
    if not np.isfinite(loss):
        raise NonFiniteError(f"cross-entropy is {loss}: the logits contain NaN or infinity")
    scale = (weight / count).astype(flat.dtype)
    z *= (scale / total)[:, None]  # dlogits = p * w / count ...
    z[rows, y] -= scale  # ... minus one-hot(target) * w / count
    return loss, z.reshape(logits.shape)


def logit_bound(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> float:
    """An upper bound on |x_i · W_j + b_j| over all rows i, j (Cauchy–Schwarz: ‖x_i‖ ‖W_j‖ + |b_j|).

    Costs a pass over W (V, H) instead of one over the (T*N, V) logits, and for a healthy
    model is far below SAFE_EXP_RANGE, so the max-shift pass can be skipped safely.
    """
    x_norm = np.sqrt(np.einsum("ij,ij->i", x, x).max())
    w_norm = np.sqrt(np.einsum("ij,ij->i", W, W).max())
    return float(x_norm * w_norm + np.abs(b).max())


def softmax_output_loss(
    x: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray | None = None,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Output projection, softmax and mean cross-entropy with all their gradients, fused.

    The same maths as ``temporal_affine_forward`` → ``softmax_cross_entropy`` →
    ``temporal_affine_backward`` (the tests hold it to that), arranged for training speed:

    - Rows whose target is not counted (mask 0) are left out of the (T*N, V) products.
    - The logits' gradient ``dlogits_i = (m_i / count) (p_i − onehot(y_i))`` is
      ``s_i (exp(z_i) − total_i onehot(y_i))`` with ``s_i = m_i / (count · total_i)``. So only
      one entry per row of ``exp(z)`` changes, and the row weights ``s`` go into the small
      factor of each product instead of a pass over the (T*N, V) matrix:
      ``dx = s ⊙ (G W)``, ``dW = Gᵀ (s ⊙ x)``, ``db = sᵀ G``.

    - x: top-layer outputs (T, N, H); W: (V, H); b: (V,); targets: (T, N); mask: (T, N) or None.
    Returns (loss, dx (T, N, H), dW (V, H), db (V,)).
    """
    T, N, H = x.shape
    x_all, y, weight = x.reshape(T * N, H), targets.ravel(), None
    rows: slice | np.ndarray = slice(None)
    if mask is not None:
        weight = mask.ravel().astype(x.dtype)
        rows = np.flatnonzero(weight)  # the counted positions
        x_all, y, weight = x_all[rows], y[rows], weight[rows]
    count = float(len(y) if weight is None else weight.sum())
    if count == 0:
        raise ValueError("softmax_output_loss: the mask selects no position")
    z = x_all @ W.T  # (M, V) logits of the M counted rows, turned into exp(z) in place
    z += b
    picked = np.arange(len(y)), y
    shift = logit_bound(x_all, W, b) > SAFE_EXP_RANGE  # else exp cannot overflow: skip a pass
    log_p, total = log_softmax_at(z, *picked, shift=shift, blas_sum=True)
    nll = (-log_p).astype(np.float64)  # -log p(target), summed in float64
    loss = float(nll.mean() if weight is None else np.dot(weight.astype(np.float64), nll) / count)
    if not np.isfinite(loss):
        raise NonFiniteError(f"cross-entropy is {loss}: the logits contain NaN or infinity")
    s = (1 if weight is None else weight) / (x.dtype.type(count) * total)  # (M,) row weights
    z[picked] -= total  # G = exp(z) − total · onehot(y)
    dx = np.zeros((T * N, H), dtype=x.dtype)
    dx[rows] = (z @ W) * s[:, None]
    dW = z.T @ (x_all * s[:, None])
    db = s @ z
    return loss, dx.reshape(T, N, H), dW, db


def dropout_forward(
    x: np.ndarray, p: float, rng: np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Inverted dropout: zero each unit with probability ``p`` and scale the rest by 1/(1-p).

    With ``rng`` None (inference) or ``p`` 0 this is the identity, so nothing changes at test time.
    Returns (out, mask) where mask is None when no dropout was applied.
    """
    if rng is None or p <= 0.0:
        return x, None
    keep = 1.0 - p
    mask = (rng.random(x.shape, dtype=np.float32) < keep).astype(x.dtype) / x.dtype.type(keep)
    return x * mask, mask


def dropout_backward(dout: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Gradient through inverted dropout: the same mask and scale."""
    return dout if mask is None else dout * mask
