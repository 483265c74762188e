"""An RNN, a Kneser-Ney n-gram and their interpolation, side by side in one run (issue 12).

    nextword ngram --train ptb.train.txt --vocab-from runs/ptb --out runs/ptb-kn5
    nextword combine --model runs/ptb --model runs/ptb-kn5 --valid ptb.valid.txt --out runs/ptb-mix
    python bench/combined.py --rnn runs/ptb --ngram runs/ptb-kn5 --combined runs/ptb-mix --http

Reported for each model, in one JSON document:

- test perplexity, on the running stream (the PTB convention) and with each sentence alone (how
  /v1/score and /v1/rerank read text);
- accuracy on ``bench/gap_filling.py``'s confusion sets (the true word + 4 confusable ones, from
  ``ptb.valid.txt``), from the left context (``left``) and as whole sentences (``sentence``);
- the latency of a candidates query (20 context words, 5 candidates), in-process, the models
  measured in alternating rounds on the same queries, and with ``--http`` through the service.
  The interpolation's extra cost over the RNN alone is the n-gram's share.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gap_filling import DEFAULT_VALID, build_test_set, evaluate

from app.launch import start_server
from model.inference.checkpoint import load_checkpoint
from model.inference.evaluation import evaluate_file
from model.inference.language_model import LanguageModel
from model.inference.recurrent_lm import RecurrentLM

DEFAULT_TEST = DEFAULT_VALID.with_name("ptb.test.txt")


def queries(valid: Path, n: int, seed: int = 1) -> list[tuple[list[str], list[str]]]:
    """(20-word context, 5 candidates: the next word and 4 frequent words) from valid text."""
    rng = np.random.default_rng(seed)
    words = valid.read_text().split()
    common = [w for w, _ in sorted(((w, words.count(w)) for w in set(words[:20000])),
                                   key=lambda x: (-x[1], x[0]))[:200]]  # fmt: skip
    out = []
    for start in rng.integers(0, len(words) - 25, n):
        context = words[start : start + 20]
        out.append((context, [words[start + 20], *rng.choice(common, 4, replace=False).tolist()]))
    return out


def latency_rounds(
    models: dict[str, LanguageModel], qs: list[tuple[list[str], list[str]]], rounds: int
) -> dict[str, dict[str, float]]:
    """p50/p90 ms per candidates query; every round runs each model over every query, the order
    of the models alternating from round to round."""
    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            lm = models[name]
            for context, candidates in qs:
                start = time.perf_counter()
                lm.score_candidates(context, candidates)
                times[name].append((time.perf_counter() - start) * 1000)
    return {
        name: {
            "p50_ms": round(statistics.median(t), 3),
            "p90_ms": round(float(np.percentile(t, 90)), 3),
        }
        for name, t in times.items()
    }


def http_latency(
    paths: dict[str, Path], qs: list[tuple[list[str], list[str]]], rounds: int
) -> dict[str, dict[str, float]]:
    process, url = start_server(
        [f"{name}={path}" for name, path in paths.items()],
        env={"NEXTWORD_PREFIX_CACHE_ENTRIES": "0"},
    )
    times: dict[str, list[float]] = {name: [] for name in paths}
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            names = list(paths)
            for r in range(rounds):
                for name in names if r % 2 == 0 else names[::-1]:
                    for context, candidates in qs:
                        body = {"model": name, "context": context, "candidates": candidates}
                        start = time.perf_counter()
                        http.post("/v1/candidates", json=body).raise_for_status()
                        times[name].append((time.perf_counter() - start) * 1000)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {name: {"p50_ms": round(statistics.median(t), 3)} for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rnn", type=Path, required=True)
    parser.add_argument("--ngram", type=Path, required=True)
    parser.add_argument("--combined", type=Path, required=True)
    parser.add_argument("--valid", type=Path, default=DEFAULT_VALID)
    parser.add_argument("--test", type=Path, default=DEFAULT_TEST)
    parser.add_argument("--sets", type=int, default=1000, help="gap-filling confusion sets")
    parser.add_argument("--queries", type=int, default=200, help="latency queries per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--http", action="store_true")
    args = parser.parse_args()
    paths = {"rnn": args.rnn, "ngram": args.ngram, "combined": args.combined}
    models = {name: load_checkpoint(path) for name, path in paths.items()}
    rnn = models["rnn"]
    assert isinstance(rnn, RecurrentLM)
    cases = build_test_set(rnn, args.valid, args.sets)
    results: dict[str, object] = {
        "benchmark": "combined",
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "models": {name: str(p) for name, p in paths.items()},
        "weights": models["combined"].architecture()["weights"],
    }
    perplexity, accuracy = {}, {}
    for name, lm in models.items():
        figures = evaluate_file(lm, args.test, "lines")
        perplexity[name] = {k: figures[k] for k in ("perplexity", "isolated_perplexity")}

        def left(c: dict, lm: LanguageModel = lm) -> list[float]:
            return [s.log_prob for s in lm.score_candidates(c["left"], c["candidates"])]

        def sentence(c: dict, lm: LanguageModel = lm) -> list[float]:
            return [s.log_prob for s in lm.fill(c["left"], c["right"], c["candidates"])[1]]

        methods: dict[str, Callable[[dict], list[float]]] = {"left": left, "sentence": sentence}
        accuracy[name] = {m: evaluate(cases, pick)["accuracy"] for m, pick in methods.items()}
        print(name, perplexity[name], accuracy[name], file=sys.stderr)
    results["test_perplexity"] = perplexity
    results["gap_filling_accuracy"] = accuracy
    qs = queries(args.valid, args.queries)
    results["candidates_in_process"] = latency_rounds(models, qs, args.rounds)
    if args.http:
        results["candidates_http"] = http_latency(paths, qs, max(2, args.rounds // 3))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
