"""``nextword tune --nbest``: the reranking weights for a user's own recogniser, fitted on their
N-best lists with references.

    nextword tune --model models/calls --nbest dev.jsonl --out models/calls-tuned

Each line of the file is one utterance's list::

    {"reference": "the time traveller smiled",
     "hypotheses": [{"text": "the time travel her smiled", "score": -3.9}, ...],
     "bias": ["Weena", "Filby"]}            # optional: the phrases this utterance expects

``score`` is the recogniser's own (log domain, higher is better); ``id`` and other fields are
ignored. Every hypothesis is scored by the model as the service's ``/v1/rerank`` scores it (the
default open vocabulary; a line's ``bias`` as the request's ``bias``), and each list's winner is
the hypothesis with the highest ``score + lm_weight · (lm_log_prob + length_bonus · n_tokens)``.
``lm_weight`` and ``length_bonus`` are chosen on a grid (fewest word errors; among equals the
bonus nearest 0, then the smallest weight). The word and character error rates of the
recogniser's first pass (each list's best ``score``), the reranked pick and the list's oracle are
reported twice: on the lists the weights were fitted on, and cross-validated (two halves, each
reranked with the weights fitted on the other: what to expect on new lists), with a 95 %
paired-bootstrap interval of the reranked WER minus the first pass's. The weights are written
into the copy's ``rerank`` section, which the service's ``/v1/rerank`` takes as its defaults.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from model.inference.bias import DEFAULT_THETA, DEFAULT_WEIGHT, MAX_PHRASE_TOKENS, MAX_PHRASES, Bias
from model.inference.language_model import LanguageModel

WEIGHTS = np.concatenate([[0.0], np.logspace(-2, 2, 33)])  # lm_weight: recogniser scores
BONUSES = np.linspace(-16.0, 16.0, 129)  # nats per token, inside the weight
BOOTSTRAP = 10_000
MAX_HYPOTHESES = 1000  # per list


class NbestError(ValueError):
    """A malformed line: the message names the file, the line and the field."""


@dataclass
class NbestList:
    reference: str
    texts: list[str]
    scores: np.ndarray  # (n,) the recogniser's
    bias: list[str] | None = None


@dataclass
class Scored:
    """Per list: each hypothesis's LM log-probability, token count and errors."""

    lm: list[np.ndarray]
    tokens: list[np.ndarray]
    word_errors: list[np.ndarray]
    char_errors: list[np.ndarray]
    words: np.ndarray  # reference words per list
    chars: np.ndarray  # reference characters per list


def read_nbest(path: Path) -> list[NbestList]:
    """Every list of the file; NbestError naming the line and field of the first bad one."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise NbestError(f"{path}: cannot be read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise NbestError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        out.append(parse_line(line, f"{path}:{number}"))
    if not out:
        raise NbestError(f"{path}: holds no N-best lists (one JSON object per line)")
    return out


def parse_line(line: str, where: str) -> NbestList:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise NbestError(f"{where}: not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise NbestError(f"{where}: must be a JSON object with reference and hypotheses")
    reference = record.get("reference")
    if not isinstance(reference, str) or not reference.strip():
        raise NbestError(f"{where}: reference must be a non-empty string")
    hypotheses = record.get("hypotheses")
    if not isinstance(hypotheses, list) or not 1 <= len(hypotheses) <= MAX_HYPOTHESES:
        raise NbestError(f"{where}: hypotheses must be a list of 1 to {MAX_HYPOTHESES} objects")
    texts, scores = [], []
    for k, h in enumerate(hypotheses):
        field = f"{where}: hypotheses[{k}]"
        if not isinstance(h, dict) or not isinstance(h.get("text"), str):
            raise NbestError(f"{field}: must be an object with a string text")
        score = h.get("score", 0.0)
        if (
            isinstance(score, bool)
            or not isinstance(score, int | float)
            or not math.isfinite(score)
        ):
            raise NbestError(f"{field}.score must be a finite number, got {score!r}")
        texts.append(h["text"])
        scores.append(float(score))
    bias = record.get("bias")
    if bias is not None and not (
        isinstance(bias, list)
        and 1 <= len(bias) <= MAX_PHRASES
        and all(isinstance(b, str) and b.strip() for b in bias)
    ):
        raise NbestError(f"{where}: bias must be a list of 1 to {MAX_PHRASES} non-empty strings")
    return NbestList(reference, texts, np.array(scores), bias)


def edit_distance(ref: Sequence[object], hyp: Sequence[object]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[-1]


def score_lists(lm: LanguageModel, lists: list[NbestList]) -> Scored:
    """Every hypothesis scored as ``/v1/rerank`` scores it: the open vocabulary where the model
    has a spelling model (else ``<unk>``), a line's bias mixed in."""
    lm_scores, token_counts, words, chars = [], [], [], []
    for item in tqdm(lists, unit="list", file=sys.stderr, disable=None):
        model = lm
        if item.bias:
            phrases = tuple(tuple(lm.tokenize(b))[:MAX_PHRASE_TOKENS] for b in item.bias)
            phrases = tuple(p for p in phrases if p) or (("<unk>",),)
            cache = lm.neural_cache()
            theta = cache.theta if cache is not None else DEFAULT_THETA
            model = lm.with_bias(Bias(phrases, (1.0,) * len(phrases), DEFAULT_WEIGHT, theta))
        scores = model.score_sentences(item.texts)
        lm_scores.append(np.array([math.fsum(model.spelled(s)) for s in scores]))
        token_counts.append(np.array([len(s.tokens) for s in scores], dtype=float))
        ref = item.reference.split()  # WER counts words as written, CER characters
        words.append(np.array([edit_distance(ref, t.split()) for t in item.texts]))
        chars.append(np.array([edit_distance(item.reference, t) for t in item.texts]))
    return Scored(
        lm_scores, token_counts, words, chars,
        np.array([len(i.reference.split()) for i in lists]),
        np.array([len(i.reference) for i in lists]),
    )  # fmt: skip


