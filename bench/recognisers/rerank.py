"""Rerank real recogniser N-best lists through a running nextword service's ``/v1/rerank`` and
report WER/CER (issue 13).

    python bench/recognisers/rerank.py runs/recognisers/ocr.jsonl runs/recognisers/speech.jsonl

Each set is a JSON-lines file of utterances (built by ``speech_nbest.py`` and ``ocr_nbest.py``):
``id``, ``source``, ``split`` (``dev`` or ``test``), ``reference``, the recogniser's own
``best`` and its ``hypotheses`` (``text``, ``score``: natural log, higher is better). The
script starts ``nextword serve`` with the models to compare (by default the project's PTB RNN
with its start state, its KN5 and their interpolation; ``--model NAME=DIR`` to choose), sends
every list to ``/v1/rerank`` once per model, and picks each list's winner by

    combined = score + lm_weight · (lm_log_prob + length_bonus · n_tokens)

where ``lm_log_prob`` gives each word outside the model's vocabulary the log-probability
``oov_penalty`` (the service's ``oov="penalty"``) instead of ``<unk>``'s: a misread word
(``haif``, ``saiis``) is outside the vocabulary, and as ``<unk>`` it would score better than the
real word it stands for. ``lm_weight``, ``length_bonus`` and ``oov_penalty`` are chosen on the dev
half (grid search, least word errors) and reported on the test half. Beside the models: the
recogniser's 1-best, the top of its list, and the list's oracle (the hypothesis with fewest word
errors). WER and CER are over all test
utterances together, per source and overall. The first model is compared with each other one
list by list: on how many lists its pick has fewer and more word errors, and a 95 % paired
bootstrap interval of the WER difference.

``--kenlm NAME=ARPA:MODEL_DIR`` adds a KenLM peer (the PyPI ``kenlm`` module reading an ARPA
file, e.g. the one ``nextword ngram`` writes), scored in process on the tokens of MODEL_DIR's
tokenizer: system ``NAME`` is KenLM's own convention (an OOV word gets ``p(<unk>)``),
``NAME+offset`` adds a tuned offset per OOV word (pyctcdecode's ``unk_score_offset``, tuned).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from wer import char_errors, word_errors  # noqa: E402

from app.client import NextwordClient  # noqa: E402

DEFAULT_MODELS = [
    "nextword=runs/ptb-start",
    "kn5=runs/ptb-kn5",
    "combined=runs/ptb-start-mix",
]
WEIGHTS = np.concatenate([[0.0], np.logspace(-2, 2, 33)])  # lm_weight: recogniser scores
BONUSES = np.linspace(-16.0, 16.0, 129)  # nats per token, inside the weight: scales differ by set
OOV_PENALTIES = np.linspace(-30.0, 0.0, 7)  # nats per out-of-vocabulary word
BOOTSTRAP = 10_000  # resamples of the test lists for a paired difference's interval
PROBE = -10.0  # a second call at this penalty tells how many OOV words each hypothesis has
# the OOV policies scored besides the tuned penalty (``--oov-policies``): (policy, penalty)
EXTRA_POLICIES: list[tuple[str, float | None]] = []


@dataclass
class Utterance:
    """One N-best list, with each hypothesis's errors against the reference."""

    id: str
    source: str
    split: str
    reference: str
    best: str
    texts: list[str]
    scores: np.ndarray  # (n,) the recogniser's
    word_errs: np.ndarray  # (n,)
    char_errs: np.ndarray  # (n,)
    lm: dict[str, np.ndarray] = field(default_factory=dict)  # model → (n,) OOV words scored 0
    oov: dict[str, np.ndarray] = field(default_factory=dict)  # model → (n,) OOV words
    n_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def words(self) -> int:
        return len(self.reference.split())


