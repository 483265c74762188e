"""Chinese homophone reranking: can the model tell which 同音字 belongs in the sentence?

    python bench/homophones.py --test runs/zh-data/test.txt --model runs/zh --model runs/zh-kn5
    python bench/homophones.py --test runs/zh-data/test.txt --items 1000 --dump /tmp/hz.jsonl \\
        --model runs/zh
    python bench/homophones.py --items-from /tmp/hz.jsonl --model runs/zh-mix --json out.json

A pinyin recogniser (speech or IME input) hears the syllable and must pick the character, so its
typical error is a homophone. Each item is a test sentence with one CJK character replaced by
candidates of the same toneless pinyin (pypinyin's single-character reading), drawn from the
characters such a recogniser outputs: every CJK character of ``--charset`` (default: train.txt
beside the test file). By default the confusions are the most frequent homophones of that text,
any tone (``--confusions frequent``): a recogniser that knows the language proposes common
characters, and a rare confusion is easy to reject (picking the most frequent candidate alone
gets 87 % on random confusions). ``--confusions random`` samples them, same tone first.

Two accuracies, the truth strictly best (a tie is wrong, e.g. two candidates both ``<unk>``):

- sentence: log P(<s> sentence-with-candidate </s>), the right context counts (N-best rescoring);
- next-char: log P(candidate | <s> left context), as a left-to-right decoder sees it.

Sentence accuracy is also split by whether any character of the item (sentence or candidates) is
outside the model's vocabulary: an out-of-vocabulary candidate is scored as ``<unk>``, which can
flatter or punish it for reasons that have nothing to do with the text. ``--dump`` writes the
items and ``--items-from`` reads them back, so every model is scored on the same items.
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import statistics
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pypinyin import Style, lazy_pinyin

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.inference.checkpoint import load_checkpoint
from model.inference.language_model import LanguageModel

MIN_CHARS = 8
BATCH_ITEMS = 50  # items scored together (all their candidate sentences in one call)
BATCH_SIZE = 64  # sentences per forward pass inside score_sentences


@dataclass
class Item:
    """One test: ``sentence[position]`` is ``candidates[truth]``; the others are homophones."""

    sentence: str
    position: int
    candidates: list[str]
    truth: int

    def variant(self, candidate: str) -> list[str]:
        """The sentence's characters with ``candidate`` at the position."""
        chars = list(self.sentence)
        chars[self.position] = candidate
        return chars

    def characters(self) -> set[str]:
        return set(self.sentence) | set(self.candidates)


@dataclass
class Homophones:
    """Candidate characters grouped by pinyin, each group sorted by codepoint (a fixed order)."""

    toneless: dict[str, list[str]]  # "shi" -> every character read shi, any tone
    tone: dict[str, str]  # character -> its TONE3 reading ("shi4"; neutral tone has no digit)
    charset_size: int
    frequency: dict[str, int]  # character -> its count in the charset text


@dataclass
class BuildStats:
    """What building the items met, to judge how far the items cover the test text."""

    sentences: int = 0  # test sentences of at least MIN_CHARS characters
    drawn: int = 0  # sentences looked at
    cjk_positions: int = 0  # CJK characters in the drawn sentences
    with_homophones: int = 0  # of them, those having at least one homophone in the charset
    truth_outside_charset: int = 0  # items whose true character the charset lacks


@dataclass
class ModelResult:
    model: str
    kind: str
    items: int
    sentence_accuracy: float
    next_char_accuracy: float
    items_oov: int
    items_no_oov: int
    sentence_accuracy_oov: float | None
    sentence_accuracy_no_oov: float | None
    next_char_accuracy_no_oov: float | None
    load_seconds: float
    sentence_seconds: float
    next_char_seconds: float


# ------------------------------------------------------------------ pinyin
def is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


@functools.cache
def reading(ch: str, style: Style) -> str | None:
    """pypinyin's single most common reading of ``ch``; None when it has none (it echoes back
    characters it does not know)."""
    (syllable,) = lazy_pinyin(ch, style=style)
    return syllable if syllable.isascii() and syllable.isalnum() else None


