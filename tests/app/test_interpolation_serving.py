"""An interpolated model is served like any other, and a request may give its own weights."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from app.core.config import Settings
from app.main import create_app
from app.registry import ModelRegistry
from model.inference.interpolated_lm import InterpolatedLM
from model.inference.ngram_lm import NgramLM
from model.inference.recurrent_lm import RecurrentLM
from tests.model.test_interpolation import by_hand, kn3, mix, rnn, vocab  # noqa: F401 (fixtures)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(mix: InterpolatedLM, kn3: NgramLM) -> AsyncIterator[httpx.AsyncClient]:  # noqa: F811
    registry = ModelRegistry.from_models({"mix": mix, "kn3": kn3})
    transport = httpx.ASGITransport(app=create_app(Settings(), registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


async def test_every_endpoint_answers_with_the_mixture(
    client: httpx.AsyncClient,
    mix: InterpolatedLM,  # noqa: F811
    rnn: RecurrentLM,  # noqa: F811
    kn3: NgramLM,  # noqa: F811
) -> None:
    r = await client.post("/v1/candidates", json={"model": "mix", "context": "the",
                                                  "candidates": ["cat", "old man"]})  # fmt: skip
    assert r.status_code == 200, r.text
    cat, _ = r.json()["results"]
    assert cat["log_prob"] == pytest.approx(by_hand(rnn, kn3, "the")[mix.vocab.id("cat")])
    r = await client.post("/v1/predict", json={"model": "mix", "context": "the old", "k": 2})
    assert r.status_code == 200, r.text
    best = by_hand(rnn, kn3, "the old")
    (first, _) = r.json()["predictions"]
    assert first["log_prob"] == pytest.approx(best[mix.vocab.id(first["word"])])
    r = await client.post("/v1/score", json={"model": "mix", "sentences": ["a dog saw the river"]})
    assert r.status_code == 200, r.text
    expected = mix.score_sentences(["a dog saw the river"])[0].log_prob
    assert r.json()["results"][0]["log_prob"] == pytest.approx(expected)
    r = await client.post("/v1/rerank", json={"model": "mix", "hypotheses": [
        {"text": "a dog saw the river"}, {"text": "river the saw dog a"}]})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["hypotheses"][0]["index"] == 0
    gap = {"left": "the", "right": "sat on the mat", "candidates": ["cat", "river"]}
    r = await client.post("/v1/fill", json={"model": "mix"} | gap)
    assert r.status_code == 200, r.text
    assert r.json()["method"] == "sentence"


async def test_models_list_the_components_and_their_weights(
    client: httpx.AsyncClient,
    mix: InterpolatedLM,  # noqa: F811
) -> None:
    described = (await client.get("/v1/models/mix")).json()
    architecture = described["architecture"]
    assert architecture["kind"] == "interpolation"
    assert architecture["weights"] == pytest.approx([0.3, 0.7])
    assert [c["name"] for c in architecture["components"]] == ["rnn", "kn3"]
    assert architecture["components"][1]["architecture"]["kind"] == "ngram"
    assert described["parameters"] == mix.num_parameters()
    assert "/v1/predict" in described["endpoints"]


async def test_a_request_may_give_its_own_weights(
    client: httpx.AsyncClient,
    mix: InterpolatedLM,  # noqa: F811
    rnn: RecurrentLM,  # noqa: F811
    kn3: NgramLM,  # noqa: F811
) -> None:
    body = {"model": "mix", "context": "the", "candidates": ["cat"], "weights": [1, 3]}
    r = await client.post("/v1/candidates", json=body)
    assert r.status_code == 200, r.text
    expected = by_hand(rnn, kn3, "the", (0.25, 0.75))[mix.vocab.id("cat")]
    assert r.json()["results"][0]["log_prob"] == pytest.approx(expected)
    r = await client.post("/v1/score", json={"model": "mix", "sentences": ["the cat saw a tree"],
                                             "weights": [0, 1]})  # fmt: skip
    only_kn = kn3.score_sentences(["the cat saw a tree"])[0].log_prob
    assert r.json()["results"][0]["log_prob"] == pytest.approx(only_kn)
    r = await client.post("/v1/predict", json={"model": "mix", "context": "a", "weights": [1, 0]})
    top = r.json()["predictions"][0]
    assert top["log_prob"] == pytest.approx(float(np.max(rnn.next_log_probs("a")[3:])))
    assert mix.weights.tolist() == pytest.approx([0.3, 0.7])  # the served model is unchanged


@pytest.mark.parametrize(
    ("model", "weights", "message"),
    [
        ("mix", [1.0], "need 2 weights"),
        ("mix", [-1.0, 2.0], "≥ 0"),
        ("mix", [0.0, 0.0], "not all 0"),
        ("kn3", [0.5, 0.5], "interpolated model only"),
    ],
)
async def test_weights_that_do_not_fit_are_a_422_naming_the_field(
    client: httpx.AsyncClient, model: str, weights: list[float], message: str
) -> None:
    for path, body in [
        ("/v1/candidates", {"context": "the", "candidates": ["cat"]}),
        ("/v1/predict", {"context": "the"}),
        ("/v1/score", {"sentences": ["the cat"]}),
        ("/v1/fill", {"left": "the", "right": "sat", "candidates": ["cat"]}),
    ]:
        r = await client.post(path, json=body | {"model": model, "weights": weights})
        assert r.status_code == 422, (path, r.text)
        assert "weights" in r.text and message in r.text, (path, r.text)


def test_the_model_info_metric_names_each_kind(mix: InterpolatedLM, kn3: NgramLM) -> None:  # noqa: F811
    from prometheus_client import generate_latest

    from app.model_metrics import publish

    publish(ModelRegistry.from_models({"mix": mix, "kn": kn3}))
    metrics = generate_latest().decode()
    assert 'cell="-",checksum="",kind="interpolation",model="mix"' in metrics
    assert 'cell="-",checksum="",kind="ngram",model="kn"' in metrics
