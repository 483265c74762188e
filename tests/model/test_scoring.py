"""Inference API: distributions, candidates (chain rule), top-k, and batched sentence scores."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from model.inference.recurrent_lm import RecurrentLM


def step_by_step_log_probs(lm: RecurrentLM, tokens: list[str]) -> list[float]:
    """log P(tokens[k] | <s> tokens[:k]) for each k, one forward pass per prefix: a slow oracle."""
    return [
        float(lm.next_log_probs(tokens[:k])[lm.vocab.id(tokens[k])]) for k in range(len(tokens))
    ]


def test_next_distribution_sums_to_one_and_matches_log_probs(tiny_lm: RecurrentLM) -> None:
    p = tiny_lm.next_distribution("the cat")
    assert p.shape == (len(tiny_lm.vocab),)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(np.log(p), tiny_lm.next_log_probs(["the", "cat"]), atol=1e-12)


def test_empty_context_means_sentence_start(tiny_lm: RecurrentLM) -> None:
    ids = np.array([[tiny_lm.vocab.bos_id]])
    log_probs, _ = tiny_lm.net.log_probs(ids, tiny_lm.net.init_state(1))
    np.testing.assert_allclose(tiny_lm.next_log_probs(""), log_probs[0, 0], atol=1e-12)


def test_candidates_use_the_chain_rule_for_multi_token_candidates(tiny_lm: RecurrentLM) -> None:
    scores = tiny_lm.score_candidates("the cat", ["sat", "new york", "on the mat", "zebra"])
    context = ["the", "cat"]
    for score, cand in zip(
        scores, [["sat"], ["new", "york"], ["on", "the", "mat"], ["zebra"]], strict=True
    ):
        expected = step_by_step_log_probs(tiny_lm, context + cand)[len(context) :]
        assert score.tokens == cand
        np.testing.assert_allclose(score.token_log_probs, expected, atol=1e-10)
        assert score.log_prob == pytest.approx(sum(expected), abs=1e-10)
    assert [s.oov for s in scores] == [False, False, False, True]
    unk = tiny_lm.next_log_probs(context)[tiny_lm.vocab.unk_id]
    assert scores[3].log_prob == pytest.approx(unk)  # an OOV word is scored as <unk>


def test_a_candidate_without_tokens_is_an_error(tiny_lm: RecurrentLM) -> None:
    with pytest.raises(ValueError, match=r"candidates\[1\] has no tokens"):
        tiny_lm.score_candidates("the", ["cat", "  "])


def test_top_k_is_sorted_and_leaves_out_special_tokens_unless_asked(tiny_lm: RecurrentLM) -> None:
    lp = tiny_lm.next_log_probs("the")
    top = tiny_lm.top_k("the", k=4)
    assert len(top) == 4
    assert [w for w, _ in top] == [
        tiny_lm.vocab.tokens[i]
        for i in np.argsort(-lp)
        if tiny_lm.vocab.tokens[i] not in ("<unk>", "<s>", "</s>")
    ][:4]
    assert all(a[1] >= b[1] for a, b in itertools.pairwise(top))
    everything = tiny_lm.top_k("the", k=100, include_special=True)
    assert len(everything) == len(tiny_lm.vocab)
    assert {"<unk>", "<s>", "</s>"} <= {w for w, _ in everything}


@pytest.mark.parametrize(
    ("bos", "eos"), [(True, True), (True, False), (False, True), (False, False)]
)
def test_sentence_scores_follow_the_bos_eos_conventions(
    tiny_lm: RecurrentLM, bos: bool, eos: bool
) -> None:
    tokens = ["the", "dog", "ran"]
    (score,) = tiny_lm.score_sentences([" ".join(tokens)], bos=bos, eos=eos)
    framed = (["<s>"] if bos else []) + tokens + (["</s>"] if eos else [])
    ids = tiny_lm.vocab.encode(framed)
    log_probs, _ = tiny_lm.net.log_probs(ids[:-1, None], tiny_lm.net.init_state(1))
    expected = [float(log_probs[t, 0, ids[t + 1]]) for t in range(len(ids) - 1)]
    assert score.targets == framed[1:]
    np.testing.assert_allclose(score.token_log_probs, expected, atol=1e-12)
    assert score.log_prob == pytest.approx(sum(expected))
    assert score.perplexity == pytest.approx(math.exp(-sum(expected) / len(expected)))


def test_sentence_score_with_bos_equals_the_sum_of_next_word_log_probs(
    tiny_lm: RecurrentLM,
) -> None:
    tokens = ["the", "cat", "sat", "on", "the", "mat", "</s>"]
    (score,) = tiny_lm.score_sentences([tokens[:-1]])
    np.testing.assert_allclose(
        score.token_log_probs, step_by_step_log_probs(tiny_lm, tokens), atol=1e-12
    )


def test_a_sentence_scored_alone_equals_it_scored_in_a_padded_batch(tiny_lm: RecurrentLM) -> None:
    sentences = [
        "the cat sat on the mat",
        "dog",
        "new york ran",
        "",
        "the unknown zebra sat",
        "cat cat",
    ]
    batched = tiny_lm.score_sentences(sentences, batch_size=4)  # two batches, sorted by length
    for sentence, together in zip(sentences, batched, strict=True):
        (alone,) = tiny_lm.score_sentences([sentence])
        assert together.tokens == alone.tokens
        np.testing.assert_allclose(
            together.token_log_probs, alone.token_log_probs, rtol=0, atol=1e-9
        )
    assert batched[4].oov_positions == [1, 2]
    assert batched[3].targets == ["</s>"]  # an empty sentence still scores its end


def test_float32_batched_scores_agree_with_float64(tiny_lm: RecurrentLM) -> None:
    single = RecurrentLM(
        type(tiny_lm.net)(tiny_lm.net.config, tiny_lm.net.params, dtype=np.float32),
        tiny_lm.vocab,
        tiny_lm.tokenizer,
    )
    sentences = ["the cat sat", "new york", "on the mat the dog ran"]
    for a, b in zip(
        single.score_sentences(sentences), tiny_lm.score_sentences(sentences), strict=True
    ):
        np.testing.assert_allclose(a.token_log_probs, b.token_log_probs, atol=1e-5)


def test_a_sentence_with_nothing_to_score_is_an_error(tiny_lm: RecurrentLM) -> None:
    with pytest.raises(ValueError, match=r"sentences\[1\] has nothing to score"):
        tiny_lm.score_sentences(["the cat", "dog"], bos=False, eos=False)


def test_no_candidates_give_no_scores(tiny_lm: RecurrentLM) -> None:
    assert tiny_lm.score_candidates("the", []) == []
    assert tiny_lm.score_candidates_batch([("the", []), ("a", [])]) == [[], []]
