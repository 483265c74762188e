"""CTC beam search with and without a language model on PP-OCR's posteriors (issue 13).

    python bench/recognisers/ctc_decode.py runs/recognisers/ppocr

reads ``<prefix>.npz`` (per line id, the (frames, labels) natural-log posteriors of PP-OCRv4's
recogniser), ``<prefix>_labels.json`` (pyctcdecode's label list: ``""`` the blank, ``" "`` the
space) and ``<prefix>.jsonl`` (id, source, split, reference), all written by ``ocr_nbest.py``.
It decodes every line with pyctcdecode 0.5.0:

- ``greedy``: the best label per frame, repeats collapsed, blanks dropped;
- ``beam``: pyctcdecode's beam search with no language model;
- ``beam + nextword``: fused with the PTB RNN through ``NextwordCTCLM.in_process``;
- ``beam + kn5``: fused with the project's PTB KN5 through the same adapter;
- ``beam + combined``: fused with the RNN + KN5 interpolation, in process;
- ``beam + KenLM``: the same KN5 (the ARPA file its checkpoint was written with) through
  pyctcdecode's own KenLM model, as a pyctcdecode user would plug it in.

The adapters read each word as ``treebank_split`` cuts it (``daewoo's`` → ``daewoo 's``, the
PTB models' tokens); pyctcdecode's KenLM model reads the word whole (outside the vocabulary).
Beside each adapter decode: its ``score`` calls per line.

``alpha`` and ``beta`` are chosen per language model on the dev half (a 5 × 5 grid that grows
past its upper edges while the best point sits on one; least word errors; on ``--tune-lines``
dev lines drawn at random, since each grid point decodes them all)
and reported on the whole test half, with milliseconds per line. Words reach each language
model as the decoder spells them (lower case here: the lines are printed in lower case).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from texts import normalise  # noqa: E402
from wer import char_errors, word_errors  # noqa: E402

from model.adapters.pyctcdecode_lm import NextwordCTCLM, unigrams_of  # noqa: E402
from model.adapters.spelling import treebank_split  # noqa: E402
from model.inference.checkpoint import load_checkpoint  # noqa: E402

ALPHAS = [0.1, 0.2, 0.3, 0.5, 0.8]
BETAS = [0.0, 2.0, 4.0, 6.0, 8.0]
MAX_GROWTH = 3  # times the grid may grow past an edge


def greedy(log_probs: np.ndarray, labels: list[str]) -> str:
    """Best label per frame, repeats collapsed, blanks dropped."""
    best = log_probs.argmax(axis=1)
    keep = np.ones(len(best), dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return "".join(labels[k] for k in best[keep] if labels[k] != "")


def rates(refs: list[str], hyps: list[str]) -> dict[str, float]:
    words = sum(len(r.split()) for r in refs)
    chars = sum(len(r) for r in refs)
    w = sum(word_errors(r.split(), h.split()) for r, h in zip(refs, hyps, strict=True))
    c = sum(char_errors(r, h) for r, h in zip(refs, hyps, strict=True))
    return {"wer": round(100 * w / max(words, 1), 2), "cer": round(100 * c / max(chars, 1), 2)}


def decode_all(decoder: Any, lines: list[np.ndarray], beam_width: int) -> tuple[list[str], float]:
    """Normalised decodes, and ms per line."""
    start = time.perf_counter()
    texts = [normalise(decoder.decode(lp, beam_width=beam_width)) for lp in lines]
    return texts, (time.perf_counter() - start) * 1e3 / max(len(lines), 1)


def word_error_count(refs: list[str], hyps: list[str]) -> int:
    return sum(word_errors(r.split(), h.split()) for r, h in zip(refs, hyps, strict=True))


def tune(decoder: Any, dev: list[np.ndarray], refs: list[str], beam_width: int) -> dict[str, Any]:
    """alpha and beta with the fewest dev word errors (ties: the smaller alpha, then beta).

    The grid starts as ``ALPHAS`` × ``BETAS``; while the best point is on its upper edge in
    alpha or beta, that side grows by one value (alpha × 1.6, beta + 2; at most
    ``MAX_GROWTH`` times), so the best point is not an artefact of where the grid stopped."""
    alphas, betas, errors_at = list(ALPHAS), list(BETAS), {}
    for _ in range(MAX_GROWTH + 1):
        for alpha in alphas:
            for beta in betas:
                if (alpha, beta) not in errors_at:
                    decoder.reset_params(alpha=alpha, beta=beta)
                    texts, _ = decode_all(decoder, dev, beam_width)
                    errors_at[alpha, beta] = word_error_count(refs, texts)
        (alpha, beta), errors = min(errors_at.items(), key=lambda kv: (kv[1], kv[0]))
        if alpha < alphas[-1] and beta < betas[-1]:
            break
        if alpha == alphas[-1]:
            alphas.append(round(alpha * 1.6, 3))
        if beta == betas[-1]:
            betas.append(beta + 2.0)
    decoder.reset_params(alpha=alpha, beta=beta)
    return {"alpha": alpha, "beta": beta, "dev_errors": errors, "grid_points": len(errors_at)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prefix", type=Path, help="e.g. runs/recognisers/ppocr")
    parser.add_argument("--rnn", type=Path, default=ROOT / "runs" / "ptb-start")
    parser.add_argument("--arpa", type=Path, default=ROOT / "runs" / "ptb-kn5" / "model.arpa")
    parser.add_argument("--combined", type=Path, default=ROOT / "runs" / "ptb-start-mix")
    parser.add_argument("--ngram", type=Path, default=ROOT / "runs" / "ptb-kn5")
    parser.add_argument("--beam-width", type=int, default=100)
    parser.add_argument("--tune-lines", type=int, default=100, help="dev lines for the grid")
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    args = parser.parse_args()
    import kenlm  # type: ignore[import-not-found]
    from pyctcdecode import Alphabet, BeamSearchDecoderCTC, LanguageModel  # type: ignore[import-not-found]

    labels = json.loads(Path(f"{args.prefix}_labels.json").read_text())
    posteriors = np.load(f"{args.prefix}.npz")
    meta = [json.loads(line) for line in Path(f"{args.prefix}.jsonl").read_text().splitlines()]
    split = {s: [m for m in meta if m["split"] == s] for s in ("dev", "test")}
    rng = np.random.default_rng(0)
    tune_n = min(args.tune_lines, len(split["dev"]))
    split["dev"] = [
        split["dev"][k] for k in sorted(rng.choice(len(split["dev"]), tune_n, replace=False))
    ]
    lines = {s: [posteriors[m["id"]].astype(np.float32) for m in split[s]] for s in split}
    refs = {s: [m["reference"] for m in split[s]] for s in split}
    alphabet = Alphabet.build_alphabet(labels)
    rnn = load_checkpoint(args.rnn)
    words = unigrams_of(rnn)
    adapters = {
        name: NextwordCTCLM.in_process(lm, tokenize=treebank_split)
        for name, lm in (
            ("beam + nextword", rnn),
            ("beam + kn5", load_checkpoint(args.ngram)),
            ("beam + combined", load_checkpoint(args.combined)),
        )
    }
    decoders: dict[str, Any] = {
        "beam": BeamSearchDecoderCTC(alphabet, None),
        **{name: BeamSearchDecoderCTC(alphabet, lm) for name, lm in adapters.items()},
        "beam + KenLM": BeamSearchDecoderCTC(
            alphabet, LanguageModel(kenlm.Model(str(args.arpa)), words)
        ),
    }
    calls_per_line: dict[str, float] = {}
    systems: dict[str, list[str]] = {
        "greedy": [normalise(greedy(lp, labels)) for lp in lines["test"]]
    }
    ms_per_line: dict[str, float] = {}
    params: dict[str, Any] = {}
    for name, decoder in decoders.items():
        if name != "beam":
            params[name] = tune(decoder, lines["dev"], refs["dev"], args.beam_width)
            print(name, "dev:", json.dumps(params[name]), flush=True)
        calls = adapters[name].calls if name in adapters else 0
        systems[name], ms_per_line[name] = decode_all(decoder, lines["test"], args.beam_width)
        if name in adapters:
            calls_per_line[name] = (adapters[name].calls - calls) / len(lines["test"])
    sources = sorted({m["source"] for m in split["test"]})
    table = {}
    for name, hyps in systems.items():
        row = {"all": rates(refs["test"], hyps)}
        for source in sources:
            mine = [k for k, m in enumerate(split["test"]) if m["source"] == source]
            row[source] = rates([refs["test"][k] for k in mine], [hyps[k] for k in mine])
        table[name] = row
    lines_n = len(split["test"])
    print(f"\n{args.prefix}: WER / CER % on {lines_n} test lines, beam {args.beam_width}")
    print(f"| decoder | all | {' | '.join(sources)} | ms per line | LM calls per line |")
    print("|---|---|" + "---|" * len(sources) + "---|---|")
    for name, row in table.items():
        cells = [f"{row[k]['wer']:.2f} / {row[k]['cer']:.2f}" for k in ["all", *sources]]
        ms = f"{ms_per_line[name]:.1f}" if name in ms_per_line else ""
        calls_cell = f"{calls_per_line[name]:.0f}" if name in calls_per_line else ""
        print(f"| {name} | {' | '.join(cells)} | {ms} | {calls_cell} |")
    frames = statistics.mean(len(lp) for lp in lines["test"])
    results = {
        "benchmark": "recognisers/ctc_decode",
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "beam_width": args.beam_width,
        "dev_lines_tuned_on": len(split["dev"]),
        "test_lines": len(split["test"]),
        "mean_frames": round(frames, 1),
        "params": params,
        "ms_per_line": {k: round(v, 1) for k, v in ms_per_line.items()},
        "lm_calls_per_line": {k: round(v, 1) for k, v in calls_per_line.items()},
        "table": table,
    }
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
