"""Candidates latency by how much of the context is cached: cold, growing, exact hit.

    python bench/cache_hit.py --model runs/ptb1-short
    python bench/cache_hit.py --model runs/ptb1-short --code /tmp/old   # another checkout

The workload is ``bench/serve_speed.py``'s (a 20-word context and 5 candidates, one of two
tokens), one request at a time, p50 of each case:

- cold: no prefix cache;
- growing: each context one word longer than the last, the cache on (a decoder's pattern);
- exact hit: every context asked about once, then again with other candidates (the next
  request's), the cache on: what a beam search pays for more words after the same history.

``--code`` imports the model from another checkout of nextword (``git worktree add``), so a
change can be compared with the code before it, in processes that alternate (RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "ptb")
    parser.add_argument("--code", type=Path, default=ROOT)
    parser.add_argument("--requests", type=int, default=600)
    args = parser.parse_args()
    code = args.code.resolve()
    sys.path[:0] = [str(code), str(code / "bench")]
    from serve_speed import DEFAULT_VALID, latencies, summary, workload

    import model
    from model.inference.checkpoint import load_checkpoint
    from model.inference.prefix_cache import PrefixCache

    assert Path(model.__file__).resolve().is_relative_to(code), model.__file__
    lm = load_checkpoint(args.model)
    requests, _ = workload(lm, DEFAULT_VALID, args.requests)

    def p50(calls: list) -> float:
        it = iter(calls)
        return summary(latencies(lambda: lm.score_candidates(*next(it)), len(calls)))["p50_ms"]

    for request in requests[:50]:  # warm-up
        lm.score_candidates(*request)
    out = {"code": str(code), "model": str(args.model), "cold_p50_ms": p50(requests)}
    lm.cache = PrefixCache()
    growing = [(c[:k], cands) for c, cands in requests[:150] for k in range(len(c) + 1)]
    out["growing_cached_p50_ms"] = p50(growing)
    lm.cache = PrefixCache()
    for request in requests:
        lm.score_candidates(*request)
    others = [(c, requests[(i + 1) % len(requests)][1]) for i, (c, _) in enumerate(requests)]
    out["exact_hit_p50_ms"] = p50(others)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