def load_set(path: Path, score_field: str) -> list[Utterance]:
    utterances = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        hyps = [h for h in record["hypotheses"] if h["text"].strip()] or [{"text": "", "score": 0}]
        ref = record["reference"]
        texts = [h["text"] for h in hyps]
        utterances.append(
            Utterance(
                record["id"],
                record["source"],
                record["split"],
                ref,
                record["best"],
                texts,
                np.array([float(h.get(score_field, h["score"])) for h in hyps]),
                np.array([word_errors(ref.split(), t.split()) for t in texts]),
                np.array([char_errors(ref, t) for t in texts]),
            )
        )
    return utterances


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_service(models: list[str], port: int) -> subprocess.Popen[bytes]:
    """``nextword serve`` with the models, on one worker; returns once it answers /readyz."""
    command = [str(Path(sys.executable).parent / "nextword"), "serve", "--port", str(port)]
    for model in models:
        command += ["--model", model]
    command += ["--log-level", "warning"]
    server = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    client = NextwordClient(f"http://127.0.0.1:{port}")
    for _ in range(600):
        try:
            if client.ready():
                return server
        except Exception:  # not listening yet
            pass
        if server.poll() is not None:
            raise RuntimeError(f"nextword serve exited with {server.returncode}")
        time.sleep(0.5)
    server.kill()
    raise RuntimeError("nextword serve did not become ready in 300 s")


def kenlm_scores(utterances: list[Utterance], name: str, spec: str) -> None:
    """KenLM's log-probability (natural log, ``<s>``/``</s>`` included) of every hypothesis, on
    the tokens MODEL_DIR's tokenizer makes of it, with its OOV count: systems ``NAME`` (OOV words
    at KenLM's ``p(<unk>)``, nothing to tune) and ``NAME+offset`` (plus a tuned offset each)."""
    import kenlm  # type: ignore[import-not-found]

    from model.inference.checkpoint import load_checkpoint

    arpa, _, directory = spec.partition(":")
    tokenizer = load_checkpoint(directory).tokenizer
    peer = kenlm.Model(arpa)
    for u in utterances:
        lm, oov, n = np.zeros(len(u.texts)), np.zeros(len(u.texts)), np.zeros(len(u.texts))
        for i, text in enumerate(u.texts):
            tokens = tokenizer(text)
            scores = list(peer.full_scores(" ".join(tokens), bos=True, eos=True))
            lm[i] = np.log(10.0) * sum(s for s, _, _ in scores)
            oov[i] = sum(1 for _, _, is_oov in scores if is_oov)
            n[i] = len(tokens)  # without </s>, as /v1/rerank counts
        u.lm[name], u.oov[name] = lm, np.zeros(len(u.texts))
        u.lm[f"{name}+offset"], u.oov[f"{name}+offset"] = lm, oov
        u.n_tokens = n


def lm_scores(utterances: list[Utterance], base_url: str, name: str) -> list[float]:
    """Each list's lm_log_prob (OOV words at 0), OOV count and n_tokens from two /v1/rerank
    calls (OOV penalty 0 and ``PROBE``: the difference counts the OOV words, so any penalty is
    a sum away); with ``--oov-policies``, also under the other policies (``unk``: every OOV
    word all of <unk>; ``spell``: its share by spelling), as systems ``NAME+unk`` and
    ``NAME+spell`` whose OOV words are already priced. Returns ms per call (the first of each
    list's)."""
    client = NextwordClient(base_url, model=name, timeout=60.0)
    times = []
    for u in utterances:
        hypotheses = [{"text": t or "</s>", "score": 0.0} for t in u.texts]
        by_policy = {}
        for policy, penalty in [("penalty", 0.0), ("penalty", PROBE), *EXTRA_POLICIES]:
            start = time.perf_counter()
            answer = client.rerank(
                hypotheses, lm_weight=1.0, length_bonus=0.0, oov=policy, oov_penalty=penalty
            )
            if penalty == 0.0 and policy == "penalty":
                times.append((time.perf_counter() - start) * 1e3)
            lm, n = np.zeros(len(u.texts)), np.zeros(len(u.texts))
            for h in answer.hypotheses:
                lm[h.index], n[h.index] = h.lm_log_prob, h.n_tokens
            by_policy[policy, penalty] = lm
        u.lm[name], u.n_tokens = by_policy["penalty", 0.0], n
        u.oov[name] = np.rint((by_policy["penalty", 0.0] - by_policy["penalty", PROBE]) / -PROBE)
        for policy, penalty in EXTRA_POLICIES:
            u.lm[f"{name}+{policy}"] = by_policy[policy, penalty]
            u.oov[f"{name}+{policy}"] = np.zeros(len(u.texts))  # priced: no penalty to tune
            # and the same with a tuned offset per OOV word on top (a reranking feature, as
            # length_bonus is: the probabilities stay normalised, the combination weighs them)
            u.lm[f"{name}+{policy}+offset"] = by_policy[policy, penalty]
            u.oov[f"{name}+{policy}+offset"] = u.oov[name]
    return times


