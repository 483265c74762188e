"""Gradient clipping by global norm and the optimisers (SGD with learning-rate decay, Adam).

Optimisers update parameters in place and keep their state as named arrays, so a training run
can save and restore it (``state_dict`` / ``load_state_dict``) with the weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from model.layers import Grad, NonFiniteError, RowSparse

Arrays = dict[str, np.ndarray]


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


class Adam:
    """Adam (Kingma & Ba 2015) with bias-corrected first and second moment estimates."""

    def __init__(
        self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ) -> None:
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.t = 0
        self.m: Arrays = {}
        self.v: Arrays = {}

    def step(
        self, params: Mapping[str, np.ndarray], grads: Mapping[str, Grad], grad_scale: float = 1.0
    ) -> None:
        """One Adam update from ``grad_scale * g``. The gradients are overwritten."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        step_size = self.lr * math.sqrt(1 - b2**self.t) / (1 - b1**self.t)  # bias corrections
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


def make_optimizer(name: str, lr: float) -> SGD | Adam:
    """The optimiser called ``name`` (sgd or adam)."""
    if name == "sgd":
        return SGD(lr)
    if name == "adam":
        return Adam(lr)
    raise ValueError(f"unknown optimizer {name!r}: expected 'sgd' or 'adam'")
