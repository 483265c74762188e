"""``bias``: phrases mixed in as pseudo-history. Exactly normalised over the vocabulary and,
words outside it named by their strings, over every word; a phrase's continuation favoured
after its start; the same numbers on every call; mixed into an interpolation's network."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.inference.bias import Bias
from model.inference.history import history_window
from model.inference.interpolated_lm import InterpolatedLM
from model.inference.language_model import InputError
from model.inference.neural_cache import CacheSettings, word_codes
from model.inference.ngram_lm import NgramLM
from model.inference.recurrent_lm import RecurrentLM
from model.inference.spelling import SpellingModel
from model.ngram.kneser_ney import estimate
from model.text.tokenize import Tokenizer
from tests.model.test_history import TEXT


def bias(
    *phrases: str, weight: float = 0.2, theta: float = 0.7, boosts: tuple[float, ...] = ()
) -> Bias:
    return Bias(tuple(tuple(p.split()) for p in phrases), boosts or (1.0,) * len(phrases), weight,
                theta)  # fmt: skip


@pytest.fixture
def spelled(tiny_lm: RecurrentLM) -> RecurrentLM:
    tiny_lm.use_spelling(SpellingModel.train([*tiny_lm.vocab.tokens, "weena", "filby"]))
    return tiny_lm


def test_phrases_are_checked() -> None:
    with pytest.raises(ValueError, match="1 to 200 phrases"):
        Bias((), (), 0.1, 0.5)
    with pytest.raises(ValueError, match="phrase 0 has 17 tokens"):
        bias(" ".join(["a"] * 17))
    with pytest.raises(ValueError, match="boost must be"):
        bias("a", boosts=(0.0,))
    with pytest.raises(ValueError, match="bias weight"):
        bias("a", weight=1.0)


def test_words_outside_the_vocabulary_get_codes_of_their_own(tiny_lm: RecurrentLM) -> None:
    codes = word_codes(tiny_lm.vocab, ["the", "weena", "filby", "weena", "<unk>"])
    assert codes[0] == tiny_lm.vocab.id("the")
    assert codes[1] == codes[3] < 0 and codes[2] < 0 and codes[1] != codes[2] and codes[4] < 0


@pytest.mark.parametrize("with_cache", [False, True])
@pytest.mark.parametrize("with_history", [False, True])
def test_the_biased_distribution_sums_to_one_and_every_call_agrees(
    tiny_lm: RecurrentLM, with_cache: bool, with_history: bool
) -> None:
    lm = tiny_lm.with_bias(bias("new york", "the dog ran", "weena"))
    if with_cache:
        lm = lm.with_cache(CacheSettings(0.9, 0.25, 50))
    prefix = history_window(TEXT[:3], 1000).tokens if with_history else []
    context = [*prefix, "<s>", "the", "cat"] if with_history else ["the", "cat"]
    log_p = lm.next_log_probs(context)
    assert np.exp(log_p.astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-9)
    assert (
        np.abs(log_p - tiny_lm.with_cache(lm.neural_cache()).next_log_probs(context)).max() > 0.01
    )
    words = [w for w in tiny_lm.vocab.tokens if w != "<s>"]
    for word, score in zip(words, lm.score_candidates(context, [[w] for w in words]), strict=True):
        assert score.log_prob == pytest.approx(log_p[tiny_lm.vocab.id(word)], abs=1e-9)
    (whole,) = lm.score_sentences([["the", "cat", "sat", "on"]], eos=False, prefix=prefix)
    (two,) = lm.score_candidates(context, [["sat", "on"]])
    assert two.token_log_probs == pytest.approx(whole.token_log_probs[-2:], abs=1e-12)


def test_a_phrase_word_outside_the_vocabulary_is_named_and_every_word_sums_to_one(
    spelled: RecurrentLM,
) -> None:
    """Under the open vocabulary, P(s) for a string s outside the vocabulary is
    (1 − β) P(<unk>) P_spell(s) + β P_bias(s): "weena" (a phrase) gains, "filby" (not one)
    loses its share of β, and over every string the mass is <unk>'s in the closed view."""
    plain, lm = spelled, spelled.with_bias(bias("weena", "new york", weight=0.3))
    context = ["the", "cat"]
    names = [["weena"], ["filby"]]
    before = [plain.spelled(s)[0] for s in plain.score_candidates(context, names)]
    scores = lm.score_candidates(context, names)
    after = [lm.spelled(s)[0] for s in scores]
    assert after[0] > before[0] + 1.0 and after[1] == pytest.approx(before[1] + math.log(0.7))
    unk = lm.next_log_probs(context)[lm.vocab.unk_id]  # the closed view: every unknown word
    model_part, _ = scores[0].pointer_parts[0]  # type: ignore[index]
    named = sum(math.exp(s.pointer_parts[0][1]) for s in scores[:1])  # type: ignore[index]
    # the model's share of <unk> spread by spelling (sums to 1 over strings) + the bias's words
    assert math.exp(unk) == pytest.approx(math.exp(model_part) + named, rel=1e-9)
    assert scores[1].pointer_parts[0][1] == -math.inf  # type: ignore[index]


