"""The state a sentence read on its own starts from, for a model trained on running text.

A model trained on the stream (``--context stream``, the PTB recipe) never meets a zero state
at a sentence start: after ``</s>`` its state still holds the sentence before. Served text
(``/v1/score``, ``/v1/rerank``, candidates after a context) is read one sentence at a time, and
from a zero state the model is weaker (PTB: test perplexity 86.77 on the stream, 104.22 on
sentences alone). Starting instead from the mean of the states the model is in before each
``<s>`` of its own training text gives 98.63 (``bench/start_state.py``). The probabilities stay
exact and normalised: only the starting point of the recurrence changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from model.network.recurrent import RNNLM, NetworkState
from model.text.vocab import Vocabulary

BURN_IN = 5  # the first sentences of a stream start near zero: their boundaries are left out
STREAMS = 64  # read side by side, each a contiguous run of the sentences


def mean_boundary_state(
    net: RNNLM, sentences: Sequence[np.ndarray], vocab: Vocabulary, limit: int = 8000
) -> NetworkState | None:
    """The mean of the states before each ``<s>`` of the first ``limit`` sentences read as
    running text (``<s> w … </s> <s> …``), each tensor (1, H) in the network's dtype; None when
    there are too few sentences to average.

    The sentences are cut into up to ``STREAMS`` contiguous runs read side by side, one token
    step at a time; a stream whose sentence has ended keeps its state through the padding.
    """
    chosen = [s for s in sentences[:limit] if len(s)]
    count = min(STREAMS, len(chosen) // (BURN_IN + 1))
    if count == 0:
        return None
    runs = np.array_split(np.arange(len(chosen)), count)
    state = net.init_state(count)
    total = [np.zeros_like(t[:1], dtype=np.float64) for layer in state for t in layer]
    n = 0
    for j in range(max(len(r) for r in runs)):
        none = np.zeros(0, dtype=np.int64)
        framed = [
            np.concatenate([[vocab.bos_id], chosen[r[j]], [vocab.eos_id]]) if j < len(r) else none
            for r in runs
        ]
        if j >= BURN_IN:
            active = np.array([len(f) > 0 for f in framed])
            flat = (t for layer in state for t in layer)
            total = [
                a + t[active].sum(axis=0, keepdims=True) for a, t in zip(total, flat, strict=True)
            ]
            n += int(active.sum())
        length = max(len(f) for f in framed)
        ids = np.zeros((length, count), dtype=np.int64)
        reading = np.zeros((length, count), dtype=bool)
        for b, f in enumerate(framed):
            ids[: len(f), b], reading[: len(f), b] = f, True
        for t in range(length):
            _, new, _ = net.forward(ids[t : t + 1], state, keep_cache=False)
            keep = reading[t][:, None]
            state = [tuple(np.where(keep, a, b) for a, b in zip(nl, ol, strict=True))
                     for nl, ol in zip(new, state, strict=True)]  # fmt: skip
    means = iter(t / n for t in total)
    return [tuple(next(means).astype(net.dtype) for _ in layer) for layer in state]
