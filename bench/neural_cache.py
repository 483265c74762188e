"""A first measurement for issue 31, item 2: how far does a cache over the history take the
Penn Treebank perplexity of the ``bench/ptb.toml`` RNN and of RNN + KN5? Offline, on the stream
(each position's history: every earlier token of the text, within the window), before any
service code.

    python bench/neural_cache.py --rnn runs/ptb --ngram runs/ptb-kn5

Two caches, each mixed per token as ``P = (1 − λ) P_model + λ P_cache`` (exactly normalised
over the vocabulary: P_cache is a distribution over the words of the window):

- **neural** (Grave et al. 2017): ``P_cache(w | h_t) ∝ Σ_i exp(θ · h_t·h_i) [x_{i+1} = w]`` over the
  window's positions i < t, ``h`` the network's top-layer output (what its softmax reads);
- **unigram**: ``P_cache(w) ∝ Σ_i [x_{i+1} = w]`` (Kuhn & De Mori 1990), the same window.

θ, λ and the window are chosen on the validation text (grid search), reported on the test text.
Targets ``<s>`` (given, not predicted) are neither scored nor remembered.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.inference.checkpoint import load_checkpoint  # noqa: E402
from model.inference.history import history_window  # noqa: E402
from model.inference.neural_cache import CacheSettings, Memory, cache_probs  # noqa: E402
from model.inference.recurrent_lm import RecurrentLM  # noqa: E402
from model.text.batches import sentence_stream  # noqa: E402
from model.text.corpus import load_sentences  # noqa: E402

PTB = ROOT.parent / "shared" / "data" / "ptb"


def stream_states(lm: RecurrentLM, sentences: list[list[str]]) -> tuple[np.ndarray, ...]:
    """(hidden (T, H) float32, log P_model of each next token (T,), next ids (T,)) for every
    position of the stream whose next token is not ``<s>``; positions in stream order."""
    ids = sentence_stream(sentences, lm.vocab)
    state = lm.net.start_state(1)
    hiddens, logps, nexts = [], [], []
    for a in range(0, len(ids) - 1, 1000):
        inputs = ids[a : min(a + 1000, len(ids) - 1)]
        targets = ids[a + 1 : a + 1 + len(inputs)]
        hidden, state, _ = lm.net.forward(inputs[:, None], state, keep_cache=False)
        hidden = hidden[:, 0]
        keep = targets != lm.vocab.bos_id
        rows = np.flatnonzero(keep)
        lp = lm.log_probs_at(hidden[rows], np.arange(len(rows)), targets[rows])
        hiddens.append(hidden[rows].astype(np.float32))
        logps.append(np.asarray(lp, dtype=np.float64))
        nexts.append(targets[rows])
    return np.concatenate(hiddens), np.concatenate(logps), np.concatenate(nexts)


def neural_cache_probs(
    hidden: np.ndarray, nexts: np.ndarray, theta: float, window: int
) -> np.ndarray:
    """P_cache(x_{t+1} | h_t) for each position t of the stream (the product's
    ``model.inference.neural_cache.cache_probs``, the whole stream one run; 0 where the window
    holds nothing, or nothing with that next word)."""
    p_cache, _ = cache_probs(Memory.empty(hidden.shape[1]), hidden, nexts, theta, window)
    return p_cache


def unigram_cache_probs(nexts: np.ndarray, window: int) -> np.ndarray:
    n = len(nexts)
    out = np.zeros(n)
    for t in range(1, n):
        lo = max(0, t - window)
        out[t] = np.count_nonzero(nexts[lo:t] == nexts[t]) / (t - lo)
    return out


def mixed_ppl(logp_model: np.ndarray, p_cache: np.ndarray, lam: float) -> float:
    empty = np.zeros(len(p_cache), dtype=bool)
    empty[0] = True  # no history at the first position: the model alone
    p = np.where(empty, np.exp(logp_model), (1 - lam) * np.exp(logp_model) + lam * p_cache)
    return math.exp(-float(np.log(p).mean()))


def best_on_valid(
    valid: dict[str, np.ndarray],
    kind: str,
    thetas: list[float],
    lams: list[float],
    windows: list[int],
) -> tuple[float, dict[str, float]]:
    best: tuple[float, dict[str, float]] = (math.inf, {})
    for window in windows:
        for theta in thetas if kind == "neural" else [0.0]:
            if kind == "neural":
                pc = neural_cache_probs(valid["hidden"], valid["nexts"], theta, window)
            else:
                pc = unigram_cache_probs(valid["nexts"], window)
            for lam in lams:
                ppl = mixed_ppl(valid["logp"], pc, lam)
                if ppl < best[0]:
                    best = (ppl, {"theta": theta, "lambda": lam, "window": window})
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rnn", default="runs/ptb")
    parser.add_argument("--ngram", default=None, help="a KN checkpoint to mix with (RNN + KN5)")
    parser.add_argument(
        "--rnn-weight",
        type=float,
        default=None,
        help="the RNN's weight in RNN + KN5 (default: fitted on valid)",
    )
    parser.add_argument(
        "--served",
        action="store_true",
        help="also score the test text sentence by sentence with its history, "
        "as the service does, the RNN with the cache fitted on valid",
    )
    parser.add_argument("--history-tokens", type=int, default=2048)
    parser.add_argument("--valid", default=str(PTB / "ptb.valid.txt"))
    parser.add_argument("--test", default=str(PTB / "ptb.test.txt"))
    args = parser.parse_args()
    started = time.time()
    rnn = load_checkpoint(args.rnn)
    assert isinstance(rnn, RecurrentLM)
    kn = load_checkpoint(args.ngram) if args.ngram else None
    data: dict[str, dict[str, np.ndarray]] = {}
    for split, path in (("valid", args.valid), ("test", args.test)):
        sentences = load_sentences(path, rnn.tokenizer, "lines")
        hidden, logp, nexts = stream_states(rnn, sentences)
        data[split] = {"hidden": hidden, "logp": logp, "nexts": nexts}
        if kn is not None:
            data[split]["kn"] = kn.text_log_probs(sentences, stream=True)
            assert len(data[split]["kn"]) == len(logp)
    result: dict[str, object] = {"rnn": args.rnn, "ngram": args.ngram}
    models = {"rnn": {s: d["logp"] for s, d in data.items()}}
    if kn is not None:
        weight = args.rnn_weight
        if weight is None:
            grid = np.linspace(0.3, 0.95, 66)
            vp = [
                -np.log(
                    w * np.exp(data["valid"]["logp"]) + (1 - w) * np.exp(data["valid"]["kn"])
                ).mean()
                for w in grid
            ]
            weight = float(grid[int(np.argmin(vp))])
        result["rnn_weight"] = weight
        models["rnn+kn5"] = {
            s: np.log(weight * np.exp(d["logp"]) + (1 - weight) * np.exp(d["kn"]))
            for s, d in data.items()
        }
    thetas = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]
    lams = [0.02, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3]
    windows = [100, 500, 1000, 2000]
    for name, logps in models.items():
        row: dict[str, object] = {
            "valid": round(math.exp(-float(logps["valid"].mean())), 2),
            "test": round(math.exp(-float(logps["test"].mean())), 2),
        }
        for kind in ("unigram", "neural"):
            valid = {
                "logp": logps["valid"],
                "hidden": data["valid"]["hidden"],
                "nexts": data["valid"]["nexts"],
            }
            ppl, params = best_on_valid(
                valid, kind, thetas, lams, windows if kind == "neural" else [100, 500, 2000]
            )
            test = data["test"]
            if kind == "neural":
                pc = neural_cache_probs(
                    test["hidden"], test["nexts"], params["theta"], int(params["window"])
                )
            else:
                pc = unigram_cache_probs(test["nexts"], int(params["window"]))
            row[kind] = {
                "params": params,
                "valid": round(ppl, 2),
                "test": round(mixed_ppl(logps["test"], pc, params["lambda"]), 2),
            }
        result[name] = row
        print(json.dumps({name: row}), flush=True)
    if args.served:  # the served path: each test sentence after its history, one call each
        params = result["rnn"]["neural"]["params"]  # type: ignore[index]
        settings = CacheSettings(params["theta"], params["lambda"], int(params["window"]))
        sentences = load_sentences(args.test, rnn.tokenizer, "lines")
        runs = {"served, no cache": None, "served, neural cache": settings}
        totals = {name: [0.0, 0, 0.0] for name in runs}  # -log P, tokens, seconds
        for k, sentence in enumerate(sentences):  # the two alternate, sentence by sentence
            prefix = history_window(sentences[:k], args.history_tokens).tokens
            for name, cache in runs.items():
                rnn.use_neural_cache(cache)
                spent = time.perf_counter()
                (scored,) = rnn.score_sentences([sentence], prefix=prefix)
                totals[name][2] += time.perf_counter() - spent
                totals[name][0] -= sum(scored.token_log_probs)
                totals[name][1] += len(scored.token_log_probs)
        for name, (nll, count, spent) in totals.items():
            result[name] = {
                "test": round(math.exp(nll / count), 2),
                "ms_per_token": round(1e3 * spent / count, 4),
            }
            print(json.dumps({name: result[name]}), flush=True)
        rnn.use_neural_cache(None)
    result["seconds"] = round(time.time() - started, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
