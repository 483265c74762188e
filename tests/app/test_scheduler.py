"""The fair compute queue: one slice at a time, clients take turns, the shortest work of a client
first, and a client over its queue limit is refused at once. Orders of events are asserted, not
times."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Generator

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from app.middleware import ConcurrencyLimit
from app.scheduler import Busy, Client, ClientGone, FairScheduler

pytestmark = pytest.mark.anyio


def work(log: list[str], name: str, slices: int, gate: threading.Event | None = None,
         pause: float = 0.0, ready: threading.Event | None = None,
         ) -> Generator[float, None, str]:  # fmt: skip
    """A request of ``slices`` slices of one unit each, logging each slice it runs; its
    validation waits for ``ready``, each computing slice for ``gate``."""
    if ready is not None:
        ready.wait(5)
    log.append(f"{name}:start")
    yield float(slices)
    for i in range(slices):
        if gate is not None:
            gate.wait(5)
        time.sleep(pause)
        log.append(f"{name}:{i}")
        yield float(slices - i - 1)
    return name


async def test_another_clients_small_request_waits_one_slice_at_most() -> None:
    """Client a has three requests of 50 slices in the queue; client b's one-slice request,
    arriving meanwhile, runs right after the slice in progress."""
    scheduler, log = FairScheduler(max_queue_s=1e9), []
    gate, ready = threading.Event(), threading.Event()
    heavy = [asyncio.ensure_future(scheduler.run("a", work(log, f"a{i}", 50, gate, ready=ready)))
             for i in range(3)]  # fmt: skip
    while len(scheduler.clients.get("a", Client()).jobs) < 3:
        await asyncio.sleep(0.01)  # all three queued before the first is validated
    ready.set()
    while len(log) < 3:
        await asyncio.sleep(0.01)  # all three started (validated), the first slice waiting
    small = asyncio.ensure_future(scheduler.run("b", work(log, "b", 1)))
    await asyncio.sleep(0.05)
    gate.set()
    assert await small == "b"
    after_b = log.index("b:start")
    assert log[after_b + 1] == "b:0" or log[after_b + 2] == "b:0", log[: after_b + 3]
    assert [await h for h in heavy] == ["a0", "a1", "a2"]
    assert sum(e.startswith("a") and ":" in e and e[-1].isdigit() for e in log) == 150
    scheduler.close()


async def test_a_clients_shortest_request_runs_first() -> None:
    scheduler, log = FairScheduler(max_queue_s=1e9), []
    gate = threading.Event()
    long = asyncio.ensure_future(scheduler.run("a", work(log, "long", 20, gate)))
    while "long:start" not in log:
        await asyncio.sleep(0.01)
    short = asyncio.ensure_future(scheduler.run("a", work(log, "short", 2)))
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(long, short)
    slices = [e for e in log if e[-1].isdigit()]
    assert slices.index("short:1") < slices.index("long:3")  # not after all 20 of the long one


async def test_two_clients_share_the_compute_evenly() -> None:
    """Two clients with equal work (slices of 2 ms) alternate instead of one finishing first."""
    scheduler, log = FairScheduler(max_queue_s=1e9), []
    jobs = [asyncio.ensure_future(scheduler.run(c, work(log, c, 40, pause=0.002))) for c in "xy"]
    await asyncio.gather(*jobs)
    first_half = [e[0] for e in log if e[-1].isdigit()][:40]
    assert 10 <= first_half.count("x") <= 30  # both progressed, neither waited for the other


async def test_a_client_over_its_queue_limit_is_refused_at_once() -> None:
    """One unit a second (the rate): a's 100 units queued are 100 s of work, over 10 s; b is
    still admitted."""
    scheduler, log = FairScheduler(max_queue_s=10), []
    scheduler.measured[""] = (1.0, 1.0)  # one unit a second
    gate = threading.Event()
    first = asyncio.ensure_future(scheduler.run("a", work(log, "a0", 100, gate)))
    while "a0:start" not in log:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # the first slice has given its cost
    with pytest.raises(Busy) as refused:
        scheduler.admit("a")
    assert refused.value.retry_after >= 80 and "about" in refused.value.detail
    scheduler.admit("b")  # another client is not held back
    gate.set()
    scheduler.measured[""] = (1e9, 1.0)  # the rest runs at speed
    assert await first == "a0"
    scheduler.close()


async def test_the_works_own_error_reaches_the_request() -> None:
    def failing() -> Generator[float, None, str]:
        yield 1.0
        raise ValueError("candidates[1] is empty")

    scheduler = FairScheduler(max_queue_s=10)
    with pytest.raises(ValueError, match="is empty"):
        await scheduler.run("a", failing())
    assert await scheduler.run("a", work([], "next", 1)) == "next"  # the thread goes on
    scheduler.close()


async def test_a_second_request_over_the_limit_is_refused_once_its_cost_is_known() -> None:
    """Both admitted while their costs were unknown; the second's first slice gives 100 s of
    work behind the first's 100 s: refused (the first, alone, always runs)."""
    scheduler, log = FairScheduler(max_queue_s=10), []
    scheduler.measured[""] = (1.0, 1.0)  # one unit a second
    gate = threading.Event()
    first = asyncio.ensure_future(scheduler.run("a", work(log, "a0", 100, gate)))
    second = asyncio.ensure_future(scheduler.run("a", work(log, "a1", 100, gate)))
    with pytest.raises(Busy):
        await second
    assert "a1:0" not in log  # it never computed
    gate.set()
    scheduler.measured[""] = (1e9, 1.0)
    assert await first == "a0"
    scheduler.close()


