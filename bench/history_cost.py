"""What a growing ``history`` costs (issue 31, item 1): a client reranks a document sentence
after sentence, sending sentence k with sentences 1..k−1 as its history; the prefix cache should
make that call cost about the same as the call without history.

    python bench/history_cost.py --model runs/ptb --text ../shared/data/ptb/ptb.valid.txt

A ``nextword serve`` with the model (one worker, one BLAS thread) answers, over loopback HTTP,
for each of ``--sentences`` consecutive sentences of the text: a ``/v1/rerank`` of ``--hypotheses``
variants of the sentence (the sentence, and copies with one word dropped), and a
``/v1/candidates`` of the sentence's last word after the words before it; each first without
history and then with the true previous sentences as history (the two calls alternate, so both
see the same machine). The figure is the ratio of the medians, with history over without
(goal ≤ 1.3); beside it, a rerank whose history is as long but new to the server (a sentence
of its own put first, so no cached prefix matches): what the cache saves.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "recognisers"))

from rerank import free_port, start_service  # noqa: E402

from app.client import NextwordClient  # noqa: E402


def variants(sentence: list[str], n: int) -> list[dict[str, Any]]:
    """The sentence and up to n−1 copies with one word dropped: an N-best list's stand-in."""
    out = [sentence] + [sentence[:i] + sentence[i + 1 :] for i in range(len(sentence))]
    return [{"text": v, "score": 0.0} for v in out[:n] if v]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="runs/ptb")
    parser.add_argument("--text", type=Path, default=ROOT.parent / "shared/data/ptb/ptb.valid.txt")
    parser.add_argument("--sentences", type=int, default=300)
    parser.add_argument("--hypotheses", type=int, default=10)
    parser.add_argument("--skip", type=int, default=20, help="sentences read before timing")
    args = parser.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    lines = [s.split() for s in args.text.read_text().splitlines() if s.split()]
    document = lines[: args.skip + args.sentences]
    port = free_port()
    server = start_service([f"m={args.model}"], port)
    times: dict[str, list[float]] = {k: [] for k in (
        "rerank, no history", "rerank, growing history",
        "candidates, no history", "candidates, growing history", "rerank, cold history",
    )}  # fmt: skip
    read: list[int] = []
    try:
        client = NextwordClient(f"http://127.0.0.1:{port}", model="m", timeout=60.0)
        for k, sentence in enumerate(document):
            history = [" ".join(s) for s in document[:k]]
            hyps = variants(sentence, args.hypotheses)
            context, last = sentence[:-1], [sentence[-1]]
            cold = [f"call {k} begins", *history]
            calls = [
                ("rerank, no history", client.rerank, (hyps,), {}),
                ("rerank, growing history", client.rerank, (hyps,), {"history": history}),
                ("candidates, no history", client.candidates, (context, [last]), {}),
                ("candidates, growing history", client.candidates, (context, [last]),
                 {"history": history}),
                ("rerank, cold history", client.rerank, (hyps,), {"history": cold}),
            ]  # fmt: skip
            for name, call, positional, options in calls:
                start = time.perf_counter()
                answer = call(*positional, **options)
                ms = (time.perf_counter() - start) * 1e3
                if name == "rerank, growing history" and answer.history is not None:
                    read.append(answer.history.tokens)
                if k >= args.skip:
                    times[name].append(ms)
    finally:
        server.terminate()
        server.wait(timeout=30)
    p50 = {name: round(statistics.median(t), 3) for name, t in times.items()}
    result = {
        "benchmark": "history_cost",
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "model": args.model,
        "timed_sentences": args.sentences,
        "history_tokens_read_last": read[-1] if read else 0,
        "p50_ms": p50,
        "ratio_rerank": round(p50["rerank, growing history"] / p50["rerank, no history"], 3),
        "ratio_cold_rerank": round(p50["rerank, cold history"] / p50["rerank, no history"], 3),
        "ratio_candidates": round(
            p50["candidates, growing history"] / p50["candidates, no history"], 3
        ),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
