"""Corpus → id stream → (T, N) batches → truncated-BPTT windows.

Each sentence becomes ``<s> w_1 … w_n </s>``, so the input→label pairs are
``<s>→w_1, w_1→w_2, …, w_n→</s>``. Sentences are concatenated into one stream and the hidden state
runs on across them; the pair ``</s>→<s>`` is not a prediction (the next sentence's start is given)
and is masked out, so the end-of-sentence token is counted once per sentence, the Penn Treebank
convention.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

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


def pad_ids(
    seqs: Sequence[np.ndarray], bos: bool, eos_id: int | None, bos_id: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time-major (inputs, targets, mask), each (T, N), from id sequences of different lengths.

    Each sequence is framed as ``[<s>] ids [</s>]``; inputs are all but its last id, targets all
    but its first. Padding sits after the end of each sequence, so it never influences the
    positions before it (the network is causal), and the mask excludes it.
    """
    framed = [
        np.concatenate([[bos_id] if bos else [], s, [eos_id] if eos_id is not None else []]).astype(
            np.int64
        )
        for s in seqs
    ]
    T = max(len(f) for f in framed) - 1
    inputs = np.zeros((T, len(framed)), dtype=np.int64)
    targets = np.zeros((T, len(framed)), dtype=np.int64)
    mask = np.zeros((T, len(framed)), dtype=bool)
    for j, f in enumerate(framed):
        n = len(f) - 1
        inputs[:n, j], targets[:n, j], mask[:n, j] = f[:-1], f[1:], True
    return inputs, targets, mask


def length_grouped(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator
) -> list[list[int]]:
    """Shuffled batches of indices of similar length (little padding), reproducible from rng."""
    order = rng.permutation(len(lengths))
    pool = 50 * batch_size  # sort by length within pools of shuffled items
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool].tolist(), key=lambda i: lengths[i])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    return [batches[b] for b in rng.permutation(len(batches))]


@dataclass
class PaddedSentences:
    """N sequences read from a zero state, as the service scores a sentence: each sequence is
    one or more consecutive sentences ``<s> w… </s> <s> w… </s>``; inputs are all its ids but the
    last, targets all but the first, both (T, N) with padding after the end, and mask (T, N) 1.0
    on the targets that are predicted (not padding, not a given ``<s>``). A left-to-right
    network never sees the padding before a real target."""

    inputs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray

    @classmethod
    def from_sentences(cls, sentences: Sequence[np.ndarray], vocab: Vocabulary) -> PaddedSentences:
        """One sentence per sequence."""
        return cls.from_segments([[s] for s in sentences], vocab)

    @classmethod
    def from_segments(
        cls, segments: Sequence[Sequence[np.ndarray]], vocab: Vocabulary
    ) -> PaddedSentences:
        """One segment of consecutive sentences per sequence, its state running across them."""
        bos, eos = [vocab.bos_id], [vocab.eos_id]
        streams = [np.concatenate([x for s in segment for x in (bos, s, eos)]).astype(np.int64)
                   for segment in segments]  # fmt: skip
        inputs, targets, real = pad_ids(streams, bos=False, eos_id=None)
        return cls(inputs, targets, real * target_mask(targets, vocab))


def segments(
    sentences: Sequence[np.ndarray], reset_prob: float, rng: np.random.Generator
) -> list[list[np.ndarray]]:
    """Consecutive sentences grouped into segments: each sentence starts a new one (a zero
    state) with probability ``reset_prob``, else continues the one before (1: every sentence
    alone)."""
    out: list[list[np.ndarray]] = []
    starts = rng.random(len(sentences)) < reset_prob
    for sentence, start in zip(sentences, starts, strict=True):
        if start or not out:
            out.append([sentence])
        else:
            out[-1].append(sentence)
    return out


def padded_segment_batches(
    units: Sequence[Sequence[np.ndarray]],
    batch_size: int,
    rng: np.random.Generator,
    vocab: Vocabulary,
) -> list[PaddedSentences]:
    """An epoch of segments (see ``segments``) in shuffled batches of similar length."""
    lengths = [sum(len(s) + 1 for s in unit) for unit in units]
    groups = length_grouped(lengths, batch_size, rng)
    return [PaddedSentences.from_segments([units[i] for i in g], vocab) for g in groups]