async def test_a_request_given_up_stops_computing() -> None:
    """A request cancelled (its client gone) is dropped before its next slice; the compute
    thread goes on with the others."""
    scheduler, log = FairScheduler(max_queue_s=1e9), []
    job = asyncio.ensure_future(scheduler.run("a", work(log, "gone", 1000, pause=0.001)))
    while "gone:3" not in log:
        await asyncio.sleep(0.005)
    job.cancel()
    assert await scheduler.run("b", work(log, "next", 1)) == "next"
    await asyncio.sleep(0.05)
    done = sum(e.startswith("gone:") and e[-1].isdigit() for e in log)
    assert done < 200, done  # far from its 1000 slices
    scheduler.close()


async def test_the_compute_thread_starts_again_after_a_close() -> None:
    """A closed scheduler (the app's lifespan ended) serves again in the next lifespan."""
    scheduler = FairScheduler(max_queue_s=10)
    assert await scheduler.run("a", work([], "one", 2)) == "one"
    scheduler.close()
    for _ in range(100):  # the thread sees the close and ends
        if scheduler.thread is None:
            break
        await asyncio.sleep(0.01)
    assert await scheduler.run("a", work([], "two", 2)) == "two"
    scheduler.close()


async def test_the_service_refuses_a_client_over_its_limit_before_reading_the_body(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """503 with Retry-After and the reason, from the admission middleware; probes still 200."""
    app = client._transport.app  # type: ignore[attr-defined]
    scheduler: FairScheduler = app.state.scheduler
    monkeypatch.setattr(scheduler, "queued_seconds", lambda who: 95.0 if who == "127.0.0.1" else 0)
    assert (await client.get("/v1/models")).status_code == 200  # only the scoring paths
    r = await client.post("/v1/score", json={"sentences": ["the cat"]})
    assert r.status_code == 503 and r.headers["retry-after"] == "85"
    assert r.json()["detail"].startswith("busy: this client's queued work would take about 95 s")
    assert r.headers["connection"] == "close"  # the unread body ends the connection
    assert (await client.get("/healthz")).status_code == 200


async def test_a_large_request_is_not_starved_by_its_clients_small_ones() -> None:
    """A client's requests take turns: its large request keeps progressing while small ones
    keep arriving from the same client (behind a proxy, every client is one address)."""
    scheduler, log = FairScheduler(max_queue_s=1e9), []
    large = asyncio.ensure_future(scheduler.run("a", work(log, "large", 20, pause=0.001)))
    for i in range(30):
        await scheduler.run("a", work(log, f"small{i}", 1, pause=0.001))
    done = sum(e.startswith("large:") and e[-1].isdigit() for e in log)
    assert done >= 15, done  # about one of its slices per small request
    assert await large == "large"
    scheduler.close()


async def test_each_kind_of_work_has_its_own_rate() -> None:
    """Cheap slices of one kind (an n-gram's) do not make another kind look slow."""
    scheduler = FairScheduler(max_queue_s=10)

    def timed(units: float, seconds: float) -> Generator[float, None, str]:
        yield units
        time.sleep(seconds)
        yield 0.0
        return "done"

    await scheduler.run("a", timed(1e6, 0.02), kind="ngram")
    await scheduler.run("a", timed(1e9, 0.02), kind="lstm")
    assert scheduler.rate("ngram") == pytest.approx(5e7, rel=0.3)
    assert scheduler.rate("lstm") == pytest.approx(5e10, rel=0.3)
    assert scheduler.slice_cost("lstm") > 100 * scheduler.slice_cost("ngram")
    scheduler.close()


async def test_a_request_whose_client_disconnects_stops_computing() -> None:
    scheduler, log = FairScheduler(max_queue_s=1e9), []
    gone = asyncio.Event()

    async def disconnected() -> None:
        await gone.wait()

    job = asyncio.ensure_future(
        scheduler.run("a", work(log, "w", 1000, pause=0.001), disconnected=disconnected)
    )
    while "w:3" not in log:
        await asyncio.sleep(0.005)
    gone.set()
    with pytest.raises(ClientGone):
        await job
    await scheduler.run("b", work(log, "next", 1))
    assert sum(e.startswith("w:") and e[-1].isdigit() for e in log) < 200
    scheduler.close()


async def test_one_client_holds_at_most_half_the_slots_and_others_get_in() -> None:
    """With 4 slots, client a's third request at once is refused; b's first gets in."""
    release = asyncio.Event()

    async def slow_app(_scope: Scope, _receive: Receive, send: Send) -> None:
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limit = ConcurrencyLimit(slow_app, limit=4)
    transports = {who: httpx.ASGITransport(app=limit, client=(who, 1)) for who in ("a", "b")}
    clients = {
        w: httpx.AsyncClient(transport=t, base_url="http://t") for w, t in transports.items()
    }
    held = [asyncio.ensure_future(clients["a"].get("/v1/models")) for _ in range(2)]
    await asyncio.sleep(0.05)
    refused = await clients["a"].get("/v1/models")
    assert refused.status_code == 503 and "2 requests in progress" in refused.json()["detail"]
    other = asyncio.ensure_future(clients["b"].get("/v1/models"))
    await asyncio.sleep(0.05)
    release.set()
    assert (await other).status_code == 200
    assert [(await h).status_code for h in held] == [200, 200]
    for c in clients.values():
        await c.aclose()


def test_a_client_is_its_peer_address_not_a_header_it_sends() -> None:
    """uvicorn would take X-Forwarded-For from loopback peers (its proxy headers): a local
    process could then pick a new identity per request and escape its queue and slot limits."""
    from app.core.config import Settings
    from app.server import uvicorn_config

    config = uvicorn_config(Settings(), "127.0.0.1", 0, 1, "warning")
    assert config.proxy_headers is False
