"""The neural cache over the history in the service: a model's own (from its checkpoint),
overridden or given per request on every endpoint, reported in every answer and /v1/models,
refused clearly where it cannot apply."""

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
from model.inference.interpolated_lm import InterpolatedLM
from model.inference.neural_cache import CacheSettings
from model.inference.ngram_lm import NgramLM
from model.inference.recurrent_lm import RecurrentLM
from model.ngram.kneser_ney import estimate
from model.text.tokenize import Tokenizer
from tests.model.test_history import TEXT

pytestmark = pytest.mark.anyio
HISTORY = [" ".join(s) for s in TEXT[:3]]
OWN = CacheSettings(theta=0.8, weight=0.3, size=20)


@pytest.fixture
def kn(tiny_lm: RecurrentLM) -> NgramLM:
    vocab = tiny_lm.vocab
    return NgramLM(estimate([vocab.encode(s) for s in TEXT], len(vocab), 3), vocab,
                   Tokenizer("whitespace"))  # fmt: skip


@pytest.fixture
async def client(tiny_lm: RecurrentLM, kn: NgramLM) -> AsyncIterator[httpx.AsyncClient]:
    cached = tiny_lm.with_cache(OWN)
    mix = InterpolatedLM([cached, kn], [0.7, 0.3], ["rnn", "kn"])
    models = {"cached": cached, "plain": tiny_lm, "kn": kn, "mix": mix}
    app = create_app(Settings(), ModelRegistry.from_models(models, default="cached"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c


def expected(lm: RecurrentLM, settings: CacheSettings | None) -> list[float]:
    prefix = history_window(TEXT[:3], 1000).tokens
    (score,) = lm.with_cache(settings).score_sentences([TEXT[3]], prefix=prefix)
    return score.token_log_probs


async def every_endpoint(client: httpx.AsyncClient, extra: dict[str, Any]) -> dict[str, Any]:
    """Each endpoint's answer to sentence 4 after sentences 1–3, with ``extra`` fields."""
    common = {"history": HISTORY, **extra}
    bodies = {
        "score": {"sentences": [" ".join(TEXT[3])]},
        "rerank": {"hypotheses": [{"text": " ".join(TEXT[3])}], "lm_weight": 1.0},
        "candidates": {"context": TEXT[3][:2], "candidates": [TEXT[3][2]]},
        "predict": {"context": TEXT[3][:2], "k": 20, "include_special": True},
        "fill": {"left": TEXT[3][:1], "right": TEXT[3][2:], "candidates": [TEXT[3][1]]},
    }
    out = {}
    for endpoint, body in bodies.items():
        r = await client.post(f"/v1/{endpoint}", json={**body, **common})
        assert r.status_code == 200, (endpoint, r.text)
        out[endpoint] = r.json()
    return out


def numbers(answers: dict[str, Any]) -> dict[str, float]:
    predictions = {p["word"]: p["log_prob"] for p in answers["predict"]["predictions"]}
    return {
        "score": answers["score"]["results"][0]["log_prob"],
        "rerank": answers["rerank"]["hypotheses"][0]["lm_log_prob"],
        "candidates": answers["candidates"]["results"][0]["log_prob"],
        "predict": predictions[TEXT[3][2]],
        "fill": answers["fill"]["results"][0]["log_prob"],
    }


def want_numbers(lps: list[float]) -> dict[str, float]:
    whole = float(np.sum(lps))
    return {"score": whole, "rerank": whole, "candidates": lps[2], "predict": lps[2],
            "fill": whole}  # fmt: skip


@pytest.mark.parametrize(
    ("model", "override", "settings"),
    [
        ("cached", None, OWN),  # the model's own
        ("cached", {"weight": 0.1}, CacheSettings(0.8, 0.1, 20)),  # one field overridden
        ("cached", {"weight": 0.0}, None),  # turned off
        ("plain", {"theta": 0.5, "weight": 0.2, "size": 7}, CacheSettings(0.5, 0.2, 7)),
        ("plain", None, None),
    ],
)
async def test_every_endpoint_mixes_the_cache_the_request_asks_for_and_says_which(
    client: httpx.AsyncClient,
    tiny_lm: RecurrentLM,
    model: str,
    override: dict[str, Any] | None,
    settings: CacheSettings | None,
) -> None:
    extra: dict[str, Any] = {"model": model} | ({} if override is None else {"cache": override})
    answers = await every_endpoint(client, extra)
    want = want_numbers(expected(tiny_lm, settings))
    assert numbers(answers) == pytest.approx(want, abs=1e-9)
    reported = None if settings is None else settings.to_dict()
    assert {name: a["cache"] for name, a in answers.items()} == dict.fromkeys(answers, reported)
    if settings is not None and settings.weight > 0:  # the cache changed the numbers
        assert numbers(answers)["score"] != pytest.approx(
            float(np.sum(expected(tiny_lm, None))), abs=1e-3
        )


async def test_a_combined_model_mixes_the_cache_into_its_network(
    client: httpx.AsyncClient, tiny_lm: RecurrentLM, kn: NgramLM
) -> None:
    prefix = history_window(TEXT[:3], 1000).tokens
    for override, settings in ((None, OWN), ({"size": 5}, CacheSettings(0.8, 0.3, 5))):
        body: dict[str, Any] = {"model": "mix", "sentences": [" ".join(TEXT[3])],
                                "history": HISTORY}  # fmt: skip
        if override:
            body["cache"] = override
        r = await client.post("/v1/score", json=body)
        assert r.status_code == 200, r.text
        rnn = tiny_lm.with_cache(settings).score_sentences([TEXT[3]], prefix=prefix)[0]
        ngram = kn.score_sentences([TEXT[3]], prefix=prefix)[0]
        want = np.log(0.7 * np.exp(rnn.token_log_probs) + 0.3 * np.exp(ngram.token_log_probs))
        assert r.json()["results"][0]["token_log_probs"] == pytest.approx(want, abs=1e-9)
        assert r.json()["cache"] == settings.to_dict()
    body = {"model": "mix", "context": TEXT[3][:2], "k": 12, "include_special": True,
            "history": HISTORY}  # fmt: skip
    r = await client.post("/v1/predict", json=body)
    assert len(r.json()["predictions"]) == len(tiny_lm.vocab)
    total = sum(p["probability"] for p in r.json()["predictions"])
    assert total == pytest.approx(1.0, abs=1e-9)  # over the whole vocabulary


async def test_models_report_their_cache(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models")
    caches = {m["name"]: m["cache"] for m in r.json()["models"]}
    assert caches == {"cached": OWN.to_dict(), "plain": None, "kn": None, "mix": OWN.to_dict()}


@pytest.mark.parametrize(
    ("body", "status", "field", "message"),
    [
        ({"model": "kn", "cache": {"weight": 0.1}}, 422, "cache", "hidden states"),
        ({"model": "plain", "cache": {"weight": 0.1}}, 422, "cache", "missing: theta, size"),
        ({"cache": {"weight": 1.0}}, 422, "cache.weight", "less than 1"),
        ({"cache": {"size": 0}}, 422, "cache.size", "greater than or equal to 1"),
        ({"cache": {"size": 10**6}}, 422, "cache.size", "less than or equal to 8192"),
        ({"cache": {"theta": -1}}, 422, "cache.theta", "greater than or equal to 0"),
        ({"cache": {"tehta": 1}}, 422, "cache.tehta", "Extra inputs"),
        ({"cache": {"size": "5"}}, 422, "cache.size", "integer"),
    ],
)
async def test_a_cache_that_cannot_apply_is_a_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, field: str, message: str
) -> None:
    for endpoint, base in (
        ("score", {"sentences": ["the cat"]}),
        ("candidates", {"context": "the", "candidates": ["cat"]}),
        ("predict", {"context": "the"}),
    ):
        r = await client.post(f"/v1/{endpoint}", json={**base, **body})
        assert r.status_code == status, (endpoint, r.text)
        assert field in r.text and message in r.text, (endpoint, r.text)


async def test_the_client_sends_a_cache(tiny_lm: RecurrentLM) -> None:
    registry = ModelRegistry.from_models({"plain": tiny_lm})
    transport = httpx.ASGITransport(app=create_app(Settings(), registry))
    override = {"theta": 0.5, "weight": 0.2, "size": 7}
    async with AsyncNextwordClient("http://t", transport=transport) as lm:
        scored = await lm.score([" ".join(TEXT[3])], history=HISTORY, cache=override)
    assert scored.cache is not None and scored.cache.model_dump() == override
    want = expected(tiny_lm, CacheSettings(0.5, 0.2, 7))
    assert scored.results[0].token_log_probs == pytest.approx(want, abs=1e-9)


async def test_rerank_defaults_to_the_models_tuned_weights(tiny_lm: RecurrentLM) -> None:
    from model.inference.rerank_weights import RerankWeights

    tuned = RecurrentLM(tiny_lm.net, tiny_lm.vocab, tiny_lm.tokenizer)
    tuned.rerank = RerankWeights(2.0, 0.5)
    registry = ModelRegistry.from_models({"tuned": tuned, "plain": tiny_lm}, default="tuned")
    app = create_app(Settings(), registry)
    hypotheses = [{"text": "the cat sat", "score": -1.0}, {"text": "cat the sat", "score": -0.5}]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        models = {m["name"]: m["rerank"] for m in (await c.get("/v1/models")).json()["models"]}
        assert models == {"tuned": {"lm_weight": 2.0, "length_bonus": 0.5}, "plain": None}
        for model, body, want in (
            ("tuned", {}, (2.0, 0.5)),
            ("tuned", {"lm_weight": 0.1}, (0.1, 0.5)),
            ("plain", {}, (0.5, 0.0)),
        ):
            r = await c.post("/v1/rerank", json={"model": model, "hypotheses": hypotheses} | body)
            assert r.status_code == 200, r.text
            assert r.json()["weights"] == {"lm_weight": want[0], "length_bonus": want[1]}
            for h in r.json()["hypotheses"]:
                assert h["combined"] == pytest.approx(
                    h["score"] + want[0] * h["lm_log_prob"] + want[1] * h["n_tokens"]
                )
