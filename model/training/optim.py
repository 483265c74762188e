"""Gradient clipping by global norm, the optimisers (SGD with learning-rate decay, Adam), and a
cap on the spectral norm of recurrent matrices.

Optimisers update parameters in place and keep their state as named arrays, so a training run
can save and restore it (``state_dict`` / ``load_state_dict``) with the weights, and check a
restored state first (``check_state``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from model.network.layers import Grad, NonFiniteError, RowSparse

Arrays = dict[str, np.ndarray]
Shapes = Mapping[str, tuple[int, ...]]


def _values(g: Grad) -> np.ndarray:
    """The stored numbers of a gradient: the array itself, or a RowSparse's rows."""
    return g.rows if isinstance(g, RowSparse) else g


def global_norm(grads: Mapping[str, Grad]) -> float:
    """sqrt(Σ g²) over every gradient array, accumulated in float64."""
    total = 0.0
    for g in grads.values():
        flat = _values(g).ravel()
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def clip_scale(grads: Mapping[str, Grad], max_norm: float | None) -> tuple[float, float]:
    """(global norm, factor that brings it down to ``max_norm``; 1.0 when already within it).

    Raises NonFiniteError, naming the offending parameters, when any gradient holds NaN or
    infinity: clipping would silently spread the NaN into every weight.
    """
    norm = global_norm(grads)
    if not math.isfinite(norm):
        bad = [name for name, g in grads.items() if not np.isfinite(_values(g)).all()]
        raise NonFiniteError(f"non-finite gradient in {bad or 'the sum of squares (overflow)'}")
    if max_norm is not None and max_norm > 0 and norm > max_norm:
        return norm, max_norm / (norm + 1e-6)
    return norm, 1.0


def clip_grad_norm(grads: Mapping[str, Grad], max_norm: float | None) -> float:
    """Scale all gradients in place so their global norm is at most ``max_norm``; return the norm.

    The trainer instead passes ``clip_scale``'s factor to ``optimizer.step``, which folds it into
    the update and saves a pass over every gradient.
    """
    norm, scale = clip_scale(grads, max_norm)
    if scale != 1.0:
        for g in grads.values():
            if isinstance(g, RowSparse):
                g.rows *= scale
            else:
                g *= scale
    return norm


class SGD:
    """Stochastic gradient descent, optionally with momentum; ``decay`` lowers the learning rate."""

    def __init__(self, lr: float = 1.0, momentum: float = 0.0) -> None:
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.lr, self.momentum = lr, momentum
        self.velocity: Arrays = {}

    def step(
        self, params: Mapping[str, np.ndarray], grads: Mapping[str, Grad], grad_scale: float = 1.0
    ) -> None:
        """p -= lr * grad_scale * g for every parameter. The gradients are overwritten (used as
        scratch space, so no temporary the size of the model is allocated)."""
        for name, g in grads.items():
            if isinstance(g, RowSparse) and not self.momentum:
                g.rows *= self.lr * grad_scale
                params[name][g.ids] -= g.rows  # only the rows that have a gradient
                continue
            g = g.to_dense() if isinstance(g, RowSparse) else g
            if self.momentum:
                v = self.velocity.setdefault(name, np.zeros_like(g))
                v *= self.momentum
                v += g if grad_scale == 1.0 else grad_scale * g
                g, scale = v.copy(), self.lr
            else:
                scale = self.lr * grad_scale
            g *= scale
            params[name] -= g

    def decay(self, factor: float) -> None:
        """Multiply the learning rate by ``factor`` (e.g. 0.25 when validation stops improving)."""
        self.lr *= factor

    def state_dict(self) -> Arrays:
        state = {f"velocity.{k}": v for k, v in self.velocity.items()}
        state["lr"] = np.array(self.lr)
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.lr = float(state["lr"])
        self.velocity = {
            k[len("velocity.") :]: v.copy() for k, v in state.items() if k.startswith("velocity.")
        }

    def check_state(self, state: Mapping[str, np.ndarray], shapes: Shapes) -> None:
        """Raise ValueError, naming the tensor, unless ``state`` is one this SGD can have saved
        for parameters of ``shapes``: a positive ``lr``; with momentum, a velocity per parameter
        (or none before the first step)."""
        moments = {f"velocity.{k}": v for k, v in shapes.items()} if self.momentum else {}
        _check_keys(state, {"lr"}, moments)
        _check_lr(state["lr"])
        _check_moments(state, moments)


