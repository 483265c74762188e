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

    The sentences are cut into up to ``STREAMS`` contiguous runs, each read as one stream from
    a zero state; the streams advance side by side, one token a step, and the states of the
    streams about to read a counted ``<s>`` are added up. A stream that has ended reads padding
    nobody counts, so the cost is the longest stream's tokens, not the sum of each round's
    longest sentence (the earlier loop padded every sentence to the longest of its round).
    """
    chosen = [s for s in sentences[:limit] if len(s)]
    count = min(STREAMS, len(chosen) // (BURN_IN + 1))
    if count == 0:
        return None
    runs = np.array_split(np.arange(len(chosen)), count)
    framed = [
        [np.concatenate([[vocab.bos_id], chosen[i], [vocab.eos_id]]) for i in r] for r in runs
    ]
    length = max(sum(len(f) for f in stream) for stream in framed)
    ids = np.full((length, count), vocab.eos_id, dtype=np.int64)
    counted = np.zeros((length, count), dtype=bool)  # the stream reads a counted <s> at step t
    for b, stream in enumerate(framed):
        ids[: sum(len(f) for f in stream), b] = np.concatenate(stream)
        starts = np.cumsum([0] + [len(f) for f in stream[:-1]])
        counted[starts[BURN_IN:], b] = True
    state = net.init_state(count)
    total = [np.zeros((1, t.shape[1]), dtype=np.float64) for layer in state for t in layer]
    for t in range(length):
        at = counted[t]
        if at.any():  # the state before reading <s>: after the sentence before it
            flat = (s for layer in state for s in layer)
            total = [a + s[at].sum(axis=0, keepdims=True) for a, s in zip(total, flat, strict=True)]
        _, state, _ = net.forward(ids[t : t + 1], state, keep_cache=False)
    n = int(counted.sum())
    means = iter(t / n for t in total)
    return [tuple(next(means).astype(net.dtype) for _ in layer) for layer in state]
