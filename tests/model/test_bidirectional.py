"""The gap-filling model: gradients, no peeking at the gap, inference equal to training."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from model.inference.gap_filling_lm import GapFillingLM
from model.inference.language_model import UnsupportedCallError
from model.inference.recurrent_lm import RecurrentLM
from model.network.bidirectional import BiRNNLM, SentenceBatch, sentence_batches
from model.network.layers import RowSparse
from model.network.recurrent import ModelConfig
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary
from tests.conftest import TINY_WORDS, perturbed
from tests.gradcheck import numerical_gradient, relative_error

V = 12
BOS, EOS = Vocabulary.bos_id, Vocabulary.eos_id


CLASS_BOUNDS = (0, 3, 5, 8, V)  # 4 classes of 3, 2, 3 and 4 words


SHORTLISTED = (0, 1, 2, 3, 5, 8, V)  # words 0-2 alone (a shortlist of 3), then 3 bands


def bi_net(cell: str = "lstm", layers: int = 2, seed: int = 1, softmax: str = "full") -> BiRNNLM:
    """softmax: full, class (bands) or shortlist (a class softmax with a shortlist)."""
    bounds = {"class": CLASS_BOUNDS, "shortlist": SHORTLISTED}.get(softmax, ())
    config = ModelConfig(
        V, cell, num_layers=layers, embed_size=4, hidden_size=5, bidirectional=True,
        softmax="full" if softmax == "full" else "class", class_bounds=bounds,
        class_shortlist=3 if softmax == "shortlist" else 0,
    )  # fmt: skip
    net = BiRNNLM(config, seed=seed, dtype=np.float64)
    perturbed(net, seed=seed + 1)  # type: ignore[arg-type]
    return net


def batch_of(*sentences: list[int]) -> SentenceBatch:
    return SentenceBatch.from_sentences([np.array(s) for s in sentences], BOS, EOS)


@pytest.mark.parametrize(
    ("cell", "layers", "softmax"),
    [
        ("rnn", 1, "full"),
        ("lstm", 2, "full"),
        ("gru", 2, "full"),
        ("lstm", 2, "class"),
        ("gru", 1, "shortlist"),
    ],
)
def test_bidirectional_network_gradients(cell: str, layers: int, softmax: str) -> None:
    net = bi_net(cell, layers, softmax=softmax)
    batch = batch_of([3, 4, 5, 6], [7, 8], [9])
    _, grads = net.loss_and_grads(batch)
    assert set(grads) == set(net.params)
    for name, p in net.params.items():
        num = numerical_gradient(lambda: net.loss_and_grads(batch)[0], p)
        g = grads[name].to_dense() if isinstance(grads[name], RowSparse) else grads[name]
        assert relative_error(g, num) < 1e-6, name


def test_neither_direction_sees_the_word_it_predicts() -> None:
    net = bi_net()
    a = net.word_log_probs(batch_of([3, 4, 5, 6]))
    b = net.word_log_probs(batch_of([3, 9, 5, 6]))  # the second word changed
    batch_a, batch_b = batch_of([3, 4, 5, 6]), batch_of([3, 9, 5, 6])
    states_a, _, _ = net._read(batch_a, None)
    states_b, _, _ = net._read(batch_b, None)
    np.testing.assert_array_equal(
        states_a[1], states_b[1]
    )  # position 2 is predicted from the same states
    assert not np.allclose(states_a[0], states_b[0]) and not np.allclose(states_a[2], states_b[2])
    assert a[1] != b[1]  # only the target differs there


def test_padding_does_not_change_a_sentence_s_scores() -> None:
    net = bi_net()
    alone = net.word_log_probs(batch_of([3, 4, 5]))
    together = net.word_log_probs(batch_of([3, 4, 5], [6, 7, 8, 9, 10, 11]))
    np.testing.assert_allclose(together[:3], alone, atol=1e-12)


@pytest.mark.parametrize("softmax", ["full", "class", "shortlist"])
def test_fill_of_one_token_equals_the_training_layout(softmax: str) -> None:
    net = bi_net(softmax=softmax)
    sentence = [3, 4, 5, 6, 7]
    expected = net.word_log_probs(batch_of(sentence))
    for t in range(len(sentence)):  # a gap at every position, the ends included
        left, right = np.array(sentence[:t]), np.array(sentence[t + 1 :])
        (got,) = net.fill_scores(left, right, [np.array([sentence[t]])])
        assert got[0] == pytest.approx(expected[t], abs=1e-12)


def test_a_class_factored_gap_distribution_sums_to_one_and_is_the_two_factors() -> None:
    net = bi_net(softmax="class")
    left, right = np.array([3, 4]), np.array([8, 9])
    scores = net.fill_scores(left, right, [np.array([w]) for w in range(V)])
    log_p = np.array([s[0] for s in scores])
    assert np.exp(log_p).sum() == pytest.approx(1.0, abs=1e-12)
    _, f_last, _, g_last = net.side_states(left, right)
    h, p = np.concatenate([f_last[0], g_last[0]]), net.params
    class_logits = p["output.class.W"] @ h + p["output.class.b"]
    log_class = class_logits - np.logaddexp.reduce(class_logits)
    for c, (lo, hi) in enumerate(itertools.pairwise(CLASS_BOUNDS)):
        word_logits = p["output.W"][lo:hi] @ h + p["output.b"][lo:hi]
        expected = log_class[c] + word_logits - np.logaddexp.reduce(word_logits)
        np.testing.assert_allclose(log_p[lo:hi], expected, atol=1e-12)


def test_fill_of_several_tokens_is_their_pseudo_log_likelihood() -> None:
    net = bi_net()
    left, right = np.array([3, 4]), np.array([8])
    candidates = [np.array([5, 6, 7]), np.array([9]), np.array([10, 11])]
    for c, got in zip(candidates, net.fill_scores(left, right, candidates), strict=True):
        full = net.word_log_probs(batch_of([*left, *c, *right]))
        np.testing.assert_allclose(got, full[len(left) : len(left) + len(c)], atol=1e-12)


def test_sentence_batches_cover_every_sentence_once_reproducibly() -> None:
    sentences = [np.arange(3, 3 + n) % V for n in range(1, 30)]
    first = list(sentence_batches(sentences, 4, np.random.default_rng(0), BOS, EOS))
    again = list(sentence_batches(sentences, 4, np.random.default_rng(0), BOS, EOS))
    assert sum(len(b.targets) for b in first) == sum(len(s) for s in sentences)
    assert all(np.array_equal(a.fwd_ids, b.fwd_ids) for a, b in zip(first, again, strict=True))


def test_language_model_fill_uses_both_sides_or_the_sentence() -> None:
    vocab = Vocabulary(["<unk>", "<s>", "</s>", *TINY_WORDS])
    config = ModelConfig(len(vocab), "lstm", embed_size=4, hidden_size=5, bidirectional=True)
    bi = GapFillingLM(perturbed(BiRNNLM(config, seed=0, dtype=np.float64)), vocab, Tokenizer())
    method, scores = bi.fill("the cat", "on the mat", ["sat", "new york", "zebra"])
    assert method == "bidirectional"
    assert [s.tokens for s in scores] == [["sat"], ["new", "york"], ["zebra"]]
    assert [s.oov for s in scores] == [False, False, True]
    with pytest.raises(UnsupportedCallError, match="serves fill"):
        bi.score_candidates("the", ["cat"])
    with pytest.raises(UnsupportedCallError):
        bi.score_sentences(["the cat"])


def test_sentence_method_scores_the_whole_sentence(tiny_lm: RecurrentLM) -> None:
    method, scores = tiny_lm.fill("the cat", "on the mat", ["sat", "new york"])
    assert method == "sentence"
    whole = tiny_lm.score_sentences(["the cat sat on the mat", "the cat new york on the mat"])
    assert [s.log_prob for s in scores] == pytest.approx([w.log_prob for w in whole])
