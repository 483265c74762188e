"""What one pyctcdecode ``score`` call costs: nextword's adapter (in process, prefix cache on)
beside pyctcdecode's own KenLM model on the project's KN5 ARPA file (issue 13).

    python bench/ctc_lm_calls.py --rnn runs/ptb --arpa runs/ptb-kn5/model.arpa

A beam search scores each word a beam completes once, after the text before it (pyctcdecode
caches by text). The workload replays that on ``ptb.valid.txt`` sentences: for each sentence,
each word after its prefix, as the surviving beam would ask, plus ``--branches`` other words
of the sentence after the same prefix (the competing beams). Both language models answer the
same calls, in alternating rounds; reported: µs per call (p50 over rounds of the per-call mean)
and the ratio.
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.adapters.pyctcdecode_lm import NextwordCTCLM
from model.inference.checkpoint import load_checkpoint

DEFAULT_VALID = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb" / "ptb.valid.txt"


def workload(valid: Path, sentences: int, seed: int = 0) -> list[list[str]]:
    """``sentences`` sentences of the validation text, drawn at random."""
    rng = np.random.default_rng(seed)
    lines = [line.split() for line in valid.read_text().splitlines() if line.split()]
    return [lines[int(i)] for i in rng.choice(len(lines), sentences, replace=False)]


def run(lm: Any, sentences: list[list[str]], branches: int, seed: int) -> tuple[int, float]:
    """(calls, seconds): every word of every sentence after its prefix, and ``branches``
    competitors at each position; the last word with ``is_last_word``."""
    rng = np.random.default_rng(seed)
    calls, start = 0, time.perf_counter()
    for words in sentences:
        state = lm.get_start_state()
        for i, word in enumerate(words):
            last = i == len(words) - 1
            for other in rng.choice(words, branches).tolist():
                lm.score(state, other, is_last_word=last)
                calls += 1
            _, state = lm.score(state, word, is_last_word=last)
            calls += 1
    return calls, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rnn", type=Path, required=True)
    parser.add_argument("--arpa", type=Path, required=True)
    parser.add_argument("--valid", type=Path, default=DEFAULT_VALID)
    parser.add_argument("--sentences", type=int, default=50)
    parser.add_argument("--branches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    import kenlm  # type: ignore[import-not-found]
    from pyctcdecode import LanguageModel  # type: ignore[import-not-found]

    rnn = load_checkpoint(args.rnn)
    arpa_words = [t for t in rnn.vocab.tokens if t not in ("<s>", "</s>", "<unk>")]
    models: dict[str, Any] = {
        "nextword": NextwordCTCLM.in_process(rnn, alpha=0.5, beta=1.0),
        "kenlm": LanguageModel(kenlm.Model(str(args.arpa)), arpa_words, alpha=0.5, beta=1.0),
    }
    sentences = workload(args.valid, args.sentences)
    per_call: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            if name == "nextword":  # a fresh cache each round: every decode starts cold
                rnn.use_prefix_cache(65_536, 256 << 20, None)
            calls, seconds = run(models[name], sentences, args.branches, seed=r)
            per_call[name].append(seconds / calls * 1e6)
    p50 = {name: round(statistics.median(v), 1) for name, v in per_call.items()}
    print(json.dumps({
        "benchmark": "ctc_lm_calls",
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "calls_per_round": calls,
        "us_per_call_p50": p50,
        "nextword_over_kenlm": round(p50["nextword"] / p50["kenlm"], 1),
        "cache": rnn.cache_stats(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
