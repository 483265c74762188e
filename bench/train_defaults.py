"""What `nextword train`'s defaults give on corpora of different sizes, beside other settings and
n-gram models with the same vocabulary (issue 28).

    python bench/train_defaults.py --corpus calls book --setting default old tuned
    python bench/train_defaults.py --corpus ptb --setting default --jobs 1 --threads 2

Corpora (made under runs/defaults/ on first use; the text options are the corpus's own and are
the same for every setting):

    calls        bench/domain_text.py: 600 call-centre utterances, ~6k tokens, spoken form
    book         The Time Machine, first 90 % of its sentences (~33k tokens), last 10 % test
    shakespeare  Tiny Shakespeare, the first 35k words, the next 8k test
    zh           红楼梦 chapters 1–25 as characters (~200k), tested on chapters 111–120
    ptb          Penn Treebank, its own train / valid / test (~930k tokens)

Settings are option lists for `nextword train` (SETTINGS below; ``default`` gives none). Every
run holds out its own validation text as a user's run would (PTB uses ptb.valid.txt), and is
scored on the test text. For each corpus the KN5 and unigram models take the vocabulary of the
``default`` run (``nextword ngram --vocab-from``), so their perplexities compare with it; runs
with another vocabulary (``old`` keeps every word, min_count 1) get their own n-grams, marked.
Each run appends a JSON line to runs/defaults/results.jsonl; the table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.text.corpus import read_text, split_text  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
RUNS = ROOT / "runs" / "defaults"
NEXTWORD = [sys.executable, "-m", "app.cli"]

# The options of `nextword train` before issue 28, spelt out, so "old" stays what it was.
OLD = ["--optimizer", "sgd", "--lr", "20", "--lr-decay", "0.25", "--clip", "0.25",
       "--dropout", "0", "--no-tie-weights", "--batch-size", "20", "--epochs", "10",
       "--min-count", "1", "--warmup", "0", "--patience", "3"]  # fmt: skip
SETTINGS: dict[str, list[str]] = {
    "default": [],
    "old": OLD,
    "adam-old": [*OLD[:2], "adam", "--lr", "0.002", *OLD[4:]],  # the old defaults with Adam
}


def make_calls(where: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "bench/domain_text.py"), "--out", str(where)],
                   check=True)  # fmt: skip


def make_book(where: Path) -> None:
    sentences = split_text(read_text(ROOT / "model/resources/timemachine.txt"), "sentences")
    cut = round(len(sentences) * 0.9)
    write(where / "train.txt", sentences[:cut])
    write(where / "test.txt", sentences[cut:])


def make_shakespeare(where: Path) -> None:
    lines = [line for line in read_text(SHARED / "tiny-shakespeare.txt").splitlines() if line]
    cut = first_words(lines, 35_000)
    end = cut + first_words(lines[cut:], 8_000)
    write(where / "train.txt", lines[:cut])
    write(where / "test.txt", lines[cut:end])


def make_zh(where: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from zh_data import chapters, sentences

    found = chapters(read_text(SHARED / "hongloumeng.txt"))
    write(where / "train.txt", [s for ch in found[:25] for s in sentences(ch)])
    write(where / "test.txt", [s for ch in found[110:120] for s in sentences(ch)])


def first_words(lines: list[str], words: int) -> int:
    """How many of the first lines hold ``words`` words."""
    count = 0
    for i, line in enumerate(lines):
        count += len(line.split())
        if count >= words:
            return i + 1
    return len(lines)


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


# name: (make the files or None when they exist elsewhere, text options, files)
CORPORA: dict[str, tuple[Callable[[Path], None] | None, list[str]]] = {
    "calls": (make_calls, []),
    "book": (make_book, ["--tokenizer", "words", "--normalize", "spoken"]),
    "shakespeare": (make_shakespeare, ["--tokenizer", "words", "--normalize", "spoken"]),
    "zh": (make_zh, ["--tokenizer", "chars"]),
    "ptb": (None, []),
}


def files(corpus: str) -> dict[str, Path]:
    if corpus == "ptb":
        return {k: SHARED / "ptb" / f"ptb.{k}.txt" for k in ("train", "valid", "test")}
    where = RUNS / corpus
    make, _ = CORPORA[corpus]
    if not (where / "test.txt").exists() and make is not None:
        make(where)
    return {"train": where / "train.txt", "test": where / "test.txt"}


def data_options(corpus: str) -> list[str]:
    return [arg for key, path in files(corpus).items() for arg in (f"--{key}", str(path))]


def train(corpus: str, setting: str, threads: int) -> dict[str, object]:
    out = RUNS / "out" / f"{corpus}-{setting}"
    command = [
        *NEXTWORD,
        "train",
        *data_options(corpus),
        *CORPORA[corpus][1],
        *SETTINGS[setting],
        "--out",
        str(out),
        "--force",
        "--progress-every",
        "0",
    ]
    start = time.perf_counter()
    done = run(command, threads, out / "train.log")
    record: dict[str, object] = {"corpus": corpus, "setting": setting, "kind": "rnn",
                                 "options": SETTINGS[setting], "seconds": round(
                                     time.perf_counter() - start, 1), "ok": done}  # fmt: skip
    if done:
        metadata = json.loads((out / "config.json").read_text())["metadata"]
        epochs = (out / "metrics.jsonl").read_text().count("\n")
        record |= {
            "test_ppl": metadata.get("test_perplexity"),
            "test_isolated_ppl": metadata.get("test_isolated_perplexity"),
            "oov_rate": metadata.get("test_oov_rate"),
            "vocab": len(json.loads(next(out.glob("vocab.*.json")).read_text())["tokens"]),
            "epochs_run": epochs,
            "best_epoch": metadata.get("epoch"),
            "train_tokens": metadata["corpus"]["train_tokens"],
            "batch_size": metadata["training"]["batch_size"],
            "in_epoch_tok_s": metadata.get("tokens_per_s"),
        }
    return record


def ngram(corpus: str, order: int, vocab_from: str, threads: int) -> dict[str, object]:
    out = RUNS / "out" / f"{corpus}-kn{order}-{vocab_from}"
    options = ["--vocab-from", str(RUNS / "out" / f"{corpus}-{vocab_from}")]
    command = [*NEXTWORD, "ngram", "--train", str(files(corpus)["train"]), "--test",
               str(files(corpus)["test"]), "--order", str(order), *options, "--out", str(out),
               "--force"]  # fmt: skip
    done = run(command, threads, out.with_suffix(".log"))
    metadata = json.loads((out / "config.json").read_text())["metadata"] if done else {}
    return {"corpus": corpus, "setting": f"KN{order}" if order > 1 else "unigram",
            "kind": "ngram", "vocab_from": vocab_from, "ok": done,
            "test_ppl": metadata.get("test_perplexity"),
            "oov_rate": metadata.get("test_oov_rate")}  # fmt: skip


def run(command: list[str], threads: int, log: Path) -> bool:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    with log.open("w") as f:
        return subprocess.run(command, env=env, stdout=f, stderr=f, cwd=ROOT).returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    parser.add_argument("--setting", nargs="*", default=["default", "old"])
    parser.add_argument("--extra", nargs="*", default=[], metavar="NAME=OPTIONS",
                        help='more settings, e.g. lr3="--lr 0.003"')  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads per run")
    parser.add_argument("--ngram-vocab", nargs="*", default=["default", "old"],
                        help="settings whose vocabulary the n-grams take (when run)")  # fmt: skip
    args = parser.parse_args()
    for spec in args.extra:
        name, _, options = spec.partition("=")
        SETTINGS[name] = options.split()
        args.setting.append(name)
    results = RUNS / "results.jsonl"
    RUNS.mkdir(parents=True, exist_ok=True)
    for corpus in args.corpus:
        files(corpus)
    jobs = [(c, s) for c in args.corpus for s in args.setting]
    with ThreadPoolExecutor(args.jobs) as pool:
        records = list(pool.map(lambda job: train(*job, args.threads), jobs))
        grams = [(c, order, s) for c in args.corpus for s in args.ngram_vocab
                 if s in args.setting for order in (5, 1)]  # fmt: skip
        if grams:
            records += pool.map(lambda job: ngram(*job, args.threads), grams)
    with results.open("a") as f:
        for record in records:
            record["date"] = time.strftime("%Y-%m-%d %H:%M")
            f.write(json.dumps(record) + "\n")
    print("| corpus | setting | test ppl | isolated | OOV | vocab | epochs (best) | batch | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in records:
        name = (
            r["setting"] if r["kind"] == "rnn" else f"{r['setting']} (vocab of {r['vocab_from']})"
        )
        print(
            f"| {r['corpus']} | {name} | {r.get('test_ppl')} | {r.get('test_isolated_ppl', '')} "
            f"| {r.get('oov_rate')} | {r.get('vocab', '')} | {r.get('epochs_run', '')} "
            f"({r.get('best_epoch', '')}) | {r.get('batch_size', '')} | {r.get('seconds', '')} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
