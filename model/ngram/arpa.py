"""ARPA files: the text format of back-off n-gram models that KenLM, SRILM and pocketsphinx
read and write. log10 probabilities; a backoff (log10) after the n-gram where it is not 0.

    \\data\\
    ngram 1=3
    ngram 2=2

    \\1-grams:
    -1.0    <s>    -0.3
    ...
    \\end\\
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from model.ngram.checks import MAX_ORDER, bad_value, first_repeat
from model.ngram.kneser_ney import Order, as_keys, from_keys
from model.text.vocab import SPECIALS, Vocabulary

ARPA_BLOCK = 100_000  # n-grams formatted at a time
_COUNT_RE = re.compile(r"ngram[ \t]+(\d+)[ \t]*=[ \t]*(\d+)$")
_SECTION_RE = re.compile(r"\\(\d+)-grams:$")
# What separates fields, as KenLM reads ARPA (its kARPASpaces: tab, space and newline, "stricter
# than isspace"): a token may hold U+00A0, U+0085 or U+2028, which Python's split() and
# splitlines() would cut.
_FIELDS_RE = re.compile(r"[ \t]+")


class ArpaError(ValueError):
    """A file that is not a readable ARPA model; the message names the line."""


def write_arpa(path: str | Path, tables: list[Order], vocab: Vocabulary) -> None:
    """Write ``tables`` as an ARPA file (probabilities and backoffs to 7 significant digits),
    streamed a block of n-grams at a time: the text of a large model is never all in memory."""
    tokens = np.array(vocab.tokens, dtype=object)
    with Path(path).open("w", encoding="utf-8") as f:
        f.write("\n".join(["\\data\\"] + [f"ngram {t.order}={len(t.keys)}" for t in tables]))
        f.write("\n\n")
        for t in tables:
            f.write(f"\\{t.order}-grams:\n")
            last = t.order == len(tables)
            for start in range(0, len(t.keys), ARPA_BLOCK):
                block = slice(start, start + ARPA_BLOCK)
                words = tokens[from_keys(t.keys[block], t.order)]
                rows = zip(words, t.log10_prob[block].tolist(), t.log10_backoff[block].tolist(),
                           strict=True)  # fmt: skip
                f.writelines(
                    f"{p:.7g}\t{' '.join(w)}\n"
                    if last or b == 0
                    else f"{p:.7g}\t{' '.join(w)}\t{b:.7g}\n"
                    for w, p, b in rows
                )
            f.write("\n")
        f.write("\\end\\\n")


def read_arpa(path: str | Path) -> tuple[list[Order], Vocabulary]:
    """An ARPA file's tables and vocabulary (its unigrams: the specials first, then in order).

    Read as KenLM reads it: lines end at a newline (a carriage return before it is dropped),
    fields are separated by tabs and spaces only. Unlike KenLM, a UTF-8 byte-order mark at the
    start is skipped (KenLM stops at it), text before the data section is skipped (KenLM allows
    only ``#`` lines), and every number is checked (``model.ngram.checks``), naming the line.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ArpaError(f"{path}: cannot be read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise ArpaError(f"{path}: not UTF-8 text ({e})") from None
    lines = [line.removesuffix("\r") for line in text.removeprefix("\ufeff").split("\n")]
    counts: dict[int, int] = {}
    i = 0
    while i < len(lines) and lines[i].strip(" \t") != "\\data\\":
        i += 1
    if i == len(lines):
        raise ArpaError(f"{path}: no \\data\\ section: not an ARPA file")
    i += 1
    while i < len(lines) and (m := _COUNT_RE.match(lines[i].strip(" \t"))):
        counts[int(m.group(1))] = int(m.group(2))
        i += 1
    if not counts or sorted(counts) != list(range(1, len(counts) + 1)):
        raise ArpaError(f"{path}: line {i + 1}: expected 'ngram N=count' lines for orders 1..N")
    if len(counts) > MAX_ORDER:
        raise ArpaError(f"{path}: orders 1 to {len(counts)}; nextword serves 1 to {MAX_ORDER}")
    sections: dict[int, list[tuple[int, list[str]]]] = {}
    order = 0
    for n in range(i, len(lines)):
        line = lines[n].strip(" \t")
        if not line:
            continue
        if line == "\\end\\":
            break
        if m := _SECTION_RE.match(line):
            order = int(m.group(1))
            sections[order] = []
            continue
        if order == 0:
            raise ArpaError(f"{path}: line {n + 1}: an n-gram before any \\N-grams: section")
        sections[order].append((n + 1, _FIELDS_RE.split(line)))
    for k, expected in counts.items():
        if len(sections.get(k, [])) != expected:
            found = len(sections.get(k, []))
            raise ArpaError(f"{path}: \\{k}-grams: has {found} entries, \\data\\ says {expected}")
    unigrams = [fields[1] if len(fields) > 1 else "" for _, fields in sections.get(1, [])]
    missing = [t for t in SPECIALS if t not in unigrams]
    if missing:
        raise ArpaError(f"{path}: the unigrams lack {missing}")
    vocab = Vocabulary([*SPECIALS, *(t for t in unigrams if t not in SPECIALS)])
    index = {token: i for i, token in enumerate(vocab.tokens)}
    tables = []
    top = len(counts)
    for k in range(1, top + 1):
        entries = sections.get(k, [])  # "ngram 2=0" may come without its section
        widths = {len(fields) for _, fields in entries}
        allowed = {k + 1} if k == top else {k + 1, k + 2}
        if not widths <= allowed:
            n = next(n for n, fields in entries if len(fields) not in allowed)
            raise ArpaError(f"{path}: line {n}: expected a {k}-gram with its probability")
        try:
            prob = np.array([fields[0] for _, fields in entries], dtype=np.float64)
            backoff = np.array(
                [fields[k + 1] if len(fields) == k + 2 else "0" for _, fields in entries],
                dtype=np.float64,
            )
        except ValueError:
            n, fields = next((n, f) for n, f in entries if not _is_number_pair(f, k))
            raise ArpaError(f"{path}: line {n}: not a number: {fields[0]!r}") from None
        bad = bad_value(prob, backoff)
        if bad is not None:
            raise ArpaError(f"{path}: line {entries[bad[0]][0]}: {bad[1]}")
        try:
            ids = np.array([[index[w] for w in fields[1 : k + 1]] for _, fields in entries],
                           dtype=np.int64).reshape(len(entries), k)  # fmt: skip
        except KeyError:
            n, fields = next(
                (n, f) for n, f in entries if any(w not in index for w in f[1 : k + 1])
            )
            raise ArpaError(
                f"{path}: line {n}: a word that is no unigram: {fields[1 : k + 1]}"
            ) from None
        keys = as_keys(ids)
        order_by = np.argsort(keys, kind="stable")
        repeat = first_repeat(keys[order_by])
        if repeat is not None:
            first, again = sorted(entries[j][0] for j in order_by[repeat - 1 : repeat + 1])
            raise ArpaError(f"{path}: line {again}: the {k}-gram of line {first} again")
        tables.append(Order(keys[order_by], prob[order_by], backoff[order_by]))
    return tables, vocab


def _is_number_pair(fields: list[str], k: int) -> bool:
    """The probability (and backoff, when there is one) of an entry parse as numbers."""
    try:
        float(fields[0])
        if len(fields) == k + 2:
            float(fields[k + 1])
    except ValueError:
        return False
    return True
