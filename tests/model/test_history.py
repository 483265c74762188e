"""History: the sentences before a request, read as running text (``<s> h₁ </s> <s> h₂ </s>``)
before the request's own ``<s>``; equal to the stream evaluation of the whole text."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from model.inference.evaluation import stream_token_log_probs
from model.inference.history import history_window
from model.inference.interpolated_lm import InterpolatedLM
from model.inference.neural_cache import CacheSettings, Memory, mixed_log_probs
from model.inference.ngram_lm import NgramLM
from model.inference.recurrent_lm import RecurrentLM
from model.ngram.kneser_ney import estimate
from model.text.batches import sentence_stream
from model.text.tokenize import Tokenizer
from tests.model.test_start_state import with_start

TEXT = [
    ["the", "cat", "sat", "on", "the", "mat"],
    ["the", "dog", "ran"],
    ["new", "york"],
    ["the", "cat", "ran", "on", "the", "mat"],
    ["the", "dog", "sat", "on", "the", "new", "mat"],
]


def stream_from(lm: RecurrentLM, sentences: list[list[str]]) -> np.ndarray:
    """log P of every target of the running text read token by token from the start state (the
    definition: one step at a time, no batching, no cache)."""
    ids = sentence_stream(sentences, lm.vocab)
    state, out = lm.net.start_state(1), []
    for now, nxt in itertools.pairwise(ids):
        lps, state = lm.net.log_probs(np.array([[now]]), state)
        if nxt != lm.vocab.bos_id:
            out.append(float(lps[0, 0, nxt]))
    return np.array(out)


def test_the_window_keeps_the_stream_within_the_bound_and_cuts_in_half_bound_steps() -> None:
    whole = history_window(TEXT, 1000)
    assert whole.tokens == [*TEXT[0], "</s>"] + [t for s in TEXT[1:] for t in ["<s>", *s, "</s>"]]
    assert (whole.sentences, whole.read, whole.dropped) == (5, 34, 0)
    stream = ["<s>", *whole.tokens]
    for bound in range(0, 40):
        h = history_window(TEXT, bound)
        kept = stream[h.dropped :]
        assert h.tokens == (kept[1:] if kept[:1] == ["<s>"] else kept)
        # what the model reads, <s> and the tokens, is within the bound and reported
        assert h.read == (len(h.tokens) + 1 if h.tokens else 0) and h.read <= bound
        # the cut is on a sentence start unless no sentence starts after it
        assert kept[:1] == ["<s>"] or "<s>" not in kept
        assert kept != ["</s>"]  # never an empty sentence's end alone
    # a growing history keeps its cut until it has grown by half the bound
    document = TEXT * 4
    cuts = [history_window(document[:k], 40).dropped for k in range(1, len(document))]
    assert cuts == sorted(cuts) and len(set(cuts)) <= len(cuts) // 2
    assert history_window([[], ["a"]], 10).sentences == 1  # an empty sentence is no sentence


@pytest.mark.parametrize("start", [False, True], ids=["zero start", "start state"])
def test_scoring_sentence_k_after_its_history_equals_the_stream(
    tiny_lm: RecurrentLM, start: bool
) -> None:
    lm = with_start(tiny_lm) if start else tiny_lm
    stream = stream_from(lm, TEXT)
    if not start:  # the evaluation's own stream reader agrees with the definition
        assert stream_token_log_probs(lm.net, sentence_stream(TEXT, lm.vocab), lm.vocab) == (
            pytest.approx(stream, abs=1e-12)
        )
    at = 0
    for k, sentence in enumerate(TEXT):
        prefix = history_window(TEXT[:k], 1000).tokens
        (scored,) = lm.score_sentences([sentence], prefix=prefix)
        want = stream[at : at + len(sentence) + 1]
        assert scored.token_log_probs == pytest.approx(want, abs=1e-12)
        # the next-word calls read the history in their context: the same numbers
        context = [*prefix, "<s>"] if prefix else []
        for i, word in enumerate(sentence):
            (candidate,) = lm.score_candidates(context + sentence[:i], [[word]])
            assert candidate.log_prob == pytest.approx(want[i], abs=1e-12)
        at += len(sentence) + 1


@pytest.mark.parametrize("cache", [True, False], ids=["prefix cache", "pinned states alone"])
def test_a_growing_history_reads_about_one_sentence_per_call(
    tiny_lm: RecurrentLM, cache: bool
) -> None:
    """The state after each history is kept (in the prefix cache, and pinned apart from it), so
    a call whose history grew by one sentence reads that sentence, not the whole history, and
    a request's later slices do not read it again."""
    lm = tiny_lm
    if cache:
        lm.use_prefix_cache(4096, 64 << 20, None)
    document = TEXT * 6
    steps = []
    for k in range(1, len(document)):
        prefix = history_window(document[:k], 1000).tokens
        before = lm.steps_run
        lm.score_sentences([document[k]], prefix=prefix)  # steps: the history's reading only
        lm.score_candidates([*prefix, "<s>", *document[k][:1]], [["cat"]])
        steps.append(lm.steps_run - before)
    # each call reads the sentence added to the history (and the context's word), not all of it
    for k, n in enumerate(steps[1:], start=2):
        assert n <= len(document[k - 1]) + 2 + 2 + (0 if cache else len(document[k])), (k, n)
    prefix = history_window(document[:-1], 1000).tokens
    assert lm.unread_positions(prefix) == 0  # read: the estimate of what is left to read says so
    before = lm.steps_run
    lm.score_sentences([document[-1]], prefix=prefix)  # a second slice of the same request
    assert lm.steps_run == before  # score_sentences' own steps are not counted: nothing read


