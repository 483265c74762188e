"""Edit distances for the recogniser benchmarks: word errors (WER's numerator) and character
errors (CER's), so every script counts errors the same way.

Both are plain Levenshtein distances (substitutions, insertions and deletions cost 1), counted
against the reference; divide a sum over utterances by the sum of reference lengths for a rate.
"""

from __future__ import annotations

from collections.abc import Sequence


def edit_distance(ref: Sequence[object], hyp: Sequence[object]) -> int:
    """Fewest substitutions, insertions and deletions turning ``ref`` into ``hyp``; one row of
    the dynamic-programming table at a time, since the lists are sentence-sized."""
    if len(hyp) > len(ref):
        ref, hyp = hyp, ref  # the distance is symmetric; keep the row the shorter one
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[-1]


def word_errors(ref: list[str], hyp: list[str]) -> int:
    """Word errors of ``hyp`` against ``ref`` (lists of words): WER's numerator."""
    return edit_distance(ref, hyp)


def char_errors(ref: str, hyp: str) -> int:
    """Character errors of ``hyp`` against ``ref``, spaces included, as the strings are given:
    CER's numerator."""
    return edit_distance(ref, hyp)


def biased_errors(ref: list[str], hyp: list[str], biased: set[str]) -> tuple[int, int]:
    """(errors on biased words, errors on the others) of one alignment of least edit distance
    (Le et al. 2021's B-WER and U-WER numerators): a substitution or deletion counts for the
    reference word's class, an insertion for the inserted word's. The two add up to the word
    errors."""
    n, m = len(ref), len(hyp)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        table[i][0] = i
    for j in range(m + 1):
        table[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1,
                              table[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]))  # fmt: skip
    on_biased = on_others = 0
    i, j = n, m
    while i > 0 or j > 0:  # back through the table: diagonal first, then deletion, insertion
        if i > 0 and j > 0 and table[i][j] == table[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            if ref[i - 1] != hyp[j - 1]:
                on_biased += ref[i - 1] in biased
                on_others += ref[i - 1] not in biased
            i, j = i - 1, j - 1
        elif i > 0 and table[i][j] == table[i - 1][j] + 1:
            on_biased += ref[i - 1] in biased
            on_others += ref[i - 1] not in biased
            i -= 1
        else:
            on_biased += hyp[j - 1] in biased
            on_others += hyp[j - 1] not in biased
            j -= 1
    return on_biased, on_others
