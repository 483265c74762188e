"""Bad input: a 4xx whose message names the field, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.main import create_app
from app.registry import ModelRegistry
from model.inference.recurrent_lm import RecurrentLM

pytestmark = pytest.mark.anyio


async def post_raw(client: httpx.AsyncClient, path: str, content: bytes) -> httpx.Response:
    return await client.post(path, content=content, headers={"content-type": "application/json"})


async def test_invalid_json_is_400(client: httpx.AsyncClient) -> None:
    r = await post_raw(client, "/v1/candidates", b'{"context": "a", ')
    assert r.status_code == 400
    assert r.json()["detail"].startswith("the request body is not valid JSON")


async def test_a_body_that_is_not_json_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/score", content=b"sentences=a")
    assert r.status_code == 400 and "must be a JSON object" in r.json()["detail"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/candidates", {"context": "a", "candidates": []}, "candidates"),
        ("/v1/candidates", {"context": "a", "candidates": ["  "]}, "candidates[0]"),
        ("/v1/candidates", {"context": "a", "candidates": [["cat", ""]]}, "candidates[0][1]"),
        ("/v1/candidates", {"context": 7, "candidates": ["a"]}, "context"),
        ("/v1/candidates", {"candidates": ["a"], "oov": "ignore"}, "oov"),
        ("/v1/candidates", {"candidates": ["a"], "kontext": "typo"}, "kontext"),
        ("/v1/predict", {"context": "a", "k": 0}, "k"),
        ("/v1/predict", {"context": "a", "k": "ten"}, "k"),
        ("/v1/score", {"sentences": []}, "sentences"),
        ("/v1/score", {"sentences": "not a list"}, "sentences"),
        ("/v1/rerank", {"hypotheses": [{"text": "a", "score": "high"}]}, "hypotheses[0].score"),
        ("/v1/rerank", {"hypotheses": [{"text": "a"}], "lm_weight": "0.5"}, "lm_weight"),
    ],
)
async def test_schema_violations_are_422_naming_the_field(
    client: httpx.AsyncClient, path: str, body: dict, field: str
) -> None:
    r = await client.post(path, json=body)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert any(part.startswith((f"{field}:", f"{field} is empty")) for part in detail.split("; "))
    assert "valid list" not in detail or "valid string" not in detail, detail  # one branch


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
async def test_non_finite_numbers_are_refused(client: httpx.AsyncClient, raw: bytes) -> None:
    r = await post_raw(
        client, "/v1/rerank", b'{"hypotheses": [{"text": "a cat", "score": ' + raw + b"}]}"
    )
    assert r.status_code == 422
    assert r.json()["detail"].startswith("hypotheses[0].score:")


@pytest.mark.parametrize(
    ("path", "body", "field", "words"),
    [
        ("/v1/candidates", {"candidates": ["a"] * 6}, "candidates", "6 items, the limit is 5"),
        ("/v1/score", {"sentences": ["a"] * 5}, "sentences", "5 items, the limit is 4"),
        (
            "/v1/rerank",
            {"hypotheses": [{"text": "a"}] * 5},
            "hypotheses",
            "5 items, the limit is 4",
        ),
        (
            "/v1/candidates",
            {"context": "a " * 13, "candidates": ["a"]},
            "context",
            "13 tokens, the limit is 12",
        ),
        ("/v1/candidates", {"candidates": ["a", "b " * 13]}, "candidates[1]", "13 tokens"),
        ("/v1/score", {"sentences": ["x " * 20]}, "sentences[0]", "20 tokens"),
        ("/v1/predict", {"k": 21}, "k", "above the limit of 20"),
        ("/v1/candidates", {"candidates": ["a"], "oov": "penalty"}, "oov_penalty", "required"),
        (
            "/v1/score",
            {"sentences": ["cat"], "bos": False, "eos": False},
            "sentences[0]",
            "nothing to score",
        ),
        (  # the model names its argument "sentences"; the answer names the request's field
            "/v1/rerank",
            {"hypotheses": [{"text": "the cat"}, {"text": "cat"}], "bos": False, "eos": False},
            "hypotheses[1]",
            "nothing to score",
        ),
        # a request wrong in two ways: the first problem found is the one the service checks
        # first, as it always did (nothing to score before OOV words, per item: length then
        # emptiness)
        (
            "/v1/score",
            {"sentences": ["the", "zebra cat"], "bos": False, "eos": False, "oov": "reject"},
            "sentences[0]",
            "nothing to score",
        ),
        (
            "/v1/rerank",
            {"hypotheses": [{"text": "the"}], "bos": False, "eos": False, "oov": "penalty"},
            "hypotheses[0]",
            "nothing to score",
        ),
        ("/v1/candidates", {"candidates": ["b " * 13, "\x1c"]}, "candidates[0]", "13 tokens"),
        ("/v1/fill", {"candidates": ["\x1c", "b " * 13]}, "candidates[0]", "no tokens"),
    ],
)
async def test_limits_are_422_naming_the_field(
    client: httpx.AsyncClient, path: str, body: dict, field: str, words: str
) -> None:
    r = await client.post(path, json=body)
    assert r.status_code == 422
    assert r.json()["field"] == field and words in r.json()["detail"]


async def test_unknown_model_is_404_listing_the_loaded_ones(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/candidates", json={"model": "gpt", "candidates": ["a"]})
    assert r.status_code == 404
    assert r.json() == {
        "detail": "unknown model 'gpt'; this server has ['other', 'tiny']",
        "field": "model",
    }
    assert (await client.get("/v1/models/gpt")).status_code == 404


async def test_oversized_bodies_are_413_by_length_and_while_streaming(
    client: httpx.AsyncClient,
) -> None:
    big = b'{"candidates": ["' + b"a" * 5000 + b'"]}'
    r = await post_raw(client, "/v1/candidates", big)
    assert r.status_code == 413 and "4096 bytes" in r.json()["detail"]

    async def chunks():  # no Content-Length: the limit applies while the body arrives
        for _ in range(10):
            yield b" " * 1000

    r = await client.post(
        "/v1/score", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413


async def test_requests_while_models_load_get_503() -> None:
    registry = ModelRegistry([("tiny", "/nonexistent")])  # never loaded: state stays "loading"
    app = create_app(Settings(), registry)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        r = await client.post("/v1/candidates", json={"candidates": ["a"]})
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/healthz")).status_code == 200


async def test_memory_exhausted_is_503_and_the_next_request_is_served(
    client: httpx.AsyncClient, tiny_lm: RecurrentLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker at its memory limit (MemoryError) refuses that request with 503 and Retry-After,
    and goes on serving: the compute thread is not lost with the request."""
    real = tiny_lm.score_sentences
    calls = []

    def exhausted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError
        return real(*args, **kwargs)

    monkeypatch.setattr(tiny_lm, "score_sentences", exhausted)
    r = await client.post("/v1/score", json={"sentences": ["the cat"], "model": "tiny"})
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert "out of memory" in r.json()["detail"]
    r = await client.post("/v1/score", json={"sentences": ["the cat"], "model": "tiny"})
    assert r.status_code == 200 and len(calls) == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"candidates": ["a"], "oov": "penalty", "oov_penalty": -1500}, "oov_penalty"),
        ({"candidates": ["a"], "oov": "penalty", "oov_penalty": 1}, "oov_penalty"),
    ],
)
async def test_out_of_range_numbers_are_422(
    client: httpx.AsyncClient, body: dict, field: str
) -> None:
    r = await client.post("/v1/candidates", json=body)
    assert r.status_code == 422 and r.json()["detail"].startswith(f"{field}:")
    r = await client.post(
        "/v1/rerank", json={"hypotheses": [{"text": "a", "score": -1e300}], "lm_weight": 1e30}
    )
    assert (
        r.status_code == 422
        and "hypotheses[0].score" in r.json()["detail"]
        and "lm_weight" in r.json()["detail"]
    )


