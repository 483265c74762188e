"""Training end to end on tiny corpora: the model learns, and failures are loud."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from model.inference.checkpoint import language_model, load_checkpoint
from model.inference.evaluation import perplexity
from model.inference.evaluation import stream_cross_entropy as evaluate
from model.network.layers import NonFiniteError
from model.network.recurrent import RNNLM, ModelConfig
from model.text.batches import (
    PaddedSentences,
    batchify,
    segments,
    sentence_stream,
    target_mask,
)
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary
from model.training.config import TrainConfig
from model.training.optim import SGD, Adam
from model.training.steps import train_step, train_windows
from model.training.tasks import task_for
from model.training.trainer import train

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


def test_a_sentence_batch_is_scored_as_the_service_scores_each_sentence_alone(
    tiny_vocab: Vocabulary,
) -> None:
    """--context sentence trains on exactly what /v1/score computes: the loss of a padded batch,
    before its update, is the mean of the sentences' own token log-probabilities."""
    sentences = [s.split() for s in ["the cat sat", "a dog", "the cat sat on the mat", "dog"]]
    net = RNNLM(ModelConfig(len(tiny_vocab), "lstm", num_layers=2, embed_size=6, hidden_size=5),
                seed=2, dtype=np.float64)  # fmt: skip
    lm = language_model(net, tiny_vocab, Tokenizer("whitespace"))
    alone = [lp for s in lm.score_sentences(sentences) for lp in s.token_log_probs]
    batch = PaddedSentences.from_sentences([tiny_vocab.encode(s) for s in sentences], tiny_vocab)
    result, _ = train_step(net, SGD(lr=0.1), batch.inputs, batch.targets, batch.mask,
                           net.init_state(4), clip=None, rng=None)  # fmt: skip
    assert result.tokens == len(alone) == sum(len(s) + 1 for s in sentences)
    assert result.loss == pytest.approx(-np.mean(alone), abs=1e-10)
    assert lm.evaluate(sentences).isolated_cross_entropy != pytest.approx(
        -np.mean(alone)
    )  # trained


def test_training_on_sentences_chooses_the_model_on_the_isolated_figure(tmp_path: Path) -> None:
    text = tmp_path / "train.txt"
    text.write_text("\n".join(" ".join(s) for s in CORPUS) + "\n")
    out = tmp_path / "m"
    cfg = TrainConfig(train=str(text), out=str(out), context="sentence", layers=1, emb=8,
                      hidden=8, epochs=2, batch_size=4, valid_fraction=0.2)  # fmt: skip
    train(cfg)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["valid_isolated_ppl"] == r["valid_ppl"] for r in records)
    assert all(r["valid_stream_ppl"] != r["valid_ppl"] for r in records)
    lm = load_checkpoint(out)
    assert lm.metadata["training"]["context"] == "sentence"
    assert lm.metadata["valid_isolated_perplexity"] == lm.metadata["valid_perplexity"]
    with pytest.raises(ValueError, match="context must be one of"):
        TrainConfig(context="paragraph")
    with pytest.raises(ValueError, match="reset_prob applies to --context sentence"):
        TrainConfig(reset_prob=0.5)


def test_a_segment_carries_the_state_from_one_sentence_into_the_next(
    tiny_vocab: Vocabulary,
) -> None:
    """--reset-prob below 1: a segment is scored as the stream reads those sentences."""
    sentences = [s.split() for s in ["the cat sat", "a dog", "the mat"]]
    ids = [tiny_vocab.encode(s) for s in sentences]
    net = RNNLM(ModelConfig(len(tiny_vocab), "gru", num_layers=1, embed_size=6, hidden_size=5),
                seed=2, dtype=np.float64)  # fmt: skip
    lm = language_model(net, tiny_vocab, Tokenizer("whitespace"))
    stream = lm.text_log_probs(sentences, stream=True)
    batch = PaddedSentences.from_segments([ids, ids[:1]], tiny_vocab)
    result, _ = train_step(net, SGD(lr=1e-9), batch.inputs, batch.targets, batch.mask,
                           net.init_state(2), clip=None, rng=None)  # fmt: skip
    alone = lm.text_log_probs(sentences[:1])
    assert result.tokens == len(stream) + len(alone)  # the given <s> are not predicted
    assert result.loss == pytest.approx(-np.concatenate([stream, alone]).mean(), abs=1e-10)
    rng = np.random.default_rng(0)
    assert [len(g) for g in segments(ids, 1.0, rng)] == [1, 1, 1]
    grouped = segments(ids * 100, 0.5, rng)
    assert sum(len(g) for g in grouped) == 300 and 100 < len(grouped) < 200
