"""Issue 31, item 2: Penn Treebank perplexity on the served path, with and without the neural
cache that ``nextword tune --text`` fitted, each model as its checkpoint loads (the cache from
its ``cache`` section, the weights of a combined model as tune refitted them).

    nextword tune --model runs/ptb --text ptb.valid.txt --out runs/ptb-cache
    nextword tune --model runs/ptb-mix --text ptb.valid.txt --out runs/ptb-mix-cache
    python bench/cache_served.py rnn=runs/ptb rnn+cache=runs/ptb-cache \\
        rnn+kn5=runs/ptb-mix rnn+kn5+cache=runs/ptb-mix-cache

Each test sentence is scored the way the service scores it (``score_sentences`` with the
previous sentences as ``history``, cut to ``NEXTWORD_MAX_HISTORY_TOKENS`` as the service cuts
it), every model in turn, sentence by sentence, so that the timings share the machine's moods.
Reported: perplexity over every scored token (words and ``</s>``) and milliseconds per token.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.inference.checkpoint import load_checkpoint  # noqa: E402
from model.inference.history import MAX_HISTORY_TOKENS, history_window  # noqa: E402
from model.inference.interpolated_lm import InterpolatedLM  # noqa: E402
from model.text.corpus import load_sentences  # noqa: E402

PTB = ROOT.parent / "shared" / "data" / "ptb"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", metavar="NAME=DIR")
    parser.add_argument("--test", default=str(PTB / "ptb.test.txt"))
    parser.add_argument("--history-tokens", type=int, default=MAX_HISTORY_TOKENS)
    parser.add_argument("--limit", type=int, default=None, help="score the first N sentences")
    args = parser.parse_args()
    models = {}
    for spec in args.models:
        name, _, directory = spec.partition("=")
        lm = load_checkpoint(directory)
        models[name] = lm
        cache = lm.neural_cache()
        weights = lm.weights.round(4).tolist() if isinstance(lm, InterpolatedLM) else None
        shown = {"cache": None if cache is None else cache.to_dict(), "weights": weights}
        print(json.dumps({name: directory} | shown), flush=True)
    first = next(iter(models.values()))
    sentences = load_sentences(args.test, first.tokenizer, "lines")[: args.limit]
    totals = {name: [0.0, 0, 0.0] for name in models}  # -log P, tokens, seconds
    started = time.time()
    for k, sentence in enumerate(sentences):
        prefix = history_window(sentences[:k], args.history_tokens).tokens
        for name, lm in models.items():
            spent = time.perf_counter()
            (scored,) = lm.score_sentences([sentence], prefix=prefix)
            totals[name][2] += time.perf_counter() - spent
            totals[name][0] -= math.fsum(scored.token_log_probs)
            totals[name][1] += len(scored.token_log_probs)
        if (k + 1) % 500 == 0:
            print(f"{k + 1}/{len(sentences)} sentences", file=sys.stderr, flush=True)
    result: dict[str, object] = {
        name: {"test_perplexity": round(math.exp(nll / count), 2), "tokens": count,
               "ms_per_token": round(1e3 * spent / count, 4)}
        for name, (nll, count, spent) in totals.items()
    }  # fmt: skip
    result["run"] = {
        "sentences": len(sentences), "history_tokens": args.history_tokens,
        "seconds": round(time.time() - started, 1), "machine": platform.processor() or
        platform.machine(), "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