class Adam:
    """Adam (Kingma & Ba 2015) with bias-corrected first and second moment estimates, and an
    optional linear warm-up: over the first ``warmup`` updates the step grows from lr/warmup to
    lr. Early on the second moments rest on a few gradients and the steps come out too large;
    without the warm-up a tied model at lr 0.002 blew up in its second epoch (bench/RESULTS.md,
    "Training defaults"). The warm-up counts the updates ``t`` the state already keeps, so a
    resumed run continues it exactly."""

    def __init__(
        self,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        warmup: int = 0,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        if warmup < 0:
            raise ValueError(f"warmup must be 0 or more updates, got {warmup}")
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.warmup = warmup
        self.t = 0
        self.m: Arrays = {}
        self.v: Arrays = {}

    def step(
        self, params: Mapping[str, np.ndarray], grads: Mapping[str, Grad], grad_scale: float = 1.0
    ) -> None:
        """One Adam update from ``grad_scale * g``. The gradients are overwritten."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        step_size = self.current_lr * math.sqrt(1 - b2**self.t) / (1 - b1**self.t)  # bias corr.
        eps = self.eps * math.sqrt(
            1 - b2**self.t
        )  # eps applies to the corrected v, as in the paper
        for name, g in grads.items():
            g = g.to_dense() if isinstance(g, RowSparse) else g  # every moment decays each step
            if grad_scale != 1.0:
                g *= grad_scale
            m = self.m.setdefault(name, np.zeros_like(g))
            v = self.v.setdefault(name, np.zeros_like(g))
            m *= b1
            m += (1 - b1) * g  # first moment
            v *= b2
            v += (1 - b2) * (g * g)  # second moment
            update = np.sqrt(v)
            update += eps
            np.divide(m, update, out=update)
            update *= step_size
            params[name] -= update

    @property
    def current_lr(self) -> float:
        """The rate of the next update: ``lr``, scaled down linearly during the warm-up."""
        if self.warmup and self.t < self.warmup:
            return self.lr * max(self.t, 1) / self.warmup
        return self.lr

    def decay(self, factor: float) -> None:
        self.lr *= factor

    def state_dict(self) -> Arrays:
        state = {f"m.{k}": v for k, v in self.m.items()} | {f"v.{k}": v for k, v in self.v.items()}
        state["t"] = np.array(self.t)
        state["lr"] = np.array(self.lr)
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.t, self.lr = int(state["t"]), float(state["lr"])
        self.m = {k[2:]: v.copy() for k, v in state.items() if k.startswith("m.")}
        self.v = {k[2:]: v.copy() for k, v in state.items() if k.startswith("v.")}

    def check_state(self, state: Mapping[str, np.ndarray], shapes: Shapes) -> None:
        """Raise ValueError, naming the tensor, unless ``state`` is one this Adam can have saved
        for parameters of ``shapes``: step count ``t`` ≥ 0, a positive ``lr``, and both moments of
        every parameter once a step was taken (none before), finite, the second one ≥ 0."""
        t = state.get("t")
        if t is None or t.shape != () or t.dtype.kind not in "iu" or int(t) < 0:
            raise ValueError(f"optimizer tensor 't' must be an integer ≥ 0, got {t!r}")
        moments = {f"{m}.{k}": v for m in ("m", "v") for k, v in shapes.items()}
        _check_keys(state, {"t", "lr"}, moments if int(t) > 0 else {})
        _check_lr(state["lr"])
        _check_moments(state, moments if int(t) > 0 else {})
        negative = [k for k in state if k.startswith("v.") and (state[k] < 0).any()]
        if negative:
            raise ValueError(f"optimizer tensor {negative[0]!r}: a second moment below 0")


def _check_keys(state: Mapping[str, np.ndarray], scalars: set[str], moments: Shapes) -> None:
    expected = scalars | set(moments)
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(
            f"optimizer tensors do not match the parameters: missing {missing[:5]}, "
            f"unexpected {extra[:5]}"
        )


def _check_lr(lr: np.ndarray) -> None:
    if lr.shape != () or lr.dtype.kind != "f" or not 0 < float(lr) < math.inf:
        raise ValueError(f"optimizer tensor 'lr' must be a finite number > 0, got {lr!r}")


def _check_moments(state: Mapping[str, np.ndarray], shapes: Shapes) -> None:
    for key, shape in shapes.items():
        value = state[key]
        if value.shape != shape or value.dtype.kind != "f":
            raise ValueError(
                f"optimizer tensor {key!r}: {value.dtype} {value.shape}, expected floats {shape}"
            )
        if not np.isfinite(value).all():
            raise ValueError(f"optimizer tensor {key!r}: holds NaN or infinity")


class NormCap:
    """Keeps the spectral norm ‖W‖₂ (largest singular value) of chosen matrices at most ``limit``.

    Why: a ReLU RNN's state ``h_t = relu(x_t Wx + h_{t-1} Wh + b)`` is unbounded. Once training
    makes ‖Wh‖₂ > 1 the state carried along a stream can grow exponentially, and over the long
    streams of training (an epoch per batch column) or of ``nextword eval`` (a whole file) it
    overflows: NaN. Since relu is 1-Lipschitz, ‖h_t‖ ≤ ‖Wh‖₂ ‖h_{t-1}‖ + ‖x_t Wx + b‖, so with
    ‖Wh‖₂ ≤ 1 it grows at most linearly (polynomially through stacked layers), never overflows.

    ``apply`` runs after every update: one power-iteration step warm-started from the previous
    right singular vector (as in spectral normalisation, Miyato et al. 2018) estimates ‖W‖₂ from
    below, and W is scaled down when the estimate exceeds the limit. ``apply_exactly`` uses the
    SVD; the trainer calls it before each validation, so every saved model meets the bound.
    """

    ITERATIONS = 5  # per update: one update can move W far (SGD at lr 20 steps up to 5 in norm)

    def __init__(self, names: list[str], limit: float) -> None:
        self.names, self.limit = names, limit
        self.u: Arrays = {}  # name → estimated right singular vector of W (W.shape[1],)

    def apply(self, params: Mapping[str, np.ndarray]) -> None:
        for name in self.names:
            W = params[name]
            u = self.u.get(name)
            if u is None:
                u = np.full(W.shape[1], 1 / math.sqrt(W.shape[1]), dtype=W.dtype)
            for _ in range(self.ITERATIONS):
                v = W @ u
                v /= max(float(np.linalg.norm(v)), 1e-30)
                u = v @ W  # Wᵀ v
                sigma = float(np.linalg.norm(u))  # = vᵀ W u for the normalised u: ≤ ‖W‖₂
                u /= max(sigma, 1e-30)
            self.u[name] = u
            if sigma > self.limit:
                W *= W.dtype.type(self.limit / sigma)

    def apply_exactly(self, params: Mapping[str, np.ndarray]) -> None:
        for name in self.names:
            W = params[name]
            sigma = float(np.linalg.norm(W.astype(np.float64), 2))
            if sigma > self.limit:
                W *= W.dtype.type(self.limit / sigma * (1 - 1e-6))  # float32 rounding stays below

    def state_dict(self) -> Arrays:
        return {f"u.{k}": v for k, v in self.u.items()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.u = {k[2:]: v.copy() for k, v in state.items()}

    def check_state(self, state: Mapping[str, np.ndarray], shapes: Shapes) -> None:
        """Raise ValueError unless ``state`` holds one finite unit vector (W.shape[1],) per capped
        matrix, or none (before the first update)."""
        vectors = {f"u.{k}": (shapes[k][1],) for k in self.names}
        if state and set(state) != set(vectors):
            missing, extra = sorted(set(vectors) - set(state)), sorted(set(state) - set(vectors))
            raise ValueError(f"norm-cap vectors: missing {missing}, unexpected {extra}")
        for key, value in state.items():
            if value.shape != vectors[key] or not np.isfinite(value).all():
                raise ValueError(f"norm-cap vector {key!r}: expected finite {vectors[key]}")
            if abs(float(np.linalg.norm(value)) - 1) > 1e-3:
                raise ValueError(f"norm-cap vector {key!r}: not a unit vector")


def make_optimizer(name: str, lr: float, warmup: int = 0) -> SGD | Adam:
    """The optimiser called ``name`` (sgd or adam); ``warmup`` updates for Adam."""
    if name == "sgd":
        if warmup:
            raise ValueError("a warm-up is for --optimizer adam; SGD takes none (--warmup 0)")
        return SGD(lr)
    if name == "adam":
        return Adam(lr, warmup=warmup)
    raise ValueError(f"unknown optimizer {name!r}: expected 'sgd' or 'adam'")