@dataclass(frozen=True)
class Weights:
    lm_weight: float
    length_bonus: float
    oov_penalty: float


def padded(utterances: list[Utterance], values: list[np.ndarray], fill: float) -> np.ndarray:
    """(lists, longest list) array of per-hypothesis values; ``fill`` past a list's end."""
    out = np.full((len(utterances), max(len(u.texts) for u in utterances)), fill)
    for row, v in enumerate(values):
        out[row, : len(v)] = v
    return out


def choices(utterances: list[Utterance], name: str, w: Weights) -> list[int]:
    """The winner of each list under ``score + weight · (lm + penalty · oov + bonus · n)``."""
    return [int(np.argmax(u.scores + w.lm_weight * (u.lm[name] + w.oov_penalty * u.oov[name]
                                                    + w.length_bonus * u.n_tokens)))
            for u in utterances]  # fmt: skip


def tune(dev: list[Utterance], name: str) -> Weights:
    """The weights with the fewest dev word errors; among equals, the bonus nearest 0, then
    the smallest weight (the least the LM needs to change), then the mildest penalty."""
    scores = padded(dev, [u.scores for u in dev], -np.inf)
    lm = padded(dev, [u.lm[name] for u in dev], 0.0)
    oov = padded(dev, [u.oov[name] for u in dev], 0.0)
    n = padded(dev, [u.n_tokens for u in dev], 0.0)
    errs = padded(dev, [u.word_errs for u in dev], 0.0)
    rows = np.arange(len(dev))
    trials = []
    priced = "+" in name and not name.endswith("+offset")  # +spell, +unk: nothing to tune
    for penalty in [0.0] if priced else OOV_PENALTIES:
        penalised = lm + penalty * oov
        for weight in WEIGHTS:
            for bonus in BONUSES if weight > 0 else [0.0]:
                picks = np.argmax(scores + weight * (penalised + bonus * n), axis=1)
                errors = int(errs[rows, picks].sum())
                trials.append((errors, abs(float(bonus)), float(weight), -float(penalty),
                               float(bonus)))  # fmt: skip
    _, _, weight, negated_penalty, bonus = min(trials)
    return Weights(weight, bonus, -negated_penalty)


def rates(utterances: list[Utterance], picks: list[str]) -> dict[str, float]:
    """WER and CER (%) of the picked texts, over all utterances together."""
    words = sum(u.words for u in utterances)
    chars = sum(len(u.reference) for u in utterances)
    pairs = list(zip(utterances, picks, strict=True))
    w = sum(word_errors(u.reference.split(), p.split()) for u, p in pairs)
    c = sum(char_errors(u.reference, p) for u, p in pairs)
    return {"wer": round(100 * w / max(words, 1), 2), "cer": round(100 * c / max(chars, 1), 2)}


def report(utterances: list[Utterance], names: list[str]) -> dict[str, Any]:
    """Tune each model on dev; WER/CER on test per source and overall, beside the baselines."""
    dev = [u for u in utterances if u.split == "dev"]
    test = [u for u in utterances if u.split == "test"]
    systems: dict[str, list[str]] = {
        "recogniser 1-best": [u.best for u in test],
        "top of the list": [u.texts[0] for u in test],
    }
    weights = {}
    errors: dict[str, np.ndarray] = {}  # model → word errors of its pick, per test list
    for name in names:
        tuned = tune(dev, name)
        weights[name] = asdict(tuned)
        picks = choices(test, name, tuned)
        systems[f"rerank: {name}"] = [u.texts[k] for u, k in zip(test, picks, strict=True)]
        errors[name] = np.array([u.word_errs[k] for u, k in zip(test, picks, strict=True)])
    systems["N-best oracle"] = [u.texts[int(np.argmin(u.word_errs))] for u in test]
    sources = sorted({u.source for u in test})
    table = {}
    for system, picks in systems.items():
        row = {"all": rates(test, picks)}
        for source in sources:
            mine = [(u, p) for u, p in zip(test, picks, strict=True) if u.source == source]
            row[source] = rates([u for u, _ in mine], [p for _, p in mine])
        table[system] = row
    words = np.array([u.words for u in test])
    paired = {f"{names[0]} vs {other}": paired_difference(errors[names[0]], errors[other], words)
              for other in names[1:]}  # fmt: skip
    return {"test_utterances": len(test), "dev_utterances": len(dev), "weights": weights,
            "table": table, "paired": paired}  # fmt: skip