def homophone_index(charset_text: str) -> Homophones:
    """Group every CJK character of the charset text by its toneless pinyin."""
    counts = Counter(ch for ch in charset_text if is_cjk(ch))
    chars = sorted(counts)
    toneless: dict[str, list[str]] = defaultdict(list)
    tone: dict[str, str] = {}
    for ch in chars:
        plain, toned = reading(ch, Style.NORMAL), reading(ch, Style.TONE3)
        if plain is None or toned is None:
            continue
        toneless[plain].append(ch)
        tone[ch] = toned
    return Homophones(dict(toneless), tone, len(chars), dict(counts))


def pool(ch: str, index: Homophones) -> list[str]:
    """Every charset character read like ``ch`` (any tone), ``ch`` itself left out."""
    plain = reading(ch, Style.NORMAL)
    return [c for c in index.toneless.get(plain or "", []) if c != ch]


@functools.cache
def unseen_index(charset: frozenset[str]) -> dict[str, list[str]]:
    """CJK characters of pypinyin's whole dictionary (about 21,000) that the charset lacks, by
    toneless reading, codepoint-sorted: candidates no model trained on this text has seen."""
    from pypinyin.pinyin_dict import pinyin_dict

    out: dict[str, list[str]] = defaultdict(list)
    for code in sorted(pinyin_dict):
        ch = chr(code)
        if is_cjk(ch) and ch not in charset and (plain := reading(ch, Style.NORMAL)):
            out[plain].append(ch)
    return dict(out)


def unseen_confusions(ch: str, index: Homophones, k: int, rng: np.random.Generator) -> list[str]:
    """Up to ``k`` homophones of ``ch`` from outside the charset, seeded random choice."""
    options = unseen_index(frozenset(index.tone)).get(reading(ch, Style.NORMAL) or "", [])
    return [options[i] for i in rng.permutation(len(options))[:k]]


def confusions(
    ch: str, index: Homophones, k: int, rng: np.random.Generator, frequent: bool = True
) -> list[str]:
    """Up to ``k`` homophones of ``ch``. ``frequent``: the ``k`` most common ones in the charset
    text, any tone (what a recogniser that hears the syllable and knows the language would
    propose: the hard case). Otherwise same tone first, then other tones, each group in a
    seeded random order over the codepoint-sorted list (mostly rare characters: easy)."""
    if frequent:
        ranked = sorted(pool(ch, index), key=lambda c: (-index.frequency[c], c))
        return ranked[:k]
    toned = reading(ch, Style.TONE3)
    same = [c for c in pool(ch, index) if index.tone[c] == toned]
    other = [c for c in pool(ch, index) if index.tone[c] != toned]
    ordered = [g[i] for g in (same, other) for i in rng.permutation(len(g))]
    return ordered[:k]


# ------------------------------------------------------------------ items
def read_sentences(path: Path) -> list[str]:
    """One sentence a line, NFC-normalised as the model's tokenizer would, spaces dropped."""
    text = unicodedata.normalize("NFC", path.read_text(encoding="utf-8"))
    return [s for s in ("".join(line.split()) for line in text.splitlines()) if s]


def build_items(
    sentences: Sequence[str],
    index: Homophones,
    n: int,
    k: int,
    seed: int,
    frequent: bool = True,
    unseen: int = 0,
) -> tuple[list[Item], BuildStats]:
    """Up to ``n`` items from distinct random sentences; each at a random CJK position that
    has a homophone (positions without one are skipped), truth shuffled in among ``k`` - 1
    confusions."""
    rng = np.random.default_rng(seed)
    eligible = [s for s in sentences if len(s) >= MIN_CHARS]
    stats, items = BuildStats(sentences=len(eligible)), []
    charset = set(index.tone)
    for s in (eligible[i] for i in rng.permutation(len(eligible))):
        if len(items) == n:
            break
        stats.drawn += 1
        cjk = [pos for pos, ch in enumerate(s) if is_cjk(ch)]
        options = [pos for pos in cjk if pool(s[pos], index)]
        stats.cjk_positions += len(cjk)
        stats.with_homophones += len(options)
        if not options:
            continue
        pos = options[int(rng.integers(len(options)))]
        candidates = [s[pos], *confusions(s[pos], index, k - 1, rng, frequent)]
        candidates += unseen_confusions(s[pos], index, unseen, rng) if unseen else []
        order = rng.permutation(len(candidates))
        shuffled = [candidates[i] for i in order]
        items.append(Item(s, pos, shuffled, int(np.argmin(order))))
        stats.truth_outside_charset += s[pos] not in charset
    return items, stats


