"""The neural cache's mixture: the definition, position by position, and a distribution that
sums to 1 over the vocabulary after any memory."""

from __future__ import annotations

import numpy as np
import pytest

from model.inference.neural_cache import (
    CacheSettings,
    Memory,
    cache_distribution,
    mixed_log_probs,
)


def definition(
    keys: np.ndarray, ids: np.ndarray, queries: np.ndarray, targets: np.ndarray,
    model: np.ndarray, s: CacheSettings,
) -> np.ndarray:  # fmt: skip
    """One position at a time: the window is every earlier key (memory, then the run's own)."""
    all_keys = np.concatenate([keys, queries])
    all_ids = np.concatenate([ids, targets])
    out = []
    for j in range(len(targets)):
        t = len(ids) + j
        window = range(max(0, t - s.size), t)
        if not window:
            out.append(model[j])
            continue
        w = np.array([np.exp(s.theta * float(queries[j] @ all_keys[i])) for i in window])
        hit = sum(w[k] for k, i in enumerate(window) if all_ids[i] == targets[j]) / w.sum()
        out.append(np.log((1 - s.weight) * np.exp(model[j]) + s.weight * hit))
    return np.array(out)


@pytest.mark.parametrize("size", [1, 3, 50])
@pytest.mark.parametrize("remembered", [0, 4])
def test_the_mixture_is_the_definition(size: int, remembered: int) -> None:
    rng = np.random.default_rng(size + remembered)
    s = CacheSettings(theta=0.7, weight=0.2, size=size)
    keys = rng.normal(size=(remembered, 5)).astype(np.float32)
    ids = rng.integers(0, 4, remembered)
    queries = rng.normal(size=(9, 5)).astype(np.float32)
    targets = rng.integers(0, 4, 9)
    model = np.log(rng.uniform(0.05, 0.5, 9))
    got = mixed_log_probs(Memory(keys, ids), queries, targets, model, s)
    want = definition(keys, ids, queries, targets, model, s)
    assert got == pytest.approx(want, abs=1e-6)
    if remembered == 0:
        assert got[0] == model[0]  # nothing remembered at the first position: the model alone


def test_the_cache_distribution_sums_to_one_and_agrees_with_the_mixture() -> None:
    rng = np.random.default_rng(1)
    vocab = 7
    s = CacheSettings(theta=0.3, weight=0.25, size=6)
    memory = Memory(rng.normal(size=(10, 4)).astype(np.float32), rng.integers(0, vocab, 10))
    h = rng.normal(size=4).astype(np.float32)
    p_cache = cache_distribution(memory, h, vocab, s)
    assert p_cache is not None and p_cache.sum() == pytest.approx(1.0, abs=1e-12)
    p_model = rng.dirichlet(np.ones(vocab))
    mixed = (1 - s.weight) * p_model + s.weight * p_cache
    assert mixed.sum() == pytest.approx(1.0, abs=1e-12)  # the served distribution
    for w in range(vocab):  # each word's mixture is mixed_log_probs' for that target
        got = mixed_log_probs(memory, h[None], np.array([w]), np.log(p_model[[w]]), s)
        assert np.exp(got[0]) == pytest.approx(mixed[w], abs=1e-9)
    assert cache_distribution(Memory.empty(4), h, vocab, s) is None


def test_memory_keeps_the_last_positions_and_settings_are_checked() -> None:
    m = Memory.empty(2).extended(np.ones((3, 2)), np.array([1, 2, 3]), size=2)
    assert m.next_ids.tolist() == [2, 3] and m.keys.dtype == np.float32
    assert CacheSettings.from_dict({"theta": 1, "weight": 0.1, "size": 5}).theta == 1.0
    good = {"theta": 1, "weight": 0.1, "size": 5}
    bad = [{"theta": -1}, {"weight": 1.0}, {"size": 0}, {"theta": True}, {"size": 2.5}]
    for change in bad:
        with pytest.raises(ValueError, match="cache"):
            CacheSettings.from_dict(good | change)
    with pytest.raises(ValueError, match="cache"):
        CacheSettings.from_dict({"theta": 1, "weight": 0.1})


def test_a_tiny_model_probability_does_not_underflow() -> None:
    memory = Memory(np.ones((2, 3), np.float32), np.array([1, 2]))
    model = np.array([-800.0, -900.0])
    off = mixed_log_probs(memory, np.ones((2, 3)), np.array([5, 6]), model, CacheSettings(1, 0, 9))
    assert off.tolist() == model.tolist()  # weight 0: the model's own, however small
    on = mixed_log_probs(memory, np.ones((2, 3)), np.array([5, 1]), model, CacheSettings(1, 0.1, 9))
    # three equal keys remembered (two, and the run's first position), one of them a 1
    assert on[0] == pytest.approx(-800.0 + np.log(0.9)) and on[1] == pytest.approx(np.log(0.1 / 3))
