"""A class-factored output layer (Mikolov et al. 2011): an exact softmax whose cost per target
grows with √V, not V.

    P(w | h) = P(c(w) | h) · P(w | c(w), h)
    P(c | h) = softmax(Wc h + bc)[c]                   over the K classes
    P(w | c, h) = softmax(W[c] h + b[c])[w]            over the words of class c only

Both factors are full softmaxes, so the probabilities over the whole vocabulary sum to 1 and a
reranker can compare scores across contexts (unlike sampled or self-normalised outputs). A
target costs K + |c(w)| output rows instead of V.

Classes are contiguous ranges of word ids. The vocabulary numbers words by falling frequency
(``model.text.vocab``), so a range is a band of similar frequencies, and ``by_frequency`` cuts
the bands as the RNNLM toolkit does: equal shares of Σ √count (frequent words get small
classes, rare ones large classes that are seldom a target). The class of a word is then
``searchsorted(bounds, id)``, with nothing to store but the K + 1 bounds.

A shortlist gives each of the most frequent words a class of its own: the class softmax is
then the adaptive softmax's head (Grave et al. 2017), the frequent words and one entry per
band of the rest. A shortlisted word's head entry is its own word row, ``W[w] · h + b[w]``
(with tied weights, its embedding, as in a full softmax), and ``Wc``, ``bc`` hold only the
bands' rows; its P(w | c) = 1, so it costs that one row.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from model.network.layers import NonFiniteError, exp_rows, log_softmax, times_rows


@dataclass(frozen=True)
class WordClasses:
    """Class ``c`` holds the word ids ``bounds[c] : bounds[c + 1]``; bounds run from 0 to V."""

    bounds: tuple[int, ...]
    shortlist: int = 0  # classes 0 … shortlist-1 are the words 0 … shortlist-1, one each

    def __post_init__(self) -> None:
        b = self.bounds
        if len(b) < 2 or b[0] != 0 or any(lo >= hi for lo, hi in itertools.pairwise(b)):
            raise ValueError(f"class bounds must rise strictly from 0, got {list(b)[:8]}…")
        if not 0 <= self.shortlist < len(b) - 1 or b[self.shortlist] != self.shortlist:
            raise ValueError(f"a shortlist of {self.shortlist} needs that many one-word classes "
                             f"first and one class more, got bounds {list(b)[:8]}…")  # fmt: skip

    @property
    def num_classes(self) -> int:
        return len(self.bounds) - 1

    @property
    def vocab_size(self) -> int:
        return self.bounds[-1]

    @property
    def num_bands(self) -> int:
        """The classes past the shortlist: the rows of ``Wc``."""
        return self.num_classes - self.shortlist

    @classmethod
    def by_frequency(
        cls, counts: Sequence[int], num_classes: int, shortlist: int = 0
    ) -> WordClasses:
        """Contiguous classes with equal shares of Σ √count (the RNNLM toolkit's binning), at
        most ``num_classes`` (fewer when a few words hold most of the mass) and never empty.

        With a ``shortlist``, the first (most frequent) ``shortlist`` ids each get a class of
        their own and the bands cover the rest: the head softmax then holds the frequent words
        themselves, as the adaptive softmax's does (Grave et al. 2017), and SGD at the full
        softmax's learning rate trains it (bench/RESULTS.md, "Class-factored softmax")."""
        vocab_size = len(counts)
        if not 0 <= shortlist < vocab_size:
            raise ValueError(f"shortlist must be in [0, {vocab_size - 1}], got {shortlist}")
        if shortlist:
            tail = cls.by_frequency(counts[shortlist:], num_classes)
            return cls((*range(shortlist), *(shortlist + b for b in tail.bounds)), shortlist)
        if not 1 <= num_classes <= vocab_size:
            raise ValueError(f"classes must be in [1, {vocab_size}], got {num_classes}")
        mass = np.sqrt(np.maximum(np.asarray(counts, dtype=np.float64), 0.0)) + 1e-12
        share = np.cumsum(mass) / mass.sum()  # share[i]: mass of ids 0..i
        # id i goes to class floor(share before i · K): a new class starts where that rises
        before = np.concatenate([[0.0], share[:-1]])
        labels = np.minimum((before * num_classes).astype(np.int64), num_classes - 1)
        starts = np.flatnonzero(np.diff(labels)) + 1
        return cls((0, *starts.tolist(), vocab_size))

    @classmethod
    def cut(
        cls, counts: Sequence[int], classes: int | None = None, shortlist: int = 0
    ) -> WordClasses:
        """The layout ``nextword train`` cuts: ``shortlist`` words alone (at most V − 1), then
        ``classes`` bands of the rest (default √ of the rest, at most one a word)."""
        short = min(shortlist, len(counts) - 1)
        rest = len(counts) - short
        return cls.by_frequency(counts, min(classes or cls.default_count(rest), rest), short)

    @classmethod
    def default_count(cls, vocab_size: int) -> int:
        """K ≈ √V: the classes' and a class's words cost about the same."""
        return max(1, round(math.sqrt(vocab_size)))

    def class_of(self, ids: np.ndarray) -> np.ndarray:
        """The class of each word id (same shape)."""
        return np.searchsorted(self.bounds_array, ids, side="right") - 1

    @functools.cached_property
    def bounds_array(self) -> np.ndarray:
        """The bounds as an int64 array, made once (a shortlist has thousands of them)."""
        return np.asarray(self.bounds, dtype=np.int64)


def class_log_probs(
    x: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    Wc: np.ndarray,
    bc: np.ndarray,
    classes: WordClasses,
) -> np.ndarray:
    """log P(w | h) for every word, (..., V) from hidden states (..., H): both factors, each
    class's block normalised on its own. Exact; as costly as a full softmax (V rows)."""
    lead, H = x.shape[:-1], x.shape[-1]
    flat = x.reshape(-1, H)
    class_lp = log_softmax(head_logits(flat, W, b, Wc, bc, classes))  # (M, K)
    out = np.empty((flat.shape[0], classes.vocab_size), dtype=np.result_type(x, W))
    short = classes.shortlist
    out[:, :short] = class_lp[:, :short]
    for c, (lo, hi) in enumerate(itertools.pairwise(classes.bounds[short:]), start=short):
        out[:, lo:hi] = log_softmax(times_rows(flat, W[lo:hi]) + b[lo:hi]) + class_lp[:, c : c + 1]
    return out.reshape(*lead, classes.vocab_size)


def class_log_probs_at(
    x: np.ndarray,
    tokens: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    Wc: np.ndarray,
    bc: np.ndarray,
    classes: WordClasses,
    head_norms: np.ndarray | None = None,
) -> np.ndarray:
    """log P(tokens[k]) after hidden state x[k], (K,) float64 from x (K, H): the class softmax
    and the token's own class's rows only, K + |c| rows a token (targets grouped by class).

    As for the full softmax (``NetworkLM.log_probs_given_norms``), the two normalisers come
    from products in the weights' dtype and the token's own two logits are float64 dot
    products: the number is as exact as the float64 one to float32 rounding of the
    normalisers, at float32 speed. ``head_norms`` (K,), the class softmax's normalisers
    (``head_log_norms``) when already known, spare the K-row product: several tokens after one
    state, or a state kept in the prefix cache, then pay for their own classes' rows only."""
    x64 = x.astype(np.float64)
    cs = classes.class_of(tokens)
    xw = x.astype(W.dtype)
    short = classes.shortlist
    if head_norms is None:
        head_norms = head_log_norms(xw, W, b, Wc, bc, classes)
    out = -np.asarray(head_norms, dtype=np.float64)
    listed = cs < short  # a shortlisted word's head row is its word row
    out[listed] += _dot_rows(x64[listed], W[cs[listed]]) + b[cs[listed]]
    band = cs[~listed] - short
    out[~listed] += _dot_rows(x64[~listed], Wc[band]) + bc[band]
    for c, at in _by_class(cs, classes):
        lo, hi = classes.bounds[c], classes.bounds[c + 1]
        norms = _log_norms(times_rows(xw[at], W[lo:hi]) + b[lo:hi])
        out[at] += _dot_rows(x64[at], W[tokens[at]]) + b[tokens[at]] - norms
    result: np.ndarray = out
    return result


def head_logits(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, Wc: np.ndarray, bc: np.ndarray,
    classes: WordClasses,
) -> np.ndarray:  # fmt: skip
    """The class softmax's logits (M, K) from states (M, H): the shortlisted words' own rows,
    then the bands' rows. Two products (``times_rows``), no copy of the weights."""
    bands: np.ndarray = times_rows(x, Wc) + bc
    short = classes.shortlist
    if not short:
        return bands
    return np.concatenate([times_rows(x, W[:short]) + b[:short], bands], axis=-1)


def head_log_norms(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, Wc: np.ndarray, bc: np.ndarray,
    classes: WordClasses,
) -> np.ndarray:  # fmt: skip
    """``log Σ_c exp(head logit_c)`` of each state x (M, H): the class softmax's normaliser,
    (M,) float64, from a product in the weights' dtype. What a state's tokens all share."""
    return _log_norms(head_logits(x.astype(W.dtype), W, b, Wc, bc, classes))


def _dot_rows(x64: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Row-wise dot products x64[k] · rows[k] in float64, (K,)."""
    dots: np.ndarray = np.einsum("kh,kh->k", x64, rows.astype(np.float64))
    return dots


def _log_norms(logits: np.ndarray) -> np.ndarray:
    """``log Σ_j exp(logits[k, j])`` of each row, (K,) float64 (``exp_rows``)."""
    c, total = exp_rows(logits.astype(np.float64))
    norms: np.ndarray = c + np.log(total)
    return norms


def _by_class(cs: np.ndarray, classes: WordClasses) -> Iterator[tuple[int, np.ndarray]]:
    """(class, the positions of cs in it) for each class present that has more than one word:
    one sort, not one scan of cs per class. A word alone in its class has P(w | c) = 1 and no
    gradient there, so the shortlist's classes are skipped, exactly."""
    if len(cs) == 0:
        return
    order = np.argsort(cs, kind="stable")
    present, first = np.unique(cs[order], return_index=True)
    ends = [*first[1:].tolist(), len(order)]
    bounds = classes.bounds
    for c, start, end in zip(present.tolist(), first.tolist(), ends, strict=True):
        if bounds[c + 1] - bounds[c] > 1:
            yield c, order[start:end]


WHOLE_PRODUCT_SHARE = 0.25  # class_top_k: past this share of the rows, one product over all


def class_top_k(
    x: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    Wc: np.ndarray,
    bc: np.ndarray,
    classes: WordClasses,
    k: int,
    excluded: Sequence[int] = (),
    whole_product_share: float = WHOLE_PRODUCT_SHARE,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The k most probable words after one hidden state x (H,), most probable first:
    (ids, float64 log-probabilities, classes opened).

    A word's log-probability is at most its class's (the within-class factor is ≤ 1), so once
    the k-th best word found beats a class, that class and every less probable one can stay
    shut. Classes are opened from the most probable down in chunks of 1, 2, 4, … (one product
    each) until the next class is below the k-th best. Once the opened rows would pass
    ``whole_product_share`` of the vocabulary, pruning no longer pays (large k, flat
    distributions): one product over every row finishes it (bench/predict_top_k.py). Logits
    are in the weights' dtype, normalised in float64: with float32 weights a word's number
    differs from ``class_log_probs_at``'s (``/v1/score``, ``/v1/candidates``, all float64) by
    float32 rounding (under 1e-6 on the PTB model), as the whole distribution's does; scoring
    the k again in float64 would cost as much as the search at k = 100. ``excluded`` ids never
    count (``<unk>``, ``<s>``, ``</s>``). A non-finite state finds nothing: empty arrays.
    """
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0), 0
    xw = x.astype(W.dtype)
    class_lp = log_softmax(head_logits(xw, W, b, Wc, bc, classes).astype(np.float64))
    bounds = classes.bounds_array
    is_excluded = np.zeros(classes.vocab_size, dtype=bool)
    is_excluded[np.asarray(excluded, dtype=np.int64)] = True
    order = np.argsort(-class_lp, kind="stable")
    found_ids: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    found_lps: list[np.ndarray] = [np.zeros(0)]
    kth, found, opened, rows, chunk = -math.inf, 0, 0, 0, 1
    while opened < len(order) and class_lp[order[opened]] >= kth:
        take = order[opened : opened + chunk]
        take = take[class_lp[take] >= kth]  # sorted: a prefix of the chunk
        rows += int((bounds[take + 1] - bounds[take]).sum())
        if rows > whole_product_share * classes.vocab_size:  # all rows, the opened ones again
            ids, lps = _open_classes(xw, W, b, class_lp, bounds, order, is_excluded)
            found_ids, found_lps, opened = [ids], [lps], len(order)
            break
        ids, lps = _open_classes(xw, W, b, class_lp, bounds, take, is_excluded)
        found_ids.append(ids)
        found_lps.append(lps)
        found, opened, chunk = found + len(ids), opened + len(take), chunk * 2
        if found >= k:
            every = np.concatenate(found_lps)
            kth = float(np.partition(every, len(every) - k)[len(every) - k])
    all_ids, all_lps = np.concatenate(found_ids), np.concatenate(found_lps)
    best = np.lexsort((all_ids, -all_lps))[:k]  # by log-probability, then id
    return all_ids[best], all_lps[best], opened


def _open_classes(
    x: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    class_lp: np.ndarray,
    bounds: np.ndarray,
    opened: np.ndarray,
    is_excluded: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Ids and log P of the words of the ``opened`` classes (one product), excluded ids left out.
    Every class opened at once: the whole matrix in id order, no gathered copy. The classes'
    normalisers are ``exp_rows``'s, segment by segment (``reduceat``) over the ragged rows."""
    every = len(opened) == len(bounds) - 1
    if every:
        opened = np.arange(len(opened))
    sizes = bounds[opened + 1] - bounds[opened]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    if every:
        ids = np.arange(bounds[-1])
        logits = (W @ x + b).astype(np.float64)
    else:
        ids = np.repeat(bounds[opened] - starts, sizes) + np.arange(sizes.sum())
        logits = (W[ids] @ x + b[ids]).astype(np.float64)
    if len(ids) == 0:
        return ids, logits
    peak = np.maximum.reduceat(logits, starts)
    norm = peak + np.log(np.add.reduceat(np.exp(logits - np.repeat(peak, sizes)), starts))
    lps = logits - np.repeat(norm - class_lp[opened], sizes)
    keep = ~is_excluded[ids]
    return ids[keep], lps[keep]


def class_softmax_loss(
    x: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    Wc: np.ndarray,
    bc: np.ndarray,
    classes: WordClasses,
    targets: np.ndarray,
    mask: np.ndarray | None = None,
) -> tuple[float, np.ndarray, dict[str, np.ndarray]]:
    """Mean cross-entropy of the factored softmax and its gradients.

    - x: top-layer outputs (T, N, H); W (V, H), b (V,): word rows; Wc (B, H), bc (B,): the
      bands' class rows (B = K − shortlist, ``classes.num_bands``); targets: (T, N) ids;
      mask: (T, N) weights of the counted targets, or None.
    Returns (loss in nats per token, dx (T, N, H), {"W", "b", "Wc", "bc"} gradients). The
    targets are grouped by class, so each class's rows enter one product with its targets only.
    """
    T, N, H = x.shape
    flat, y = x.reshape(T * N, H), targets.ravel()
    weight = np.ones(len(y), dtype=x.dtype) if mask is None else mask.ravel().astype(x.dtype)
    rows = np.flatnonzero(weight)
    if len(rows) == 0:
        raise ValueError("class_softmax_loss: the mask selects no position")
    count = float(weight[rows].sum())
    xs, ys, scale = flat[rows], y[rows], weight[rows] / x.dtype.type(count)
    cs = classes.class_of(ys)
    picked = np.arange(len(ys))

    class_lp = log_softmax(head_logits(xs, W, b, Wc, bc, classes))  # (M, K)
    nll = -class_lp[picked, cs].astype(np.float64)
    dz_class = np.exp(class_lp)
    dz_class[picked, cs] -= 1.0
    dz_class *= scale[:, None]
    short = classes.shortlist
    dz_listed, dz_bands = dz_class[:, :short], dz_class[:, short:]
    dxs = dz_bands @ Wc
    grads = {"Wc": dz_bands.T @ xs, "bc": dz_bands.sum(axis=0)}

    dW, db = np.zeros_like(W), np.zeros_like(b)
    if short:  # the shortlisted words' head rows are their word rows
        dxs += dz_listed @ W[:short]
        dW[:short] = dz_listed.T @ xs
        db[:short] = dz_listed.sum(axis=0)
    for c, at in _by_class(cs, classes):
        lo, hi = classes.bounds[c], classes.bounds[c + 1]
        word_lp = log_softmax(times_rows(xs[at], W[lo:hi]) + b[lo:hi])  # (m, |c|)
        local = ys[at] - lo
        nll[at] -= word_lp[np.arange(len(at)), local]
        dz = np.exp(word_lp)
        dz[np.arange(len(at)), local] -= 1.0
        dz *= scale[at, None]
        dxs[at] += dz @ W[lo:hi]
        dW[lo:hi] += dz.T @ xs[at]
        db[lo:hi] += dz.sum(axis=0)
    loss = float(np.dot(weight[rows].astype(np.float64), nll) / count)
    if not math.isfinite(loss):
        raise NonFiniteError(f"cross-entropy is {loss}: the logits contain NaN or infinity")
    dx = np.zeros_like(flat)
    dx[rows] = dxs
    grads.update(W=dW, b=db)
    return loss, dx.reshape(T, N, H), grads


def describe(classes: WordClasses) -> str:
    """The layout in words, for the training log."""
    sizes = np.diff(classes.bounds_array[classes.shortlist :])
    bands = f"{classes.num_bands} bands of {int(sizes.min())}–{int(sizes.max())} words"
    if not classes.shortlist:
        return f"class softmax: {bands}"
    return f"class softmax: a shortlist of {classes.shortlist:,} words, then {bands}"
