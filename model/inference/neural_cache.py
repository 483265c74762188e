"""A neural cache over the history (Grave et al. 2017): words that were just said are likely
again, and more so after a context like the one they followed.

The network's top-layer output ``h_t`` (what its softmax reads) after each position of the text
so far is remembered with the token that came next. At a new position,

    P_cache(w | h_t) = Σ_i exp(θ · h_t·h_i) [x_{i+1} = w] / Σ_i exp(θ · h_t·h_i)

over the last ``size`` positions i < t, and the model's distribution is mixed with it,

    P(w) = (1 − λ) P_model(w) + λ P_cache(w),

which stays exactly normalised: P_cache is a distribution over the tokens of the window (a
subset of the vocabulary, ``<unk>`` included), so the mixture sums to 1 wherever P_model does.
With nothing remembered yet P = P_model. θ, λ and the size are fitted on held-out running text.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from model.text.vocab import Vocabulary

BLOCK = 256  # query positions scored together against the memory (bounds the score matrix)
MAX_SIZE = 8192  # the most positions a cache may remember (bounds its memory and its scoring)
MAX_THETA = 1000.0  # sharper than any useful cache (h·h' ≤ H for outputs bounded by 1)
FIELDS = ("theta", "weight", "size")


@dataclass(frozen=True)
class CacheSettings:
    """θ (how sharply a context must match), λ (the cache's share) and the window size."""

    theta: float
    weight: float
    size: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.theta) and 0 <= self.theta <= MAX_THETA):
            raise ValueError(f"cache theta must be a number in [0, {MAX_THETA:g}], got "
                             f"{self.theta!r}")  # fmt: skip
        if not (math.isfinite(self.weight) and 0 <= self.weight < 1):
            raise ValueError(f"cache weight must be in [0, 1), got {self.weight!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise ValueError(f"cache size must be a whole number, got {self.size!r}")
        if not 1 <= self.size <= MAX_SIZE:
            raise ValueError(f"cache size must be in [1, {MAX_SIZE}], got {self.size!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"theta": self.theta, "weight": self.weight, "size": self.size}

    @classmethod
    def from_dict(cls, data: Any) -> CacheSettings:
        """The checkpoint's ``cache`` section, checked (ValueError naming what is wrong)."""
        if not isinstance(data, dict) or set(data) != {"theta", "weight", "size"}:
            raise ValueError(f"the cache section must hold theta, weight and size, got {data!r}")
        theta, weight = data["theta"], data["weight"]
        for name, value in (("theta", theta), ("weight", weight)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"cache {name} must be a number, got {value!r}")
        try:
            return cls(float(theta), float(weight), data["size"])
        except OverflowError:  # an integer too large for a float
            raise ValueError("cache theta and weight must be in range") from None

    @classmethod
    def merged(cls, base: CacheSettings | None, overrides: dict[str, Any]) -> CacheSettings:
        """``base`` with the fields ``overrides`` gives (a request's); a model without a cache
        needs all three. ValueError naming what is missing or wrong."""
        if base is None and set(overrides) != set(FIELDS):
            missing = [f for f in FIELDS if f not in overrides]
            raise ValueError(
                f"this model has no cache of its own, so give all of theta, weight and size "
                f"(missing: {', '.join(missing)}; `nextword tune --text` fits them)"
            )
        values = {} if base is None else base.to_dict()
        return cls.from_dict(values | overrides)


@dataclass(frozen=True)
class Memory:
    """Remembered positions, oldest first: each top-layer output and the token after it."""

    keys: np.ndarray  # (n, H) float32
    next_ids: np.ndarray  # (n,) int64
    size: int | None = None  # the most positions it keeps (None: every one given)

    @classmethod
    def empty(cls, hidden_size: int) -> Memory:
        return cls(np.zeros((0, hidden_size), np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.next_ids)

    def holds(self, size: int) -> bool:
        """Whether it keeps the last ``size`` positions of its text (it was built with as many)."""
        return self.size is None or self.size >= size

    def extended(self, keys: np.ndarray, next_ids: np.ndarray, size: int) -> Memory:
        """This memory with more positions after it, the last ``size`` kept."""
        all_keys = np.concatenate([self.keys, keys.astype(np.float32)])[-size:]
        all_ids = np.concatenate([self.next_ids, next_ids])[-size:].astype(np.int64)
        return Memory(all_keys, all_ids, size)


def word_codes(vocab: Vocabulary, tokens: Sequence[str]) -> np.ndarray:
    """What a memory remembers of each token: its vocabulary id, or for a word outside the
    vocabulary (a literal ``<unk>`` included) a negative code of its string, so that a pointer
    can name the word itself and not only ``<unk>`` (63 bits of blake2b: no two strings of one
    request share a code in practice)."""
    ids = vocab.encode(tokens).astype(np.int64)
    for i, token in enumerate(tokens):
        if ids[i] == vocab.unk_id:
            ids[i] = oov_code(token)
    return ids


def oov_code(token: str) -> int:
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
    return -1 - (int.from_bytes(digest, "little") >> 1)


class PointerProbs(NamedTuple):
    """A pointer's (a cache's or the bias's) probability of each target: of the target's own
    string, of the class of every string outside the vocabulary, and whether it remembered
    anything there (where not, it has no say)."""

    same: np.ndarray  # (n,) float64
    oov: np.ndarray  # (n,) float64: its mass on words outside the vocabulary
    remembered: np.ndarray  # (n,) bool


class PhraseMemory(NamedTuple):
    """A bias's phrases as remembered (``model.inference.bias``): each word's code, the
    output before it, and its log prior (its phrase's boost shared by the phrase's words)."""

    keys: np.ndarray  # (m, H) float32
    codes: np.ndarray  # (m,) int64 word codes
    log_prior: np.ndarray  # (m,) float64


def cache_pointer(
    memory: Memory, hidden: np.ndarray, targets: np.ndarray, theta: float, size: int
) -> PointerProbs:
    """P_cache of each target of a run of consecutive positions read after ``memory``: position
    j's window is the memory and positions 0..j−1 of the run itself (each with its own
    target), the last ``size`` of them. ``hidden`` (n, H): the outputs predicting ``targets``
    (n,), which are ``word_codes``. Float64."""
    n = len(targets)
    keys = np.concatenate([memory.keys, hidden.astype(np.float32)]).astype(np.float64)
    ids = np.concatenate([memory.next_ids, targets.astype(np.int64)])
    m = len(memory)
    same_p, oov_p = np.zeros(n), np.zeros(n)
    remembered = np.zeros(n, dtype=bool)
    for a in range(0, n, BLOCK):
        b = min(a + BLOCK, n)
        t = m + np.arange(a, b)[:, None]  # each query's place among the keys
        lo = max(0, m + a - size)
        i = np.arange(lo, m + b)[None, :]
        valid = (i < t) & (i >= t - size)
        scores = np.where(valid, theta * (keys[m + a : m + b] @ keys[lo : m + b].T), -np.inf)
        top = scores.max(axis=1, keepdims=True)
        remembered[a:b] = np.isfinite(top[:, 0])
        weights = np.exp(scores - np.where(np.isfinite(top), top, 0.0))
        total = np.where(weights.sum(axis=1) > 0, weights.sum(axis=1), 1.0)
        window = ids[lo : m + b][None, :]
        same_p[a:b] = (weights * (window == targets[a:b, None])).sum(axis=1) / total
        oov_p[a:b] = (weights * (window < 0)).sum(axis=1) / total
    return PointerProbs(same_p, oov_p, remembered)


def cache_probs(
    memory: Memory, hidden: np.ndarray, targets: np.ndarray, theta: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``cache_pointer``'s P_cache of each target's own token, and whether anything was
    remembered there."""
    pointer = cache_pointer(memory, hidden, targets, theta, size)
    return pointer.same, pointer.remembered


def phrase_pointer(
    keys: np.ndarray, codes: np.ndarray, log_prior: np.ndarray, hidden: np.ndarray,
    targets: np.ndarray, theta: float,
) -> PointerProbs:  # fmt: skip
    """P_bias of each target: ∝ Σ_j prior_j exp(θ h·k_j) [code_j = target] over every entry
    of the phrases' memory (``keys`` (m, H), ``codes`` (m,), ``log_prior`` (m,))."""
    scores = theta * (hidden.astype(np.float64) @ keys.astype(np.float64).T) + log_prior
    scores -= scores.max(axis=1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=1, keepdims=True)
    same = (weights * (codes[None, :] == targets[:, None])).sum(axis=1)
    oov = (weights * (codes[None, :] < 0)).sum(axis=1)
    return PointerProbs(same, oov, np.ones(len(targets), dtype=bool))


class Mixed(NamedTuple):
    """Targets' log-probabilities under a model mixed with pointers.

    ``log_probs``: the vocabulary's view, where every word outside it is ``<unk>``; for those
    targets ``parts`` holds (log of the model's share of ``<unk>``, log of the pointers' mass
    on the word's own string), so that the open vocabulary's view is
    ``logaddexp(model_part + log P_spell(word), pointer_part)``: the pointers name the word."""

    log_probs: np.ndarray  # (n,) float64
    parts: dict[int, tuple[float, float]]


def mix_pointers(
    model_log_probs: np.ndarray, targets: np.ndarray, pointers: Sequence[tuple[PointerProbs, float]]
) -> Mixed:
    """P = (1 − Σ_k λ_k) P_model + Σ_k λ_k P_k for ``pointers`` (each with its weight λ_k,
    which counts only where it remembered something). Exactly normalised over the vocabulary
    (``<unk>`` standing for every other word) and, with ``parts``, over every string."""
    n = len(targets)
    share, same, oov = np.ones(n), np.zeros(n), np.zeros(n)
    for pointer, weight in pointers:
        lam = np.where(pointer.remembered, weight, 0.0)
        share -= lam
        same += lam * pointer.same
        oov += lam * pointer.oov
    outside = targets < 0
    with np.errstate(divide="ignore"):  # in the log domain: a tiny P_model does not underflow
        model_part = np.log(share) + model_log_probs.astype(np.float64)
        log_probs: np.ndarray = np.logaddexp(model_part, np.log(np.where(outside, oov, same)))
        named = np.log(same)
    parts = {int(i): (float(model_part[i]), float(named[i])) for i in np.flatnonzero(outside)}
    return Mixed(log_probs, parts)


def mixed_log_probs(
    memory: Memory,
    hidden: np.ndarray,
    targets: np.ndarray,
    model_log_probs: np.ndarray,
    settings: CacheSettings,
) -> np.ndarray:
    """log P of each target of a run read after ``memory`` (``cache_pointer``), the model's
    ``model_log_probs`` (n,) mixed with the cache's; the model's alone where nothing is
    remembered. Float64."""
    pointer = cache_pointer(memory, hidden, targets, settings.theta, settings.size)
    return mix_pointers(model_log_probs, targets, [(pointer, settings.weight)]).log_probs


def cache_distribution(
    memory: Memory, hidden: np.ndarray, vocab_size: int, settings: CacheSettings, unk_id: int = 0
) -> np.ndarray | None:
    """P_cache over the vocabulary after output ``hidden`` (H,): (V,) float64 summing to 1,
    every remembered word outside the vocabulary counted as ``unk_id``; None with nothing
    remembered."""
    if not len(memory):
        return None
    keys = memory.keys[-settings.size :].astype(np.float64)
    scores = settings.theta * (keys @ hidden.astype(np.float64))
    weights = np.exp(scores - scores.max())
    ids = memory.next_ids[-settings.size :]
    out = np.zeros(vocab_size)
    np.add.at(out, np.where(ids < 0, unk_id, ids), weights / weights.sum())
    return out


def phrase_distribution(
    keys: np.ndarray, codes: np.ndarray, log_prior: np.ndarray, hidden: np.ndarray,
    vocab_size: int, theta: float, unk_id: int,
) -> np.ndarray:  # fmt: skip
    """P_bias over the vocabulary after output ``hidden`` (H,), words outside it as
    ``unk_id``: (V,) float64 summing to 1."""
    scores = theta * (keys.astype(np.float64) @ hidden.astype(np.float64)) + log_prior
    weights = np.exp(scores - scores.max())
    out = np.zeros(vocab_size)
    np.add.at(out, np.where(codes < 0, unk_id, codes), weights / weights.sum())
    return out


def cache_probs_grid(
    hidden: np.ndarray,
    targets: np.ndarray,
    thetas: Sequence[float],
    sizes: Sequence[int],
    on_block: Callable[[int], None] | None = None,
) -> dict[tuple[float, int], np.ndarray]:
    """``cache_probs`` of one stream read from nothing, for every (θ, size) at once: each
    block's dot products are computed once and shared. ``on_block`` is told how many positions
    each block held (a progress bar). P_cache is 0 at the first position, where nothing is
    remembered. Float64."""
    n = len(targets)
    keys = hidden.astype(np.float64)
    ids = targets.astype(np.int64)
    biggest = max(sizes)
    out = {(float(theta), size): np.zeros(n) for theta in thetas for size in sizes}
    for a in range(0, n, BLOCK):
        b = min(a + BLOCK, n)
        lo = max(0, a - biggest)
        dots = keys[a:b] @ keys[lo:b].T  # (q, k): the block against every key it may use
        t = np.arange(a, b)[:, None]
        same = ids[lo:b][None, :] == ids[a:b, None]
        for size in sizes:
            start = max(0, a - size) - lo  # the columns this size can reach
            i = np.arange(lo + start, b)[None, :]
            valid = (i < t) & (i >= t - size)
            part, hits = dots[:, start:], same[:, start:]
            for theta in thetas:
                scores = np.where(valid, theta * part, -np.inf)
                top = scores.max(axis=1, keepdims=True)
                weights = np.exp(scores - np.where(np.isfinite(top), top, 0.0))
                total = weights.sum(axis=1)
                p = (weights * hits).sum(axis=1) / np.where(total > 0, total, 1.0)
                out[(float(theta), size)][a:b] = p
        if on_block is not None:
            on_block(b - a)
    return out
