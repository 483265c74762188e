"""Corpus → id stream → (T, N) batches → truncated-BPTT windows.

Each sentence becomes ``<s> w_1 … w_n </s>``, so the input→label pairs are
``<s>→w_1, w_1→w_2, …, w_n→</s>``. Sentences are concatenated into one stream and the hidden state
runs on across them; the pair ``</s>→<s>`` is not a prediction (the next sentence's start is given)
and is masked out, so the end-of-sentence token is counted once per sentence, the Penn Treebank
convention.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from model.text.vocab import Vocabulary


def sentence_stream(sentences: Iterable[Sequence[str]], vocab: Vocabulary) -> np.ndarray:
    """``<s> w… </s>`` for every sentence, concatenated: ids of shape (total,), int64."""
    parts: list[np.ndarray] = []
    bos, eos = np.array([vocab.bos_id]), np.array([vocab.eos_id])
    for sentence in sentences:
        parts.extend((bos, vocab.encode(sentence), eos))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def target_mask(targets: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """1.0 where a target is predicted and counted; 0.0 at ``<s>`` (given, not predicted)."""
    mask: np.ndarray = (targets != vocab.bos_id).astype(np.float32)
    return mask


def batchify(stream: np.ndarray, batch_size: int) -> np.ndarray:
    """Cut the stream into N = batch_size contiguous columns: shape (T_total, N), time-major.

    Column j holds the j-th slice of the text, so each column is read in order across windows and
    the state carried between windows belongs to the same text. The tail that does not fill a
    full row is dropped.
    """
    steps = len(stream) // batch_size
    if steps < 2:
        raise ValueError(
            f"corpus of {len(stream)} tokens is too small for batch size {batch_size} "
            f"(need at least {2 * batch_size})"
        )
    return np.ascontiguousarray(stream[: steps * batch_size].reshape(batch_size, steps).T)


def bptt_windows(data: np.ndarray, bptt: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Consecutive (inputs, targets) windows of up to ``bptt`` steps, each shape (t, N).

    targets are inputs shifted by one step; the last window may be shorter.
    """
    for start in range(0, len(data) - 1, bptt):
        t = min(bptt, len(data) - 1 - start)
        yield data[start : start + t], data[start + 1 : start + 1 + t]
