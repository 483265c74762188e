"""/v1/models, vocabulary pages, health, metrics and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.core.config import Settings
from app.main import create_app
from app.registry import ModelRegistry
from model.inference.checkpoint import save_checkpoint
from model.inference.recurrent_lm import RecurrentLM
from model.network.recurrent import RNNLM, ModelConfig
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary

pytestmark = pytest.mark.anyio


async def test_models_describe_what_is_loaded(
    client: httpx.AsyncClient, tiny_lm: RecurrentLM
) -> None:
    data = (await client.get("/v1/models")).json()
    assert data["default"] == "tiny"
    names = [m["name"] for m in data["models"]]
    assert names == ["tiny", "other"]
    tiny = (await client.get("/v1/models/tiny")).json()
    assert tiny["architecture"]["cell"] == "lstm" and tiny["vocab_size"] == len(tiny_lm.vocab)
    assert tiny["bidirectional"] is False
    for key in (
        "tokenizer",
        "training_corpus",
        "valid_perplexity",
        "checksum",
        "loaded_at",
        "load_seconds",
    ):
        assert key in tiny


async def test_vocabulary_pages_and_membership(
    client: httpx.AsyncClient, tiny_lm: RecurrentLM
) -> None:
    page = (await client.get("/v1/models/tiny/vocab", params={"offset": 2, "limit": 3})).json()
    assert page["total"] == len(tiny_lm.vocab)
    assert [t["token"] for t in page["tokens"]] == tiny_lm.vocab.tokens[2:5]
    assert [t["id"] for t in page["tokens"]] == [2, 3, 4]
    prefixed = (await client.get("/v1/models/tiny/vocab", params={"prefix": "ca"})).json()
    assert [t["token"] for t in prefixed["tokens"]] == ["cat"] and prefixed["total"] == 1
    known = (await client.get("/v1/models/tiny/vocab/cat")).json()
    assert known["in_vocabulary"] is True and known["id"] == tiny_lm.vocab.id("cat")
    unknown = (await client.get("/v1/models/tiny/vocab/zebra")).json()
    assert unknown == {
        "model": "tiny",
        "token": "zebra",
        "in_vocabulary": False,
        "id": None,
        "count": None,
    }
    assert (await client.get("/v1/models/tiny/vocab", params={"limit": 5000})).status_code == 422


async def test_health_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "alive"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == ["other", "tiny"]


async def test_readyz_reports_a_failed_load_with_the_reason(tmp_path: Path) -> None:
    registry = ModelRegistry([("broken", tmp_path)])
    registry.load_all()  # tmp_path holds no checkpoint
    app = create_app(Settings(), registry)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        r = await client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["status"] == "failed" and "not a nextword checkpoint" in r.json()["error"]


async def test_models_load_from_checkpoints_in_the_background(
    tmp_path: Path, tiny_lm: RecurrentLM
) -> None:
    save_checkpoint(tmp_path / "m", tiny_lm, metadata={"valid_perplexity": 42.0})
    registry = ModelRegistry([("m", tmp_path / "m")])
    registry.start_loading().join(timeout=30)
    assert registry.state == "ready"
    described = registry.get("m").describe().model_dump()
    assert (
        described["valid_perplexity"] == 42.0
        and described["checksum"] == registry.get().lm.checksum
    )


async def test_metrics_count_requests_and_language_model_signals(client: httpx.AsyncClient) -> None:
    await client.post("/v1/candidates", json={"context": "the", "candidates": ["cat", "zebra"]})
    await client.post("/v1/candidates", json={"candidates": []})
    text = (await client.get("/metrics")).text
    assert 'nextword_requests_total{endpoint="/v1/candidates",method="POST",status="200"}' in text
    assert 'nextword_request_errors_total{endpoint="/v1/candidates",status="422"}' in text
    assert 'nextword_oov_tokens_total{model="tiny"}' in text
    assert 'nextword_scored_tokens_total{model="tiny"}' in text
    assert "nextword_candidates_per_request_bucket" in text
    assert "nextword_request_duration_seconds_bucket" in text


async def test_openapi_documents_every_endpoint_with_an_example(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path in ("/v1/candidates", "/v1/predict", "/v1/score", "/v1/rerank"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        name = body["$ref"].rsplit("/", 1)[-1]
        assert spec["components"]["schemas"][name].get("examples"), path
    for path in (
        "/v1/models",
        "/v1/models/{name}",
        "/v1/models/{name}/vocab",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in spec["paths"]
    assert (await client.get("/docs")).status_code == 200


def series(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"{name}{{")]


async def test_metric_labels_come_from_closed_sets(client: httpx.AsyncClient) -> None:
    before = (await client.get("/metrics")).text
    for i in range(200):
        await client.request(f"M{i:03d}" + "X" * 1000, "/v1/candidates")  # any method token
        await client.get(f"/no/such/path/{i}")
    after = (await client.get("/metrics")).text
    for name in ("nextword_requests_total", "nextword_request_errors_total"):
        new = set(series(after, name)) - set(series(before, name))
        labels = {line.split(" ")[0] for line in new}
        assert len(labels) <= 3, labels  # the "other" method, the "other" endpoint: a few series
        assert not any("XXX" in line or "/no/such" in line for line in new)
    assert 'method="other"' in after and len(after) < len(before) + 3000


async def test_any_token_can_be_looked_up_even_with_a_slash() -> None:
    def quote(token: str) -> str:  # every byte: ".." must not be a dot segment
        return "".join(f"%{b:02X}" for b in token.encode())

    tokens = ["<unk>", "<s>", "</s>", "/", "a/b", "%", "?", "#", "..", "and/or", " x"]
    vocab = Vocabulary(tokens)
    lm = RecurrentLM(
        RNNLM(ModelConfig(len(vocab), embed_size=4, hidden_size=4), seed=0), vocab, Tokenizer()
    )
    app = create_app(Settings(), ModelRegistry.from_models({"m": lm}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for i, token in enumerate(tokens):
            r = await c.get(f"/v1/models/m/vocab/{quote(token)}")
            assert r.status_code == 200, (token, r.status_code)
            assert (r.json()["token"], r.json()["id"]) == (token, i)
        r = await c.get("/v1/models/m/vocab/" + quote("no/such"))
        assert r.status_code == 200 and r.json()["in_vocabulary"] is False
        empty = await c.get("/v1/models/m/vocab/")
        assert empty.status_code == 422 and empty.json()["field"] == "token"


async def test_models_show_no_server_paths(tmp_path: Path, tiny_lm: RecurrentLM) -> None:
    corpus = tmp_path / "secret-dir" / "calls.txt"
    corpus.parent.mkdir()
    corpus.write_text("the cat sat\n")
    metadata = {"corpus": {"train": str(corpus), "train_sha256": "ab" * 32, "train_tokens": 3}}
    save_checkpoint(tmp_path / "models" / "mine", tiny_lm, metadata=metadata)
    registry = ModelRegistry([("mine", tmp_path / "models" / "mine")])
    registry.load_all()
    app = create_app(Settings(), registry)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        text = (await c.get("/v1/models")).text
        described = (await c.get("/v1/models/mine")).json()
    assert str(tmp_path) not in text
    assert described["checkpoint"] == "mine"
    assert described["training_corpus"] == {"file": "calls.txt", "sha256": "ab" * 32}
    broken = ModelRegistry([("gone", tmp_path / "models" / "gone")])
    broken.load_all()
    assert broken.state == "failed" and str(tmp_path) not in (broken.error or "")
    assert "gone" in (broken.error or "")


async def test_the_openapi_document_carries_the_configured_limits() -> None:
    limits = Settings(max_candidates=7, max_sentences=5, max_tokens=9, max_k=11)
    spec = create_app(limits).openapi()  # the document needs no model loaded
    schemas = spec["components"]["schemas"]

    def prop(model: str, field: str) -> dict:
        return schemas[model]["properties"][field]

    def token_list(node: dict) -> dict:
        return next(branch for branch in node["anyOf"] if branch["type"] == "array")

    assert prop("CandidatesRequest", "candidates")["maxItems"] == 7
    assert prop("FillRequest", "candidates")["maxItems"] == 7
    assert prop("ScoreRequest", "sentences")["maxItems"] == 5
    assert prop("RerankRequest", "hypotheses")["maxItems"] == 5
    assert prop("PredictRequest", "k")["maximum"] == 11
    for model, field in [("CandidatesRequest", "context"), ("FillRequest", "left"),
                         ("FillRequest", "right"), ("PredictRequest", "context"),
                         ("Hypothesis", "text")]:  # fmt: skip
        assert token_list(prop(model, field))["maxItems"] == 9, (model, field)
    assert token_list(prop("CandidatesRequest", "candidates")["items"])["maxItems"] == 9
    assert token_list(prop("ScoreRequest", "sentences")["items"])["maxItems"] == 9
    assert "x-nextword-limit" not in str(spec)


async def test_openapi_types_the_model_descriptions(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    ok = {path: spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]
          for path, method in [("/v1/models", "get"), ("/v1/models/{name}", "get"),
                               ("/v1/models/{name}/reload", "post")]}  # fmt: skip
    assert ok["/v1/models"]["schema"]["$ref"].endswith("/ModelList")
    assert ok["/v1/models/{name}"]["schema"]["$ref"].endswith("/ModelDescription")
    assert ok["/v1/models/{name}/reload"]["schema"]["$ref"].endswith("/ModelDescription")
    described = spec["components"]["schemas"]["ModelDescription"]["properties"]
    assert {"task", "endpoints", "architecture", "prefix_cache", "checksum"} <= set(described)
    listed = (await client.get("/v1/models")).json()["models"][0]
    assert set(listed) == set(described)  # the answer is exactly the documented object


async def test_a_number_too_large_for_a_float_in_metadata_is_left_out(
    tmp_path: Path, tiny_lm: RecurrentLM
) -> None:
    save_checkpoint(tmp_path / "m", tiny_lm, metadata={"epoch": 10**400, "valid_perplexity": 3})
    registry = ModelRegistry([("m", tmp_path / "m")])
    registry.start_loading().join(timeout=30)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(Settings(), registry)), base_url="http://t"
    ) as client:
        r = await client.get("/v1/models/m")
    assert r.status_code == 200, r.text  # was a 500: math.isfinite(10**400) overflows
    assert r.json()["epoch"] is None and r.json()["valid_perplexity"] == 3
