"""/v1/fill: gap filling with a bidirectional model, or whole sentences with a left-to-right one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from app import schemas, service
from app.core.config import Settings
from app.main import create_app
from app.registry import ModelRegistry
from model.inference.gap_filling_lm import GapFillingLM
from model.inference.recurrent_lm import RecurrentLM
from model.network.bidirectional import BiRNNLM
from model.network.recurrent import ModelConfig
from tests.conftest import perturbed

pytestmark = pytest.mark.anyio


@pytest.fixture
def bi_lm(tiny_lm: RecurrentLM) -> GapFillingLM:
    config = ModelConfig(len(tiny_lm.vocab), "gru", embed_size=4, hidden_size=5, bidirectional=True)
    net = perturbed(BiRNNLM(config, seed=5, dtype=np.float64), seed=6)  # type: ignore[arg-type]
    return GapFillingLM(net, tiny_lm.vocab, tiny_lm.tokenizer)


@pytest.fixture
async def fill_client(
    tiny_lm: RecurrentLM, bi_lm: GapFillingLM
) -> AsyncIterator[httpx.AsyncClient]:
    registry = ModelRegistry.from_models({"ltr": tiny_lm, "bi": bi_lm})
    transport = httpx.ASGITransport(app=create_app(Settings(), registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


async def test_bidirectional_fill(fill_client: httpx.AsyncClient, bi_lm: GapFillingLM) -> None:
    body = {
        "model": "bi",
        "left": "the cat",
        "right": "on the mat",
        "candidates": ["sat", "ran", "new york"],
    }
    data = (await fill_client.post("/v1/fill", json=body)).json()
    assert data["method"] == "bidirectional" and data["model"] == "bi"
    assert data["normalized"] is False  # "new york" is scored by its pseudo-log-likelihood
    assert data["left_tokens"] == ["the", "cat"] and data["right_tokens"] == ["on", "the", "mat"]
    _, want = bi_lm.fill("the cat", "on the mat", ["sat", "ran", "new york"])
    assert [r["log_prob"] for r in data["results"]] == pytest.approx(
        [w.log_prob for w in want], abs=1e-12
    )
    assert sum(r["share"] for r in data["results"]) == pytest.approx(1.0)
    single = (await fill_client.post("/v1/fill", json=body | {"candidates": ["sat", "ran"]})).json()
    assert single["normalized"] is True


async def test_left_to_right_models_fall_back_to_whole_sentences(
    fill_client: httpx.AsyncClient, tiny_lm: RecurrentLM
) -> None:
    body = {
        "model": "ltr",
        "left": "the cat",
        "right": "on the mat",
        "candidates": ["sat", "new york"],
    }
    data = (await fill_client.post("/v1/fill", json=body)).json()
    assert data["method"] == "sentence"
    whole = tiny_lm.score_sentences(["the cat sat on the mat", "the cat new york on the mat"])
    assert [r["log_prob"] for r in data["results"]] == pytest.approx([w.log_prob for w in whole])


async def test_left_to_right_endpoints_refuse_a_bidirectional_model(
    fill_client: httpx.AsyncClient,
) -> None:
    for path, body in [
        ("/v1/candidates", {"candidates": ["cat"]}),
        ("/v1/predict", {"context": "the"}),
        ("/v1/score", {"sentences": ["the cat"]}),
        ("/v1/rerank", {"hypotheses": [{"text": "the cat"}]}),
    ]:
        r = await fill_client.post(path, json=body | {"model": "bi"})
        assert r.status_code == 422, path
        assert r.json()["field"] == "model" and "serves /v1/fill only" in r.json()["detail"]
    models = {m["name"]: m for m in (await fill_client.get("/v1/models")).json()["models"]}
    assert models["bi"]["bidirectional"] is True and models["bi"]["endpoints"] == ["/v1/fill"]
    assert models["ltr"]["bidirectional"] is False


async def test_fill_oov_policies(fill_client: httpx.AsyncClient) -> None:
    body = {"model": "bi", "left": "the zebra", "candidates": ["cat", "unicorn"]}
    r = await fill_client.post("/v1/fill", json=body | {"oov": "reject"})
    assert r.status_code == 422 and r.json()["oov"] == {
        "left": ["zebra"],
        "candidates[1]": ["unicorn"],
    }
    penalty = (
        await fill_client.post("/v1/fill", json=body | {"oov": "penalty", "oov_penalty": -40})
    ).json()
    assert penalty["results"][1]["log_prob"] == -40


def test_a_gap_filling_models_candidates_are_one_slice(bi_lm: GapFillingLM) -> None:
    """The two sides are read once for all the candidates: slicing them would read the sides
    again for every slice (61× slower with long contexts), so the work is one slice."""
    candidates = ["sat", "ran", "dog"] * 30
    req = schemas.FillRequest(left="the cat", right="on the mat", candidates=candidates)
    work = service.fill(bi_lm, "bi", req, Settings(), slice_cost=1.0)  # any budget
    yields = []
    try:
        while True:
            yields.append(next(work))
    except StopIteration as stop:
        assert len(stop.value.results) == 90
    assert len(yields) == 2 and yields[-1] == 0.0  # validated, then everything at once
