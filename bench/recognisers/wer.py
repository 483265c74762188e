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