def padded(values: list[np.ndarray], fill: float) -> np.ndarray:
    out = np.full((len(values), max(len(v) for v in values)), fill)
    for row, v in enumerate(values):
        out[row, : len(v)] = v
    return out


def picks(lists: list[NbestList], scored: Scored, rows: np.ndarray, weight: float,
          bonus: float) -> np.ndarray:  # fmt: skip
    return np.array([int(np.argmax(lists[r].scores + weight * (scored.lm[r] + bonus
                                                                * scored.tokens[r])))
                     for r in rows])  # fmt: skip


def fit(lists: list[NbestList], scored: Scored, rows: np.ndarray) -> tuple[float, float]:
    """The grid point with the fewest word errors on ``rows``."""
    recogniser = padded([lists[r].scores for r in rows], -np.inf)
    lm = padded([scored.lm[r] for r in rows], 0.0)
    n = padded([scored.tokens[r] for r in rows], 0.0)
    errors = padded([scored.word_errors[r] for r in rows], 0.0)
    index = np.arange(len(rows))
    best: tuple[int, float, float, float] | None = None
    for weight in WEIGHTS:
        for bonus in BONUSES if weight > 0 else [0.0]:
            chosen = np.argmax(recogniser + weight * (lm + bonus * n), axis=1)
            trial = (int(errors[index, chosen].sum()), abs(float(bonus)), float(weight),
                     float(bonus))  # fmt: skip
            if best is None or trial < best:
                best = trial
    assert best is not None
    return best[2], best[3]


def rates(scored: Scored, rows: np.ndarray, chosen: np.ndarray) -> dict[str, float]:
    w = sum(int(scored.word_errors[r][k]) for r, k in zip(rows, chosen, strict=True))
    c = sum(int(scored.char_errors[r][k]) for r, k in zip(rows, chosen, strict=True))
    return {"wer": round(100 * w / max(int(scored.words[rows].sum()), 1), 2),
            "cer": round(100 * c / max(int(scored.chars[rows].sum()), 1), 2)}  # fmt: skip


def interval(a: np.ndarray, b: np.ndarray, words: np.ndarray) -> list[float]:
    """95 % paired-bootstrap interval of (a − b) word errors per 100 reference words."""
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(a), size=(BOOTSTRAP, len(a)))
    diffs = 100 * (a[draws].sum(axis=1) - b[draws].sum(axis=1)) / words[draws].sum(axis=1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return [round(float(low), 2), round(float(high), 2)]


def tune_nbest(
    lm: LanguageModel, lists: list[NbestList], log: Callable[[str], None]
) -> dict[str, Any]:
    """The weights fitted on every list, and the error rates in and out of sample."""
    scored = score_lists(lm, lists)
    every = np.arange(len(lists))
    weight, bonus = fit(lists, scored, every)
    first = np.array([int(np.argmax(item.scores)) for item in lists])
    oracle = np.array([int(np.argmin(e)) for e in scored.word_errors])
    fitted = picks(lists, scored, every, weight, bonus)
    halves = [every[::2], every[1::2]]
    held_out = np.zeros(len(lists), dtype=int)
    for k, rows in enumerate(halves):
        other = halves[1 - k]
        w, b = fit(lists, scored, other) if len(other) else (weight, bonus)
        held_out[rows] = picks(lists, scored, rows, w, b)

    def errors_of(chosen: np.ndarray) -> np.ndarray:
        return np.array([scored.word_errors[r][k] for r, k in zip(every, chosen, strict=True)])

    gap = interval(errors_of(held_out), errors_of(first), scored.words)
    report: dict[str, Any] = {
        "lists": len(lists),
        "lm_weight": weight,
        "length_bonus": bonus,
        "first_pass": rates(scored, every, first),
        "reranked": rates(scored, every, fitted),
        "reranked_cross_validated": rates(scored, every, held_out),
        "oracle": rates(scored, every, oracle),
        "cross_validated_minus_first_pass_ci95": gap,
    }
    log(f"lm_weight {weight:g}, length_bonus {bonus:g} on {len(lists):,} lists")
    for key, label in (("first_pass", "first pass"), ("reranked", "reranked (fitted here)"),
                       ("reranked_cross_validated", "reranked (cross-validated)"),
                       ("oracle", "oracle")):  # fmt: skip
        log(f"  {label}: WER {report[key]['wer']:.2f} %, CER {report[key]['cer']:.2f} %")
    low, high = gap
    log(f"  cross-validated WER minus first pass: 95 % interval {low:+.2f} to {high:+.2f} points")
    return report
