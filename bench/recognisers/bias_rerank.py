"""Issue 31, item 3: does telling the model which names to expect (``bias``) help reranking
real recogniser output whose references hold names it has never seen?

    python bench/recognisers/bias_rerank.py runs/recognisers/names-ocr.jsonl

The set (``ocr_nbest.py --names``): documents of *The Time Machine* that name its cast (Weena,
the Eloi, the Morlocks, Filby), printed, degraded and read by tesseract; the model is the Penn
Treebank RNN (``--model``), for which every one of those names is outside the vocabulary. Each
list is reranked through the service's ``/v1/rerank`` with the default open vocabulary (``oov:
"spell"``), without and with ``bias`` = the cast (``texts.NAMES``, the same list for every
document, as a meeting invite's names would be), and = the cast and ten names that occur nowhere
in the book (a list is rarely exactly the names said), at a few bias weights. ``lm_weight`` and
``length_bonus`` (and the bias weight) are tuned on the dev documents (least word errors, as
``rerank.py`` tunes) and reported on the test documents: WER and CER, and the error rate on the
names themselves (B-WER: errors on reference names and inserted names, per reference name) and
on the other words (U-WER), with a 95 % paired-bootstrap interval of the WER and B-WER
differences (lists resampled).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rerank import (
    BOOTSTRAP,
    Utterance,
    choices,
    free_port,
    load_set,
    rates,
    start_service,
    tune,
)
from texts import NAMES
from wer import biased_errors

from app.client import NextwordClient

BIAS_WEIGHTS = (0.01, 0.03, 0.1, 0.3)
# names that appear nowhere in the book: a bias list is rarely exactly the names said
DISTRACTORS = ("fenwick", "harrow", "quillan", "lorna", "dunmore", "ashby", "tolland", "merrow",
               "kestrel", "brandt")  # fmt: skip
LISTS = {"cast": list(NAMES), "cast + 10 others": [*NAMES, *DISTRACTORS]}


def score_lists(utterances: list[Utterance], url: str, model: str, system: str,
                bias: dict[str, Any] | None) -> float:  # fmt: skip
    """Each hypothesis's lm_log_prob under ``oov: "spell"`` (with ``bias`` when given), as
    system ``system``; returns the median ms per call."""
    client = NextwordClient(url, model=model, timeout=60.0)
    times = []
    for u in utterances:
        hypotheses = [{"text": t or "</s>", "score": 0.0} for t in u.texts]
        start = time.perf_counter()
        extra = {} if bias is None else {"bias": bias}
        answer = client.rerank(hypotheses, lm_weight=1.0, length_bonus=0.0, oov="spell", **extra)  # type: ignore[arg-type]
        times.append(1e3 * (time.perf_counter() - start))
        lm, n = np.zeros(len(u.texts)), np.zeros(len(u.texts))
        for h in answer.hypotheses:
            lm[h.index], n[h.index] = h.lm_log_prob, h.n_tokens
        u.lm[system], u.oov[system], u.n_tokens = lm, np.zeros(len(u.texts)), n
    return float(np.median(times))


def name_rates(utterances: list[Utterance], picks: list[str]) -> dict[str, float]:
    biased, others, names = 0, 0, 0
    for u, p in zip(utterances, picks, strict=True):
        b, o = biased_errors(u.reference.split(), p.split(), set(NAMES))
        biased, others = biased + b, others + o
        names += sum(w in NAMES for w in u.reference.split())
    words = sum(u.words for u in utterances)
    return {"b_wer": round(100 * biased / max(names, 1), 2),
            "u_wer": round(100 * others / max(words - names, 1), 2), "names": names}  # fmt: skip


def interval(a: np.ndarray, b: np.ndarray, total: np.ndarray) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(a), size=(BOOTSTRAP, len(a)))
    diffs = (
        100
        * (a[draws].sum(axis=1) - b[draws].sum(axis=1))
        / np.maximum(total[draws].sum(axis=1), 1)
    )
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"difference": round(100 * float(a.sum() - b.sum()) / float(total.sum()), 2),
            "ci95": [round(float(low), 2), round(float(high), 2)],
            "fewer_errors": int((a < b).sum()), "more_errors": int((a > b).sum())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sets", type=Path, nargs="+")
    parser.add_argument("--model", default="nextword=runs/ptb", help="NAME=DIR")
    parser.add_argument("--theta", type=float, default=None, help="the bias's theta")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    name = args.model.split("=", 1)[0]
    port = free_port()
    server = start_service([args.model], port)
    url = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {"benchmark": "recognisers/bias_rerank",
                               "command": " ".join(sys.argv),
                               "date": time.strftime("%Y-%m-%d %H:%M"),
                               "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                               "names": list(NAMES), "sets": {}}  # fmt: skip
    try:
        for path in args.sets:
            utterances = load_set(path, "score")
            dev = [u for u in utterances if u.split == "dev"]
            test = [u for u in utterances if u.split == "test"]
            ms = {"spell": score_lists(utterances, url, name, "spell", None)}
            for label, phrases in LISTS.items():
                for beta in BIAS_WEIGHTS:
                    bias = {"phrases": phrases, "weight": beta} | (
                        {} if args.theta is None else {"theta": args.theta})  # fmt: skip
                    system = f"bias {beta} ({label})"
                    ms[system] = score_lists(utterances, url, name, system, bias)
            systems: dict[str, list[str]] = {"recogniser 1-best": [u.best for u in test]}
            weights: dict[str, Any] = {}
            errs: dict[str, np.ndarray] = {}
            dev_errors = {}
            for system in ms:
                tuned = tune(dev, system)
                weights[system] = tuned.__dict__
                dev_picks = choices(dev, system, tuned)
                pairs = zip(dev, dev_picks, strict=True)
                dev_errors[system] = int(sum(u.word_errs[k] for u, k in pairs))
                picks = choices(test, system, tuned)
                systems[system] = [u.texts[k] for u, k in zip(test, picks, strict=True)]
                errs[system] = np.array([u.word_errs[k] for u, k in zip(test, picks, strict=True)])
            chosen = {label: min((s for s in ms if s.endswith(f"({label})")),
                                 key=lambda s: dev_errors[s]) for label in LISTS}  # fmt: skip
            systems["N-best oracle"] = [u.texts[int(np.argmin(u.word_errs))] for u in test]
            table = {s: rates(test, p) | name_rates(test, p) for s, p in systems.items()}
            words = np.array([u.words for u in test])
            names_per = np.array([sum(w in NAMES for w in u.reference.split()) for u in test])
            b_errs = {s: np.array([biased_errors(u.reference.split(), p.split(), set(NAMES))[0]
                                   for u, p in zip(test, systems[s], strict=True)])
                      for s in ("spell", *chosen.values())}  # fmt: skip
            result: dict[str, Any] = {
                "dev_utterances": len(dev), "test_utterances": len(test),
                "weights": weights, "dev_word_errors": dev_errors, "chosen_on_dev": chosen,
                "table": table, "rerank_ms_p50": ms,
            }  # fmt: skip
            for best in chosen.values():
                result[f"{best} vs spell (WER)"] = interval(errs[best], errs["spell"], words)
                result[f"{best} vs spell (B-WER)"] = interval(b_errs[best], b_errs["spell"],
                                                              names_per)  # fmt: skip
            results["sets"][str(path)] = result
            print(f"\n{path}: {len(test)} test lines, {table['spell']['names']} names")
            print("| system | WER | CER | B-WER (names) | U-WER |\n|---|---|---|---|---|")
            for s, row in table.items():
                print(f"| {s} | {row['wer']:.2f} | {row['cer']:.2f} | {row['b_wer']:.2f} | "
                      f"{row['u_wer']:.2f} |")  # fmt: skip
            print(json.dumps({k: v for k, v in result.items() if k not in ("table",)}, indent=1))
    finally:
        server.terminate()
        server.wait(timeout=30)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
