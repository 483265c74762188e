"""Faults and limits: reload under traffic, damaged checkpoints, slow clients, batching windows."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest

from app.core.config import Settings
from app.main import create_app
from app.registry import ModelRegistry
from model.inference.checkpoint import load_checkpoint, save_checkpoint
from model.inference.recurrent_lm import RecurrentLM
from model.network.recurrent import RNNLM

pytestmark = pytest.mark.anyio
TOKEN = {"authorization": "Bearer s3cret"}


def other_model(lm: RecurrentLM, seed: int) -> RecurrentLM:
    return RecurrentLM(RNNLM(lm.net.config, seed=seed, dtype=np.float64), lm.vocab, lm.tokenizer)


def loaded_app(path: Path, **settings: object) -> tuple[ModelRegistry, object]:
    limits = Settings(reload_token="s3cret", **settings)  # type: ignore[arg-type]
    registry = ModelRegistry([("m", path)], settings=limits)
    registry.start_loading().join(timeout=30)
    assert registry.state == "ready"
    return registry, create_app(limits, registry)


def client_for(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")  # type: ignore[arg-type]


def hold_scoring(lm: RecurrentLM) -> tuple[threading.Event, threading.Event]:
    """Make ``lm.score_candidates`` wait: (started, release) events to hold a request in flight."""
    started, release = threading.Event(), threading.Event()
    real = lm.score_candidates

    def held(*args: object) -> object:
        started.set()
        release.wait(10)
        return real(*args)

    lm.score_candidates = held  # type: ignore[method-assign]
    return started, release


async def first_log_prob(client: httpx.AsyncClient) -> float:
    r = await client.post("/v1/candidates", json={"context": "the cat", "candidates": ["sat"]})
    assert r.status_code == 200
    return r.json()["results"][0]["log_prob"]


async def test_reload_needs_the_token(tmp_path: Path, tiny_lm: RecurrentLM) -> None:
    save_checkpoint(tmp_path, tiny_lm)
    _, app = loaded_app(tmp_path)
    async with client_for(app) as client:
        assert (await client.post("/v1/models/m/reload")).status_code == 401
        wrong = await client.post("/v1/models/m/reload", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
    registry = ModelRegistry.from_models({"m": tiny_lm})
    async with client_for(create_app(Settings(), registry)) as client:
        r = await client.post("/v1/models/m/reload", headers=TOKEN)
        assert r.status_code == 403 and "NEXTWORD_RELOAD_TOKEN" in r.json()["detail"]


async def test_a_new_checkpoint_is_picked_up_and_a_damaged_one_refused(
    tmp_path: Path, tiny_lm: RecurrentLM
) -> None:
    save_checkpoint(tmp_path, tiny_lm)
    registry, app = loaded_app(tmp_path)
    async with client_for(app) as client:
        old = await first_log_prob(client)
        new_lm = other_model(tiny_lm, seed=11)
        save_checkpoint(tmp_path, new_lm)  # written atomically while the server runs
        r = await client.post("/v1/models/m/reload", headers=TOKEN)
        good = load_checkpoint(tmp_path).checksum
        assert r.status_code == 200 and r.json()["checksum"] == good
        new = await first_log_prob(client)
        assert new == pytest.approx(
            new_lm.score_candidates("the cat", ["sat"])[0].log_prob, abs=1e-5
        )
        assert new != pytest.approx(old)

        save_checkpoint(tmp_path, other_model(tiny_lm, seed=12))
        weights = next(tmp_path.glob("weights.*.safetensors"))
        data = bytearray(weights.read_bytes())
        data[-3] ^= 0xFF
        weights.write_bytes(bytes(data))  # the new checkpoint is damaged
        r = await client.post("/v1/models/m/reload", headers=TOKEN)
        assert r.status_code == 409 and "the old model keeps serving" in r.json()["detail"]
        assert await first_log_prob(client) == new  # still the last good model
        assert (await client.get("/readyz")).status_code == 200
    assert registry.get("m").lm.checksum == good


async def test_a_request_in_flight_during_a_reload_finishes_on_the_old_model(
    tmp_path: Path, tiny_lm: RecurrentLM
) -> None:
    save_checkpoint(tmp_path, tiny_lm)
    registry, app = loaded_app(tmp_path)
    old_lm = registry.get("m").lm
    expected = old_lm.score_candidates("the cat", ["sat"])[0].log_prob
    started, release = hold_scoring(old_lm)
    results: dict[str, float] = {}
    async with client_for(app) as client:

        async def in_flight() -> None:
            results["old"] = await first_log_prob(client)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(in_flight)
            await anyio.to_thread.run_sync(started.wait, 10)
            save_checkpoint(tmp_path, other_model(tiny_lm, seed=13))
            assert (await client.post("/v1/models/m/reload", headers=TOKEN)).status_code == 200
            release.set()
        results["new"] = await first_log_prob(client)
    assert results["old"] == pytest.approx(expected)  # not dropped, and computed by the old model
    assert results["new"] != pytest.approx(expected)


async def test_a_slow_body_gets_408(tiny_lm: RecurrentLM) -> None:
    limits = Settings(body_timeout_s=0.2)
    app = create_app(limits, ModelRegistry.from_models({"m": tiny_lm}, settings=limits))

    async def trickle():
        yield b'{"candidates": '
        await anyio.sleep(0.6)
        yield b'["cat"]}'

    async with client_for(app) as client:
        r = await client.post(
            "/v1/candidates", content=trickle(), headers={"content-type": "application/json"}
        )
    assert r.status_code == 408 and "0.2 s" in r.json()["detail"]


async def test_requests_in_a_batching_window_are_computed_together(tiny_lm: RecurrentLM) -> None:
    limits = Settings(batch_window_ms=100)
    registry = ModelRegistry.from_models({"m": tiny_lm}, settings=limits)
    contexts = ["the", "the cat", "a dog", "the cat sat", "new york", "on the", "the mat", ""]
    want = [tiny_lm.score_candidates(c, ["sat", "the mat"]) for c in contexts]
    results: list = [None] * len(contexts)
    async with client_for(create_app(limits, registry)) as client:

        async def ask(i: int) -> None:
            r = await client.post(
                "/v1/candidates", json={"context": contexts[i], "candidates": ["sat", "the mat"]}
            )
            results[i] = r.json()["results"]

        async with anyio.create_task_group() as tasks:
            for i in range(len(contexts)):
                tasks.start_soon(ask, i)
    for got, expected in zip(results, want, strict=True):
        assert [g["log_prob"] for g in got] == pytest.approx(
            [e.log_prob for e in expected], abs=1e-9
        )
    batcher = registry.get("m").batcher
    assert batcher.requests == len(contexts) and batcher.batches < len(contexts)


async def test_over_the_concurrency_limit_requests_get_503_but_probes_answer(
    tiny_lm: RecurrentLM,
) -> None:
    limits = Settings(max_concurrency=1)
    registry = ModelRegistry.from_models({"m": tiny_lm}, settings=limits)
    started, release = hold_scoring(registry.get("m").lm)
    codes: dict[str, int] = {}
    async with client_for(create_app(limits, registry)) as client:

        async def busy() -> None:
            codes["first"] = (
                await client.post("/v1/candidates", json={"candidates": ["cat"]})
            ).status_code

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(busy)
            await anyio.to_thread.run_sync(started.wait, 10)
            second = await client.post("/v1/candidates", json={"candidates": ["cat"]})
            codes["second"] = second.status_code
            codes["healthz"] = (await client.get("/healthz")).status_code
            codes["readyz"] = (await client.get("/readyz")).status_code
            release.set()
        metrics = (await client.get("/metrics")).text
    assert codes == {"first": 200, "second": 503, "healthz": 200, "readyz": 200}
    assert second.headers["retry-after"] == "1" and "busy" in second.json()["detail"]
    assert 'nextword_request_errors_total{endpoint="other",status="503"}' in metrics


async def test_a_reload_to_nan_weights_is_refused(tmp_path: Path, tiny_lm: RecurrentLM) -> None:
    save_checkpoint(tmp_path, tiny_lm)
    _, app = loaded_app(tmp_path)
    broken = other_model(tiny_lm, seed=3)
    broken.net.params["output.b"][:] = np.nan  # a checksum-valid checkpoint of a broken model
    save_checkpoint(tmp_path, broken)
    async with client_for(app) as client:
        r = await client.post("/v1/models/m/reload", headers=TOKEN)
        assert r.status_code == 409 and "the old model keeps serving" in r.json()["detail"]
        assert (
            await client.post("/v1/candidates", json={"candidates": ["cat"]})
        ).status_code == 200


def test_a_request_reaching_a_replaced_batcher_is_scored_directly(tiny_lm: RecurrentLM) -> None:
    from app.batching import CandidateBatcher

    batcher = CandidateBatcher(tiny_lm, window_ms=20)
    first = batcher.submit(["the"], [["cat"]])
    batcher.close()  # a reload replaced the model; a request holding the old one comes late
    start = time.monotonic()
    late = batcher.submit(["the"], [["cat"]])
    assert time.monotonic() - start < 5 and late[0].log_prob == pytest.approx(first[0].log_prob)


async def test_a_client_that_goes_away_is_not_a_server_error(tiny_lm: RecurrentLM) -> None:
    app = create_app(Settings(), ModelRegistry.from_models({"m": tiny_lm}))
    messages = iter(
        [
            {"type": "http.request", "body": b'{"cand', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict:
        return next(messages)

    async def send(message: dict) -> None:
        raise AssertionError(f"nothing should be sent: {message}")

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/candidates",
        "headers": [],
        "query_string": b"",
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    async with client_for(app) as client:
        metrics = (await client.get("/metrics")).text
    assert 'nextword_requests_total{endpoint="other",method="POST",status="499"}' in metrics
    assert 'nextword_requests_total{endpoint="other",method="POST",status="500"}' not in metrics


async def test_a_model_with_an_infinite_weight_never_serves(
    tmp_path: Path, tiny_lm: RecurrentLM
) -> None:
    broken = other_model(tiny_lm, seed=4)
    row = broken.vocab.id("dog")  # a row the warm-up pass never reads
    broken.net.params["embedding.W"][row, 0] = np.inf
    with pytest.raises(FloatingPointError, match=r"embedding\.W"):
        ModelRegistry.from_models({"m": broken})  # in memory: refused before any request
    save_checkpoint(tmp_path, tiny_lm)
    registry, app = loaded_app(tmp_path)
    save_checkpoint(tmp_path, broken)  # hashes match: only the values are wrong
    async with client_for(app) as client:
        r = await client.post("/v1/models/m/reload", headers=TOKEN)
        assert r.status_code == 409 and "embedding.W" in r.json()["detail"]
        answer = await client.post(
            "/v1/candidates", json={"context": "the dog", "candidates": ["ran", "dog"]}
        )
        assert answer.status_code == 200
        assert all(isinstance(x["log_prob"], float) for x in answer.json()["results"])
        predicted = await client.post("/v1/predict", json={"context": "the dog", "k": 3})
        assert len(predicted.json()["predictions"]) == 3
    assert registry.get("m").lm.checksum == load_checkpoint_checksum(tmp_path, tiny_lm)


def load_checkpoint_checksum(tmp_path: Path, lm: RecurrentLM) -> str:
    """The checksum ``lm`` has when saved (its weights file's sha256)."""
    return load_checkpoint(save_checkpoint(tmp_path / "again", lm)).checksum


def test_reloads_run_one_at_a_time_and_a_burst_folds_into_two(
    tmp_path: Path, tiny_lm: RecurrentLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.registry

    save_checkpoint(tmp_path, tiny_lm)
    registry, _ = loaded_app(tmp_path)
    real, loads, running = app.registry.load_checkpoint, [], []

    def slow(path: Path) -> RecurrentLM:
        running.append(1)
        assert len(running) == 1, "two loads at once"
        time.sleep(0.2)
        loads.append(path)
        running.pop()
        return real(path)

    monkeypatch.setattr(app.registry, "load_checkpoint", slow)
    for _ in range(20):  # a burst of SIGHUPs while the checkpoint keeps changing
        registry.request_reload_all()
    last = other_model(tiny_lm, seed=31)
    save_checkpoint(tmp_path, last)  # written during the first reload
    deadline = time.monotonic() + 10
    while registry._reloader_running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(loads) == 2  # the one running, and one more for everything asked meanwhile
    assert registry.get("m").lm.checksum == load_checkpoint(tmp_path).checksum  # the newest wins


async def test_hand_edited_metadata_neither_fails_a_good_reload_nor_the_description(
    tmp_path: Path, tiny_lm: RecurrentLM
) -> None:
    save_checkpoint(tmp_path, tiny_lm)
    _, app = loaded_app(tmp_path)
    odd = {"corpus": [], "training": "x", "valid_perplexity": "low", "epoch": True}
    new = other_model(tiny_lm, seed=32)
    save_checkpoint(tmp_path, new, metadata=odd)
    async with client_for(app) as client:
        r = await client.post("/v1/models/m/reload", headers=TOKEN)
        assert r.status_code == 200, r.text
        described = r.json()
        assert described["checksum"] == load_checkpoint(tmp_path).checksum
        assert (described["training_corpus"], described["valid_perplexity"]) == (None, None)
        assert described["epoch"] is None
        assert (await client.get("/v1/models")).status_code == 200


async def test_a_warm_up_that_fails_is_refused_naming_the_checkpoint(
    tmp_path: Path, tiny_lm: RecurrentLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path / "served", tiny_lm)
    _, app = loaded_app(tmp_path / "served")
    save_checkpoint(tmp_path / "served", other_model(tiny_lm, seed=5))

    def overflows(_: RecurrentLM) -> None:  # as a forward pass with 3e38 weights did
        raise OverflowError("math range error")

    monkeypatch.setattr(RecurrentLM, "self_check", overflows)
    async with client_for(app) as client:
        r = await client.post("/v1/models/m/reload", headers=TOKEN)
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "served: loaded, but the model does not answer: math range error" in detail
    assert str(tmp_path) not in detail


def test_a_reload_asked_during_the_first_load_runs_after_it(
    tmp_path: Path, tiny_lm: RecurrentLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.registry

    save_checkpoint(tmp_path, tiny_lm)
    real, started = app.registry.load_checkpoint, threading.Event()

    def slow(path: Path) -> RecurrentLM:  # the first load is slow (a big model), later ones not
        lm = real(path)  # what was on disk when the load began
        if not started.is_set():
            started.set()
            time.sleep(0.3)
        return lm

    monkeypatch.setattr(app.registry, "load_checkpoint", slow)
    registry = ModelRegistry([("m", tmp_path)], settings=Settings())
    loading = registry.start_loading()
    assert started.wait(10)
    save_checkpoint(tmp_path, other_model(tiny_lm, seed=33))  # written during the first load
    registry.request_reload_all()  # SIGHUP
    loading.join(10)
    deadline = time.monotonic() + 10
    while registry._reloader_running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert registry.get("m").lm.checksum == load_checkpoint(tmp_path).checksum
