"""Tokenizers: text → tokens, shared by training and serving so both see the same units.

Three schemes, chosen per model and stored in its checkpoint:

- ``whitespace``: split on runs of whitespace; for pre-tokenised text such as Penn Treebank.
- ``words``: Unicode-aware regex words (letters, digits, inner apostrophes and hyphens) and single
  punctuation marks, optionally lower-cased.
- ``chars``: one token per character, with each run of whitespace kept as one space token; the
  natural unit for Chinese and for OCR.
- ``jieba``: Chinese words as the jieba segmenter cuts them (我 / 昨天 / 上学 / 迟到 / 了), with its
  own dictionary; spaces dropped. An optional extra: ``pip install 'nextword[zh]'``.

All schemes first apply Unicode NFC normalisation, so a composed "é" and "e" + combining accent
map to the same token.
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from model.values import show

TOKENIZERS = ("whitespace", "words", "chars", "jieba")

# A word is a run of letters/digits, optionally joined by inner apostrophes or hyphens
# ("don't", "state-of-the-art"); anything else that is not a space is a token of its own.
# (’ is the typographic apostrophe.)
_WORD_RE = re.compile(r"\w+(?:['’\-]\w+)*|[^\w\s]")
_SPACE_RE = re.compile(r"\s+")
SPACE_TOKEN = " "


@dataclass(frozen=True)
class Tokenizer:
    """Turns a string into tokens; its fields are saved in the checkpoint's ``config.json``."""

    name: str = "whitespace"  # one of TOKENIZERS
    lowercase: bool = False  # lower-case before splitting (Unicode-aware str.lower)

    def __post_init__(self) -> None:
        if self.name not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer {self.name!r}: expected one of {TOKENIZERS}")

    def __call__(self, text: str) -> list[str]:
        """Split ``text`` into tokens."""
        text = unicodedata.normalize("NFC", text)
        if self.lowercase:
            text = text.lower()
        if self.name == "whitespace":
            return text.split()
        if self.name == "words":
            return _WORD_RE.findall(text)
        if self.name == "jieba":
            return [w for w in jieba_segmenter().lcut(text) if not w.isspace()]
        return list(_SPACE_RE.sub(SPACE_TOKEN, text.strip()))

    def library_versions(self) -> dict[str, str]:
        """The version of each library the tokenisation depends on (jieba's segmentation and
        dictionary change between releases): recorded with a model trained on it."""
        if self.name != "jieba":
            return {}
        jieba_segmenter()  # the clear error when it is missing
        import jieba

        return {"jieba": str(jieba.__version__)}

    def detokenize(self, tokens: list[str]) -> str:
        """Join tokens back into display text (characters are joined without separators)."""
        return "".join(tokens) if self.name in ("chars", "jieba") else " ".join(tokens)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Tokenizer:
        """Rebuild from ``to_dict`` output (a checkpoint's "tokenizer" section), types checked.

        An unknown key is an error: it would be an option this version cannot apply, and the
        text would be split differently from training without a word.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"must be an object, got {type(data).__name__}")
        unknown = sorted(set(data) - {"name", "lowercase"})
        if unknown:
            raise ValueError(f"unknown tokenizer keys: {unknown}")
        name, lowercase = data.get("name"), data.get("lowercase", False)
        if name not in TOKENIZERS:  # also catches a missing name and non-strings
            raise ValueError(f"name must be one of {TOKENIZERS}, got {show(name)}")
        if not isinstance(lowercase, bool):
            raise ValueError(f"lowercase must be true or false, got {show(lowercase)}")
        return cls(name=str(name), lowercase=lowercase)


@functools.cache
def jieba_segmenter() -> Any:
    """jieba's segmenter with its shipped dictionary, loaded once (about 2 s, then cached on disk
    by jieba); a clear error when the optional extra is not installed."""
    try:
        import jieba
    except ImportError:
        raise ValueError(
            "the jieba tokenizer needs the jieba package: pip install 'nextword[zh]'"
        ) from None
    jieba.setLogLevel(logging.WARNING)  # not "Building prefix dict ..." on every start
    segmenter = jieba.Tokenizer()
    segmenter.initialize()
    return segmenter
