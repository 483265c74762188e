"""The service's open vocabulary: OOV words scored by spelling by default (``oov: "spell"``),
the old ``unk`` and ``penalty`` on request, and what /v1/models says."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import httpx
import pytest

from app.core.config import Settings
from app.main import create_app
from app.registry import ModelRegistry
from model.inference.recurrent_lm import RecurrentLM
from model.inference.spelling import SpellingModel

pytestmark = pytest.mark.anyio


@pytest.fixture
async def spelled(tiny_lm: RecurrentLM) -> AsyncIterator[tuple[httpx.AsyncClient, RecurrentLM]]:
    """The tiny model with a spelling model ("spelled"), and one without ("plain")."""
    plain = RecurrentLM(tiny_lm.net, tiny_lm.vocab, tiny_lm.tokenizer)
    tiny_lm.use_spelling(SpellingModel.train(["the", "cat", "weena", "filby", "eloi"], order=3))
    registry = ModelRegistry.from_models({"spelled": tiny_lm, "plain": plain})
    app = create_app(Settings(), registry)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c, tiny_lm


async def test_an_oov_word_gets_unks_probability_times_its_spelling(
    spelled: tuple[httpx.AsyncClient, RecurrentLM],
) -> None:
    client, lm = spelled
    assert lm.spelling is not None
    body = {"model": "spelled", "context": "the", "candidates": ["cat", "weena", "xqzk"]}
    r = (await client.post("/v1/candidates", json=body)).json()
    assert r["oov"] == "spell" and r["normalized"] is True
    unk = float(lm.next_log_probs("the")[lm.vocab.unk_id])
    cat, weena, xqzk = r["results"]
    assert cat["log_prob"] == pytest.approx(float(lm.next_log_probs("the")[lm.vocab.id("cat")]),
                                            abs=1e-6)  # fmt: skip
    assert weena["log_prob"] == pytest.approx(unk + lm.spelling.log_prob("weena"), abs=1e-6)
    assert weena["log_prob"] > xqzk["log_prob"] + 3  # spelt like the words it learnt
    assert cat["share"] > weena["share"] > xqzk["share"]  # <unk>'s mass shared out, not given

    old = (await client.post("/v1/candidates", json=body | {"oov": "unk"})).json()
    assert old["oov"] == "unk"
    assert old["results"][1]["log_prob"] == pytest.approx(unk, abs=1e-6)
    assert old["results"][1]["log_prob"] == old["results"][2]["log_prob"]  # indistinct


async def test_every_endpoint_scores_oov_words_by_spelling(
    spelled: tuple[httpx.AsyncClient, RecurrentLM],
) -> None:
    client, lm = spelled
    assert lm.spelling is not None
    share = lm.spelling.log_prob("weena")
    for path, body in [
        ("/v1/score", {"sentences": ["the weena sat"]}),
        ("/v1/rerank", {"hypotheses": [{"text": "the weena sat"}]}),
        ("/v1/fill", {"left": "the", "right": "sat", "candidates": ["weena"]}),
    ]:
        spell = (await client.post(path, json=body | {"model": "spelled"})).json()
        unk = (await client.post(path, json=body | {"model": "spelled", "oov": "unk"})).json()
        assert spell["oov"] == "spell" and unk["oov"] == "unk", path
        key = {"/v1/score": "results", "/v1/rerank": "hypotheses", "/v1/fill": "results"}[path]
        field = "lm_log_prob" if path == "/v1/rerank" else "log_prob"
        assert spell[key][0][field] - unk[key][0][field] == pytest.approx(share, abs=1e-6), path


async def test_a_model_without_a_spelling_model_keeps_the_unk_policy(
    spelled: tuple[httpx.AsyncClient, RecurrentLM],
) -> None:
    client, _ = spelled
    body = {"model": "plain", "context": "the", "candidates": ["weena"]}
    r = await client.post("/v1/candidates", json=body)
    assert r.json()["oov"] == "unk"
    r = await client.post("/v1/candidates", json=body | {"oov": "spell"})
    assert r.status_code == 422 and r.json()["field"] == "oov"
    assert "nextword spell" in r.json()["detail"]


async def test_models_say_which_open_vocabulary_method_a_model_has(
    spelled: tuple[httpx.AsyncClient, RecurrentLM],
) -> None:
    client, _ = spelled
    models = {m["name"]: m for m in (await client.get("/v1/models")).json()["models"]}
    assert models["spelled"]["open_vocabulary"] == {
        "method": "char-kneser-ney", "order": 3, "characters": 13, "source": "vocabulary",
        "types": 5,
    }  # fmt: skip
    assert models["plain"]["open_vocabulary"] is None


async def test_penalty_still_replaces_and_is_not_normalised(
    spelled: tuple[httpx.AsyncClient, RecurrentLM],
) -> None:
    client, _ = spelled
    body = {"model": "spelled", "context": "the", "candidates": ["weena"], "oov": "penalty",
            "oov_penalty": -7.5}  # fmt: skip
    r = (await client.post("/v1/candidates", json=body)).json()
    assert r["normalized"] is False and r["oov"] == "penalty"
    assert r["results"][0]["log_prob"] == pytest.approx(-7.5)
    assert math.isclose(r["results"][0]["probability"], math.exp(-7.5))
