"""Training end to end on tiny corpora: the model learns, and failures are loud."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from model.inference.checkpoint import language_model
from model.inference.evaluation import perplexity
from model.inference.evaluation import stream_cross_entropy as evaluate
from model.network.layers import NonFiniteError
from model.network.recurrent import RNNLM, ModelConfig
from model.text.batches import batchify, sentence_stream, target_mask
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary
from model.training.config import TrainConfig
from model.training.optim import SGD, Adam
from model.training.steps import train_step, train_windows
from model.training.tasks import task_for

CORPUS = [
    s.split()
    for s in [
        "the cat sat on the mat",
        "the dog sat on the log",
        "a cat saw a dog",
        "the dog ran to the cat",
        "a bird sat on a tree",
    ]
    * 8
]


def unigram_entropy(stream: np.ndarray, vocab: Vocabulary) -> float:
    """Entropy (nats) of the targets' unigram distribution: the best without context."""
    targets = stream[1:][target_mask(stream[1:], vocab) > 0]
    counts = np.array(list(Counter(targets.tolist()).values()), dtype=float)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


@pytest.mark.parametrize(("cell", "optimizer"), [("lstm", "adam"), ("gru", "adam"), ("rnn", "sgd")])
def test_a_tiny_model_overfits_a_tiny_corpus(cell: str, optimizer: str) -> None:
    vocab = Vocabulary.from_corpus(CORPUS)
    stream = sentence_stream(CORPUS, vocab)
    data = batchify(stream, batch_size=4)
    net = RNNLM(ModelConfig(len(vocab), cell, num_layers=2, embed_size=16, hidden_size=32), seed=0)
    opt = Adam(lr=0.01) if optimizer == "adam" else SGD(lr=0.5)
    before, _ = evaluate(net, data, vocab)
    for _ in range(60):
        losses = [r.loss for r in train_windows(net, opt, data, vocab, bptt=10, clip=5.0, rng=None)]
    after, count = evaluate(net, data, vocab)
    entropy = unigram_entropy(stream, vocab)
    assert before > entropy  # a random model is worse than unigram
    assert after < 0.6 * entropy, (after, entropy)  # context is being used
    assert count == int(target_mask(data[1:], vocab).sum())
    assert all(math.isfinite(x) for x in losses)


def test_dropout_training_runs_and_evaluation_is_deterministic() -> None:
    vocab = Vocabulary.from_corpus(CORPUS)
    data = batchify(sentence_stream(CORPUS, vocab), batch_size=4)
    net = RNNLM(ModelConfig(len(vocab), "lstm", embed_size=8, hidden_size=8, dropout=0.3))
    list(
        train_windows(net, Adam(0.01), data, vocab, bptt=8, clip=1.0, rng=np.random.default_rng(0))
    )
    assert evaluate(net, data, vocab) == evaluate(net, data, vocab)


def test_a_nan_weight_stops_training_with_a_clear_error() -> None:
    vocab = Vocabulary.from_corpus(CORPUS)
    net = RNNLM(ModelConfig(len(vocab), "lstm", embed_size=8, hidden_size=8))
    net.params["rnn.0.Wh"][0, 0] = np.nan
    x = np.ones((3, 2), dtype=np.int64) * 4
    with pytest.raises(NonFiniteError, match="cross-entropy is nan"):
        train_step(net, SGD(1.0), x, x, None, net.init_state(2), clip=1.0, rng=None)


def test_a_non_finite_gradient_is_reported_before_any_weight_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vocab = Vocabulary.from_corpus(CORPUS)
    net = RNNLM(ModelConfig(len(vocab), "lstm", embed_size=8, hidden_size=8))
    before = {k: v.copy() for k, v in net.params.items()}
    real = net.loss_and_grads

    def inf_gradient(*args: object) -> tuple:
        loss, grads, state = real(*args)
        grads["rnn.1.Wx"][0, 0] = np.inf  # finite loss, one overflowing gradient
        return loss, grads, state

    monkeypatch.setattr(net, "loss_and_grads", inf_gradient)
    x = np.full((3, 2), 4, dtype=np.int64)
    with pytest.raises(NonFiniteError, match="non-finite gradient in \\['rnn.1.Wx'\\]"):
        train_step(net, SGD(1.0), x, x, None, net.init_state(2), clip=1.0, rng=None)
    for name, p in net.params.items():
        np.testing.assert_array_equal(p, before[name])  # nothing was updated


def test_perplexity_is_exp_of_cross_entropy() -> None:
    assert perplexity(math.log(141.2)) == pytest.approx(141.2)
    assert perplexity(1e6) == math.inf


@pytest.mark.parametrize("bidirectional", [False, True])
def test_each_training_task_builds_a_network_that_serves_as_its_task(
    tiny_vocab: Vocabulary, bidirectional: bool
) -> None:
    cfg = TrainConfig(bidirectional=bidirectional, layers=1, emb=4, hidden=4)
    task = task_for(cfg)
    net = task.new_network(cfg.model_config(len(tiny_vocab)), seed=0)
    lm = language_model(net, tiny_vocab, Tokenizer("whitespace"))
    assert lm.task == task.name == ("gap-filling" if bidirectional else "next-word")
    assert task.carries_state is not bidirectional  # only BPTT windows carry a state