def write_items(path: Path, items: Sequence[Item]) -> None:
    lines = (json.dumps(asdict(item), ensure_ascii=False) for item in items)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def read_items(path: Path) -> list[Item]:
    """Items from a ``--dump`` file, checked so a hand-edited file cannot score nonsense."""
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        item = Item(**json.loads(line))
        if item.sentence[item.position] != item.candidates[item.truth]:
            raise ValueError(f"{path}:{number}: the truth is not the character at the position")
        items.append(item)
    return items


# ------------------------------------------------------------------ scoring
def batches(items: Sequence[Item], size: int = BATCH_ITEMS) -> Iterator[Sequence[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def strictly_best(scores: Sequence[float], truth: int) -> bool:
    """The truth wins only without a tie: equal scores (both <unk>) tell nothing."""
    return all(scores[truth] > s for i, s in enumerate(scores) if i != truth)


def sentence_correct(lm: LanguageModel, items: Sequence[Item]) -> list[bool]:
    """Each item's candidates as whole sentences, all of a batch of items in one call."""
    correct = []
    for batch in batches(items):
        variants = [item.variant(c) for item in batch for c in item.candidates]
        flat = [s.log_prob for s in lm.score_sentences(variants, batch_size=BATCH_SIZE)]
        for item in batch:
            scores, flat = flat[: len(item.candidates)], flat[len(item.candidates) :]
            correct.append(strictly_best(scores, item.truth))
    return correct


def next_char_correct(lm: LanguageModel, items: Sequence[Item]) -> list[bool]:
    """Each item's candidates after its left context only (empty at a sentence's start)."""
    correct = []
    for batch in batches(items):
        requests = [
            (list(item.sentence[: item.position]), [[c] for c in item.candidates]) for item in batch
        ]
        for item, scored in zip(batch, lm.score_candidates_batch(requests), strict=True):
            correct.append(strictly_best([c.log_prob for c in scored], item.truth))
    return correct


def share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def kind(lm: LanguageModel) -> str:
    """The table's label: ngram, interpolation, or a network's class and cell."""
    arch = lm.architecture()
    return str(arch.get("kind") or f"{type(lm).__name__} {arch.get('cell', '')}".strip())


def evaluate(path: str, items: Sequence[Item]) -> ModelResult:
    """Load one checkpoint and score every item both ways, timing each."""
    start = time.perf_counter()
    lm = load_checkpoint(path)
    loaded = time.perf_counter()
    if lm.tokenizer.name != "chars":
        sys.stderr.write(f"{path}: tokenizer {lm.tokenizer.name!r}, not chars; scoring chars\n")
    by_sentence = sentence_correct(lm, items)
    scored = time.perf_counter()
    by_next = next_char_correct(lm, items)
    done = time.perf_counter()
    oov = [any(ch not in lm.vocab for ch in item.characters()) for item in items]
    with_oov = [c for c, o in zip(by_sentence, oov, strict=True) if o]
    clean = [c for c, o in zip(by_sentence, oov, strict=True) if not o]
    clean_next = [c for c, o in zip(by_next, oov, strict=True) if not o]
    return ModelResult(
        model=path,
        kind=kind(lm),
        items=len(items),
        sentence_accuracy=share(by_sentence) or 0.0,
        next_char_accuracy=share(by_next) or 0.0,
        items_oov=len(with_oov),
        items_no_oov=len(clean),
        sentence_accuracy_oov=share(with_oov),
        sentence_accuracy_no_oov=share(clean),
        next_char_accuracy_no_oov=share(clean_next),
        load_seconds=loaded - start,
        sentence_seconds=scored - loaded,
        next_char_seconds=done - scored,
    )


# ------------------------------------------------------------------ report
def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def table(results: Sequence[ModelResult]) -> str:
    head = (
        "| model | kind | items | sentence % | next-char % | sentence %, no OOV (n) "
        "| sentence %, OOV (n) | next-char %, no OOV | sentence s | next-char s |"
    )
    rows = [head, "|" + "---|" * 10]
    for r in results:
        rows.append(
            f"| {r.model} | {r.kind} | {r.items} | {percent(r.sentence_accuracy)} "
            f"| {percent(r.next_char_accuracy)} "
            f"| {percent(r.sentence_accuracy_no_oov)} ({r.items_no_oov}) "
            f"| {percent(r.sentence_accuracy_oov)} ({r.items_oov}) "
            f"| {percent(r.next_char_accuracy_no_oov)} "
            f"| {r.sentence_seconds:.1f} | {r.next_char_seconds:.1f} |"
        )
    return "\n".join(rows)


def describe(item: Item) -> str:
    """The sentence with the position bracketed, and the candidates with their readings."""
    marked = f"{item.sentence[: item.position]}[{item.sentence[item.position]}]"
    marked += item.sentence[item.position + 1 :]
    cands = " ".join(
        f"{'*' if i == item.truth else ''}{c}({reading(c, Style.TONE3)})"
        for i, c in enumerate(item.candidates)
    )
    return f"  {marked}\n    candidates (* truth): {cands}"


def item_summary(items: Sequence[Item]) -> dict[str, Any]:
    sizes = [len(item.candidates) for item in items]
    return {
        "items": len(items),
        "mean_candidates": statistics.fmean(sizes) if sizes else 0.0,
        "chance_accuracy": statistics.fmean(1 / n for n in sizes) if sizes else 0.0,
        "candidates_histogram": {str(n): sizes.count(n) for n in sorted(set(sizes))},
    }


# ------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--test", type=Path, help="one sentence a line (not with --items-from)")
    parser.add_argument("--charset", type=Path, help="default: train.txt beside --test")
    parser.add_argument("--model", action="append", default=[], help="checkpoint (repeatable)")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--candidates", type=int, default=5, help="max per item, with the truth")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--confusions",
        choices=("frequent", "random"),
        default="frequent",
        help="the most common homophones in the charset text (hard, what a recogniser proposes) "
        "or random ones, same tone first (mostly rare characters: easy)",
    )
    parser.add_argument(
        "--unseen",
        type=int,
        default=0,
        help="add this many homophones the charset lacks (from pypinyin's dictionary): a model "
        "must not let a character it never saw borrow the probability of <unk>",
    )
    parser.add_argument("--dump", type=Path, help="write the items as JSON lines")
    parser.add_argument("--items-from", type=Path, help="read items written by --dump")
    parser.add_argument("--json", type=Path, help="write the results")
    parser.add_argument("--examples", type=int, default=2, help="items to print")
    args = parser.parse_args(argv)
    if (args.test is None) == (args.items_from is None):
        parser.error("give exactly one of --test and --items-from")
    if args.candidates < 2:
        parser.error("--candidates must be at least 2 (the truth and one homophone)")
    return args


def make_items(args: argparse.Namespace) -> tuple[list[Item], dict[str, Any]]:
    """The items, read back or built; and how they were come by, for the report."""
    if args.items_from is not None:
        return read_items(args.items_from), {"items_from": str(args.items_from)}
    charset_path = args.charset or args.test.parent / "train.txt"
    index = homophone_index(charset_path.read_text(encoding="utf-8"))
    items, stats = build_items(
        read_sentences(args.test),
        index,
        args.items,
        args.candidates,
        args.seed,
        args.confusions == "frequent",
        args.unseen,
    )
    source = {
        "test": str(args.test),
        "charset": str(charset_path),
        "charset_cjk": index.charset_size,
        "syllables": len(index.toneless),
        "seed": args.seed,
        "confusions": args.confusions,
        "unseen": args.unseen,
        **asdict(stats),
    }
    return items, source


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print("$ " + shlex.join([Path(sys.executable).name, *sys.argv]))
    items, source = make_items(args)
    summary = item_summary(items)
    print(json.dumps({**source, **summary}, ensure_ascii=False))
    if len(items) < args.items and args.items_from is None:
        sys.stderr.write(f"only {len(items)} items could be built ({args.items} asked)\n")
    if args.dump is not None:
        write_items(args.dump, items)
        print(f"items written to {args.dump}")
    for item in items[: args.examples]:
        print(describe(item))
    if not items:
        sys.stderr.write("no items\n")
        return 1
    results = [evaluate(path, items) for path in args.model]
    if results:
        print(f"\n{len(items)} items, chance {percent(summary['chance_accuracy'])} %\n")
        print(table(results))
    if args.json is not None:
        report = {
            "command": sys.argv,
            **source,
            **summary,
            "models": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
