"""The prefix-state cache and batched candidate scoring: same numbers, fewer network steps."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from model.inference.prefix_cache import CachedPrefix, PrefixCache
from model.inference.recurrent_lm import RecurrentLM
from model.network.recurrent import RNNLM


def float32_copy(lm: RecurrentLM) -> RecurrentLM:
    net = RNNLM(lm.net.config, lm.net.params, dtype=np.float32)
    return RecurrentLM(net, lm.vocab, lm.tokenizer)


BEAM = [
    ("the", ["cat", "dog", "new york"]),
    ("the cat", ["sat", "ran"]),
    ("the cat sat", ["on", "the mat"]),
    ("the dog", ["ran", "sat"]),
    ("the cat sat on", ["the", "a zebra"]),
    ("the cat sat on the", ["mat", "cat"]),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_results_are_the_same_with_the_cache_on_and_off(tiny_lm: RecurrentLM, dtype: str) -> None:
    lm = tiny_lm if dtype == "float64" else float32_copy(tiny_lm)
    tol = 1e-10 if dtype == "float64" else 1e-5
    off = [lm.score_candidates(c, k) for c, k in BEAM]
    lm.cache = PrefixCache()
    on = [lm.score_candidates(c, k) for c, k in BEAM]
    again = [lm.score_candidates(c, k) for c, k in BEAM]  # now every context is cached whole
    for a, b, c in zip(off, on, again, strict=True):
        np.testing.assert_allclose([s.log_prob for s in b], [s.log_prob for s in a], atol=tol)
        np.testing.assert_allclose([s.log_prob for s in c], [s.log_prob for s in a], atol=tol)
    assert lm.cache.hits > 0
    np.testing.assert_allclose(
        lm.next_log_probs("the cat sat"), tiny_lm.next_log_probs("the cat sat"), atol=tol
    )


def test_the_cache_saves_network_steps_on_a_growing_context(tiny_lm: RecurrentLM) -> None:
    words = ["the", "cat", "sat", "on", "the", "mat", "the", "dog", "ran"]
    tiny_lm.steps_run = 0
    for k in range(len(words)):
        tiny_lm.next_log_probs(words[:k])
    without = tiny_lm.steps_run  # 1 + 2 + ... + 9 context steps
    assert without == sum(range(1, len(words) + 1))
    tiny_lm.cache, tiny_lm.steps_run = PrefixCache(), 0
    for k in range(len(words)):
        tiny_lm.next_log_probs(words[:k])
    assert tiny_lm.steps_run == len(words)  # one new token per request
    # the empty context is no lookup; "the" reuses only <s> (a miss); every later one is a hit
    assert (tiny_lm.cache.hits, tiny_lm.cache.misses) == (len(words) - 2, 1)


def test_contexts_sharing_only_the_sentence_start_are_misses(tiny_lm: RecurrentLM) -> None:
    tiny_lm.cache = PrefixCache()
    tiny_lm.next_log_probs("")  # a decoder asks for each utterance's first word: <s> is known
    for context in ["the cat", "a dog", "new york", "on the mat"]:
        tiny_lm.next_log_probs(context)
    assert (tiny_lm.cache.hits, tiny_lm.cache.misses) == (0, 4)
    tiny_lm.next_log_probs("the cat sat")
    assert tiny_lm.cache.hits == 1


def test_a_batch_of_requests_equals_each_alone(tiny_lm: RecurrentLM) -> None:
    batched = tiny_lm.score_candidates_batch(BEAM)
    for (context, candidates), together in zip(BEAM, batched, strict=True):
        alone = tiny_lm.score_candidates(context, candidates)
        np.testing.assert_allclose(
            [s.log_prob for s in together], [s.log_prob for s in alone], atol=1e-12
        )
        assert [s.tokens for s in together] == [s.tokens for s in alone]


def count_output_rows(lm: RecurrentLM, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows passed through the full output layer, per product, from now on."""
    seen: list[int] = []
    full = lm.output_rows

    def counted(hidden: np.ndarray) -> np.ndarray:
        seen.append(len(hidden))
        return full(hidden)

    monkeypatch.setattr(lm, "output_rows", counted)
    return seen


