"""What a servable n-gram model is: one set of checks for every way one comes to be (estimated
by ``nextword ngram``, imported from ARPA, loaded from a checkpoint), so a command never writes
a model the loader refuses, and no model reaches the service with numbers it cannot serve.

- an order from 1 to ``MAX_ORDER`` (an order above 1 may be empty: pruning can empty one, and
  lookups back off through it);
- a vocabulary of the three specials and at least one word;
- each order's n-grams listed once (every path sorts them: the estimator, the ARPA reader and
  the loader);
- log10 probabilities finite, at most 0 (a probability above 1 is no probability: the service
  answered 1.995 with ``normalized: true``) and at least ``MIN_LOG10_PROB`` (ARPA's "never" is
  -99); backoffs finite within ±``MAX_LOG10_BACKOFF`` (ARPA backoffs may be positive, but a
  factor beyond 10^±100 is an error: 1e30 overflowed into 500s).
"""

from __future__ import annotations

import numpy as np

from model.ngram.kneser_ney import Order

MAX_ORDER = 10
MIN_IDS = 4  # <unk>, <s>, </s> and one word
MIN_LOG10_PROB = -1000.0
MAX_LOG10_PROB = 1e-6  # 0, and the rounding of a probability of 1
MAX_LOG10_BACKOFF = 100.0


class NgramModelError(ValueError):
    """The tables cannot be a servable model; the message names the order and the n-gram."""


def bad_value(log10_prob: np.ndarray, log10_backoff: np.ndarray) -> tuple[int, str] | None:
    """The first n-gram whose numbers no model can have, and why; None when all are fine."""
    with np.errstate(invalid="ignore"):
        prob_ok = (log10_prob >= MIN_LOG10_PROB) & (log10_prob <= MAX_LOG10_PROB)
        backoff_ok = np.abs(log10_backoff) <= MAX_LOG10_BACKOFF  # NaN fails both
    if prob_ok.all() and backoff_ok.all():
        return None
    i = int(np.argmin(prob_ok & backoff_ok))
    if not prob_ok[i]:
        return i, (f"log10 probability {log10_prob[i]:g} is not in [{MIN_LOG10_PROB:g}, 0] "
                   "(a probability above 1, or not a number)")  # fmt: skip
    return i, (f"log10 backoff {log10_backoff[i]:g} is not within ±{MAX_LOG10_BACKOFF:g} "
               "(not a number, or an absurd factor)")  # fmt: skip


def first_repeat(sorted_keys: np.ndarray) -> int | None:
    """The position of the first key equal to the one before it, in sorted keys."""
    if len(sorted_keys) < 2:
        return None
    same = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    return int(same[0]) + 1 if len(same) else None


def check_model(tables: list[Order], vocab_size: int) -> None:
    """Raise ``NgramModelError`` unless ``tables`` over ``vocab_size`` ids are a servable model."""
    if not 1 <= len(tables) <= MAX_ORDER:
        raise NgramModelError(f"an n-gram model has order 1 to {MAX_ORDER}, got {len(tables)}")
    if vocab_size < MIN_IDS:
        raise NgramModelError(
            f"the vocabulary has {vocab_size - 3} words besides <unk>, <s> and </s>; need at "
            "least 1 (a lower --min-count keeps more)"
        )
    if len(tables[0].keys) != vocab_size:
        raise NgramModelError(f"the unigrams must be the vocabulary's {vocab_size} tokens")
    for t in tables:
        repeat = first_repeat(t.keys)
        if repeat is not None:
            raise NgramModelError(f"the {t.order}-grams list n-gram {repeat} twice")
        bad = bad_value(t.log10_prob, t.log10_backoff)
        if bad is not None:
            raise NgramModelError(f"the {t.order}-grams, n-gram {bad[0]}: {bad[1]}")
