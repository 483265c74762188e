"""Serving speed: candidate latency and N-best throughput, in-process and over HTTP, beside PyTorch.

    python bench/serve_speed.py --model runs/ptb          # the Penn Treebank 2×200 LSTM
    python bench/serve_speed.py --model runs/ptb --requests 2000 --no-http

Workloads, drawn from ``ptb.valid.txt`` (or the model's own vocabulary when it is absent):

- candidates: a 20-word context and 5 candidate words (one of them two tokens long), as an STT
  decoder asks when it is unsure of the next word; latency p50/p99, one request at a time;
- N-best: /v1/score with 10 hypotheses per call (an N-best list); sentences per second;
- growing context: in-process, each context one word longer than the last, as a decoder asks,
  with the prefix-state cache on;
- same context: in-process, other candidates after a context already asked about (an exact
  prefix-cache hit, its normaliser kept).

Each runs in-process (``RecurrentLM``), over HTTP against ``nextword serve`` on loopback, and
in PyTorch (the same weights copied into ``torch.nn.LSTM``, ``inference_mode``) when installed.

The PyTorch peer does the work nextword does, the way a careful PyTorch user would: the context
in one LSTM call, every multi-token candidate continued in one padded batch from the context's
state, and one output product and log-softmax for all the rows a request needs (N-best: one
padded batch). Its scores are checked against nextword's on every request of a sample (not
timed), and the in-process measurements alternate between the two in rounds (nextword first in
even rounds, PyTorch first in odd ones), so a noisy neighbour hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from app.launch import start_server
from model.inference.checkpoint import load_checkpoint
from model.inference.prefix_cache import PrefixCache
from model.inference.recurrent_lm import RecurrentLM

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VALID = ROOT.parent / "shared" / "data" / "ptb" / "ptb.valid.txt"


def workload(lm: RecurrentLM, path: Path, n: int, seed: int = 0) -> tuple[list, list]:
    """(candidate requests, N-best lists) from real sentences of ``path``."""
    rng = np.random.default_rng(seed)
    lines = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
    lines = [s for s in lines if len(s) >= 22] or [
        list(rng.choice(lm.vocab.tokens[3:], 30)) for _ in range(50)
    ]
    words = lm.vocab.tokens[3:]
    requests, nbest = [], []
    for i in range(n):
        s = lines[i % len(lines)]
        start = int(rng.integers(0, len(s) - 21))
        context, truth = s[start : start + 20], s[start + 20]
        others = [str(w) for w in rng.choice(words, 3)]
        requests.append((context, [truth, *others, f"{others[0]} {truth}"]))
        hypotheses = [" ".join(s)]
        for _ in range(9):  # confusions: some words swapped for random ones
            noisy = list(s)
            for j in rng.integers(0, len(s), 2):
                noisy[j] = str(rng.choice(words))
            hypotheses.append(" ".join(noisy))
        nbest.append(hypotheses)
    return requests, nbest


def latencies(call: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def summary(times: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000 for t in times)
    return {
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 3),
    }


def resident_mib() -> float:
    """This process's resident memory (Linux /proc; 0 elsewhere), MiB."""
    status = Path("/proc/self/status")
    if not status.exists():
        return 0.0
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def blas_threads() -> int:
    """The threads numpy's BLAS runs on (OPENBLAS_NUM_THREADS, else one per core)."""
    return int(os.environ.get("OPENBLAS_NUM_THREADS") or os.cpu_count() or 1)