def test_a_cached_context_scores_new_words_without_the_output_layer(
    tiny_lm: RecurrentLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A beam search asks for competing words after one prefix: after the first call computed
    the prefix's normaliser, each further word is a dot product, with the same log-probability."""
    reference = [tiny_lm.score_candidates("the cat", [w])[0].log_prob for w in ["sat", "ran", "on"]]
    tiny_lm.cache = PrefixCache()
    rows = count_output_rows(tiny_lm, monkeypatch)
    first = tiny_lm.score_candidates("the cat", ["sat"])[0].log_prob
    assert rows == [1]
    others = [tiny_lm.score_candidates("the cat", [w])[0].log_prob for w in ["ran", "on"]]
    assert rows == [1]  # no further output product
    np.testing.assert_allclose([first, *others], reference, atol=1e-12)
    two = tiny_lm.score_candidates("the cat", ["sat on"])[0]  # its second token needs a row
    assert rows == [1, 1]
    np.testing.assert_allclose(two.token_log_probs[0], reference[0], atol=1e-12)
    # a batch mixing a known context with a new one computes the new one's row only
    known, new = tiny_lm.score_candidates_batch([("the cat", ["ran"]), ("a dog", ["ran"])])
    assert rows == [1, 1, 1]
    np.testing.assert_allclose(known[0].log_prob, reference[1], atol=1e-12)
    alone = tiny_lm.score_candidates("a dog", ["ran"])[0].log_prob
    np.testing.assert_allclose(new[0].log_prob, alone, atol=1e-12)


def entry(nbytes_floats: int) -> CachedPrefix:
    return CachedPrefix([(np.zeros((1, nbytes_floats)),)], np.zeros(0))


def test_lru_eviction_by_entries_and_by_bytes() -> None:
    cache = PrefixCache(max_entries=2)
    for ids in ([1, 3], [1, 4], [1, 5]):
        cache.put(ids, entry(1))
    assert cache.longest([1, 3, 9])[0] == 0  # the oldest was evicted
    assert cache.longest([1, 5, 9])[0] == 2
    one = PrefixCache()
    one.put([1, 0], entry(10))
    cache = PrefixCache(max_entries=100, max_bytes=3 * one.bytes)
    for k in range(5):
        cache.put([1, k], entry(10))
    assert len(cache) == 3 and cache.bytes == 3 * one.bytes


def state_after(rng: np.random.Generator) -> CachedPrefix:
    """What a 2-layer LSTM with 64 units caches: (h, c) per layer and the top output."""
    layers = [tuple(rng.standard_normal((1, 64), dtype=np.float32) for _ in range(2))] * 2
    return CachedPrefix(
        [tuple(t.copy() for t in layer) for layer in layers], layers[1][0][0].copy()
    )


def test_the_byte_bound_is_the_memory_the_cache_takes() -> None:
    rng = np.random.default_rng(0)
    contexts = [rng.integers(3, 10_000, size=256) for _ in range(1000)]  # long and distinct
    cache = PrefixCache(max_entries=10**6, max_bytes=1 << 40)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for ids in contexts:
        cache.put(ids, state_after(rng))
    gc.collect()
    real = tracemalloc.get_traced_memory()[0] - before  # keys, arrays and objects together
    tracemalloc.stop()
    assert 0.95 < cache.bytes / real < 1.1, (cache.bytes, real)

    bound = PrefixCache(max_entries=10**6, max_bytes=200_000)
    for ids in contexts:
        bound.put(ids, state_after(rng))
    assert bound.bytes <= 200_000 and len(bound) == 200_000 // (cache.bytes // len(cache))


def test_longest_prefix_and_observer() -> None:
    seen = []
    cache = PrefixCache(observer=lambda hit, n: seen.append((hit, n)))
    cache.put([1, 2], entry(1))
    cache.put([1, 2, 3, 4], entry(1))
    assert cache.longest([1, 2, 3, 4, 5])[0] == 4
    assert cache.longest([1, 2, 3])[0] == 2
    assert cache.longest([1, 7])[0] == 0
    assert seen == [(True, 4), (True, 2), (False, 0)]
