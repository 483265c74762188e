"""The sentences the recogniser benchmarks read aloud or print: text none of the evaluated models
trained on (issue 13).

- ``ptb``: sentences of ``ptb.valid.txt`` (the PTB models never train on it; ``ptb.test.txt`` is
  kept out: it is the project's own held-out check) without ``<unk>`` or ``N`` (a recogniser
  cannot say or print a token that stands for a word nobody knows) and with words of letters only
  (no ``&``, ``co.``, ``short-term``: what a recogniser writes would not map back), 5 to 20 words.
- ``tm``: sentences of the last 10 % of *The Time Machine*, the part the default model holds out
  for validation (no PTB model saw any of the book), 5 to 20 words, in PTB's form: lower case,
  letters only, clitics split off (``don't`` → ``do n't``).

``text`` is always in PTB's form, the form the models read and WER is counted in; ``display``
joins the clitics back for a voice to say or a line to print, and ``normalise`` turns what a
recogniser writes back into PTB's form.

Each text has an ``id``, its ``source`` and a ``split``: alternately ``dev`` (weights are tuned
there) and ``test`` (figures are reported there), in a fixed random order (``seed``).
"""

from __future__ import annotations

import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from model.text.corpus import read_text, split_text  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
PTB_VALID = DATA / "ptb" / "ptb.valid.txt"
TIME_MACHINE = DATA / "timemachine.txt"
MIN_WORDS, MAX_WORDS = 5, 20
HELD_OUT_FRACTION = 0.1  # the default model's valid_fraction: its validation part of the book
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
_CLITIC = re.compile(r"(n't|'s|'m|'re|'ll|'ve|'d)$")
_JOIN = re.compile(r" (n't|'s|'m|'re|'ll|'ve|'d|')(?= |$)")


@dataclass(frozen=True)
class Text:
    id: str  # e.g. "ptb-0007"
    source: str  # "ptb" or "tm"
    split: str  # "dev" or "test"
    text: str  # lower case, words separated by single spaces


def normalise(text: str) -> str:
    """What a recogniser wrote, in PTB's form: lower case, words and clitics, no punctuation."""
    tokens: list[str] = []
    for word in _WORD.findall(text.lower().replace("’", "'")):
        clitic = _CLITIC.search(word)
        if clitic and clitic.start() > 0:
            tokens += [word[: clitic.start()], clitic.group()]
        elif word.endswith("s'"):  # a plural's possessive: PTB writes "specialists '"
            tokens += [word[:-1], "'"]
        else:
            tokens.append(word.strip("'"))
    return " ".join(t for t in tokens if t)


def display(text: str) -> str:
    """PTB's form as a person writes it: clitics joined back (``do n't`` → ``don't``)."""
    return _JOIN.sub(r"\1", text)


def ptb_sentences(path: Path = PTB_VALID) -> list[str]:
    """Validation sentences a person could say and write back unchanged: no ``<unk>``, no
    ``N``, letters and clitics only, 5–20 words."""
    lines = [" ".join(line.split()) for line in path.read_text().splitlines()]
    return [
        line
        for line in lines
        if MIN_WORDS <= len(line.split()) <= MAX_WORDS
        and "<unk>" not in line.split()
        and "N" not in line.split()
        and normalise(display(line)) == line
    ]


def time_machine_sentences(path: Path = TIME_MACHINE) -> list[str]:
    """The book's last 10 % of sentences in PTB's form, 5–20 words."""
    sentences = split_text(read_text(path), "sentences")
    held_out = sentences[round(len(sentences) * (1 - HELD_OUT_FRACTION)) :]
    words = [normalise(s).split() for s in held_out]
    return [" ".join(w) for w in words if MIN_WORDS <= len(w) <= MAX_WORDS]


# the book's cast: words no Penn Treebank model has in its vocabulary (issue 31, bias)
NAMES = ("weena", "eloi", "morlock", "morlocks", "filby")
DOCUMENT_SENTENCES = 10  # a document: this many consecutive sentences of the book
PTB_DOCUMENT_LINES = 40  # a PTB document: this many consecutive validation lines


def name_documents(limit: int) -> list[Text]:
    """Documents of the book that name its cast: the book cut into runs of
    ``DOCUMENT_SENTENCES`` consecutive sentences, those that mention a name, each sentence of
    3–25 words in PTB's form kept in order. Ids ``names-DDD-SS`` (document, sentence); whole
    documents alternate between ``dev`` and ``test``; the first ``limit`` documents. A PTB model
    never saw the book, so all of it is held out for it."""
    sentences = [normalise(s) for s in split_text(read_text(TIME_MACHINE), "sentences")]
    texts: list[Text] = []
    documents = 0
    for start in range(0, len(sentences), DOCUMENT_SENTENCES):
        block = [s for s in sentences[start : start + DOCUMENT_SENTENCES]
                 if 3 <= len(s.split()) <= 25]  # fmt: skip
        if not any(w in NAMES for s in block for w in s.split()):
            continue
        split = "dev" if documents % 2 == 0 else "test"
        texts += [Text(f"names-{documents:03d}-{k:02d}", "names", split, s)
                  for k, s in enumerate(block)]  # fmt: skip
        documents += 1
        if documents == limit:
            break
    return texts


def ptb_documents(limit: int) -> list[Text]:
    """Documents for reranking with history (issue 31, item 5): ``ptb.valid.txt`` in order, cut
    into runs of ``PTB_DOCUMENT_LINES`` consecutive lines, each keeping the lines a person could
    say and write back (``ptb_sentences``' test: about one in four); ids ``ptbdoc-DDD-SS``;
    whole documents alternate between ``dev`` and ``test``; the first ``limit`` documents with
    two lines or more."""
    sayable = set(ptb_sentences())
    lines = [" ".join(line.split()) for line in PTB_VALID.read_text().splitlines()]
    texts: list[Text] = []
    documents = 0
    for start in range(0, len(lines), PTB_DOCUMENT_LINES):
        block = [line for line in lines[start : start + PTB_DOCUMENT_LINES] if line in sayable]
        if len(block) < 2:
            continue
        split = "dev" if documents % 2 == 0 else "test"
        texts += [Text(f"ptbdoc-{documents:03d}-{k:02d}", "ptbdoc", split, line)
                  for k, line in enumerate(block)]  # fmt: skip
        documents += 1
        if documents == limit:
            break
    return texts


def select(per_source: int, seed: int = 0) -> list[Text]:
    """``per_source`` texts from each source (all of it if it has fewer), drawn at random; dev and
    test alternate. The benchmarks take 300 a source: 300 PTB sentences and all 138 of the book."""
    texts: list[Text] = []
    for source, sentences in (("ptb", ptb_sentences()), ("tm", time_machine_sentences())):
        rng = np.random.default_rng(seed)
        picked = rng.choice(len(sentences), min(per_source, len(sentences)), replace=False)
        for k, i in enumerate(picked.tolist()):
            split = "dev" if k % 2 == 0 else "test"
            texts.append(Text(f"{source}-{k:04d}", source, split, sentences[i]))
    return texts


if __name__ == "__main__":
    import json

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    for t in select(n):
        print(json.dumps(asdict(t)))