def test_a_phrases_continuation_is_favoured_after_its_start(tiny_lm: RecurrentLM) -> None:
    lm = tiny_lm.with_bias(bias("new york", "the mat", theta=100.0))  # a tiny net: small outputs
    after_start = lm.next_log_probs(["new"]) - tiny_lm.next_log_probs(["new"])
    elsewhere = lm.next_log_probs(["the", "dog"]) - tiny_lm.next_log_probs(["the", "dog"])
    york = tiny_lm.vocab.id("york")
    assert after_start[york] > elsewhere[york] + 0.3


def test_boosts_share_out_the_bias(tiny_lm: RecurrentLM) -> None:
    even = tiny_lm.with_bias(bias("dog", "york", theta=0.0)).next_log_probs(["the"])
    tilted = tiny_lm.with_bias(bias("dog", "york", theta=0.0, boosts=(3.0, 1.0)))
    lp = tilted.next_log_probs(["the"])
    dog, york = tiny_lm.vocab.id("dog"), tiny_lm.vocab.id("york")
    assert lp[dog] > even[dog] and lp[york] < even[york]
    plain = np.exp(tiny_lm.next_log_probs(["the"]).astype(np.float64))
    assert math.exp(lp[dog]) == pytest.approx(0.8 * plain[dog] + 0.2 * 0.75, rel=1e-9)


def test_the_cache_and_the_bias_must_leave_the_model_a_share(tiny_lm: RecurrentLM) -> None:
    lm = tiny_lm.with_cache(CacheSettings(0.5, 0.6, 10)).with_bias(bias("dog", weight=0.4))
    with pytest.raises(InputError, match="add up to less than 1"):
        lm.score_sentences([["the", "dog"]])


def test_an_interpolation_mixes_the_bias_into_its_network(tiny_lm: RecurrentLM) -> None:
    vocab = tiny_lm.vocab
    kn = NgramLM(estimate([vocab.encode(s) for s in TEXT], len(vocab), 2), vocab,
                 Tokenizer("whitespace"))  # fmt: skip
    b = bias("weena", "new york", weight=0.3)
    mix = InterpolatedLM([tiny_lm, kn], [0.6, 0.4]).with_bias(b)
    assert mix.bias() == b and kn.bias() is None
    context = ["the", "cat"]
    p = np.exp(mix.next_log_probs(context).astype(np.float64))
    assert p.sum() == pytest.approx(1.0, abs=1e-9)
    want = 0.6 * np.exp(tiny_lm.with_bias(b).next_log_probs(context)) + 0.4 * np.exp(
        kn.next_log_probs(context)
    )
    assert p == pytest.approx(want, abs=1e-12)
    (score,) = mix.score_candidates(context, [["weena"]])
    rnn_part = tiny_lm.with_bias(b).score_candidates(context, [["weena"]])[0].pointer_parts
    assert rnn_part is not None and score.pointer_parts is not None
    assert math.exp(score.pointer_parts[0][1]) == pytest.approx(0.6 * math.exp(rnn_part[0][1]))
    with pytest.raises(InputError, match="bias"):
        kn.with_bias(b)


def test_fill_names_a_biased_word_as_sentence_scores_do(spelled: RecurrentLM) -> None:
    lm = spelled.with_bias(bias("weena ran", weight=0.3))
    method, (gap,) = lm.fill("the", "sat", ["weena"])
    (sentence,) = lm.score_sentences(["the weena sat"])
    assert method == "sentence" and gap.pointer_parts == sentence.pointer_parts
    assert lm.spelled(gap) == pytest.approx(lm.spelled(sentence), abs=1e-12)


def test_candidates_read_the_context_once_whatever_their_number(tiny_lm: RecurrentLM) -> None:
    """With a bias (and a cache), the context is read once and each candidate runs on from it:
    the network's steps are the context's plus each candidate's own, not one context each."""
    context = " ".join(["the cat sat on the mat"] * 10)
    candidates = [["dog"], ["new", "york"], ["cat", "ran", "on"]] * 10
    biased = tiny_lm.with_bias(bias("new york"))
    for lm in (biased, biased.with_cache(CacheSettings(0.5, 0.2, 30))):
        lm.phrase_memory(bias("new york"))  # read once, kept
        before = lm.steps_run
        scores = lm.score_candidates(context, candidates)
        context_steps = len(context.split()) + 1
        own = sum(len(c) - 1 for c in candidates)
        assert lm.steps_run - before == context_steps + own
        for c, s in zip(candidates[:3], scores[:3], strict=True):  # the chain rule holds
            (whole,) = lm.score_sentences([context.split() + c], eos=False)
            assert s.token_log_probs == pytest.approx(whole.token_log_probs[-len(c) :], abs=1e-9)


def test_a_tiny_boost_is_a_tiny_prior_not_an_error(tiny_lm: RecurrentLM) -> None:
    lm = tiny_lm.with_bias(bias("new york", "dog", boosts=(5e-324, 1.0)))
    (score,) = lm.score_sentences(["the dog ran"])
    assert np.isfinite(score.log_prob)
