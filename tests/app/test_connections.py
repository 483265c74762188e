"""A real ``nextword serve`` under hostile connections: idle sockets, slow headers, overload.

Each test starts a server with small limits (a 1 s header deadline, a few connections), so that
what would take an attacker hundreds of sockets takes a handful here.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.launch import start_server

pytestmark = pytest.mark.slow  # real processes and sockets: `make test-fast` skips them

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden_model"


def serve(**env: str) -> tuple[subprocess.Popen, str, int]:
    process, url = start_server([f"m={GOLDEN}"], env={f"NEXTWORD_{k}": v for k, v in env.items()})
    return process, url, int(url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def guarded() -> Iterator[tuple[str, int]]:
    """MAX_CONCURRENCY 2 used to cap connections at 16; 1 s to send request headers."""
    process, url, port = serve(MAX_CONCURRENCY="2", HEADER_TIMEOUT_S="1")
    yield url, port
    process.terminate()
    process.wait(timeout=30)


def open_sockets(port: int, n: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]


def closed_by_server(s: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing ``s`` within ``within`` s; None if it stayed open."""
    s.settimeout(within)
    received = b""
    try:
        while chunk := s.recv(4096):
            received += chunk
    except TimeoutError:
        return None
    except OSError:
        pass
    return received


def read_response(s: socket.socket) -> bytes:
    """One /healthz answer from a kept-alive connection; raises if the server closes it first."""
    received = b""
    while not received.endswith(b'{"status":"alive"}'):
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed by the server after {received!r}")
        received += chunk
    return received


def probe(url: str, path: str = "/healthz") -> int:
    return httpx.get(f"{url}{path}", timeout=5, headers={"connection": "close"}).status_code


def test_idle_sockets_do_not_lock_out_the_probes_and_are_closed(guarded: tuple[str, int]) -> None:
    url, port = guarded
    idle = open_sockets(port, 40)  # more than the 16 connections uvicorn allowed
    try:
        assert [probe(url), probe(url, "/readyz")] == [200, 200]
        r = httpx.post(f"{url}/v1/candidates", json={"candidates": ["time"]}, timeout=5)
        assert r.status_code == 200
        closed = [closed_by_server(s, within=5) for s in idle]
        assert all(c == b"" for c in closed), "a silent socket is closed without an answer"
    finally:
        for s in idle:
            s.close()


def test_headers_that_never_finish_get_408_and_the_connection_closed(
    guarded: tuple[str, int],
) -> None:
    url, port = guarded
    (slow,) = open_sockets(port, 1)
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line: headers never end
    answer = closed_by_server(slow, within=5)
    assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
    assert b"request headers not received within 1 s" in answer
    # after a complete response on a keep-alive connection, the next headers get the deadline too
    (kept,) = open_sockets(port, 1)
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    kept.settimeout(5)
    assert read_response(kept).startswith(b"HTTP/1.1 200")
    kept.sendall(b"GET /healthz HTTP/1.1\r\n")  # one byte would cancel uvicorn's keep-alive timer
    answer = closed_by_server(kept, within=5)
    assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
    assert probe(url) == 200


def test_over_the_connection_cap_the_longest_idle_go_first() -> None:
    process, url, port = serve(MAX_CONNECTIONS="8", HEADER_TIMEOUT_S="30")
    try:
        oldest = open_sockets(port, 8)
        time.sleep(1.2)  # past the grace a new connection has for its request to be read
        newest = open_sockets(port, 4)  # 12 open: the 4 that waited longest are closed at once
        time.sleep(0.2)
        assert [closed_by_server(s, within=2) for s in oldest[:4]] == [b""] * 4
        assert all(closed_by_server(s, within=0.2) is None for s in oldest[4:] + newest)
        assert probe(url) == 200  # a new connection is always accepted
        for s in oldest + newest:
            s.close()
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_overload_503s_carry_retry_after_and_probes_are_never_refused(
    guarded: tuple[str, int],
) -> None:
    url, _ = guarded
    stop, answers, lock = threading.Event(), [], threading.Lock()
    body = {"context": "the time", "candidates": ["traveller", "machine", "of the"]}

    def client() -> None:
        with httpx.Client(timeout=10) as c:  # keep-alive: 24 connections open at once
            while not stop.is_set():
                r = c.post(f"{url}/v1/candidates", json=body)
                with lock:
                    answers.append((r.status_code, r.headers.get("retry-after"), r.text))

    threads = [threading.Thread(target=client) for _ in range(24)]
    for t in threads:
        t.start()
    try:
        probes = []
        for _ in range(15):
            probes += [probe(url, "/readyz"), probe(url, "/healthz")]
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert probes == [200] * len(probes)
    refused = [a for a in answers if a[0] == 503]
    assert refused, "24 clients over a limit of 2 are refused some of the time"
    assert {status for status, _, _ in answers} <= {200, 503}
    assert all(retry == "1" and "busy" in text for _, retry, text in refused), refused[:3]


def test_a_burst_of_complete_requests_over_the_cap_is_answered() -> None:
    process, _, port = serve(MAX_CONNECTIONS="8")
    try:
        clients = open_sockets(port, 40)  # all connected before the server reads any of them
        for s in clients:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = [closed_by_server(s, within=10) or b"" for s in clients]
        assert all(a.startswith(b"HTTP/1.1 200") for a in answers), [a[:20] for a in answers]
        for s in clients:
            s.close()
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_request_answered_before_its_body_closes_its_connection(
    guarded: tuple[str, int],
) -> None:
    _, port = guarded
    (big,) = open_sockets(port, 1)
    big.sendall(
        b"POST /v1/candidates HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 999999999\r\n\r\n{"
    )
    big.settimeout(5)
    answer = big.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    with contextlib.suppress(OSError):
        big.sendall(b"x")  # more of the body: it would cancel uvicorn's keep-alive timer
    assert closed_by_server(big, within=3) is not None  # the rest is not a request: closed


def test_keep_alive_longer_than_the_header_deadline_is_kept() -> None:
    process, _, port = serve(HEADER_TIMEOUT_S="1", KEEP_ALIVE_S="4")
    try:
        (kept,) = open_sockets(port, 1)
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        kept.settimeout(5)
        for _ in range(2):
            kept.sendall(request)
            assert read_response(kept).startswith(b"HTTP/1.1 200")
            time.sleep(2)  # idle beyond the header deadline, within keep-alive
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # then a request that stalls
        answer = closed_by_server(kept, within=5)
        assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_pipelined_request_that_stalls_gets_408(guarded: tuple[str, int]) -> None:
    _, port = guarded
    (piped,) = open_sockets(port, 1)
    piped.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n")
    answer = closed_by_server(piped, within=5)
    assert answer is not None and answer.startswith(b"HTTP/1.1 200"), answer
    assert b"HTTP/1.1 408" in answer
