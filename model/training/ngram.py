"""``nextword ngram``: a Kneser-Ney n-gram model from a corpus, or one imported from an ARPA file.

    nextword ngram --train corpus.txt --order 5 --out models/kn5
    nextword ngram --train ptb.train.txt --valid ptb.valid.txt --test ptb.test.txt --out kn5
    nextword ngram --import model.arpa --out models/imported      # from KenLM, SRILM, ...

The output directory is a checkpoint that ``nextword serve``, ``eval`` and ``info`` load like any
other, plus ``model.arpa``, the same model as a standard ARPA file (KenLM, SRILM and pocketsphinx
read it). Text options (``--tokenizer``, ``--lowercase``, ``--split``, ``--min-count``,
``--max-vocab``) mean what they mean for ``nextword train``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import model
from model.inference.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.inference.evaluation import evaluate_file
from model.inference.ngram_lm import NgramLM
from model.inference.spelling import SpellingModel
from model.network.layers import NonFiniteError
from model.ngram.arpa import ArpaError, read_arpa, write_arpa
from model.ngram.checks import MAX_ORDER, MIN_IDS
from model.ngram.kneser_ney import FALLBACK_DISCOUNTS, estimate, prune_thresholds
from model.text.corpus import SPLITS, CorpusError, file_sha256, load_sentences
from model.text.tokenize import NORMALIZATIONS, TOKENIZERS, Tokenizer
from model.text.vocab import Vocabulary
from model.training.snapshot import TrainingError
from model.training.trainer import check_output_dir

ARPA_FILE = "model.arpa"


def add_ngram_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--train", help="training corpus (UTF-8 text)")
    source.add_argument("--import", dest="arpa", metavar="ARPA", help="an ARPA file to import")
    parser.add_argument("--out", required=True, help="output directory (a checkpoint)")
    parser.add_argument("--order", type=int, default=5, help="n of the n-grams (5)")
    parser.add_argument("--valid", help="a corpus to report the perplexity of")
    parser.add_argument("--test", help="a corpus to report the perplexity of")
    parser.add_argument("--split", choices=SPLITS, default="lines", help="(lines)")
    parser.add_argument(
        "--tokenizer", choices=TOKENIZERS, default="whitespace", help="(whitespace)"
    )
    parser.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument(
        "--normalize",
        choices=NORMALIZATIONS,
        default="none",
        help="spoken: as recognisers write text (as for nextword train) (none)",
    )
    parser.add_argument("--min-count", type=int, default=1, help="rarer words become <unk> (1)")
    parser.add_argument("--max-vocab", type=int, help="at most this many ids, specials included")
    parser.add_argument(
        "--vocab-from",
        metavar="MODEL_DIR",
        help="use this checkpoint's vocabulary and tokenizer exactly (for nextword combine); "
        "replaces --tokenizer, --lowercase, --normalize, --min-count and --max-vocab",
    )
    parser.add_argument(
        "--prune",
        type=int,
        nargs="+",
        metavar="COUNT",
        default=[],
        help="drop n-grams seen at most COUNT times, one threshold per order from the unigrams "
        "(as lmplz: 0 0 1 drops trigrams and longer seen once; the last holds for the orders "
        "after it); backoffs renormalised. Default: no pruning",
    )
    parser.add_argument("--force", action="store_true", help="replace a model already in --out")


def run_ngram(args: argparse.Namespace) -> int:
    """Exit codes: 0 done, 2 bad input or an output that cannot be written."""
    try:
        build(args)
    except (ValueError, CorpusError, ArpaError, CheckpointError, TrainingError, OSError) as e:
        sys.stderr.write(f"nextword ngram: error: {e}\n")
        return 2
    sys.stderr.write(f"model: {args.out} ({ARPA_FILE} beside it)\n")
    return 0


def build(args: argparse.Namespace) -> NgramLM:
    out = Path(args.out)
    check_output_dir(out, resume=False, force=args.force)
    tokenizer = Tokenizer(args.tokenizer, args.lowercase, args.normalize)
    started = time.perf_counter()
    metadata: dict[str, Any]
    if args.arpa and args.prune:
        raise ValueError("--prune applies to a model estimated from --train, not an imported one")
    if args.vocab_from and args.arpa:
        raise ValueError("--vocab-from builds a model from --train; an imported ARPA file keeps "
                         "its own vocabulary")  # fmt: skip
    if args.arpa:
        tables, vocab = read_arpa(args.arpa)
        metadata = {"imported": Path(args.arpa).name, "arpa_sha256": file_sha256(args.arpa)}
        total = sum(len(t.keys) for t in tables)
        log(f"read {args.arpa}: orders 1-{len(tables)}, {total:,} n-grams")
    else:
        if not 1 <= args.order <= MAX_ORDER:
            raise ValueError(f"--order must be 1 to {MAX_ORDER}, got {args.order}")
        try:
            prune_thresholds(args.prune, args.order)
        except ValueError as e:
            raise ValueError(f"--prune: {e}") from None
        if args.min_count < 1:
            raise ValueError(f"--min-count must be a positive integer, got {args.min_count}")
        if args.vocab_from:
            source = load_checkpoint(args.vocab_from)
            vocab, tokenizer = source.vocab, source.tokenizer
            log(f"vocabulary and tokenizer of {args.vocab_from}: {len(vocab):,} ids, "
                f"{tokenizer.to_dict()}")  # fmt: skip
        sentences = load_sentences(args.train, tokenizer, args.split)
        if not args.vocab_from:
            vocab = Vocabulary.from_corpus(
                sentences, min_count=args.min_count, max_size=args.max_vocab
            )
            if len(vocab) < MIN_IDS:  # the loader's bound: refused before counting, not after
                raise ValueError(
                    f"{args.train}: the vocabulary has {len(vocab) - 3} words besides <unk>, <s> "
                    f"and </s> (--min-count {args.min_count}); need at least 1"
                )
        ids = [vocab.encode(s) for s in sentences]
        log(f"{len(sentences):,} sentences, vocabulary {len(vocab):,}; counting {args.order}-grams")
        tables = estimate(
            ids, len(vocab), args.order, vocab.bos_id, vocab.eos_id, args.prune, progress=log
        )
        metadata = {
            "corpus": {"train": args.train, "train_sha256": file_sha256(args.train),
                       "train_sentences": len(sentences)},
            "training": {"estimator": "interpolated modified Kneser-Ney", "order": args.order,
                         "tokenizer": tokenizer.name, "lowercase": tokenizer.lowercase,
                         "normalize": tokenizer.normalize,
                         "split": args.split, "min_count": args.min_count,
                         "max_vocab": args.max_vocab, "vocab_from": args.vocab_from,
                         "prune": prune_thresholds(args.prune, args.order)},
        }  # fmt: skip
        counts = ", ".join(f"{len(t.keys):,}" for t in tables)
        log(f"estimated in {time.perf_counter() - started:.1f} s: {counts} n-grams by order")
        metadata["discounts"] = {str(t.order): [round(d, 6) for d in t.discounts] for t in tables}
        fell_back = [t.order for t in tables if t.fallback]
        if fell_back:
            metadata["discount_fallback"] = fell_back
            log(f"orders {fell_back}: too few n-grams seen 1-4 times to estimate the discounts; "
                f"using {list(FALLBACK_DISCOUNTS)} (as lmplz --discount_fallback)")  # fmt: skip
    lm = NgramLM(tables, vocab, tokenizer)
    # the open vocabulary: the spelling of every word type of the text (an imported ARPA file
    # brings no text: the vocabulary's words)
    words = list(vocab.tokens)
    if not args.arpa:
        words += {w for sentence in sentences for w in sentence}
    lm.use_spelling(
        SpellingModel.train(words, source="vocabulary" if args.arpa else "training text")
    )
    metadata |= {"task": lm.task, "nextword_version": model.__version__,
                 "tokenizer_libraries": tokenizer.library_versions(),
                 "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    for name in ("valid", "test"):
        path = getattr(args, name)
        if path:
            try:
                result = evaluate_file(lm, path, args.split)
            except NonFiniteError as e:
                raise ValueError(f"{path}: no perplexity ({e})") from None
            metadata[f"{name}_perplexity"] = result["perplexity"]
            metadata[f"{name}_cross_entropy"] = result["cross_entropy"]
            log(f"{name}: perplexity {result['perplexity']:.2f}, {result['tokens']:,} tokens")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    write_arpa(out / ARPA_FILE, tables, vocab)
    log(f"wrote {out / ARPA_FILE} in {time.perf_counter() - started:.1f} s")
    save_checkpoint(out, lm, metadata)
    return lm


def log(message: str) -> None:
    sys.stderr.write(message + "\n")
