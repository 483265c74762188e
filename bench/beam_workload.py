"""A beam-search decoder's traffic, replayed against the server: prefix cache on and off.

    python bench/beam_workload.py --model runs/ptb                 # beam 8, 20 steps, 10 candidates
    python bench/beam_workload.py --model runs/ptb --sentences 20 --window-ms 2

For each PTB valid sentence the decoder starts from an empty context; at every step each of the
beam's hypotheses asks /v1/candidates for 10 next words (the sentence's true next word and 9
others), all hypotheses of a step at once, as a decoder would. The 8 best extensions by total
log-probability form the next beam. Each configuration runs against its own ``nextword serve``;
the number of network time steps the server computed comes from /v1/models/{name}.
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
from pathlib import Path

import httpx
import numpy as np

from app.launch import start_server

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VALID = ROOT.parent / "shared" / "data" / "ptb" / "ptb.valid.txt"


async def decode(
    client: httpx.AsyncClient, sentence: list[str], words: list[str], args, rng, latencies
) -> int:
    """Beam search over one sentence; returns the number of requests sent."""
    beam: list[tuple[list[str], float]] = [([], 0.0)]
    sent = 0
    for t in range(min(args.steps, len(sentence))):
        others = [
            str(w)
            for w in rng.choice(words, args.candidates - 1, replace=False)
            if w != sentence[t]
        ]
        candidates = [sentence[t], *others][: args.candidates]

        async def ask(context: list[str], candidates: list[str] = candidates) -> list[float]:
            start = time.perf_counter()
            r = await client.post(
                "/v1/candidates", json={"context": context, "candidates": candidates}
            )
            latencies.append(time.perf_counter() - start)
            r.raise_for_status()
            return [x["log_prob"] for x in r.json()["results"]]

        scores = await asyncio.gather(*(ask(context) for context, _ in beam))
        sent += len(beam)
        extended = [
            ([*context, c], total + lp)
            for (context, total), lps in zip(beam, scores, strict=True)
            for c, lp in zip(candidates, lps, strict=True)
        ]
        beam = sorted(extended, key=lambda h: -h[1])[: args.beam]
    return sent


async def run(url: str, sentences: list[list[str]], words: list[str], args) -> dict:
    rng = np.random.default_rng(0)
    latencies: list[float] = []
    async with httpx.AsyncClient(
        base_url=url, timeout=60, limits=httpx.Limits(max_connections=args.beam)
    ) as client:
        before = (await client.get("/v1/models/m")).json()["network_steps"]
        start = time.perf_counter()
        requests = 0
        for sentence in sentences:
            requests += await decode(client, sentence, words, args, rng, latencies)
        elapsed = time.perf_counter() - start
        after = (await client.get("/v1/models/m")).json()
    ms = sorted(x * 1000 for x in latencies)
    return {
        "requests": requests,
        "requests_per_s": round(requests / elapsed, 1),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 2),
        "network_steps": after["network_steps"] - before,
        "prefix_cache": after["prefix_cache"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "ptb")
    parser.add_argument("--valid", type=Path, default=DEFAULT_VALID)
    parser.add_argument("--sentences", type=int, default=10)
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument(
        "--window-ms", type=float, default=2.0, help="batching window for the third run"
    )
    args = parser.parse_args()

    lines = [line.split() for line in args.valid.read_text().splitlines()]
    sentences = [s for s in lines if len(s) >= args.steps][: args.sentences]
    words = sorted({w for s in lines for w in s})
    configs = {
        "cache_off": {"NEXTWORD_PREFIX_CACHE_ENTRIES": "0"},
        "cache_on": {},
        f"cache_on_batch_{args.window_ms:g}ms": {"NEXTWORD_BATCH_WINDOW_MS": str(args.window_ms)},
    }
    results: dict[str, object] = {
        "benchmark": "beam_workload",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "workload": f"{len(sentences)} PTB valid sentences, beam {args.beam}, {args.steps} steps, "
        f"{args.candidates} candidates",
    }
    for name, env in configs.items():
        process, url = start_server([f"m={args.model}"], env=env)
        try:
            results[name] = asyncio.run(run(url, sentences, words, args))
        finally:
            process.terminate()
            process.wait(timeout=30)
        print(name, json.dumps(results[name]), file=sys.stderr)
    off, on = results["cache_off"], results["cache_on"]
    results["network_steps_ratio_off_over_on"] = round(
        off["network_steps"] / on["network_steps"], 2
    )  # type: ignore[index]
    results["throughput_ratio_on_over_off"] = round(on["requests_per_s"] / off["requests_per_s"], 2)  # type: ignore[index]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
