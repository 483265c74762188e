"""The typed async client against the ASGI app (the sync one runs against a real server in
tests/app/test_server.py)."""

from __future__ import annotations

import httpx
import pytest

from app.client import AsyncNextwordClient, NextwordError
from app.core.config import Settings
from app.main import create_app
from app.registry import ModelRegistry
from model.inference.recurrent_lm import RecurrentLM

pytestmark = pytest.mark.anyio


async def test_async_client_calls_every_scoring_endpoint(
    registry: ModelRegistry, tiny_lm: RecurrentLM
) -> None:
    transport = httpx.ASGITransport(app=create_app(Settings(), registry))
    async with AsyncNextwordClient("http://t", transport=transport) as client:
        assert await client.ready()
        cands = await client.candidates("the cat", ["sat", "ran"])
        assert [r.log_prob for r in cands.results] == pytest.approx(
            [s.log_prob for s in tiny_lm.score_candidates("the cat", ["sat", "ran"])]
        )
        top = await client.predict("the", k=3)
        assert len(top.predictions) == 3
        scores = await client.score(["the cat sat", "dog"], eos=False)
        assert [r.targets[-1] for r in scores.results] == ["sat", "dog"]
        ranked = await client.rerank([("the cat sat", -1.0), ("zebra zebra", 0.0)], lm_weight=1.0)
        assert ranked.hypotheses[0].combined >= ranked.hypotheses[1].combined
        listed = await client.models()
        assert {m.name for m in listed.models} == {"tiny", "other"} and listed.default == "tiny"
        assert (await client.describe("other")).vocab_size == len(tiny_lm.vocab)
        with pytest.raises(NextwordError) as error:
            await client.candidates("the", [])
        assert error.value.status == 422 and "candidates" in error.value.detail


async def test_client_selects_a_model(registry: ModelRegistry) -> None:
    transport = httpx.ASGITransport(app=create_app(Settings(), registry))
    async with AsyncNextwordClient("http://t", model="other", transport=transport) as client:
        assert (await client.predict("the", k=1)).model == "other"


async def test_every_call_takes_its_own_model(registry: ModelRegistry) -> None:
    """``model=`` on a call overrides the client's (it raised "multiple values for keyword
    argument 'model'" on every method)."""
    transport = httpx.ASGITransport(app=create_app(Settings(), registry))
    async with AsyncNextwordClient("http://t", model="tiny", transport=transport) as client:
        answers = [
            await client.candidates("the", ["cat"], model="other"),
            await client.predict("the", k=1, model="other"),
            await client.score(["the cat"], model="other"),
            await client.rerank([("the cat", 0.0)], model="other", lm_weight=1.0),
            await client.fill("the", "sat", ["cat"], model="other"),
        ]
        assert [a.model for a in answers] == ["other"] * 5
        assert (await client.predict("the", k=1)).model == "tiny"  # the client's own again
        with pytest.raises(NextwordError) as error:
            await client.describe("gpt")
        assert error.value.status == 404
