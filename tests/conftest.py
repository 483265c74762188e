"""Shared fixtures: tiny float64 models, small enough for numerical gradient checks."""

from __future__ import annotations

import numpy as np
import pytest

from model.inference.recurrent_lm import RecurrentLM
from model.network.recurrent import RNNLM, ModelConfig
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary

TINY_WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "new", "york"]


def perturbed(net: RNNLM, seed: int = 0, scale: float = 0.3) -> RNNLM:
    """Add noise to every parameter so no gradient is trivially zero (biases start at 0)."""
    rng = np.random.default_rng(seed)
    for p in net.params.values():
        p += rng.normal(0.0, scale, p.shape)
    return net


@pytest.fixture
def tiny_vocab() -> Vocabulary:
    return Vocabulary(["<unk>", "<s>", "</s>", *TINY_WORDS])


@pytest.fixture
def tiny_lm(tiny_vocab: Vocabulary) -> RecurrentLM:
    """A random 2-layer LSTM language model in float64 over a 12-word vocabulary."""
    config = ModelConfig(
        vocab_size=len(tiny_vocab), cell="lstm", num_layers=2, embed_size=6, hidden_size=5
    )
    net = perturbed(RNNLM(config, seed=3, dtype=np.float64), seed=4)
    return RecurrentLM(net, tiny_vocab, Tokenizer("whitespace"))