def paired_difference(a: np.ndarray, b: np.ndarray, words: np.ndarray) -> dict[str, Any]:
    """System a against b on the same lists: lists where a's pick has fewer / more word errors,
    the WER difference (points) and its 95 % paired-bootstrap interval (lists resampled)."""
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(a), size=(BOOTSTRAP, len(a)))
    diffs = 100 * (a[draws].sum(axis=1) - b[draws].sum(axis=1)) / words[draws].sum(axis=1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"fewer_errors": int((a < b).sum()), "more_errors": int((a > b).sum()),
            "wer_difference": round(100 * float(a.sum() - b.sum()) / float(words.sum()), 2),
            "ci95": [round(float(low), 2), round(float(high), 2)]}  # fmt: skip


def print_table(name: str, result: dict[str, Any]) -> None:
    sources = [k for k in next(iter(result["table"].values())) if k != "all"]
    print(f"\n{name}: WER / CER % on {result['test_utterances']} test utterances")
    print(f"| system | all | {' | '.join(sources)} |")
    print("|---|---|" + "---|" * len(sources))
    for system, row in result["table"].items():
        cells = [f"{row[k]['wer']:.2f} / {row[k]['cer']:.2f}" for k in ["all", *sources]]
        print(f"| {system} | {' | '.join(cells)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sets", type=Path, nargs="+", help="N-best JSON-lines files")
    parser.add_argument("--model", action="append", help="NAME=DIR (repeatable)")
    parser.add_argument(
        "--kenlm", action="append", default=[],
        help="NAME=ARPA:MODEL_DIR: a KenLM peer on MODEL_DIR's tokens (repeatable)",
    )  # fmt: skip
    parser.add_argument("--url", help="a running service instead of starting one")
    parser.add_argument("--score-field", default="score", help="the hypotheses' recogniser score")
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    parser.add_argument(
        "--oov-policies", action="store_true",
        help="also rerank with each model's OOV words under 'spell' and 'unk' (issue 30): "
        "systems NAME+spell and NAME+unk beside NAME (the tuned penalty); NAME+spell first",
    )  # fmt: skip
    args = parser.parse_args()
    models = args.model or DEFAULT_MODELS
    names = [m.split("=", 1)[0] for m in models]
    if args.oov_policies:
        EXTRA_POLICIES[:] = [("spell", None), ("unk", None)]
        names = [f"{names[0]}+spell"] + [
            f"{n}{suffix}" for n in names
            for suffix in ("", "+unk", "+spell", "+spell+offset", "+unk+offset")
            if f"{n}{suffix}" != f"{names[0]}+spell"
        ]  # fmt: skip
    peers = [spec.split("=", 1) for spec in args.kenlm]
    names += [f"{peer}{suffix}" for peer, _ in peers for suffix in ("", "+offset")]
    server = None
    url = args.url
    if url is None:
        port = free_port()
        server = start_service(models, port)
        url = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {
        "benchmark": "recognisers/rerank",
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "models": models,
        "sets": {},
    }
    try:
        for path in args.sets:
            utterances = load_set(path, args.score_field)
            served = [m.split("=", 1)[0] for m in models]
            call_ms = {name: lm_scores(utterances, url, name) for name in served}
            for peer, spec in peers:
                kenlm_scores(utterances, peer, spec)
            result = report(utterances, names)
            sizes = [len(u.texts) for u in utterances]
            result["mean_list_size"] = round(statistics.mean(sizes), 1)
            result["rerank_call_ms_p50"] = {
                n: round(statistics.median(t), 2) for n, t in call_ms.items()
            }
            results["sets"][str(path)] = result
            print_table(f"{path} (mean list {result['mean_list_size']})", result)
            print("weights (dev):", json.dumps(result["weights"]))
            print("ms per /v1/rerank call (p50):", json.dumps(result["rerank_call_ms_p50"]))
            for pair, d in result["paired"].items():
                print(f"{pair}: better on {d['fewer_errors']} lists, worse on "
                      f"{d['more_errors']}, WER {d['wer_difference']:+.2f} points "
                      f"(95 % interval {d['ci95'][0]:+.2f} to {d['ci95'][1]:+.2f})")  # fmt: skip
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