def torch_peer(lm: RecurrentLM, full_softmax: bool = False):
    """The same network in PyTorch with the same weights, or None without torch.

    A class-factored model's peer has the same factored output (the class softmax on every
    row, then each target's class rows, targets grouped by class, as ``class_log_probs_at``).
    ``full_softmax`` puts a full softmax over the same word rows in its place: a different
    distribution, but exactly what a PyTorch model of this size with a full softmax costs."""
    try:
        import torch
    except ImportError:
        return None
    cfg = lm.net.config
    if cfg.cell != "lstm":
        return None
    torch.set_num_threads(blas_threads())  # as many threads as nextword's BLAS
    p = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in lm.net.params.items()}
    lstm = torch.nn.LSTM(cfg.embed_size, cfg.hidden_size, cfg.num_layers)
    H = cfg.hidden_size
    reorder = torch.cat(
        [torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)]
    )
    with torch.no_grad():  # nextword's gate order is i, f, o, g; PyTorch's is i, f, g, o
        for layer in range(cfg.num_layers):
            getattr(lstm, f"weight_ih_l{layer}").copy_(p[f"rnn.{layer}.Wx"].T[reorder])
            getattr(lstm, f"weight_hh_l{layer}").copy_(p[f"rnn.{layer}.Wh"].T[reorder])
            getattr(lstm, f"bias_ih_l{layer}").copy_(p[f"rnn.{layer}.b"][reorder])
            getattr(lstm, f"bias_hh_l{layer}").zero_()
    embedding = p["embedding.W"]
    out_w = p["embedding.W" if cfg.tie_weights else "output.W"]
    out_b = p["output.b"]
    classes = None if full_softmax else lm.net.classes
    if classes is not None:
        class_w, class_b = p["output.class.W"], p["output.class.b"]
        short = classes.shortlist  # the shortlisted words' head rows are their word rows
        edges, bounds = torch.tensor(classes.bounds[1:-1]), classes.bounds

    def picked_log_probs(rows, targets):
        """log P(targets[m]) after rows[m]: (M,) from (M, H), in one batched output pass."""
        at_rows = torch.arange(len(targets))
        if classes is None:  # one output product and log-softmax for every row
            return torch.log_softmax(rows @ out_w.T + out_b, -1)[at_rows, targets]
        cs = torch.bucketize(targets, edges, right=True)
        head = rows @ class_w.T + class_b
        if short:
            head = torch.cat([rows @ out_w[:short].T + out_b[:short], head], -1)
        out = torch.log_softmax(head, -1)[at_rows, cs]
        order = torch.argsort(cs, stable=True)
        present, sizes = torch.unique_consecutive(cs[order], return_counts=True)
        for c, at in zip(present.tolist(), torch.split(order, sizes.tolist()), strict=True):
            lo, hi = bounds[c], bounds[c + 1]
            if hi - lo == 1:  # a shortlisted word alone in its class: P(w | c) = 1
                continue
            word_lp = torch.log_softmax(rows[at] @ out_w[lo:hi].T + out_b[lo:hi], -1)
            out[at] += word_lp[torch.arange(len(at)), targets[at] - lo]
        return out

    bos, eos = lm.vocab.bos_id, lm.vocab.eos_id
    start = lm.net.start_state(1)  # the checkpoint's start state, or zero: as nextword reads
    h0 = torch.from_numpy(np.stack([s[0] for s in start]).astype(np.float32))  # (L, 1, H)
    c0 = torch.from_numpy(np.stack([s[1] for s in start]).astype(np.float32))

    def candidates(context: list[str], cands: list[str]) -> list[float]:
        with torch.inference_mode():
            ids = torch.tensor([bos, *lm.vocab.encode(context)])
            h, (hn, cn) = lstm(embedding[ids][:, None], (h0, c0))
            cand_ids = [lm.vocab.encode(lm.tokenize(c)).tolist() for c in cands]
            rows, picks = [h[-1]], [(0, c[0]) for c in cand_ids]  # row 0: after the context
            longer = [c for c in cand_ids if len(c) > 1]
            if longer:  # every continuation in one padded batch, from the context's state
                n, T = len(longer), max(map(len, longer)) - 1
                inputs = torch.zeros(T, n, dtype=torch.long)
                for j, c in enumerate(longer):
                    inputs[: len(c) - 1, j] = torch.tensor(c[:-1])
                state = (hn.expand(-1, n, -1).contiguous(), cn.expand(-1, n, -1).contiguous())
                h2, _ = lstm(embedding[inputs], state)
                for j, c in enumerate(longer):
                    first_row = sum(len(x) - 1 for x in longer[:j]) + 1
                    rows.append(h2[: len(c) - 1, j])
                    picks += [(first_row + t, c[t + 1]) for t in range(len(c) - 1)]
            all_rows = torch.cat(rows)[torch.tensor([r for r, _ in picks])]
            picked = picked_log_probs(all_rows, torch.tensor([t for _, t in picks]))
            scores = picked[: len(cand_ids)].tolist()
            extra = iter(picked[len(cand_ids) :].tolist())
            for i, c in enumerate(cand_ids):
                scores[i] += sum(next(extra) for _ in range(len(c) - 1))
            return scores

    def score(sentences: list[str]) -> list[float]:
        with torch.inference_mode():
            seqs = [[bos, *lm.vocab.encode(s.split()), eos] for s in sentences]
            T = max(map(len, seqs)) - 1
            inputs = torch.zeros(T, len(seqs), dtype=torch.long)
            targets = torch.zeros(T, len(seqs), dtype=torch.long)
            mask = torch.zeros(T, len(seqs))
            for j, s in enumerate(seqs):
                inputs[: len(s) - 1, j], targets[: len(s) - 1, j] = (
                    torch.tensor(s[:-1]),
                    torch.tensor(s[1:]),
                )
                mask[: len(s) - 1, j] = 1
            n = len(seqs)
            h, _ = lstm(embedding[inputs], (h0.expand(-1, n, -1).contiguous(),
                                            c0.expand(-1, n, -1).contiguous()))  # fmt: skip
            lp = picked_log_probs(h.reshape(T * n, -1), targets.reshape(-1)).reshape(T, n)
            return (lp * mask).sum(0).tolist()

    return candidates, score, torch.__version__


