"""The vocabulary: a stable, bidirectional map between tokens and integer ids.

Ids 0, 1, 2 are always ``<unk>``, ``<s>`` and ``</s>``; the rest are ordered by descending count,
then by the token itself, so the same counts always give the same ids.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from model.values import show

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
SPECIALS = (UNK, BOS, EOS)


class Vocabulary:
    """Tokens ↔ ids, with unknown tokens mapped to ``<unk>``."""

    unk_id, bos_id, eos_id = 0, 1, 2

    def __init__(self, tokens: Sequence[str], counts: Sequence[int] | None = None) -> None:
        if tuple(tokens[:3]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}, got {tuple(tokens[:3])}")
        if len(set(tokens)) != len(tokens):
            dupes = sorted(t for t, c in Counter(tokens).items() if c > 1)[:5]
            raise ValueError(f"duplicate tokens in vocabulary: {dupes}")
        if counts is not None and len(counts) != len(tokens):
            raise ValueError(f"{len(counts)} counts for {len(tokens)} tokens")
        self.tokens: list[str] = list(tokens)
        self.counts: list[int] = list(counts) if counts is not None else [0] * len(tokens)
        self._ids: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(
        cls, counts: Mapping[str, int], min_count: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """Keep tokens seen at least ``min_count`` times, at most ``max_size`` ids in all.

        ``max_size`` counts the three special tokens; occurrences of a literal ``<unk>`` in the
        corpus (Penn Treebank has them) count towards ``<unk>``.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        if max_size is not None and max_size < len(SPECIALS):
            raise ValueError(f"max_size must be at least {len(SPECIALS)}, got {max_size}")
        kept = sorted(
            ((t, c) for t, c in counts.items() if c >= min_count and t not in SPECIALS),
            key=lambda tc: (-tc[1], tc[0]),
        )
        if max_size is not None:
            kept = kept[: max_size - len(SPECIALS)]
        special_counts = [counts.get(t, 0) for t in SPECIALS]
        return cls(list(SPECIALS) + [t for t, _ in kept], special_counts + [c for _, c in kept])

    @classmethod
    def from_corpus(
        cls, sentences: Iterable[Sequence[str]], min_count: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """Count the tokens of tokenised sentences and build the vocabulary from them."""
        counts: Counter[str] = Counter()
        for sentence in sentences:
            counts.update(sentence)
        return cls.build(counts, min_count=min_count, max_size=max_size)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens)"

    def id(self, token: str) -> int:
        """The id of ``token``, or of ``<unk>`` when it is not in the vocabulary."""
        return self._ids.get(token, self.unk_id)

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        """Token strings → ids, shape (len(tokens),), int64."""
        # map over the dict's get: about half a generator's time (a history has thousands)
        ids = map(self._ids.get, tokens, itertools.repeat(self.unk_id))
        return np.fromiter(ids, dtype=np.int64, count=len(tokens))

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids → token strings."""
        return [self.tokens[int(i)] for i in ids]

    def to_dict(self) -> dict[str, list[str] | list[int]]:
        return {"tokens": self.tokens, "counts": self.counts}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Vocabulary:
        """Rebuild from ``to_dict`` output (a checkpoint's vocabulary file), types checked.

        ``tokens`` must be non-empty strings and ``counts`` (optional) integers ≥ 0 (not bools):
        ``str()``/``int()`` coercion would turn a damaged file into a different vocabulary.
        The constructor checks the rest (specials first, no duplicates, one count per token).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"must be an object, got {type(data).__name__}")
        unknown = sorted(set(data) - {"tokens", "counts"})
        if unknown:
            raise ValueError(f"unknown vocabulary keys: {unknown}")
        tokens = _checked_list(
            data, "tokens", "a non-empty string", lambda t: isinstance(t, str) and t != ""
        )
        if tokens is None:
            raise ValueError("tokens is missing")
        counts = _checked_list(
            data, "counts", "an integer ≥ 0", lambda c: type(c) is int and c >= 0
        )
        return cls(tokens, counts)  # type: ignore[arg-type]


def _checked_list(
    data: Mapping[str, object], key: str, rule: str, ok: Callable[[Any], bool]
) -> list[object] | None:
    """``data[key]`` if it is a list whose items all pass ``ok``; None when the key is absent."""
    if key not in data:
        return None
    items = data[key]
    if not isinstance(items, list):
        raise ValueError(f"{key} must be a list, got {type(items).__name__}")
    for i, item in enumerate(items):
        if not ok(item):
            raise ValueError(f"{key}[{i}] must be {rule}, got {show(item)}")
    return items