def test_history_changes_nothing_for_an_ngram_and_mixes_exactly(tiny_lm: RecurrentLM) -> None:
    vocab = tiny_lm.vocab
    kn = NgramLM(estimate([vocab.encode(s) for s in TEXT], len(vocab), 3), vocab,
                 Tokenizer("whitespace"))  # fmt: skip
    prefix = history_window(TEXT[:3], 1000).tokens
    assert not kn.reads_history() and tiny_lm.reads_history()
    sentence = TEXT[3]
    alone, after = kn.score_sentences([sentence])[0], kn.score_sentences([sentence], prefix=prefix)
    assert after[0].token_log_probs == alone.token_log_probs
    assert kn.next_log_probs([*prefix, "<s>", "the"]) == pytest.approx(kn.next_log_probs(["the"]))
    (c1,), (c2,) = (
        kn.score_candidates(["the"], [["cat"]]),
        kn.score_candidates([*prefix, "<s>", "the"], [["cat"]]),
    )
    assert c1.log_prob == c2.log_prob
    mix = InterpolatedLM([tiny_lm, kn], (0.4, 0.6), ["rnn", "kn"])
    assert mix.reads_history()
    (mixed,) = mix.score_sentences([sentence], prefix=prefix)
    (rnn,) = tiny_lm.score_sentences([sentence], prefix=prefix)
    want = np.log(0.4 * np.exp(rnn.token_log_probs) + 0.6 * np.exp(alone.token_log_probs))
    assert mixed.token_log_probs == pytest.approx(want, abs=1e-12)
    p = np.exp(mix.next_log_probs([*prefix, "<s>", "the"]).astype(np.float64))
    assert p.sum() == pytest.approx(1.0, abs=1e-9)  # still a distribution after a history