AGREEMENT_SAMPLE = 100  # requests and N-best lists whose PyTorch scores are checked


def in_process_rounds(
    lm: RecurrentLM, requests: list, nbest: list, nbest_calls: int, rounds: int,
    results: dict[str, object],
) -> dict[str, object]:  # fmt: skip
    """nextword and its PyTorch peer in alternating rounds: candidate latency and N-best
    sentences per second for each, after the peer's scores were checked on a sample."""
    systems: dict[str, tuple[Callable, Callable]] = {
        "inprocess": (
            lambda req: lm.score_candidates(*req),
            lambda hyps: lm.score_sentences(hyps),
        )
    }
    peer = torch_peer(lm)
    if peer:
        t_candidates, t_score, version = peer
        worst_candidate = worst_sentence = 0.0
        for context, cands in requests[:AGREEMENT_SAMPLE]:
            ours = [s.log_prob for s in lm.score_candidates(context, cands)]
            worst_candidate = max(
                worst_candidate,
                float(np.abs(np.subtract(ours, t_candidates(context, cands))).max()),
            )
        for hyps in nbest[:AGREEMENT_SAMPLE]:
            ours = [s.log_prob for s in lm.score_sentences(hyps)]
            worst_sentence = max(
                worst_sentence, float(np.abs(np.subtract(ours, t_score(hyps))).max())
            )
        assert worst_candidate < 1e-3 and worst_sentence < 1e-2, "PyTorch disagrees"
        results["torch_version"] = version
        results["torch_agreement_max_abs"] = {
            "candidates": worst_candidate, "nbest": worst_sentence,
            "sample": min(AGREEMENT_SAMPLE, len(requests)),
        }  # fmt: skip
        systems["torch"] = (lambda req: t_candidates(*req), t_score)
        if lm.net.classes is not None:  # and what a full softmax of this size costs PyTorch
            f_candidates, f_score, _ = torch_peer(lm, full_softmax=True)
            systems["torch-full"] = (lambda req: f_candidates(*req), f_score)
    for candidates, score in systems.values():  # warm-up
        for req in requests[:50]:
            candidates(req)
        for hyps in nbest[:5]:
            score(hyps)
    times: dict[str, list[float]] = {name: [] for name in systems}
    rates: dict[str, list[float]] = {name: [] for name in systems}
    per_round = max(1, len(requests) // rounds)
    calls_per_round = max(1, nbest_calls // rounds)
    names = list(systems)
    for r in range(rounds):
        chunk = requests[r * per_round : (r + 1) * per_round]
        lists = [nbest[(r * calls_per_round + k) % len(nbest)] for k in range(calls_per_round)]
        for name in names if r % 2 == 0 else names[::-1]:
            candidates, score = systems[name]
            it = iter(chunk)
            times[name] += latencies(lambda c=candidates, i=it: c(next(i)), len(chunk))
            start = time.perf_counter()
            for hyps in lists:
                score(hyps)
            rates[name].append(sum(map(len, lists)) / (time.perf_counter() - start))
    out: dict[str, object] = {"rounds": rounds}
    for name in names:
        out[f"{name}_candidates"] = summary(times[name])
        out[f"{name}_nbest_sentences_per_s"] = round(statistics.median(rates[name]))
    for peer_name in names[1:]:
        cand = summary(times[peer_name])["p50_ms"] / summary(times["inprocess"])["p50_ms"]
        nb = statistics.median(rates["inprocess"]) / statistics.median(rates[peer_name])
        key = "speed_over_" + peer_name.replace("-", "_")
        out[key] = {"candidates_p50": round(cand, 2), "nbest": round(nb, 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "ptb")
    parser.add_argument("--valid", type=Path, default=DEFAULT_VALID)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--nbest-calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args()

    before = resident_mib()
    lm = load_checkpoint(args.model)
    loaded = resident_mib() - before
    requests, nbest = workload(lm, args.valid, args.requests)
    config = lm.net.config
    results: dict[str, object] = {
        "benchmark": "serve_speed",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "model": f"{args.model}: {config.cell} {config.num_layers}x{config.hidden_size}, "
        f"V={config.vocab_size}, softmax {config.softmax}",
        "threads": blas_threads(),
        "weights_mib": round(sum(p.nbytes for p in lm.net.params.values()) / 2**20, 1),
        "resident_mib_added_by_loading": round(loaded, 1),
    }
    timed = in_process_rounds(lm, requests, nbest, args.nbest_calls, args.rounds, results)
    results.update(timed)

    # a decoder's pattern: each context extends the previous one by a word (prefix cache on)
    lm.cache = PrefixCache()
    growing = [(context[:k], cands) for context, cands in requests for k in range(len(context) + 1)]
    it = iter(growing)
    results["inprocess_candidates_growing_context_cached"] = summary(
        latencies(lambda: lm.score_candidates(*next(it)), min(args.requests * 5, len(growing)))
    )

    # a beam search's other pattern: other words after a context already asked about (every
    # context in the cache, with its normaliser: an exact hit)
    lm.cache = PrefixCache()
    for request in requests:
        lm.score_candidates(*request)
    again = iter([(c, requests[(i + 1) % len(requests)][1]) for i, (c, _) in enumerate(requests)])
    results["inprocess_candidates_same_context_cached"] = summary(
        latencies(lambda: lm.score_candidates(*next(again)), len(requests))
    )
    lm.cache = None

    if not args.no_http:
        process, url = start_server([str(args.model)])
        try:
            with httpx.Client(base_url=url, timeout=30) as http:
                body = iter([{"context": c, "candidates": k} for c, k in requests * 3])
                for _ in range(50):
                    http.post("/v1/candidates", json=next(body)).raise_for_status()
                results["http_candidates"] = summary(
                    latencies(
                        lambda: http.post("/v1/candidates", json=next(body)).raise_for_status(),
                        args.requests,
                    )
                )
                calls = iter(nbest * 3)
                start = time.perf_counter()
                for _ in range(args.nbest_calls):
                    http.post("/v1/score", json={"sentences": next(calls)}).raise_for_status()
                results["http_nbest_sentences_per_s"] = round(
                    10 * args.nbest_calls / (time.perf_counter() - start)
                )
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
