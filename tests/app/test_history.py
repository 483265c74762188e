"""``history`` on every scoring endpoint: the sentences before the request, read as running
text; the same numbers as the model's stream, bounded, reported, refused clearly when malformed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest

from app.client import AsyncNextwordClient
from app.core.config import Settings
from app.main import create_app
from app.registry import ModelRegistry
from model.inference.history import history_window
from model.inference.ngram_lm import NgramLM
from model.inference.recurrent_lm import RecurrentLM
from model.ngram.kneser_ney import estimate
from model.text.tokenize import Tokenizer
from tests.model.test_history import TEXT, stream_from

pytestmark = pytest.mark.anyio
HISTORY = [" ".join(s) for s in TEXT[:3]]
SENTENCE = " ".join(TEXT[3])


@pytest.fixture
def kn(tiny_lm: RecurrentLM) -> NgramLM:
    vocab = tiny_lm.vocab
    return NgramLM(estimate([vocab.encode(s) for s in TEXT], len(vocab), 3), vocab,
                   Tokenizer("whitespace"))  # fmt: skip


def served(tiny_lm: RecurrentLM, kn: NgramLM, **limits: Any) -> httpx.AsyncClient:
    registry = ModelRegistry.from_models({"rnn": tiny_lm, "kn": kn})
    app = create_app(Settings(**limits), registry)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.fixture
async def client(tiny_lm: RecurrentLM, kn: NgramLM) -> AsyncIterator[httpx.AsyncClient]:
    async with served(tiny_lm, kn) as c:
        yield c


@pytest.mark.parametrize(
    "history",
    ["\n\n".join(HISTORY), HISTORY, [s.split() for s in HISTORY]],
    ids=["a string", "sentences", "token lists"],
)
async def test_every_endpoint_reads_the_history_as_the_stream_does(
    client: httpx.AsyncClient, tiny_lm: RecurrentLM, history: Any
) -> None:
    want = stream_from(tiny_lm, TEXT[:4])[-(len(TEXT[3]) + 1) :]  # sentence 4 after 1–3
    read = {"sentences": 3, "tokens": sum(len(s) + 2 for s in TEXT[:3]), "dropped": 0}
    r = await client.post("/v1/score", json={"sentences": [SENTENCE], "history": history})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["token_log_probs"] == pytest.approx(want, abs=1e-9)
    assert r.json()["history"] == read and r.json()["warnings"] == []
    r = await client.post("/v1/rerank", json={"hypotheses": [{"text": SENTENCE}],
                                              "history": history, "lm_weight": 1.0})  # fmt: skip
    assert r.json()["hypotheses"][0]["lm_log_prob"] == pytest.approx(want.sum(), abs=1e-9)
    r = await client.post("/v1/candidates", json={"context": TEXT[3][:2], "candidates":
                                                  [TEXT[3][2]], "history": history})  # fmt: skip
    assert r.json()["results"][0]["log_prob"] == pytest.approx(want[2], abs=1e-9)
    assert r.json()["context_tokens"] == TEXT[3][:2] and r.json()["history"] == read
    body = {"context": TEXT[3][:2], "k": 20, "include_special": True, "history": history}
    r = await client.post("/v1/predict", json=body)
    top = {p["word"]: p["log_prob"] for p in r.json()["predictions"]}
    assert top[TEXT[3][2]] == pytest.approx(want[2], abs=1e-9)
    assert sum(p["probability"] for p in r.json()["predictions"]) == pytest.approx(1.0)
    body = {"left": TEXT[3][:1], "right": TEXT[3][2:], "candidates": [TEXT[3][1]],
            "history": history}  # fmt: skip
    r = await client.post("/v1/fill", json=body)
    assert r.json()["results"][0]["log_prob"] == pytest.approx(want.sum(), abs=1e-9)
    assert r.json()["history"] == read


async def test_without_history_nothing_changes_and_nothing_is_reported(
    client: httpx.AsyncClient, tiny_lm: RecurrentLM
) -> None:
    r = await client.post("/v1/score", json={"sentences": [SENTENCE]})
    assert r.json()["history"] is None
    alone = tiny_lm.score_sentences([SENTENCE])[0].token_log_probs
    assert r.json()["results"][0]["token_log_probs"] == pytest.approx(alone, abs=1e-12)
    r = await client.post("/v1/score", json={"sentences": [SENTENCE], "history": []})
    assert r.json()["history"] == {"sentences": 0, "tokens": 0, "dropped": 0}
    assert r.json()["results"][0]["token_log_probs"] == pytest.approx(alone, abs=1e-12)


async def test_the_oldest_tokens_beyond_the_bound_are_dropped_and_reported(
    tiny_lm: RecurrentLM, kn: NgramLM
) -> None:
    document = [" ".join(s) for s in TEXT * 3]
    window = history_window([s.split() for s in document], 20)
    assert window.dropped > 0
    async with served(tiny_lm, kn, max_history_tokens=20) as c:
        r = await c.post("/v1/score", json={"sentences": [SENTENCE], "history": document})
    assert r.json()["history"] == {"sentences": window.sentences, "tokens": window.read,
                                   "dropped": window.dropped}  # fmt: skip
    assert r.json()["history"]["tokens"] <= 20
    want = tiny_lm.score_sentences([SENTENCE], prefix=window.tokens)[0].token_log_probs
    assert r.json()["results"][0]["token_log_probs"] == pytest.approx(want, abs=1e-12)


async def test_an_ngram_reads_no_history_and_says_so(client: httpx.AsyncClient) -> None:
    bodies = [{"model": "kn", "sentences": [SENTENCE]}]
    bodies.append(bodies[0] | {"history": HISTORY})
    answers = [(await client.post("/v1/score", json=b)).json() for b in bodies]
    assert answers[0]["results"] == answers[1]["results"]
    assert answers[1]["history"] == {"sentences": 0, "tokens": 0, "dropped": 0}
    assert "reads no history" in answers[1]["warnings"][0]


@pytest.mark.parametrize(
    "history", [5, [1, 2], {"text": "a"}, [["the", 3]], [["the"], "cat"]], ids=str
)
async def test_a_malformed_history_is_a_422_naming_it(
    client: httpx.AsyncClient, history: Any
) -> None:
    r = await client.post("/v1/score", json={"sentences": [SENTENCE], "history": history})
    assert r.status_code == 422, r.text
    assert "history" in r.text


async def test_the_bound_is_in_the_openapi_document(tiny_lm: RecurrentLM, kn: NgramLM) -> None:
    async with served(tiny_lm, kn, max_history_tokens=77) as c:
        document = (await c.get("/openapi.json")).json()
    history = document["components"]["schemas"]["ScoreRequest"]["properties"]["history"]
    assert history["x-max-tokens"] == 77 and "maximum" not in history


async def test_the_client_sends_history(tiny_lm: RecurrentLM, kn: NgramLM) -> None:
    registry = ModelRegistry.from_models({"rnn": tiny_lm, "kn": kn})
    transport = httpx.ASGITransport(app=create_app(Settings(), registry))
    async with AsyncNextwordClient("http://t", transport=transport) as lm:
        scored = await lm.score([SENTENCE], history=HISTORY)
    want = stream_from(tiny_lm, TEXT[:4])[-(len(TEXT[3]) + 1) :]
    assert scored.results[0].token_log_probs == pytest.approx(want, abs=1e-9)
    assert scored.history is not None and scored.history.sentences == 3
    assert np.isfinite(scored.results[0].log_prob)


async def test_a_list_of_more_sentences_than_could_be_read_is_a_422(
    tiny_lm: RecurrentLM, kn: NgramLM
) -> None:
    async with served(tiny_lm, kn, max_history_tokens=6) as c:
        ok = await c.post("/v1/score", json={"sentences": [SENTENCE], "history": ["a"] * 6})
        over = await c.post("/v1/score", json={"sentences": [SENTENCE], "history": ["a"] * 7})
        document = (await c.get("/openapi.json")).json()
    assert ok.status_code == 200 and ok.json()["history"]["dropped"] > 0
    assert over.status_code == 422 and over.json()["field"] == "history"
    assert "limit is 6" in over.json()["detail"]
    variants = document["components"]["schemas"]["ScoreRequest"]["properties"]["history"]["anyOf"]
    assert [v.get("maxItems") for v in variants if v.get("type") == "array"] == [6, 6]
