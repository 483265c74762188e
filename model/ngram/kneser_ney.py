"""Interpolated modified Kneser-Ney estimation (Chen & Goodman 1998), the estimator of KenLM's
``lmplz``, counted with NumPy: n-grams are rows of ids sorted as fixed-width byte strings.

For a corpus of sentences framed ``<s> w_1 … w_n </s>`` (n-grams never cross a sentence), with
adjusted counts ``a``: the raw count at the highest order N and for n-grams starting with
``<s>`` (nothing can precede it); below N, the number of distinct words seen before it
(its continuation count). Per order, three discounts from the count-of-counts t_1..t_4 of ``a``:

    Y = t_1 / (t_1 + 2 t_2),   D_j = j − (j + 1) Y t_{j+1} / t_j    (j = 1, 2, 3; D_3 for a ≥ 3)

and, for a context h with extensions,

    u(w | h) = (a(h w) − D(a(h w))) / Σ_v a(h v)
    γ(h)     = (D_1 N_1(h •) + D_2 N_2(h •) + D_3 N_3+(h •)) / Σ_v a(h v)
    p(w | h) = u(w | h) + γ(h) p(w | h')      (h' drops the oldest word)

ending with the uniform distribution over the vocabulary (``<s>`` excluded: it is never
predicted): p(w) = u(w) + γ() / (V − 1). A stored n-gram's probability is the interpolated
p(w | h); an unseen one backs off: p(w | h) = γ(h) p(w | h'), γ(h) = 1 for a context never seen
with an extension. That is the ARPA convention, so the tables are the ARPA file's content.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

ID = np.dtype(">u4")  # big-endian: the bytes of a row sort as its ids do
# D_1, D_2, D_3+ where the count-of-counts cannot give them (a small or very regular corpus has
# no n-gram seen exactly 2, 3 or 4 times): the values of lmplz --discount_fallback
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


def as_keys(rows: np.ndarray) -> np.ndarray:
    """(M, k) ids → (M,) fixed-width byte strings that sort and compare like the rows."""
    rows = np.ascontiguousarray(rows, dtype=ID)
    return rows.view(np.dtype((np.void, ID.itemsize * rows.shape[1]))).ravel()


def from_keys(keys: np.ndarray, order: int) -> np.ndarray:
    """The inverse of ``as_keys``: (M, order) int64 ids."""
    return keys.view(ID).reshape(-1, order).astype(np.int64)


@dataclass
class Order:
    """The n-grams of one order, sorted: ids (M, k) and their log10 probability and backoff."""

    keys: np.ndarray  # (M,) as_keys of the ids, sorted
    log10_prob: np.ndarray  # (M,) log10 p(w | h), interpolated
    log10_backoff: np.ndarray  # (M,) log10 γ of the n-gram as a context (0 where none)
    discounts: tuple[float, ...] = ()  # D_1, D_2, D_3+ used for this order (estimated models)
    fallback: bool = False  # the discounts are FALLBACK_DISCOUNTS: the counts could not give them

    @property
    def order(self) -> int:
        return self.keys.dtype.itemsize // ID.itemsize

    def ids(self) -> np.ndarray:
        return from_keys(self.keys, self.order)

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, index) of each key in this order's table."""
        return _lookup(self.keys, keys)


def ngram_windows(sentences: Sequence[np.ndarray], order: int, bos: int, eos: int) -> np.ndarray:
    """Every k-gram (k = ``order``) of ``<s> sentence </s>``, as rows (M, k) of ids."""
    framed = [np.concatenate([[bos], s, [eos]]).astype(np.int64) for s in sentences]
    stream = np.concatenate(framed) if framed else np.zeros(0, dtype=np.int64)
    lengths = np.array([len(f) for f in framed], dtype=np.int64)
    ends = np.cumsum(lengths)
    # a window starting at i fits when i + order <= the end of its sentence
    sentence_of = np.repeat(np.arange(len(framed)), lengths)
    i = np.arange(len(stream))
    fits = i + order <= ends[sentence_of] if len(stream) else np.zeros(0, dtype=bool)
    first = i[fits]
    windows: np.ndarray = stream[first[:, None] + np.arange(order)]
    return windows


