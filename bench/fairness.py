"""One client's flood against another client's small request, on a real server (issue 29).

    python bench/zipf_model.py --vocab 10000 --softmax full --out runs/zipf10k-full
    python bench/fairness.py --model runs/zipf10k-full
    python bench/fairness.py --model runs/zipf10k-full --workers 2      # as deployed (2 cores)
    python bench/fairness.py --model runs/zipf10k-full --code /tmp/old   # another checkout
    python bench/fairness.py --model runs/zipf10k-full --drop \
        --env NEXTWORD_MAX_QUEUE_S=10000 --env NEXTWORD_MAX_CONCURRENCY=128   # all 48 queued

Client A (127.0.0.1) keeps ``--in-flight`` maximal ``/v1/score`` requests in flight (128
sentences of 256 tokens: every limit at its documented maximum); a refused one (503) is sent
again after its ``Retry-After`` (``--hostile``: at once). Client B (127.0.0.2, another peer
address) sends one small ``/v1/candidates`` request at a time, first with the server idle, then
during A's flood. Reported: B's latency (p50, p95, max) idle and under the flood, and what A
got (answers, refusals and how fast they came, positions scored a second).

The goal: B's p50 under the flood within 10 × its idle p50, or B refused in under 50 ms.
``--code`` serves from another checkout of nextword (``git worktree add``), for the code before.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.launch import start_server  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def ms(values: list[float]) -> dict[str, float | int]:
    return {
        "n": len(values),
        "p50_ms": round(1000 * percentile(values, 0.5), 2),
        "p95_ms": round(1000 * percentile(values, 0.95), 2),
        "max_ms": round(1000 * max(values, default=float("nan")), 2),
    }


def heavy_body(vocab_size: int, sentences: int, tokens: int) -> bytes:
    words = [" ".join(f"w{(7 * i + j) % (vocab_size - 10) + 4}" for j in range(tokens))
             for i in range(sentences)]  # fmt: skip
    return json.dumps({"sentences": words}).encode()


SMALL = json.dumps({"context": "w5 w6 w7 w8", "candidates": ["w9", "w10", "w11 w12"]}).encode()
HEADERS = {"content-type": "application/json"}


async def small_requests(url: str, count: int, gap: float) -> tuple[list[float], list[int]]:
    """B: ``count`` small requests one at a time from 127.0.0.2; latencies and statuses."""
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    times, codes = [], []
    async with httpx.AsyncClient(transport=transport, timeout=600) as b:
        for _ in range(count):
            started = time.perf_counter()
            r = await b.post(f"{url}/v1/candidates", content=SMALL, headers=HEADERS)
            times.append(time.perf_counter() - started)
            codes.append(r.status_code)
            await asyncio.sleep(gap)
    return times, codes


async def flood(url: str, body: bytes, in_flight: int, hostile: bool, stop: asyncio.Event,
                report: dict[str, list[float]]) -> None:  # fmt: skip
    """A: ``in_flight`` loops, each sending the heavy request again as soon as it is answered
    (after Retry-After when refused, unless hostile), until ``stop``."""
    limits = httpx.Limits(max_connections=in_flight + 4, max_keepalive_connections=in_flight + 4)
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.1", limits=limits)
    async with httpx.AsyncClient(transport=transport, timeout=900) as a:

        async def loop() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    r = await a.post(f"{url}/v1/score", content=body, headers=HEADERS)
                except httpx.TransportError:
                    report["errors"].append(time.perf_counter() - started)
                    continue
                took = time.perf_counter() - started
                if r.status_code == 200:
                    report["answered"].append(took)
                elif r.status_code == 503:
                    report["refused"].append(took)
                    if not hostile:
                        wait = float(r.headers.get("retry-after", "1"))
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), timeout=wait)
                else:
                    report["other"].append(took)

        await asyncio.gather(*(loop() for _ in range(in_flight)))


async def measure(url: str, args: argparse.Namespace, vocab_size: int) -> dict[str, object]:
    await small_requests(url, 20, 0.0)  # warm-up
    idle, _ = await small_requests(url, args.small, args.gap)
    body = heavy_body(vocab_size, args.sentences, args.tokens)
    report: dict[str, list[float]] = {k: [] for k in ("answered", "refused", "other", "errors")}
    stop = asyncio.Event()
    started = time.perf_counter()
    a = asyncio.ensure_future(flood(url, body, args.in_flight, args.hostile, stop, report))
    await asyncio.sleep(args.settle)  # A's requests are in flight (and queued, or refused)
    busy, codes = await small_requests(url, args.small, args.gap)
    stop.set()
    if args.drop:  # A hangs up: its requests still queued are dropped by the server
        a.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await a
    else:
        await a  # A's requests in progress finish: the flood's answers are counted whole
    elapsed = time.perf_counter() - started
    positions = len(report["answered"]) * args.sentences * (args.tokens + 1)
    return {
        "small_idle": ms(idle),
        "small_under_flood": ms(busy),
        "small_statuses": {str(c): codes.count(c) for c in sorted(set(codes))},
        "ratio_p50": round(percentile(busy, 0.5) / percentile(idle, 0.5), 2),
        "flood_answered": ms(report["answered"]),
        "flood_refused": ms(report["refused"]),
        "flood_other": len(report["other"]),
        "flood_transport_errors": len(report["errors"]),
        "flood_positions_per_s": round(positions / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--code", type=Path, default=ROOT)
    parser.add_argument("--in-flight", type=int, default=48)
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--small", type=int, default=100, help="B's requests in each phase")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between B's requests")
    parser.add_argument("--settle", type=float, default=5.0, help="A's head start, seconds")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--hostile", action="store_true", help="A ignores Retry-After")
    parser.add_argument(
        "--drop",
        action="store_true",
        help="A hangs up on its requests when B is done (they are not waited for)",
    )
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="server settings, e.g. NEXTWORD_MAX_QUEUE_S=10000")  # fmt: skip
    args = parser.parse_args()
    config = json.loads((args.model / "config.json").read_text())
    vocab_size = int(config["model"]["vocab_size"])
    env = {"OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(args.code.resolve())}
    env |= dict(e.split("=", 1) for e in args.env)
    process, url = start_server(
        [f"m={args.model.resolve()}"], workers=args.workers, env=env, cwd=args.code.resolve()
    )
    try:
        result = asyncio.run(measure(url, args, vocab_size))
    finally:
        process.terminate()
        process.wait(timeout=120)
    print(json.dumps({
        "code": str(args.code.resolve()), "model": str(args.model), "machine": platform.node(),
        "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"),
        "workers": args.workers, "in_flight": args.in_flight, "hostile": args.hostile,
        "env": args.env,
        "request": f"{args.sentences} sentences x {args.tokens} tokens", **result,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
