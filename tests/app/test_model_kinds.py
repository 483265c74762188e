"""The service serves any ``LanguageModel``: a kind it has never heard of, written here.

A unigram model (the simplest n-gram) implements only ``score_sentences`` and ``evaluate``. The
service must serve it on /v1/score, /v1/rerank and /v1/fill (the base class's sentence method),
refuse /v1/candidates and /v1/predict with a 422 naming the model and what it serves, and
describe it on /v1/models, without any code that knows this kind.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest

from app.core.config import Settings
from app.main import create_app
from app.model_metrics import publish
from app.registry import ModelRegistry
from model.inference.language_model import Call, Evaluation, LanguageModel, SentenceScore, Text
from model.inference.recurrent_lm import RecurrentLM
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary

pytestmark = pytest.mark.anyio
CORPUS = ["the cat sat", "the dog sat", "the cat ran"]


class UnigramLM(LanguageModel):
    """P(w) = (count(w) + 1) / (N + V), </s> counted once per sentence; no context at all."""

    task = "next-word"
    calls = frozenset({Call.SCORE, Call.FILL})

    def __init__(self, sentences: list[str]) -> None:
        tokens = [s.split() for s in sentences]
        super().__init__(Vocabulary.from_corpus(tokens), Tokenizer("whitespace"))
        self.counts = Counter(t for s in tokens for t in [*s, "</s>"])
        self.total = sum(self.counts.values())

    def log_prob(self, token: str) -> float:
        word = token if token in self.vocab else "<unk>"
        return math.log((self.counts[word] + 1) / (self.total + len(self.vocab)))

    def architecture(self) -> dict[str, Any]:
        return {"order": 1}

    def num_parameters(self) -> int:
        return len(self.vocab)

    def self_check(self) -> None:
        assert math.isfinite(self.log_prob("the"))

    def score_sentences(
        self, sentences: Sequence[Text], bos: bool = True, eos: bool = True, batch_size: int = 64
    ) -> list[SentenceScore]:
        token_lists = [self.tokenize(s) for s in sentences]
        self.check_scorable(token_lists, bos, eos)
        scores = []
        for tokens in token_lists:
            targets = (tokens if bos else tokens[1:]) + (["</s>"] if eos else [])
            scores.append(
                self.sentence_score(tokens, [self.log_prob(t) for t in targets], bos, eos)
            )
        return scores

    def evaluate(self, sentences: list[list[str]], batch_size: int = 1) -> Evaluation:
        targets = [t for s in sentences for t in [*s, "</s>"]]
        cross_entropy = -sum(map(self.log_prob, targets)) / len(targets)
        oov = sum(t not in self.vocab for t in targets)
        return Evaluation(self.task, len(targets), cross_entropy, oov / len(targets))


@pytest.fixture
def unigram() -> UnigramLM:
    return UnigramLM(CORPUS)


@pytest.fixture
async def client(unigram: UnigramLM, tiny_lm: RecurrentLM) -> AsyncIterator[httpx.AsyncClient]:
    registry = ModelRegistry.from_models({"uni": unigram, "rnn": tiny_lm}, default="uni")
    transport = httpx.ASGITransport(app=create_app(Settings(), registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


async def test_a_new_kind_scores_sentences_and_reranks(
    client: httpx.AsyncClient, unigram: UnigramLM
) -> None:
    r = await client.post("/v1/score", json={"sentences": ["the cat sat", "the zebra"]})
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    want = [unigram.log_prob(t) for t in ["the", "cat", "sat", "</s>"]]
    assert first["token_log_probs"] == pytest.approx(want, abs=1e-12)
    assert second["oov_positions"] == [1] and second["oov_count"] == 1
    r = await client.post(
        "/v1/rerank",
        json={"hypotheses": [{"text": "zebra zebra"}, {"text": "the cat"}], "oov": "penalty",
              "oov_penalty": -50.0},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    best, worst = r.json()["hypotheses"]
    assert best["text"] == "the cat"
    assert worst["lm_log_prob"] == pytest.approx(-100.0 + unigram.log_prob("</s>"), abs=1e-9)


async def test_a_new_kind_fills_gaps_by_whole_sentences(
    client: httpx.AsyncClient, unigram: UnigramLM
) -> None:
    r = await client.post(
        "/v1/fill", json={"left": "the", "right": "sat", "candidates": ["cat", "dog"]}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == "sentence"
    cat, dog = body["results"]
    whole = sum(unigram.log_prob(t) for t in ["the", "cat", "sat", "</s>"])
    assert cat["log_prob"] == pytest.approx(whole, abs=1e-12)
    assert cat["log_prob"] > dog["log_prob"]  # cat was seen twice, dog once


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/candidates", {"context": "the", "candidates": ["cat"]}),
        ("/v1/predict", {"context": "the"}),
    ],
)
async def test_calls_a_kind_does_not_serve_are_422_naming_the_model(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    r = await client.post(path, json=body)
    assert r.status_code == 422
    assert r.json()["field"] == "model"
    assert "it serves /v1/score, /v1/rerank, /v1/fill only" in r.json()["detail"]


async def test_models_describe_a_new_kind_by_what_it_serves(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models")
    assert r.status_code == 200, r.text
    described = {m["name"]: m for m in r.json()["models"]}
    uni, rnn = described["uni"], described["rnn"]
    assert uni["endpoints"] == ["/v1/score", "/v1/rerank", "/v1/fill"]
    assert uni["architecture"] == {"order": 1} and uni["prefix_cache"] is None
    assert rnn["endpoints"] == [
        "/v1/candidates", "/v1/predict", "/v1/score", "/v1/rerank", "/v1/fill",
    ]  # fmt: skip
    assert rnn["task"] == "next-word" and rnn["bidirectional"] is False


def test_metrics_publish_every_kind(unigram: UnigramLM, tiny_lm: RecurrentLM) -> None:
    publish(ModelRegistry.from_models({"uni": unigram, "rnn": tiny_lm}))
    metrics = generate_latest().decode()
    rnn = 'cell="lstm",checksum="",kind="recurrent",model="rnn",vocab_size="12"'
    assert f"nextword_model_info{{{rnn}}} 1.0" in metrics
    size = len(unigram.vocab)
    uni = f'cell="-",checksum="",kind="-",model="uni",vocab_size="{size}"'
    assert f"nextword_model_info{{{uni}}} 1.0" in metrics