def count_unique(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique rows (as keys) and how often each occurs."""
    keys, counts = np.unique(as_keys(rows), return_counts=True)
    return keys, counts.astype(np.int64)


def discounts(adjusted: np.ndarray) -> tuple[np.ndarray, bool]:
    """(D_0 = 0, D_1, D_2, D_3+) from the count-of-counts of one order's adjusted counts, and
    whether they had to be ``FALLBACK_DISCOUNTS`` (a count-of-count is 0, or a discount falls
    outside (0, j], where the formula means nothing)."""
    t = np.array([np.count_nonzero(adjusted == j) for j in range(1, 5)], dtype=np.float64)
    if np.all(t > 0):
        y = t[0] / (t[0] + 2 * t[1])
        d = np.array([0, 1 - 2 * y * t[1] / t[0], 2 - 3 * y * t[2] / t[1], 3 - 4 * y * t[3] / t[2]])
        if np.all((d[1:] > 0) & (d[1:] <= np.arange(1, 4))):
            return d, False
    return np.array([0.0, *FALLBACK_DISCOUNTS]), True


def estimate(
    sentences: Sequence[np.ndarray],
    vocab_size: int,
    order: int,
    bos: int = 1,
    eos: int = 2,
    prune: Sequence[int] = (),
    progress: Callable[[str], None] | None = None,
) -> list[Order]:
    """The interpolated modified Kneser-Ney model of ``sentences`` (ids), orders 1..``order``;
    with ``prune``, the n-grams seen rarely dropped afterwards (see ``prune_tables``).
    ``progress`` hears a line after each stage (a big corpus takes a while)."""
    report = progress or (lambda message: None)
    if order < 1:
        raise ValueError(f"order must be at least 1, got {order}")
    thresholds = prune_thresholds(prune, order)
    if not any(len(s) for s in sentences):
        raise ValueError("no words to count: the corpus is empty")
    raw = []
    for k in range(1, order + 1):
        raw.append(count_unique(ngram_windows(sentences, k, bos, eos)))
        report(f"counted {k}-grams: {len(raw[-1][0]):,} distinct ({k}/{order})")
    if len(raw[-1][0]) == 0:
        longest = max(len(s) for s in sentences) + 2
        raise ValueError(
            f"no {order}-grams: the longest sentence is {longest} tokens with <s> and </s>; "
            f"use an order of {longest} or less"
        )
    unseen = np.setdiff1d(np.arange(vocab_size), from_keys(raw[0][0], 1)[:, 0])
    if len(unseen):  # every word gets a unigram (the uniform share), <unk> too when never seen
        keys = np.concatenate([raw[0][0], as_keys(unseen[:, None])])
        counts = np.concatenate([raw[0][1], np.zeros(len(unseen), dtype=np.int64)])
        order_by = np.argsort(keys, kind="stable")
        raw[0] = (keys[order_by], counts[order_by])
    adjusted: list[tuple[np.ndarray, np.ndarray]] = [raw[-1]]
    for k in range(order - 1, 0, -1):  # continuation counts from the order above
        keys, counts = raw[k - 1]
        above = from_keys(raw[k][0], k + 1)
        suffix_keys, extensions = np.unique(as_keys(above[:, 1:]), return_counts=True)
        found, at = _lookup(suffix_keys, keys)
        cont = np.where(found, extensions[at], 0)
        starts_bos = from_keys(keys, k)[:, 0] == bos
        adjusted.insert(0, (keys, np.where(starts_bos, counts, cont).astype(np.int64)))
    tables: list[Order] = []
    lower_prob: np.ndarray | None = None
    for k in range(1, order + 1):
        keys, a = adjusted[k - 1]
        ids = from_keys(keys, k)
        if k == 1:  # <s> is never predicted: it takes no part in the unigram distribution
            keep = ids[:, 0] != bos
            d, fallback = discounts(a[keep & (a > 0)])
        else:
            keep = np.ones(len(keys), dtype=bool)
            d, fallback = discounts(a)
        discounted = np.maximum(a - d[np.minimum(a, 3)], 0.0) * keep
        # per context (the first k-1 ids): total adjusted count and the backoff mass
        if k == 1:
            context_index = np.zeros(len(keys), dtype=np.int64)
            n_contexts = 1
        else:
            context_keys = as_keys(ids[:, :-1])
            starts = np.flatnonzero(np.r_[True, context_keys[1:] != context_keys[:-1]])
            context_index = np.cumsum(np.r_[False, context_keys[1:] != context_keys[:-1]])
            n_contexts = len(starts)
        totals = np.bincount(context_index, weights=a * keep, minlength=n_contexts)
        mass = np.bincount(context_index, weights=d[np.minimum(a, 3)] * keep, minlength=n_contexts)
        gamma = mass / totals
        if k == 1:
            uniform = 1.0 / (vocab_size - 1)
            prob = discounted / totals[0] + gamma[0] * uniform
        else:
            assert lower_prob is not None
            lower_keys = tables[-1].keys
            found, at = _lookup(lower_keys, as_keys(ids[:, 1:]))
            assert found.all()  # every suffix of a seen n-gram was seen
            prob = discounted / totals[context_index] + gamma[context_index] * lower_prob[at]
        log10_prob = np.where(keep, np.log10(np.where(keep, prob, 1.0)), -99.0)
        tables.append(Order(keys, log10_prob, np.zeros(len(keys)), tuple(d[1:]), fallback))
        if k > 1:  # the backoff of each context, stored on the context's own n-gram
            context_rows = ids[starts, :-1]
            found, at = tables[-2].find(as_keys(context_rows))
            assert found.all()
            tables[-2].log10_backoff[at] = np.log10(gamma)
        lower_prob = np.where(keep, prob, 0.0)
        report(f"estimated the {k}-gram probabilities ({k}/{order})")
    if any(thresholds):
        tables = prune_tables(tables, [counts for _, counts in raw], thresholds)
        kept = ", ".join(f"{len(t.keys):,}" for t in tables)
        report(f"pruned with thresholds {thresholds}: {kept} n-grams kept by order")
    return tables


def prune_thresholds(prune: Sequence[int], order: int) -> list[int]:
    """One count threshold per order from ``prune`` as lmplz takes it (``0 0 1``: drop the
    trigrams and longer seen once; the last value holds for the orders after it); ValueError
    unless they are integers ≥ 0, non-decreasing, the unigrams' 0."""
    values = [int(t) for t in prune]
    if not values:
        return [0] * order
    if any(t < 0 for t in values) or values[0] != 0:
        raise ValueError(f"prune thresholds must be ≥ 0 and 0 for the unigrams, got {values}")
    if any(b < a for a, b in itertools.pairwise(values)):
        raise ValueError(f"prune thresholds must not decrease from order to order, got {values}")
    if len(values) > order:
        raise ValueError(f"{len(values)} prune thresholds for an order-{order} model")
    return values + [values[-1]] * (order - len(values))


def prune_tables(
    tables: list[Order], counts: Sequence[np.ndarray], thresholds: Sequence[int]
) -> list[Order]:
    """Drop each n-gram of order k ≥ 2 seen at most ``thresholds[k-1]`` times (``counts``: the
    raw counts, aligned with each table's keys), keep the others' probabilities, and give
    every context the backoff that makes its distribution sum to 1 again:

        γ(h) = (1 − Σ_kept p(w | h)) / (1 − Σ_kept p(w | h'))   over the w kept after h

    (p(w | h') from the pruned lower orders; a context left with no extension gets γ = 1).
    Thresholds that do not decrease keep the structure whole: a kept n-gram's prefix and
    suffix were seen at least as often, so they are kept too.
    """
    pruned = [Order(tables[0].keys, tables[0].log10_prob, tables[0].log10_backoff.copy(),
                    tables[0].discounts, tables[0].fallback)]  # fmt: skip
    for t, c, threshold in zip(tables[1:], counts[1:], thresholds[1:], strict=True):
        keep = c > threshold
        pruned.append(Order(t.keys[keep], t.log10_prob[keep], t.log10_backoff[keep].copy(),
                            t.discounts, t.fallback))  # fmt: skip
    for k in range(2, len(pruned) + 1):  # bottom up: p(w | h') needs the lower backoffs final
        table, lower = pruned[k - 1], pruned[k - 2]
        lower.log10_backoff[:] = 0.0  # a context without kept extensions backs off for free
        if len(table.keys) == 0:
            continue
        ids = table.ids()
        context_keys = as_keys(ids[:, :-1])
        new_context = np.r_[True, context_keys[1:] != context_keys[:-1]]
        context_index = np.cumsum(new_context) - 1
        here = np.bincount(context_index, weights=10.0**table.log10_prob)
        below = 10.0 ** log10_probs(pruned[: k - 1], ids[:, 1:-1], ids[:, -1])
        there = np.bincount(context_index, weights=below)
        tiny = np.finfo(np.float64).tiny
        gamma = np.maximum(1.0 - here, tiny) / np.maximum(1.0 - there, tiny)
        found, at = lower.find(context_keys[new_context])
        assert found.all()  # the thresholds do not decrease: every kept prefix is kept
        lower.log10_backoff[at] = np.log10(gamma)
    return pruned


def _lookup(table: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found, index) of each key in the sorted ``table``."""
    at = np.minimum(np.searchsorted(table, keys), max(len(table) - 1, 0))
    return (table[at] == keys) if len(table) else np.zeros(len(keys), dtype=bool), at


def log10_probs(tables: list[Order], contexts: np.ndarray, words: np.ndarray) -> np.ndarray:
    """log10 p(word | context) for each row, by backing off: contexts (M, N−1) ids, right-
    aligned (the word's predecessors, the nearest last), padded on the left with −1 where the
    history is shorter (at a sentence start, after <s>).

    A word found first at order k scores its k-gram's probability plus the backoffs of the
    longer contexts it passed (those that are stored; an unstored one costs nothing). Each
    table is searched once, for its n-grams and contexts together: a query costs N binary
    searches however many rows it has, which keeps a small one (a candidates call) cheap.
    """
    M, N = len(words), len(tables)
    rows = np.concatenate([contexts[:, contexts.shape[1] - (N - 1) :], words[:, None]], axis=1)
    depth = 1 + (rows[:, :-1] >= 0).sum(axis=1)  # the highest order each row can use
    ids = np.where(rows < 0, 0, rows)
    result = np.zeros(M)  # log10 p where found, and the backoffs passed before that
    done = np.zeros(M, dtype=bool)
    for k in range(N, 0, -1):  # longest match first
        table = tables[k - 1]
        if len(table.keys) == 0:  # nothing stored at this order (pruned away): γ = 1, no hits
            continue
        # this order's n-grams, then (for the order above) the k words before each word
        both = ids[:, N - k :]
        if k < N:
            both = np.concatenate([both, ids[:, N - 1 - k : -1]])
        found, at = table.find(as_keys(both))
        if k < N:  # the order above missed: add the backoff of its context, where stored
            use = found[M:] & ~done & (depth > k)
            result += np.where(use, table.log10_backoff[at[M:]], 0.0)
        hit = found[:M] & ~done & (depth >= k)
        result += np.where(hit, table.log10_prob[at[:M]], 0.0)
        done |= hit
    return result


def log10_distribution(tables: list[Order], history: np.ndarray) -> np.ndarray:
    """log10 p(w | history) for every word id at once, shape (V,): the same numbers as
    ``log10_probs`` row by row, from the back-off structure instead of V lookups.

    Start from the unigram row; for each longer suffix of the history that is a stored context,
    add its backoff to every word and write its own n-grams over it (the n-grams extending one
    context are a contiguous range of the sorted table, found with two binary searches).
    ``history``: the predecessors, nearest last, −1 where there is none (before ``<s>``).
    """
    missing = np.flatnonzero(np.asarray(history) < 0)
    suffix = np.asarray(history[missing[-1] + 1 if len(missing) else 0 :], dtype=np.int64)
    result = tables[0].log10_prob.astype(np.float64)  # the unigrams are every id, in id order
    for k in range(2, min(len(tables), len(suffix) + 1) + 1):
        context = suffix[len(suffix) - (k - 1) :]
        found, at = tables[k - 2].find(as_keys(context[None]))
        if found[0]:  # a context never stored backs off for free (γ = 1)
            result += tables[k - 2].log10_backoff[at[0]]
        table = tables[k - 1]
        lo = np.searchsorted(table.keys, as_keys(np.append(context, 0)[None]))[0]
        hi = np.searchsorted(table.keys, as_keys(np.append(context, 0xFFFFFFFF)[None]))[0]
        if hi > lo:
            result[from_keys(table.keys[lo:hi], k)[:, -1]] = table.log10_prob[lo:hi]
    return result
