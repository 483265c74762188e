"""Split 红楼梦 by chapter into train / valid / test, one sentence a line (issue 12).

    python bench/zh_data.py --out runs/zh-data     # then: nextword train --config bench/zh.toml

Chapters 1–100 train, 101–110 validate, 111–120 test: the test chapters come after every
training chapter (and are from the continuation, a different hand), so the test set is out of
the training text's stretch of the story. Sentences are cut after 。！？ (with closing quotes);
spaces are dropped, so the character tokenizer sees only the text.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.text.corpus import read_text, split_text

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared/data/hongloumeng.txt"
CHAPTER = re.compile(r"^\s*第[一二三四五六七八九十百零〇]+回(?=\u3000|\s*$)", re.M)  # headings only
PARTS = {"train": (1, 100), "valid": (101, 110), "test": (111, 120)}


def chapters(text: str) -> list[str]:
    starts = [m.start() for m in CHAPTER.finditer(text)]
    return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]


def sentences(chapter: str) -> list[str]:
    body = chapter.split("\n", 1)[1] if "\n" in chapter else ""  # the title line is no prose
    cut = split_text(body.replace("\u3000", " "), "sentences")
    return [s for s in ("".join(s.split()) for s in cut) if len(s) >= 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default=str(DEFAULT_SOURCE))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    found = chapters(read_text(args.source))
    if len(found) != 120:
        sys.stderr.write(f"{args.source}: expected 120 chapters, found {len(found)}\n")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, (first, last) in PARTS.items():
        lines = [s for ch in found[first - 1 : last] for s in sentences(ch)]
        (out / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        chars = sum(map(len, lines))
        print(f"{name}: chapters {first}-{last}, {len(lines):,} sentences, {chars:,} characters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
