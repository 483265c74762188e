"""Issue 31, item 5: reranking a document's lines with what was already recognised as
``history`` — the reranker's own output for lines 1..k−1, never the references.

    python bench/recognisers/document_rerank.py runs/recognisers/names-ocr.jsonl \\
        --model nextword=runs/ptb --model nextword+cache=runs/ptb-cache --model kn5=runs/ptb-kn5

The set's ids name their document and line (``names-DDD-SS``, ``ocr_nbest.py --names``). For
each model, two systems, both through a running service's ``/v1/rerank`` (``oov: "spell"``):

- ``alone``: each list scored by itself; ``lm_weight`` and ``length_bonus`` tuned on the dev
  documents (``rerank.tune``), reported on the test documents;
- ``own history``: line k scored with ``history`` = the lines this system picked for 1..k−1 of
  its document. The weights are tuned on dev lists scored after the picks the ``alone`` weights
  make there (the picks depend on the weights, so the history comes from a first pass), then
  the test documents are reranked line by line, each history being the system's own picks.

Reported: WER and CER on the test documents and, per model, the paired-bootstrap interval of
``own history`` minus ``alone`` (a model that reads no history, an n-gram, gives the same).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rerank import (
    Utterance,
    choices,
    free_port,
    load_set,
    paired_difference,
    rates,
    start_service,
    tune,
)

from app.client import NextwordClient


def document_of(u: Utterance) -> str:
    return u.id.rsplit("-", 1)[0]


BIAS: dict[str, Any] = {}  # --bias: the request's bias on every call


def lm_scores(client: NextwordClient, u: Utterance, history: list[str] | None) -> np.ndarray:
    hypotheses = [{"text": t or "</s>", "score": 0.0} for t in u.texts]
    extra: dict[str, Any] = {} if not history else {"history": history}
    if BIAS:
        extra["bias"] = BIAS
    answer = client.rerank(hypotheses, lm_weight=1.0, length_bonus=0.0, oov="spell", **extra)
    lm, n = np.zeros(len(u.texts)), np.zeros(len(u.texts))
    for h in answer.hypotheses:
        lm[h.index], n[h.index] = h.lm_log_prob, h.n_tokens
    u.n_tokens = n
    return lm


def sequential(utterances: list[Utterance], client: NextwordClient, system: str,
               weights: Any) -> list[int]:  # fmt: skip
    """Each document's lines in order, each scored after the picks made for the lines before
    it (under ``weights``); the scores are kept as ``system``. Returns the picks."""
    by_document: dict[str, list[int]] = defaultdict(list)
    for k, u in enumerate(utterances):
        by_document[document_of(u)].append(k)
    picks = [0] * len(utterances)
    for rows in by_document.values():
        done: list[str] = []
        for k in sorted(rows, key=lambda r: utterances[r].id):
            u = utterances[k]
            u.lm[system], u.oov[system] = lm_scores(client, u, done), np.zeros(len(u.texts))
            (picks[k],) = choices([u], system, weights)
            if u.texts[picks[k]].strip():
                done.append(u.texts[picks[k]])
    return picks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sets", type=Path, nargs="+")
    parser.add_argument("--model", action="append", required=True, help="NAME=DIR")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--bias", nargs="+", metavar="PHRASE",
        help="also give every call this bias (weight 0.05), e.g. the names set's cast",
    )  # fmt: skip
    args = parser.parse_args()
    if args.bias:
        BIAS.update({"phrases": args.bias, "weight": 0.05})
    port = free_port()
    server = start_service(args.model, port)
    url = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {"benchmark": "recognisers/document_rerank",
                               "command": " ".join(sys.argv),
                               "date": time.strftime("%Y-%m-%d %H:%M"), "sets": {}}  # fmt: skip
    try:
        for path in args.sets:
            utterances = load_set(path, "score")
            dev = [u for u in utterances if u.split == "dev"]
            test = [u for u in utterances if u.split == "test"]
            table: dict[str, Any] = {"recogniser 1-best": rates(test, [u.best for u in test])}
            paired, weights = {}, {}
            for spec in args.model:
                name = spec.split("=", 1)[0]
                client = NextwordClient(url, model=name, timeout=120.0)
                alone = f"{name}: alone"
                for u in utterances:
                    u.lm[alone], u.oov[alone] = lm_scores(client, u, None), np.zeros(len(u.texts))
                tuned = tune(dev, alone)
                test_alone = choices(test, alone, tuned)
                own = f"{name}: own history"
                sequential(dev, client, own, tuned)  # first pass: the history the weights see
                tuned_own = tune(dev, own)
                test_own = sequential(test, client, own, tuned_own)
                weights[name] = {"alone": tuned.__dict__, "own history": tuned_own.__dict__}
                for system, picks in ((alone, test_alone), (own, test_own)):
                    chosen = [u.texts[k] for u, k in zip(test, picks, strict=True)]
                    table[system] = rates(test, chosen)
                errors = [np.array([u.word_errs[k] for u, k in zip(test, p, strict=True)])
                          for p in (test_own, test_alone)]  # fmt: skip
                words = np.array([u.words for u in test])
                paired[f"{own} vs alone"] = paired_difference(errors[0], errors[1], words)
                print(name, json.dumps(paired[f"{own} vs alone"]), flush=True)
            table["N-best oracle"] = rates(test, [u.texts[int(np.argmin(u.word_errs))]
                                                  for u in test])  # fmt: skip
            print(f"\n{path}: {len(test)} test lines")
            print("| system | WER | CER |\n|---|---|---|")
            for system, row in table.items():
                print(f"| {system} | {row['wer']:.2f} | {row['cer']:.2f} |")
            results["sets"][str(path)] = {"table": table, "paired": paired, "weights": weights}
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
