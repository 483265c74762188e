"""Reading a text corpus: strict UTF-8, and one sentence per line or sentences split from prose.

Two ways to cut text into the sentences that training frames as ``<s> … </s>``:

- ``lines``: every non-blank line is a sentence (Penn Treebank, transcripts, OCR lines).
- ``sentences``: the text is prose with hard-wrapped lines (a book); lines of a paragraph are
  joined and cut after sentence-final punctuation (``. ! ?`` and ``。！？``, with closing quotes).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from model.text.tokenize import Tokenizer

SPLITS = ("lines", "sentences")
# A sentence runs to the first end mark (with any closing quotes) that is followed by a space or the
# end of the paragraph; CJK end marks need no space after them.
# A sentence runs to a stop (. ! ? … then closing quotes or brackets, then a space or the end) or
# to 。！？ (then closing quotes). The possessive quantifiers and the look-behind (a stop is tried
# only where a run of them begins) keep it linear: a request's `history` goes through it, and
# the plain form backtracked quadratically on a long run of stops ("......x": 200k chars took
# minutes). The same sentences as the plain form on every corpus in shared/data.
_SENTENCE = re.compile(
    r"""[.!?…][.!?…]++["'”’)\]]*+(?=\s|$)"""
    r"""|\S.*?(?:(?<![.!?…])[.!?…]++["'”’)\]]*+(?=\s|$)|[。！？]+[”’」』]*|$)""",
    re.S,
)
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


class CorpusError(ValueError):
    """The corpus cannot be used; the message names the file and what is wrong."""


def read_text(path: str | Path) -> str:
    """The file's text; a clear error for a missing, empty or non-UTF-8 file, saying where."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CorpusError(f"{path}: is a directory, expected a text file") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise CorpusError(
            f"{path}: not UTF-8 at line {line}, column {column} (byte offset {e.start}: "
            f"0x{data[e.start]:02x}); convert the file first, e.g. iconv -f GB18030 -t UTF-8 "
            "(Chinese) or -f latin1 (Western European), or repair a cut multi-byte character"
        ) from None
    if not text.strip():
        raise CorpusError(f"{path}: the file is empty")
    return text.removeprefix("\ufeff")  # a byte-order mark is not text


def split_text(text: str, split: str) -> list[str]:
    """Cut text into sentences (see the module docstring); blank results are dropped."""
    if split == "lines":
        return [line for line in text.splitlines() if line.strip()]
    if split == "sentences":
        sentences: list[str] = []
        for paragraph in _PARAGRAPH_BREAK.split(text):
            joined = " ".join(paragraph.split())  # unwrap the lines of one paragraph
            sentences.extend(m.group().strip() for m in _SENTENCE.finditer(joined))
        return sentences
    raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")


def load_sentences(path: str | Path, tokenizer: Tokenizer, split: str) -> list[list[str]]:
    """Tokenised sentences of a corpus file; sentences without tokens are dropped."""
    sentences = (tokenizer(s) for s in split_text(read_text(path), split))
    return [s for s in sentences if s]


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
