"""An open vocabulary: a probability for every word outside the vocabulary, from its spelling.

A word model gives all the words it does not know one probability together, ``P(<unk> | h)``.
Handing that whole mass to each unknown word scores "Weena", "Weeno" and "zzz" alike, and above
most real words. Here the mass is shared out by spelling:

    P(w | h) = P(<unk> | h) · P_spell(w | w ∉ V)        for w outside the vocabulary V

    P_spell(w | w ∉ V) = P_char(w) / (1 − P_char("") − Σ_{v ∈ V} P_char(v))

``P_char`` is an interpolated Kneser-Ney character n-gram over ``<w> c_1 … c_n </w>`` (the
project's own estimator, ``model.ngram.kneser_ney``), trained on word types: it is a proper
distribution over all finite strings. A character it never saw is its ``<unk>`` symbol's
probability shared evenly among the Unicode scalar values it did not see, so every string of
Unicode characters has a probability. Dividing by the mass of the strings the vocabulary holds
(and of the empty string, never a word) leaves a distribution over exactly the strings outside
V, so the words in V and out of it together sum to 1 after any history: the *event space* is
every non-empty string. Every model kind gets this from the same class: its own
``P(<unk> | h)`` times the spelling's share.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from model.ngram.checks import check_model
from model.ngram.kneser_ney import Order, as_keys, estimate

LN10 = math.log(10.0)
METHOD = "char-kneser-ney"
DEFAULT_ORDER = 5
# the Unicode scalar values (code points less the surrogates): what an unseen character may be
SCALAR_VALUES = 0x110000 - 0x800
UNSEEN, START, END = "\x00", "\x01", "\x02"  # symbols 0, 1, 2: an unseen character, <w>, </w>
CACHE_ENTRIES = 1 << 16  # words whose log-probability is kept (a document repeats its names)


class SpellingError(ValueError):
    """A spelling model that cannot be built or loaded as given."""


class SpellingModel:
    """``log P_spell(w | w ∉ V)`` for any word; ``fit`` ties it to a vocabulary's V."""

    def __init__(
        self, characters: str, tables: list[Order], trained_on: Mapping[str, Any] | None = None
    ) -> None:
        """``characters``: the characters seen, in symbol order (symbol 3 is the first);
        ``tables``: the Kneser-Ney tables over the symbols (``estimate``'s)."""
        if len(set(characters)) != len(characters):
            raise SpellingError("spelling: the characters repeat")
        if any(c in (UNSEEN, START, END) for c in characters):
            raise SpellingError("spelling: characters U+0000-U+0002 are reserved")
        if not 1 <= len(tables) <= 10:
            raise SpellingError(f"spelling: order {len(tables)}; it must be 1 to 10")
        check_model(tables, len(characters) + 3)  # the n-gram checks, for any n-gram model
        self.characters, self.tables = characters, tables
        self.order = len(tables)
        self.trained_on = dict(trained_on or {})
        self.unseen_log = math.log(SCALAR_VALUES - len(characters))  # share of each unseen one
        symbols = UNSEEN + START + END + characters
        self._seen = frozenset(characters)
        # n-gram → log10 probability, context → log10 backoff, keyed by their symbols' string
        self._prob: dict[str, float] = {}
        self._backoff: dict[str, float] = {}
        for table in tables:
            for ids, p, b in zip(table.ids().tolist(), table.log10_prob.tolist(),
                                 table.log10_backoff.tolist(), strict=True):  # fmt: skip
                key = "".join(symbols[i] for i in ids)
                self._prob[key] = p
                if b:
                    self._backoff[key] = b
        self.log_z = 0.0  # log of the mass outside V: set by ``fit``
        self.vocabulary_size: int | None = None
        self._cache: dict[str, float] = {}

    # ------------------------------------------------------------ building
    @classmethod
    def train(
        cls, words: Iterable[str], order: int = DEFAULT_ORDER, source: str = "vocabulary"
    ) -> SpellingModel:
        """The character model of the word types in ``words`` (each type counted once: the
        spelling of unseen words resembles that of rare types, not of frequent tokens)."""
        types = sorted({w for w in words if w and not set(w) & {UNSEEN, START, END}})
        if not types:
            raise SpellingError("spelling: no words to learn spellings from")
        characters = "".join(sorted({c for w in types for c in w}))
        index = {c: i + 3 for i, c in enumerate(characters)}
        sequences = [np.array([index[c] for c in w], dtype=np.int64) for w in types]
        longest = max(len(w) for w in types) + 2
        tables = estimate(sequences, len(characters) + 3, min(order, longest), bos=1, eos=2)
        return cls(characters, tables, {"source": source, "types": len(types)})

    def fit(self, vocabulary: Sequence[str]) -> SpellingModel:
        """Tie the model to the words of ``vocabulary`` (V): the normaliser over the strings
        outside it. Returns self."""
        known = [self.char_log_prob(w) for w in set(vocabulary) | {""}]
        inside = math.fsum(math.exp(lp) for lp in known)
        if not inside < 1.0 - 1e-9:
            raise SpellingError(
                f"spelling: the vocabulary's words hold {inside:.12f} of the spelling mass; "
                "nothing is left for words outside it"
            )
        self.log_z = math.log1p(-inside)
        self.vocabulary_size = len(vocabulary)
        self._cache.clear()
        return self

    # ------------------------------------------------------------ scoring
    def char_log_prob(self, word: str) -> float:
        """log P_char(word): the character model's probability of the whole string, ``</w>``
        included (natural log)."""
        return self._log_prob(word, END)

    def prefix_log_prob(self, prefix: str) -> float:
        """log P that a string starts with ``prefix`` (its characters, no ``</w>``): what the
        strings longer than a length hold, for checking that everything sums to 1."""
        return self._log_prob(prefix, "")

    def _log_prob(self, word: str, end: str) -> float:
        symbols = START + "".join(c if c in self._seen else UNSEEN for c in word) + end
        n, prob, backoff = self.order, self._prob, self._backoff
        total = 0.0
        for i in range(1, len(symbols)):
            history, symbol = symbols[max(0, i - n + 1) : i], symbols[i]
            for k in range(len(history), -1, -1):  # the longest n-gram stored, backing off
                context = history[len(history) - k :]
                p = prob.get(context + symbol)
                if p is not None:
                    total += p
                    break
                total += backoff.get(context, 0.0)
        unseen = symbols.count(UNSEEN)
        return total * LN10 - unseen * self.unseen_log

    def log_prob(self, word: str) -> float:
        """log P_spell(word | word ∉ V) (natural log): the share of ``<unk>``'s probability
        that goes to ``word``. Only for words outside the vocabulary it was fitted to."""
        cached = self._cache.get(word)
        if cached is None:
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.clear()
            cached = self._cache[word] = self.char_log_prob(word) - self.log_z
        return cached

    # ------------------------------------------------------------ the checkpoint section
    def to_dict(self) -> dict[str, Any]:
        """What config.json's ``spelling`` section holds (the tables go in their own file)."""
        return {"method": METHOD, "order": self.order, "characters": self.characters,
                "trained_on": self.trained_on}  # fmt: skip

    def tensors(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for k, t in enumerate(self.tables, start=1):
            out[f"{k}.ids"] = t.ids().astype(np.int32)
            out[f"{k}.log10_prob"] = t.log10_prob.astype(np.float64)
            out[f"{k}.log10_backoff"] = t.log10_backoff.astype(np.float64)
        return out

    @classmethod
    def from_parts(cls, section: Any, tensors: Mapping[str, np.ndarray]) -> SpellingModel:
        """Rebuild from a ``spelling`` section and its tensors; SpellingError naming the field."""
        if not isinstance(section, dict) or section.get("method") != METHOD:
            raise SpellingError(f"spelling: method must be {METHOD!r}")
        if set(section) != {"method", "order", "characters", "trained_on"}:
            raise SpellingError("spelling: the section has method, order, characters, trained_on")
        order, characters = section["order"], section["characters"]
        if not isinstance(order, int) or isinstance(order, bool) or not 1 <= order <= 10:
            raise SpellingError(f"spelling: order must be 1 to 10, got {order!r}")
        if not isinstance(characters, str) or not isinstance(section["trained_on"], dict):
            raise SpellingError("spelling: characters must be a string, trained_on an object")
        expected = {f"{k}.{name}" for k in range(1, order + 1)
                    for name in ("ids", "log10_prob", "log10_backoff")}  # fmt: skip
        if set(tensors) != expected:
            raise SpellingError(f"spelling: the tensors must be {sorted(expected)}")
        tables = []
        for k in range(1, order + 1):
            ids = tensors[f"{k}.ids"]
            if ids.ndim != 2 or ids.shape[1] != k or ids.dtype.kind not in "iu":
                raise SpellingError(f"spelling: {k}.ids must be integer rows of {k}")
            probs, backoffs = tensors[f"{k}.log10_prob"], tensors[f"{k}.log10_backoff"]
            if probs.shape != (len(ids),) or backoffs.shape != (len(ids),):
                raise SpellingError(f"spelling: order {k}'s tensors differ in length")
            if len(ids) and (ids.min() < 0 or ids.max() >= len(characters) + 3):
                raise SpellingError(f"spelling: {k}.ids holds a symbol outside the characters")
            keys = as_keys(ids)
            by_key = np.argsort(keys, kind="stable")
            tables.append(Order(keys[by_key], probs[by_key].astype(np.float64),
                                backoffs[by_key].astype(np.float64)))  # fmt: skip
        try:
            return cls(characters, tables, section["trained_on"])
        except ValueError as e:  # the n-gram checks' own message
            raise SpellingError(f"spelling: {e}") from None

    def describe(self) -> dict[str, Any]:
        """What ``/v1/models`` says of it."""
        return {"method": METHOD, "order": self.order, "characters": len(self.characters),
                **self.trained_on}  # fmt: skip
