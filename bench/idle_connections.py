"""Connections that never finish their request: which ASGI server keeps the probes answering?

The same app (``app.main:create_app``, the model given by ``--model``) runs under each server in
turn; every scenario is the same for all of them:

- ``idle``: ``--sockets`` connections that send nothing, held for ``--hold`` seconds;
- ``slowloris``: connections that send one byte of a request line every second, never finishing;
- ``overload``: ``NEXTWORD_MAX_CONCURRENCY=2`` and 32 clients posting /v1/candidates without a
  pause, while a probe asks /readyz every 0.1 s.

During each, a probe asks ``/healthz`` (or ``/readyz``) every 0.2 s with a fresh connection; the
result is how many probes got 200, how slowly, and how many attack sockets the server still held
at the end. Servers: ``nextword`` (uvicorn with app.connections.GuardedH11Protocol, as ``nextword
serve`` runs it), stock ``uvicorn`` with h11 and with httptools (limit_concurrency 8 × max
concurrency, as nextword ran before), ``hypercorn`` and ``granian`` with their defaults, each
skipped when it is not installed:

    pip install httptools==0.9.0 hypercorn==0.18.0 granian==2.8.9

    python bench/idle_connections.py --model tests/fixtures/golden_model
    python bench/idle_connections.py --scenarios overload --servers nextword,hypercorn,granian \
        --rounds 3                               # throughput under overload, alternating rounds
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app.launch import free_port  # noqa: E402

PY = sys.executable


def commands(port: int, max_concurrency: int) -> dict[str, tuple[list[str], str | None]]:
    """server name → (command, module it needs)."""
    uv = [PY, "-m", "uvicorn", "--factory", "app.main:create_app", "--port", str(port)]
    uv += ["--limit-concurrency", str(8 * max_concurrency), "--log-level", "warning"]
    return {
        "nextword": (
            [PY, "-m", "app.cli", "serve", "--port", str(port), "--log-level", "warning"],
            None,
        ),
        "uvicorn-h11": ([*uv, "--http", "h11"], None),
        "uvicorn-httptools": ([*uv, "--http", "httptools"], "httptools"),
        "hypercorn": (
            [PY, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}", "app.main:create_app()"],
            "hypercorn",
        ),
        "granian": (
            [PY, "-m", "granian", "--interface", "asgi", "--factory", "--port", str(port),
             "--log-level", "warning", "app.main:create_app"],
            "granian",
        ),
    }  # fmt: skip


def start(command: list[str], env: dict[str, str], url: str) -> subprocess.Popen:
    process = subprocess.Popen(
        command, cwd=ROOT, env=os.environ | env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{command[2]} did not start: {process.stderr.read().decode()[-500:]}")


def probe(url: str, path: str, seconds: float, interval: float) -> dict[str, object]:
    """Ask ``path`` on a fresh connection every ``interval`` s; count answers and time them."""
    codes: dict[str, int] = {}
    latencies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            r = httpx.get(f"{url}{path}", timeout=3, headers={"connection": "close"})
            key = str(r.status_code)
            if r.status_code == 503 and "retry-after" not in r.headers:
                key += " (no Retry-After)"
        except httpx.TransportError as e:
            key = type(e).__name__
        codes[key] = codes.get(key, 0) + 1
        latencies.append(time.perf_counter() - t0)
        time.sleep(interval)
    return {
        "answers": codes,
        "ok": f"{codes.get('200', 0)}/{sum(codes.values())}",
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "max_ms": round(1000 * max(latencies), 1),
    }


def still_open(sockets: list[socket.socket]) -> int:
    """Attack sockets the server has not closed (a closed one reads EOF or fails)."""
    open_ = 0
    for s in sockets:
        s.setblocking(False)
        try:
            if s.recv(4096):  # an answer (408): the server spoke, then closes
                open_ += 0
        except BlockingIOError:
            open_ += 1
        except OSError:
            pass
    return open_


def idle(port: int, url: str, args: argparse.Namespace) -> dict[str, object]:
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(args.sockets)]
    result = probe(url, "/healthz", args.hold, 0.2)
    result["attack_sockets_open_at_end"] = f"{still_open(sockets)}/{len(sockets)}"
    for s in sockets:
        s.close()
    return result


def slowloris(port: int, url: str, args: argparse.Namespace) -> dict[str, object]:
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(args.sockets)]
    line, stop = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: " + b"b" * 4096, threading.Event()

    def drip() -> None:
        i = 0
        while not stop.wait(1.0):
            for s in sockets:
                with contextlib.suppress(OSError):
                    s.send(line[i : i + 1])
            i = (i + 1) % len(line)

    threading.Thread(target=drip, daemon=True).start()
    result = probe(url, "/healthz", args.hold, 0.2)
    stop.set()
    result["attack_sockets_open_at_end"] = f"{still_open(sockets)}/{len(sockets)}"
    for s in sockets:
        s.close()
    return result


def overload(_port: int, url: str, args: argparse.Namespace) -> dict[str, object]:
    stop, codes, lock = threading.Event(), {}, threading.Lock()
    body = {"context": "the", "candidates": ["cat", "dog"]}

    def client() -> None:
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                try:
                    r = c.post(f"{url}/v1/candidates", json=body)
                    key = str(r.status_code)
                    if r.status_code == 503 and "retry-after" not in r.headers:
                        key += " (no Retry-After)"
                except httpx.TransportError as e:
                    key = type(e).__name__
                with lock:
                    codes[key] = codes.get(key, 0) + 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(32)]
    for t in threads:
        t.start()
    result = probe(url, "/readyz", args.hold, 0.1)
    stop.set()
    for t in threads:
        t.join(15)
    result["load_answers"] = codes
    return result


SCENARIOS = {"idle": idle, "slowloris": slowloris, "overload": overload}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tests/fixtures/golden_model")
    p.add_argument("--sockets", type=int, default=600)
    p.add_argument("--hold", type=float, default=20.0, help="seconds each attack lasts")
    p.add_argument("--servers", default="nextword,uvicorn-h11,uvicorn-httptools,hypercorn,granian")
    p.add_argument("--scenarios", default="idle,slowloris,overload")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds; each runs every server, in turn, in a new order",
    )
    args = p.parse_args()
    model = str(Path(args.model).resolve())
    servers = args.servers.split(",")
    for scenario in args.scenarios.split(","):
        for r in range(args.rounds):
            order = servers[r % len(servers) :] + servers[: r % len(servers)]  # rotate the order
            for name in order:
                run_once(scenario, name, model, args, r + 1)


def run_once(scenario: str, name: str, model: str, args: argparse.Namespace, round_: int) -> None:
    port, concurrency = free_port(), 2 if scenario == "overload" else 64
    command, needs = commands(port, concurrency)[name]
    if needs and importlib.util.find_spec(needs) is None:
        print(f"{scenario:9s} {name:18s} skipped ({needs} not installed)")
        return
    env = {
        "NEXTWORD_MODEL_DIR": f"m={model}",
        "NEXTWORD_HEADER_TIMEOUT_S": "5",
        "NEXTWORD_MAX_CONCURRENCY": str(concurrency),
    }
    url = f"http://127.0.0.1:{port}"
    process = start(command, env, url)
    try:
        result = SCENARIOS[scenario](port, url, args)
    finally:
        process.terminate()
        try:
            process.wait(40)
        except subprocess.TimeoutExpired:
            process.kill()
    print(f"{scenario:9s} round {round_} {name:18s} {result}", flush=True)


if __name__ == "__main__":
    main()
