"""Golden scores: the checked-in model must keep giving the checked-in numbers.

A refactor that silently changes probabilities fails here. If a change is meant to change them,
regenerate with ``python tests/fixtures/make_golden.py`` and say why in the commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from app.core.config import Settings
from app.main import create_app
from app.registry import ModelRegistry
from model.inference.checkpoint import load_checkpoint

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GOLDEN = json.loads((FIXTURES / "golden_scores.json").read_text())
TOL = 1e-4  # float32 arithmetic; real changes move these numbers by far more


@pytest.fixture(scope="module")
def golden_lm():
    return load_checkpoint(FIXTURES / "golden_model")


def test_library_scores_match_the_golden_file(golden_lm) -> None:
    for case in GOLDEN["candidates"]:
        req = case["request"]
        got = [s.log_prob for s in golden_lm.score_candidates(req["context"], req["candidates"])]
        assert got == pytest.approx(case["log_probs"], abs=TOL)
    for case in GOLDEN["score"]:
        req = case["request"]
        got = golden_lm.score_sentences(req["sentences"], bos=req["bos"], eos=req["eos"])
        for sentence, want in zip(got, case["token_log_probs"], strict=True):
            assert sentence.token_log_probs == pytest.approx(want, abs=TOL)
    for case in GOLDEN["predict"]:
        got = golden_lm.top_k(case["request"]["context"], case["request"]["k"])
        assert [w for w, _ in got] == [w for w, _ in case["top"]]
        assert [lp for _, lp in got] == pytest.approx([lp for _, lp in case["top"]], abs=TOL)


@pytest.mark.anyio
async def test_the_api_serves_the_golden_scores(golden_lm) -> None:
    app = create_app(Settings(), ModelRegistry.from_models({"golden": golden_lm}))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        for case in GOLDEN["candidates"]:
            data = (await client.post("/v1/candidates", json=case["request"])).json()
            assert [r["log_prob"] for r in data["results"]] == pytest.approx(
                case["log_probs"], abs=TOL
            )
        for case in GOLDEN["score"]:
            data = (await client.post("/v1/score", json=case["request"])).json()
            got = [r["token_log_probs"] for r in data["results"]]
            for a, b in zip(got, case["token_log_probs"], strict=True):
                assert a == pytest.approx(b, abs=TOL)
