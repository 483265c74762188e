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
from model.text.vocab import SPECIALS
from model.values import is_int

LN10 = math.log(10.0)
METHOD = "char-kneser-ney"
DEFAULT_ORDER = 5
# the Unicode scalar values (code points less the surrogates): what an unseen character may be
SCALAR_VALUES = 0x110000 - 0x800
UNSEEN, START, END = "\x00", "\x01", "\x02"  # symbols 0, 1, 2: an unseen character, <w>, </w>
CACHE_ENTRIES = 1 << 16  # words whose log-probability is kept (a document repeats its names)
CACHE_WORD_LENGTH = 64  # longer words are scored again each time: the cache stays a few MB
UNK = "<unk>"
SPECIAL = frozenset(SPECIALS)


def is_count(value: Any) -> bool:
    return is_int(value) and value >= 0


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
        if any(c in (UNSEEN, START, END) or 0xD800 <= ord(c) <= 0xDFFF for c in characters):
            raise SpellingError("spelling: characters U+0000-U+0002 and surrogates are refused")
        trained_on = dict(trained_on or {})
        if not (set(trained_on) <= {"source", "types"}
                and isinstance(trained_on.get("source", ""), str)
                and is_count(trained_on.get("types", 0))):  # fmt: skip
            raise SpellingError("spelling: trained_on has a source (text) and types (a count)")
        if not 1 <= len(tables) <= 10:
            raise SpellingError(f"spelling: order {len(tables)}; it must be 1 to 10")
        check_model(tables, len(characters) + 3)  # the n-gram checks, for any n-gram model
        self.characters, self.tables = characters, tables
        self.order = len(tables)
        self.trained_on = trained_on
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
        self.log_z = 0.0  # log of the mass of the event space outside V: set by ``fit``
        self.vocabulary_size: int | None = None
        self.single_characters = False  # the event space: every string, or single characters
        self._cache: dict[str, float] = {}

    # ------------------------------------------------------------ building
    @classmethod
    def train(
        cls, words: Iterable[str], order: int = DEFAULT_ORDER, source: str = "vocabulary"
    ) -> SpellingModel:
        """The character model of the word types in ``words`` (each type counted once: the
        spelling of unseen words resembles that of rare types, not of frequent tokens; the
        special tokens are no words)."""
        types = sorted({w for w in words if w and not set(w) & {UNSEEN, START, END}} - SPECIAL)
        if not types:
            raise SpellingError("spelling: no words to learn spellings from")
        characters = "".join(sorted({c for w in types for c in w}))
        index = {c: i + 3 for i, c in enumerate(characters)}
        sequences = [np.array([index[c] for c in w], dtype=np.int64) for w in types]
        longest = max(len(w) for w in types) + 2
        tables = estimate(sequences, len(characters) + 3, min(order, longest), bos=1, eos=2)
        return cls(characters, tables, {"source": source, "types": len(types)})

    def fit(self, vocabulary: Sequence[str], single_characters: bool = False) -> SpellingModel:
        """Tie the model to the words of ``vocabulary`` (V): the normaliser over the strings
        outside it. The literal ``<unk>`` is not one of them: it is a string like any other
        outside V (the class of unknown words is ``P(<unk> | h)`` itself, shared out here).
        With ``single_characters`` (a model whose tokenizer cuts text into characters, so no
        token is longer) the event space is the single characters, not every string. Returns
        self."""
        words = set(vocabulary) - {UNK}
        if single_characters:  # the one-character strings: the seen ones, and the unseen class
            outside = [c for c in self.characters if c not in words]
            unseen = self._log_prob(UNSEEN, END) + self.unseen_log  # all of them together
            parts = [self.char_log_prob(c) for c in outside] + [unseen]
            mass = math.fsum(math.exp(lp) for lp in parts)
            if not mass > 1e-300:
                raise SpellingError("spelling: no mass is left for characters outside V")
            self.log_z = math.log(mass)
        else:
            inside = math.fsum(math.exp(self.char_log_prob(w)) for w in words | {""})
            if not inside < 1.0 - 1e-9:
                raise SpellingError(
                    f"spelling: the vocabulary's words hold {inside:.12f} of the spelling mass; "
                    "nothing is left for words outside it"
                )
            self.log_z = math.log1p(-inside)
        self.vocabulary_size, self.single_characters = len(vocabulary), single_characters
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
            cached = self.char_log_prob(word) - self.log_z
            if len(word) <= CACHE_WORD_LENGTH:  # the cache's memory: entries × a short word
                if len(self._cache) >= CACHE_ENTRIES:
                    self._cache.clear()
                self._cache[word] = cached
        return cached

    # ------------------------------------------------------------ the checkpoint section
    def to_dict(self) -> dict[str, Any]:
        """What config.json's ``spelling`` section holds (the tables go in their own file)."""
        return {"method": METHOD, "order": self.order, "trained_on": self.trained_on}

    def tensors(self) -> dict[str, np.ndarray]:
        """The tables and the characters (as code points), in the checkpoint's checksummed
        spelling file."""
        out: dict[str, np.ndarray] = {"characters": np.array([ord(c) for c in self.characters],
                                                             dtype=np.int32)}  # fmt: skip
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
        if set(section) != {"method", "order", "trained_on"}:
            raise SpellingError("spelling: the section has method, order and trained_on")
        order = section["order"]
        if not isinstance(order, int) or isinstance(order, bool) or not 1 <= order <= 10:
            raise SpellingError(f"spelling: order must be 1 to 10, got {order!r}")
        if not isinstance(section["trained_on"], dict):
            raise SpellingError("spelling: trained_on must be an object")
        names = ("ids", "log10_prob", "log10_backoff")
        expected = {"characters"} | {f"{k}.{n}" for k in range(1, order + 1) for n in names}
        if set(tensors) != expected:
            raise SpellingError(f"spelling: the tensors must be {sorted(expected)}")
        points = tensors["characters"]
        if (
            points.ndim != 1
            or points.dtype.kind not in "iu"
            or (len(points) and (points.min() < 0 or points.max() >= 0x110000))
        ):
            raise SpellingError("spelling: characters must be code points")
        characters = "".join(map(chr, points.tolist()))
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
