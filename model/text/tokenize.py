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

``normalize="spoken"`` then rewrites the text the way speech recognisers (and most OCR reranking
set-ups) write it, before any scheme splits it (``spoken_form``): lower case; no punctuation or
symbols; an apostrophe kept only inside a word (``don't``, ``traveller's``; ’ and ʼ count as ');
a hyphen or slash splits words (``state-of-the-art`` → ``state of the art``); a number stays as
written, one token with its inner separators (``1,000``, ``3.5``, ``10:30``), not spelled out.
Training text and requests go through the same function, so a model trained on punctuated
prose answers unpunctuated transcripts as it was trained.
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
NORMALIZATIONS = ("none", "spoken")

# A word is a run of letters/digits, optionally joined by inner apostrophes or hyphens
# ("don't", "state-of-the-art"); anything else that is not a space is a token of its own.
# (’ is the typographic apostrophe.)
_WORD_RE = re.compile(r"\w+(?:['’\-]\w+)*|[^\w\s]")
_SPACE_RE = re.compile(r"\s+")
SPACE_TOKEN = " "
# Spoken form keeps numbers with inner separators, and words with inner apostrophes; a word's
# characters are letters, digits and combining marks (Devanagari vowel signs, Thai tone marks,
# Arabic harakat: without them "हिन्दी" fell apart). Everything between two kept pieces goes.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'", "\u2018": "'"})
# Scripts written without spaces between words (Chinese, Japanese, Thai, Lao, Khmer, Myanmar):
# punctuation right between two of their characters leaves nothing (你好，世界 → 你好世界);
# anywhere else (Korean included, which spaces its words) it leaves one space.
_UNSPACED = re.compile(
    r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u2e80-\u9fff\uf900-\ufaff\u3040-\u30ff]"
)


@functools.cache
def _spoken_re() -> re.Pattern[str]:
    """The pattern of the pieces spoken form keeps, made on first use: the class of combining
    marks comes from this Python's Unicode database (a scan of every code point, ~0.3 s)."""
    marks: list[str] = []
    start = None
    for code in range(0x110001):
        is_mark = code < 0x110000 and unicodedata.category(chr(code)).startswith("M")
        if is_mark and start is None:
            start = code
        elif not is_mark and start is not None:
            marks.append(f"{re.escape(chr(start))}-{re.escape(chr(code - 1))}")
            start = None
    letter = rf"(?:[^\W_]|[{''.join(marks)}])"
    return re.compile(rf"\d+(?:[.,:]\d+)+|{letter}+(?:'{letter}+)*")


def spoken_form(text: str) -> str:
    """``text`` as a recogniser would write it: lower case, no punctuation (see the module
    docstring). Idempotent, and it leaves text without punctuation as it is (but for case)."""
    text = unicodedata.normalize("NFC", text.lower()).translate(_APOSTROPHES)
    pieces: list[str] = []
    end = 0
    for m in _spoken_re().finditer(text):
        if pieces:
            gap = text[end : m.start()]
            joined = (  # nothing but marks between two characters of an unspaced script
                not any(c.isspace() for c in gap)
                and _UNSPACED.match(text[end - 1])
                and _UNSPACED.match(m.group()[0])
            )
            pieces.append("" if joined else " ")
        pieces.append(m.group())
        end = m.end()
    return "".join(pieces)


@dataclass(frozen=True)
class Tokenizer:
    """Turns a string into tokens; its fields are saved in the checkpoint's ``config.json``."""

    name: str = "whitespace"  # one of TOKENIZERS
    lowercase: bool = False  # lower-case before splitting (Unicode-aware str.lower)
    normalize: str = "none"  # one of NORMALIZATIONS: "spoken" also lower-cases

    def __post_init__(self) -> None:
        if self.name not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer {self.name!r}: expected one of {TOKENIZERS}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(
                f"unknown normalization {self.normalize!r}: expected one of {NORMALIZATIONS}"
            )
        if self.normalize == "spoken":
            _spoken_re()  # made now, when a model loads, not in its first request

    def __call__(self, text: str) -> list[str]:
        """Split ``text`` into tokens."""
        text = unicodedata.normalize("NFC", text)
        if self.lowercase:
            text = text.lower()
        if self.normalize == "spoken":
            text = spoken_form(text)
        if self.name == "whitespace":
            return text.split()
        if self.name == "words":
            return text.split() if self.normalize == "spoken" else _WORD_RE.findall(text)
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
        """The checkpoint's "tokenizer" section; ``normalize`` only when it is not "none", so a
        model without it loads in versions from before the option (a rollback)."""
        data: dict[str, object] = asdict(self)
        if self.normalize == "none":
            del data["normalize"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Tokenizer:
        """Rebuild from ``to_dict`` output (a checkpoint's "tokenizer" section), types checked.

        An unknown key is an error: it would be an option this version cannot apply, and the
        text would be split differently from training without a word.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"must be an object, got {type(data).__name__}")
        unknown = sorted(set(data) - {"name", "lowercase", "normalize"})
        if unknown:
            raise ValueError(f"unknown tokenizer keys: {unknown}")
        name, lowercase = data.get("name"), data.get("lowercase", False)
        normalize = data.get("normalize", "none")  # checkpoints from before it: none
        if name not in TOKENIZERS:  # also catches a missing name and non-strings
            raise ValueError(f"name must be one of {TOKENIZERS}, got {show(name)}")
        if not isinstance(lowercase, bool):
            raise ValueError(f"lowercase must be true or false, got {show(lowercase)}")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {show(normalize)}")
        return cls(name=str(name), lowercase=lowercase, normalize=str(normalize))


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