async def test_hopeless_scores_stay_finite_json(client: httpx.AsyncClient) -> None:
    body = {"sentences": ["zebra unicorn"], "oov": "penalty", "oov_penalty": -100, "eos": False}
    r = await client.post("/v1/score", json=body)
    assert r.status_code == 200 and r.json()["results"][0]["perplexity"] > 1e40


async def test_a_body_that_is_not_utf8_says_so_and_where(client: httpx.AsyncClient) -> None:
    body = '{"context": "café", "candidates": ["cat"]}'.encode("latin-1")
    r = await post_raw(client, "/v1/candidates", body)
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert "UTF-8" in detail and f"offset {body.index(0xE9)}" in detail and "0xe9" in detail


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"\xff\xfe{", "byte 0xff at offset 0 is not UTF-8"),  # a UTF-16 byte-order mark
        ('{"context": "the"}'.encode("utf-16-le")[:-1], "looks like UTF-16 or UTF-32"),
    ],
)
async def test_a_body_in_another_encoding_is_named_as_such(
    client: httpx.AsyncClient, body: bytes, says: str
) -> None:
    r = await post_raw(client, "/v1/candidates", body)
    assert r.status_code == 400 and says in r.json()["detail"], r.json()


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
async def test_a_blank_candidate_is_named_as_empty(client: httpx.AsyncClient, blank: str) -> None:
    r = await client.post("/v1/candidates", json={"context": "the", "candidates": ["cat", blank]})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail.startswith("candidates[1] is empty"), detail
    assert "valid list" not in detail and "pattern" not in detail  # the branch not sent


async def test_a_bad_token_list_reports_the_list_branch_only(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/candidates", json={"context": "the", "candidates": [["cat", 7]]})
    assert r.status_code == 422
    assert r.json()["detail"] == "candidates[0][1]: Input should be a valid string"


async def test_a_text_of_neither_type_says_what_a_text_is(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/candidates", json={"context": 7, "candidates": ["cat"]})
    assert r.status_code == 422
    assert r.json()["detail"] == "context: must be a string or a list of token strings"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/candidates", {"context": "我 昨天", "candidates": ["上学", "迟到"]}),
        ("/v1/predict", {"context": "我 昨天"}),
        ("/v1/score", {"sentences": ["我 昨天 上学"]}),
        ("/v1/rerank", {"hypotheses": [{"text": "我 昨天"}, {"text": "上学"}]}),
        ("/v1/fill", {"left": "我", "right": "了", "candidates": ["上学"]}),
    ],
)
async def test_text_the_model_does_not_know_at_all_gets_a_warning(
    client: httpx.AsyncClient, path: str, body: dict
) -> None:
    """Chinese on an English model answered 200 with a 0.5/0.5 split and nothing to say that
    every word was unknown."""
    r = await client.post(path, json=body)
    assert r.status_code == 200
    warnings = r.json()["warnings"]
    assert len(warnings) == 1 and "outside the model's vocabulary" in warnings[0]


async def test_known_text_gets_no_warning(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/candidates", json={"context": "zzz", "candidates": ["cat", "qq"]})
    assert r.status_code == 200 and r.json()["warnings"] == []