@pytest.mark.parametrize("size", [4, 1000])
def test_with_a_neural_cache_sentence_k_after_its_history_equals_the_cached_stream(
    tiny_lm: RecurrentLM, size: int
) -> None:
    """The cache remembers every earlier position of the text (history and the sentence's
    own, within ``size``): sentence k scored after sentences 1..k−1 gets the numbers of the
    whole text read as one stream with the cache; a growing history reads one sentence."""
    lm = tiny_lm
    settings = CacheSettings(theta=0.8, weight=0.3, size=size)
    ids = sentence_stream(TEXT, lm.vocab)
    hidden, _, _ = lm.net.forward(ids[:-1, None], lm.net.start_state(1), keep_cache=False)
    targets = ids[1:]
    keep = targets != lm.vocab.bos_id
    model = lm.log_probs_at(hidden[:, 0][keep], np.arange(int(keep.sum())), targets[keep])
    want = mixed_log_probs(Memory.empty(5), hidden[:, 0][keep], targets[keep], model, settings)
    assert np.abs(want - model).max() > 0.05  # the cache moves the numbers
    lm.use_neural_cache(settings)
    at = 0
    for k, sentence in enumerate(TEXT):
        prefix = history_window(TEXT[:k], 1000).tokens
        before = lm.steps_run
        (scored,) = lm.score_sentences([sentence], prefix=prefix)
        if k > 1:  # only the sentence added to the history is read
            assert lm.steps_run - before == len(TEXT[k - 1]) + 2
        assert scored.token_log_probs == pytest.approx(want[at : at + len(sentence) + 1], abs=1e-9)
        at += len(sentence) + 1
    lm.use_neural_cache(None)


def test_a_memory_read_on_from_any_prefix_is_the_streams(tiny_lm: RecurrentLM) -> None:
    """Built in pieces (a prefix that ends mid-sentence, another size first), a history's memory
    holds the stream's pairs (output, next token), <s> targets left out, the last ``size``."""
    lm = tiny_lm
    whole = history_window(TEXT[:3], 1000).tokens
    ids = np.concatenate([[lm.vocab.bos_id], lm.vocab.encode(whole)])
    hidden, _, _ = lm.net.forward(ids[:, None], lm.net.start_state(1), keep_cache=False)
    targets = ids[1:]
    keep = targets != lm.vocab.bos_id
    for size in (3, 1000):
        lm.history_memory(whole[:4], 1)  # a smaller memory of a prefix: not built on
        lm.history_memory(whole[:7], size)  # a prefix ending mid-sentence: built on
        memory = lm.history_memory(whole, size).memory
        assert memory is not None
        assert memory.next_ids.tolist() == targets[keep][-size:].tolist()
        assert memory.keys == pytest.approx(hidden[:-1, 0][keep][-size:].astype(np.float32))


@pytest.mark.parametrize("with_history", [False, True])
def test_with_a_neural_cache_every_next_word_call_agrees_and_sums_to_one(
    tiny_lm: RecurrentLM, with_history: bool
) -> None:
    """Candidates and the next-word distribution mix the same cache as sentence scores: a
    candidate's log P is its share of the sentence read on, the distribution sums to 1 and
    each word's probability in it is that word's candidate score."""
    lm = tiny_lm
    lm.use_neural_cache(CacheSettings(theta=0.9, weight=0.25, size=50))
    prefix = history_window(TEXT[:3], 1000).tokens if with_history else []
    context = [*prefix, "<s>", "the", "cat"] if with_history else ["the", "cat"]
    log_p = lm.next_log_probs(context)
    assert np.exp(log_p.astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-9)
    words = [w for w in lm.vocab.tokens if w != "<s>"]
    scores = lm.score_candidates(context, [[w] for w in words])
    for word, score in zip(words, scores, strict=True):
        assert score.log_prob == pytest.approx(log_p[lm.vocab.id(word)], abs=1e-9)
    (whole,) = lm.score_sentences([["the", "cat", "sat", "on"]], eos=False, prefix=prefix)
    (two,) = lm.score_candidates(context, [["sat", "on"]])
    assert two.token_log_probs == pytest.approx(whole.token_log_probs[-2:], abs=1e-12)
    assert lm.top_k(context, 3)[0][1] == pytest.approx(np.sort(log_p[3:])[-1], abs=1e-12)
    lm.use_neural_cache(None)
    assert lm.next_log_probs(context) != pytest.approx(log_p, abs=1e-6)  # the cache mattered
