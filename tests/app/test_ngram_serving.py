"""An n-gram model is served like any other: every endpoint, exact and normalised."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from app.core.config import Settings
from app.main import create_app
from app.registry import ModelRegistry
from model.inference.ngram_lm import NgramLM
from model.ngram.kneser_ney import estimate
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary
from tests.model.test_ngram import corpus

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def kn3() -> NgramLM:
    sentences = corpus()
    vocab = Vocabulary.from_corpus(sentences)
    tables = estimate([vocab.encode(s) for s in sentences], len(vocab), 3)
    return NgramLM(tables, vocab, Tokenizer("whitespace"))


@pytest.fixture
async def client(kn3: NgramLM) -> AsyncIterator[httpx.AsyncClient]:
    registry = ModelRegistry.from_models({"kn3": kn3})
    transport = httpx.ASGITransport(app=create_app(Settings(), registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


async def test_every_endpoint_answers_from_the_ngram_tables(
    client: httpx.AsyncClient, kn3: NgramLM
) -> None:
    r = await client.post(
        "/v1/candidates", json={"context": "the", "candidates": ["cat", "old man"]}
    )
    assert r.status_code == 200, r.text
    cat, old_man = r.json()["results"]
    assert cat["log_prob"] == pytest.approx(kn3.next_log_probs("the")[kn3.vocab.id("cat")])
    assert old_man["log_prob"] == pytest.approx(
        kn3.next_log_probs("the")[kn3.vocab.id("old")]
        + kn3.next_log_probs("the old")[kn3.vocab.id("man")]
    )
    r = await client.post("/v1/predict", json={"context": "the old", "k": 3})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["word"] == "man"
    r = await client.post("/v1/score", json={"sentences": ["the cat sat on the mat"]})
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    assert result["targets"][-1] == "</s>" and len(result["token_log_probs"]) == 7
    r = await client.post(
        "/v1/fill", json={"left": "the", "right": "sat on the mat", "candidates": ["cat", "river"]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["method"] == "sentence"
    cat, river = r.json()["results"]
    assert cat["log_prob"] > river["log_prob"] and cat["share"] + river["share"] == pytest.approx(1)


async def test_models_describe_the_ngram(client: httpx.AsyncClient, kn3: NgramLM) -> None:
    described = (await client.get("/v1/models/kn3")).json()
    assert described["architecture"] == {"kind": "ngram", "order": 3, "vocab_size": len(kn3.vocab)}
    assert described["task"] == "next-word" and described["bidirectional"] is False
    assert "/v1/candidates" in described["endpoints"]
    p = np.exp(kn3.next_log_probs("my sister"))
    assert math.isclose(p.sum(), 1.0, abs_tol=1e-12)
