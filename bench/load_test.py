"""A bounded load test on loopback: C concurrent clients for D seconds against ``nextword serve``.

    python bench/load_test.py --model runs/ptb --clients 50 --seconds 60 --workers 2
    python bench/load_test.py --url http://127.0.0.1:8000 --seconds 60     # a running server

Each client loops over a mix of real requests (70% /v1/candidates with a 5-30 word context and
5 candidates, 20% /v1/score with 10 sentences, 10% /v1/predict) built from PTB valid sentences,
and records each latency and every failure (an error status or a transport error).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from app.launch import start_server

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VALID = ROOT.parent / "shared" / "data" / "ptb" / "ptb.valid.txt"


def request_mix(lines: list[list[str]], seed: int) -> list[tuple[str, dict]]:
    rng = np.random.default_rng(seed)
    words = sorted({w for s in lines for w in s})
    out = []
    for _ in range(500):
        kind = rng.choice(["candidates", "score", "predict"], p=[0.7, 0.2, 0.1])
        s = lines[int(rng.integers(len(lines)))]
        n = int(rng.integers(5, 31))
        context = (s * 3)[:n]
        if kind == "candidates":
            out.append(
                (
                    "/v1/candidates",
                    {"context": context, "candidates": [str(w) for w in rng.choice(words, 5)]},
                )
            )
        elif kind == "score":
            picks = rng.integers(0, len(lines), 10)
            out.append(("/v1/score", {"sentences": [" ".join(lines[i]) for i in picks]}))
        else:
            out.append(("/v1/predict", {"context": context, "k": 10}))
    return out


async def client_loop(
    http: httpx.AsyncClient, mix, deadline: float, seed: int, latencies, errors
) -> None:
    i = seed
    while time.monotonic() < deadline:
        path, body = mix[i % len(mix)]
        i += 7
        start = time.perf_counter()
        try:
            r = await http.post(path, json=body)
            latencies.append((path, time.perf_counter() - start))
            if r.status_code != 200:
                errors[f"{path} {r.status_code}"] += 1
        except httpx.HTTPError as e:
            errors[f"{path} {type(e).__name__}"] += 1


async def run(url: str, clients: int, seconds: float, mix) -> dict:
    latencies: list[tuple[str, float]] = []
    errors: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        deadline = time.monotonic() + seconds
        start = time.perf_counter()
        await asyncio.gather(
            *(client_loop(http, mix, deadline, k, latencies, errors) for k in range(clients))
        )
        elapsed = time.perf_counter() - start
    ms = sorted(t * 1000 for _, t in latencies)
    by_path = {}
    for path in sorted({p for p, _ in latencies}):
        times = sorted(t * 1000 for p, t in latencies if p == path)
        by_path[path] = {"count": len(times), "p50_ms": round(statistics.median(times), 1)}
    return {
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 1),
        "errors": dict(errors),
        "by_endpoint": by_path,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server; otherwise one is started with --model")
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "ptb")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--valid", type=Path, default=DEFAULT_VALID)
    args = parser.parse_args()

    lines = [line.split() for line in args.valid.read_text().splitlines() if line.strip()]
    mix = request_mix(lines, seed=0)
    process = None
    url = args.url
    if url is None:
        process, url = start_server([f"m={args.model}"], workers=args.workers)
    try:
        result = asyncio.run(run(url, args.clients, args.seconds, mix))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)
    summary = {
        "benchmark": "load_test",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (client and server share them)",
        "server": url
        if args.url
        else f"nextword serve --workers {args.workers} --model {args.model}",
        "clients": args.clients,
        "seconds": args.seconds,
        **result,
    }
    print(json.dumps(summary, indent=2))
    if result["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
