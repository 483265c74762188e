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

from model.inference.bias import MAX_PHRASES, Bias
from model.inference.language_model import InputError, LanguageModel

WEIGHTS = np.concatenate([[0.0], np.logspace(-2, 2, 33)])  # lm_weight: recogniser scores
BONUSES = np.linspace(-16.0, 16.0, 129)  # nats per token, inside the weight
BOOTSTRAP = 10_000
MAX_HYPOTHESES = 1000  # per list
MAX_TEXT_CHARS = 20_000  # per text, as the service's strings
MAX_COMBINED_BONUS = 1e3  # lm_weight · length_bonus, what /v1/rerank's length_bonus allows


class NbestError(ValueError):
    """A malformed line: the message names the file, the line and the field."""


@dataclass
class NbestList:
    reference: str
    texts: list[str]
    scores: np.ndarray  # (n,) the recogniser's
    bias: list[str] | None = None
    where: str = ""  # "file:line", for messages


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
        # JSON lines end at "\n" only: a string may hold U+2028 and the like (splitlines' too)
        lines = [line.removesuffix("\r") for line in path.read_text(encoding="utf-8").split("\n")]
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
    except (ValueError, RecursionError) as e:  # a number of 4,300 digits, nesting too deep
        raise NbestError(f"{where}: not JSON we can read ({type(e).__name__})") from None
    if not isinstance(record, dict):
        raise NbestError(f"{where}: must be a JSON object with reference and hypotheses")
    reference = record.get("reference")
    if not isinstance(reference, str) or not reference.strip():
        raise NbestError(f"{where}: reference must be a non-empty string")
    if len(reference) > MAX_TEXT_CHARS:
        raise NbestError(f"{where}: reference has {len(reference):,} characters; at most "
                         f"{MAX_TEXT_CHARS:,}")  # fmt: skip
    hypotheses = record.get("hypotheses")
    if not isinstance(hypotheses, list) or not 1 <= len(hypotheses) <= MAX_HYPOTHESES:
        raise NbestError(f"{where}: hypotheses must be a list of 1 to {MAX_HYPOTHESES} objects")
    texts, scores = [], []
    for k, h in enumerate(hypotheses):
        field = f"{where}: hypotheses[{k}]"
        if not isinstance(h, dict) or not isinstance(h.get("text"), str):
            raise NbestError(f"{field}: must be an object with a string text")
        if len(h["text"]) > MAX_TEXT_CHARS:
            raise NbestError(f"{field}.text has {len(h['text']):,} characters; at most "
                             f"{MAX_TEXT_CHARS:,}")  # fmt: skip
        score = h.get("score", 0.0)
        number = isinstance(score, int | float) and not isinstance(score, bool)
        try:
            value = float(score) if number else math.nan
        except OverflowError:  # an integer too large for a float
            value = math.nan
        if not math.isfinite(value):
            raise NbestError(f"{field}.score must be a finite number, got {str(score)[:40]}")
        texts.append(h["text"])
        scores.append(value)
    bias = record.get("bias")
    if bias is not None and not (
        isinstance(bias, list)
        and 1 <= len(bias) <= MAX_PHRASES
        and all(isinstance(b, str) and b.strip() for b in bias)
    ):
        raise NbestError(f"{where}: bias must be a list of 1 to {MAX_PHRASES} non-empty strings")
    return NbestList(reference, texts, np.array(scores), bias, where)


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
    biases = [check_bias(lm, item) for item in lists]  # every line checked before scoring
    lm_scores, token_counts, words, chars = [], [], [], []
    for item, bias in tqdm(list(zip(lists, biases, strict=True)), unit="list", file=sys.stderr,
                           disable=None):  # fmt: skip
        model = lm if bias is None else lm.with_bias(bias)
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


def check_bias(lm: LanguageModel, item: NbestList) -> Bias | None:
    """A line's bias as the service's ``bias`` would take it; NbestError naming the line where
    the service would answer 422."""
    if not item.bias:
        return None
    if not lm.caches_history():
        raise NbestError(f"{item.where}: bias needs a model with a recurrent network; this "
                         f"one ({lm.architecture().get('kind', 'network')}) has none")  # fmt: skip
    try:
        bias = lm.bias_for(item.bias)
    except InputError as e:
        field = "bias" if e.index is None else f"bias[{e.index}]"
        raise NbestError(f"{item.where}: {field} {e.problem}") from None
    cache = lm.neural_cache()
    if cache is not None and cache.weight + bias.weight >= 1:
        raise NbestError(f"{item.where}: bias: the model's cache weight {cache.weight:g} leaves "
                         f"no room for the bias's {bias.weight:g}")  # fmt: skip
    return bias


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
    """The grid point (weight, bonus per token inside the weight) with the fewest word errors
    on ``rows``."""
    recogniser = padded([lists[r].scores for r in rows], -np.inf)
    lm = padded([scored.lm[r] for r in rows], 0.0)
    n = padded([scored.tokens[r] for r in rows], 0.0)
    errors = padded([scored.word_errors[r] for r in rows], 0.0)
    index = np.arange(len(rows))
    best: tuple[int, float, float, float] | None = None
    for weight in WEIGHTS:
        for bonus in BONUSES if weight > 0 else [0.0]:
            if abs(weight * bonus) > MAX_COMBINED_BONUS:
                continue
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
        if len(lists) >= 2:  # with one list there is nothing to hold out
            w, b = fit(lists, scored, halves[1 - k])
            held_out[rows] = picks(lists, scored, rows, w, b)

    def errors_of(chosen: np.ndarray) -> np.ndarray:
        return np.array([scored.word_errors[r][k] for r, k in zip(every, chosen, strict=True)])

    two = len(lists) >= 2
    gap = interval(errors_of(held_out), errors_of(first), scored.words) if two else None
    report: dict[str, Any] = {
        "lists": len(lists),
        "lm_weight": weight,
        "length_bonus": weight * bonus,  # /v1/rerank's: score + w · lm + length_bonus · n
        "first_pass": rates(scored, every, first),
        "reranked": rates(scored, every, fitted),
        "reranked_cross_validated": rates(scored, every, held_out) if two else None,
        "oracle": rates(scored, every, oracle),
        "cross_validated_minus_first_pass_ci95": gap,
    }
    log(f"lm_weight {weight:g}, length_bonus {weight * bonus:g} on {len(lists):,} lists")
    for key, label in (("first_pass", "first pass"), ("reranked", "reranked (fitted here)"),
                       ("reranked_cross_validated", "reranked (cross-validated)"),
                       ("oracle", "oracle")):  # fmt: skip
        if report[key] is not None:
            log(f"  {label}: WER {report[key]['wer']:.2f} %, CER {report[key]['cer']:.2f} %")
    if gap is None:
        log("  one list: nothing to hold out, no cross-validated figure")
    else:
        log(f"  cross-validated WER minus first pass: 95 % interval {gap[0]:+.2f} to "
            f"{gap[1]:+.2f} points")  # fmt: skip
    return report
