"""Gap filling on Penn Treebank: which of several confusable words belongs in the blank?

    python bench/gap_filling.py --ltr runs/ptb --bidirectional runs/ptb-bi
    python bench/gap_filling.py --ltr runs/ptb --bidirectional runs/ptb-bi --queries 1000 --http

The test set is built from ``ptb.valid.txt`` (never seen in training): in each of N sentences one
word is blanked, and the candidates are that word plus 4 confusable ones, as an STT or OCR N-best
list would offer: vocabulary words within edit distance 2 of it (spelling) or with the same
Soundex code (sound), the most frequent first, random frequent words when there are too few.
Three methods pick a candidate:

- ``left``: the left context only (``/v1/candidates``), as a left-to-right decoder sees it;
- ``sentence``: each candidate scored as the whole sentence under the left-to-right model
  (``/v1/fill`` with a left-to-right model);
- ``bidirectional``: the gap-filling model, ``P(c | left, right)`` (``/v1/fill``).

Reported: accuracy (the true word ranked first) and latency per query, in-process and, with
``--http``, through the running service.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from app.launch import start_server
from model.inference.checkpoint import load_checkpoint
from model.inference.recurrent_lm import RecurrentLM

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VALID = ROOT.parent / "shared" / "data" / "ptb" / "ptb.valid.txt"


def soundex(word: str) -> str:
    codes = {
        c: str(d)
        for d, letters in enumerate(["aeiouyhw", "bfpv", "cgjkqsxz", "dt", "l", "mn", "r"])
        for c in letters
    }
    digits = [codes.get(c, "") for c in word.lower() if c.isalpha()]
    if not digits:
        return word
    out, last = [word[0].lower()], digits[0]
    for d in digits[1:]:
        if d != last and d != "0":
            out.append(d)
        last = d
    return "".join(out)[:4].ljust(4, "0")


def within_two_edits(a: str, b: str) -> bool:
    if abs(len(a) - len(b)) > 2:
        return False
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > 2:
            return False
        previous = current
    return previous[-1] <= 2


def build_test_set(lm: RecurrentLM, valid: Path, n: int, seed: int = 0) -> list[dict]:
    """Sentences with one blank and 5 candidates (the true word first in the stored order)."""
    rng = np.random.default_rng(seed)
    counts = dict(zip(lm.vocab.tokens, lm.vocab.counts, strict=True))
    words = [w for w in lm.vocab.tokens[3:] if w.isalpha() and counts[w] >= 5]
    by_sound: dict[str, list[str]] = {}
    for w in words:
        by_sound.setdefault(soundex(w), []).append(w)
    lines = [line.split() for line in valid.read_text().splitlines()]
    lines = [s for s in lines if len(s) >= 6]
    order = rng.permutation(len(lines))
    cases = []
    for i in order:
        s = lines[i]
        positions = [k for k, w in enumerate(s) if w in counts and w.isalpha() and len(w) >= 3]
        if not positions:
            continue
        k = int(rng.choice(positions))
        truth = s[k]
        confusable = {w for w in by_sound.get(soundex(truth), []) if w != truth}
        confusable |= {w for w in words if w != truth and within_two_edits(w, truth)}
        ranked = sorted(confusable, key=lambda w: (-counts[w], w))[:4]  # no hash order
        while len(ranked) < 4:
            w = str(rng.choice(words[:2000]))
            if w != truth and w not in ranked:
                ranked.append(w)
        cases.append(
            {"left": s[:k], "right": s[k + 1 :], "truth": truth, "candidates": [truth, *ranked]}
        )
        if len(cases) == n:
            break
    return cases


def evaluate(cases: list[dict], pick: Callable[[dict], list[float]]) -> dict:
    correct, times = 0, []
    for case in cases:
        start = time.perf_counter()
        scores = pick(case)
        times.append(time.perf_counter() - start)
        correct += int(np.argmax(scores) == 0)  # the true word is candidates[0]
    ms = sorted(t * 1000 for t in times)
    return {
        "accuracy": round(correct / len(cases), 4),
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ltr", type=Path, default=ROOT / "runs" / "ptb")
    parser.add_argument("--bidirectional", type=Path, default=ROOT / "runs" / "ptb-bi")
    parser.add_argument("--valid", type=Path, default=DEFAULT_VALID)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--http", action="store_true", help="also measure through the service")
    args = parser.parse_args()

    ltr, bi = load_checkpoint(args.ltr), load_checkpoint(args.bidirectional)
    cases = build_test_set(ltr, args.valid, args.queries)
    methods: dict[str, Callable[[dict], list[float]]] = {
        "left": lambda c: [s.log_prob for s in ltr.score_candidates(c["left"], c["candidates"])],
        "sentence": lambda c: [
            s.log_prob for s in ltr.fill(c["left"], c["right"], c["candidates"])[1]
        ],
        "bidirectional": lambda c: [
            s.log_prob for s in bi.fill(c["left"], c["right"], c["candidates"])[1]
        ],
    }
    results: dict[str, object] = {
        "benchmark": "gap_filling",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "test_set": f"{len(cases)} blanks from {args.valid.name}: the true word + 4 confusable",
        "candidates_per_query": Counter(len(c["candidates"]) for c in cases).most_common(1)[0][0],
        "models": {"left-to-right": str(args.ltr), "bidirectional": str(args.bidirectional)},
        "in_process": {name: evaluate(cases, pick) for name, pick in methods.items()},
    }
    if args.http:
        process, url = start_server(
            [f"ltr={args.ltr}", f"bi={args.bidirectional}"],
            env={"NEXTWORD_PREFIX_CACHE_ENTRIES": "0"},
        )
        try:
            with httpx.Client(base_url=url, timeout=30) as http:

                def call(path: str, body: dict) -> list[float]:
                    return [
                        r["log_prob"]
                        for r in http.post(path, json=body).raise_for_status().json()["results"]
                    ]

                over_http = {
                    "left": lambda c: call(
                        "/v1/candidates",
                        {"model": "ltr", "context": c["left"], "candidates": c["candidates"]},
                    ),
                    "sentence": lambda c: call(
                        "/v1/fill",
                        {"model": "ltr", **{k: c[k] for k in ("left", "right", "candidates")}},
                    ),
                    "bidirectional": lambda c: call(
                        "/v1/fill",
                        {"model": "bi", **{k: c[k] for k in ("left", "right", "candidates")}},
                    ),
                }
                results["http"] = {name: evaluate(cases, pick) for name, pick in over_http.items()}
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
