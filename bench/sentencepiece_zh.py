"""Characters or sentencepiece pieces for Chinese? Kneser-Ney 5-grams over each, and with
``--network EPOCHS`` the ``bench/zh.toml`` LSTM over each, on 红楼梦's test chapters (issue 30,
item 4).

    pip install sentencepiece
    python bench/zh_data.py --out runs/zh-data
    python bench/sentencepiece_zh.py --pieces 6000 10000 20000
    python bench/sentencepiece_zh.py --pieces 6000 --network 3   # + the network, 3 epochs each

Each model's text: the characters (``--tokenizer chars``), or the pieces of a sentencepiece
unigram model (byte fallback, character coverage 0.9995) trained on the training chapters,
written space-separated and read with ``--tokenizer whitespace``. Every test sentence alone, its
``</s>`` counted; the figure is nats per character of the test text (the same text whatever the
unit), closed (an unknown unit gets <unk>'s probability) and open (its spelling's share added).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.inference.checkpoint import load_checkpoint  # noqa: E402

NEXTWORD = str(Path(sys.executable).parent / "nextword")


def ngram(train: Path, tokenizer: str, out: Path, order: int) -> None:
    command = [NEXTWORD, "ngram", "--train", str(train), "--tokenizer", tokenizer,
               "--order", str(order), "--out", str(out), "--force"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)


def network(train: Path, valid: Path, tokenizer: str, out: Path, epochs: int) -> None:
    """``bench/zh.toml``'s network on ``train`` cut by ``tokenizer``, for ``epochs`` epochs."""
    command = [NEXTWORD, "train", "--config", str(ROOT / "bench" / "zh.toml"),
               "--train", str(train), "--valid", str(valid), "--test", str(valid),
               "--tokenizer", tokenizer, "--epochs", str(epochs), "--out", str(out),
               "--force"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)


def nats(model: Path, texts: list[str]) -> tuple[float, float]:
    """(closed, open) negative log-likelihood of ``texts``, each sentence alone."""
    lm = load_checkpoint(model)
    sentences = [s for s in (lm.tokenize(t) for t in texts) if s]
    closed = -float(lm.text_log_probs(sentences).sum())
    spelled = 0.0
    if lm.spelling is not None:
        spelled = sum(lm.spelling.log_prob(w) for s in sentences for w in s if w not in lm.vocab)
    return closed, closed - spelled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "runs" / "zh-data")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "zh-pieces")
    parser.add_argument("--pieces", type=int, nargs="+", default=[6000, 10000, 20000])
    parser.add_argument("--order", type=int, default=5)
    parser.add_argument("--network", type=int, default=0, help="also train the LSTM, epochs")
    args = parser.parse_args()
    import sentencepiece as spm  # the optional extra: pip install sentencepiece

    args.work.mkdir(parents=True, exist_ok=True)
    train = (args.data / "train.txt").read_text().splitlines()
    test = [line for line in (args.data / "test.txt").read_text().splitlines() if line.strip()]
    chars = sum(len(line) for line in test)
    valid = args.data / "valid.txt"
    ngram(args.data / "train.txt", "chars", args.work / "chars", args.order)
    rows = {"characters": nats(args.work / "chars", test)}
    if args.network:
        network(args.data / "train.txt", valid, "chars", args.work / "rnn-chars", args.network)
        rows["characters, LSTM"] = nats(args.work / "rnn-chars", test)
    for size in args.pieces:
        prefix = args.work / f"sp{size}"
        spm.SentencePieceTrainer.train(
            input=str(args.data / "train.txt"), model_prefix=str(prefix), vocab_size=size,
            model_type="unigram", character_coverage=0.9995, byte_fallback=True, minloglevel=2,
        )  # fmt: skip
        sp = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
        pieces = prefix.with_suffix(".train.txt")
        pieces.write_text("".join(" ".join(sp.encode(t, out_type=str)) + "\n" for t in train))
        ngram(pieces, "whitespace", args.work / f"kn-sp{size}", args.order)
        test_pieces = [" ".join(sp.encode(t, out_type=str)) for t in test]
        rows[f"sentencepiece unigram {size}"] = nats(args.work / f"kn-sp{size}", test_pieces)
        if args.network:
            valid_pieces = prefix.with_suffix(".valid.txt")
            valid_pieces.write_text("".join(
                " ".join(sp.encode(t, out_type=str)) + "\n" for t in valid.read_text().splitlines()
            ))  # fmt: skip
            out = args.work / f"rnn-sp{size}"
            network(pieces, valid_pieces, "whitespace", out, args.network)
            rows[f"sentencepiece unigram {size}, LSTM"] = nats(out, test_pieces)
    print(json.dumps({"test_characters": chars, "order": args.order, "nats_per_character": {
        name: {"closed": round(c / chars, 4), "open": round(o / chars, 4)}
        for name, (c, o) in rows.items()}}, indent=1, ensure_ascii=False))  # fmt: skip


if __name__ == "__main__":
    main()
