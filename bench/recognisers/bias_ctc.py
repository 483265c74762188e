"""Issue 31, item 3, with a CTC recogniser: nextword's ``bias`` beside pyctcdecode's own
``hotwords``, decoding PP-OCRv4's posteriors of the names set (``ocr_nbest.py --names``).

    python bench/recognisers/bias_ctc.py runs/recognisers/names-ppocr --rnn runs/ptb

Three decoders, all pyctcdecode 0.5.0's beam search fused with the Penn Treebank RNN through
``NextwordCTCLM.in_process`` (alpha, beta tuned on dev lines for the first and kept for the
others, so only the bias differs):

- ``beam + nextword``: no bias;
- ``+ hotwords``: pyctcdecode's ``hotwords`` = the cast (``texts.NAMES``), its default
  ``hotword_weight`` (10) and the best of a few others on dev; a score bonus per matching
  character outside the language model (not normalised);
- ``+ nextword bias``: the adapter's ``use_bias`` with the cast (the model's ``bias``, and a
  partial word that can still become a name is not penalised as unknown), the weight chosen on
  dev among a few: the language model's own, normalised probabilities.

Reported on the test lines: WER, CER and the names' error rate (B-WER) and the other words'
(U-WER).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ctc_decode import ROOT, rates, tune
from texts import NAMES, normalise
from wer import biased_errors, word_errors

from model.adapters.pyctcdecode_lm import NextwordCTCLM
from model.adapters.spelling import treebank_split
from model.inference.checkpoint import load_checkpoint
from model.inference.recurrent_lm import RecurrentLM

HOTWORD_WEIGHTS = (3.0, 10.0, 30.0)
BIAS_WEIGHTS = (0.03, 0.1, 0.3)


def decode(decoder: Any, lines: list[np.ndarray], beam: int, **kw: Any) -> list[str]:
    return [normalise(decoder.decode(lp, beam_width=beam, **kw)) for lp in lines]


def errors(refs: list[str], hyps: list[str]) -> int:
    return sum(word_errors(r.split(), h.split()) for r, h in zip(refs, hyps, strict=True))


def name_rates(refs: list[str], hyps: list[str]) -> dict[str, float]:
    b = o = names = 0
    for r, h in zip(refs, hyps, strict=True):
        eb, eo = biased_errors(r.split(), h.split(), set(NAMES))
        b, o, names = b + eb, o + eo, names + sum(w in NAMES for w in r.split())
    words = sum(len(r.split()) for r in refs)
    return {"b_wer": round(100 * b / max(names, 1), 2),
            "u_wer": round(100 * o / max(words - names, 1), 2), "names": names}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prefix", type=Path, help="e.g. runs/recognisers/names-ppocr")
    parser.add_argument("--rnn", type=Path, default=ROOT / "runs" / "ptb")
    parser.add_argument("--beam-width", type=int, default=100)
    parser.add_argument("--tune-lines", type=int, default=60)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--alpha", type=float, help="with --beta: skip tuning them on dev")
    parser.add_argument("--beta", type=float)
    args = parser.parse_args()
    from pyctcdecode import Alphabet, BeamSearchDecoderCTC  # type: ignore[import-not-found]

    labels_path = args.prefix.parent / "ppocr_labels.json"
    labels = json.loads(labels_path.read_text())
    posteriors = np.load(f"{args.prefix}.npz")
    meta = [json.loads(line) for line in Path(f"{args.prefix}.jsonl").read_text().splitlines()]
    dev_all = [m for m in meta if m["split"] == "dev"]
    rng = np.random.default_rng(0)
    picked = sorted(rng.choice(len(dev_all), min(args.tune_lines, len(dev_all)), replace=False))
    split = {"dev": [dev_all[k] for k in picked], "test": [m for m in meta if m["split"] == "test"]}
    lines = {s: [posteriors[m["id"]].astype(np.float32) for m in split[s]] for s in split}
    refs = {s: [m["reference"] for m in split[s]] for s in split}
    alphabet = Alphabet.build_alphabet(labels)
    rnn = load_checkpoint(args.rnn)
    assert isinstance(rnn, RecurrentLM)
    started = time.time()
    plain = BeamSearchDecoderCTC(alphabet, NextwordCTCLM.in_process(rnn, tokenize=treebank_split))
    if args.alpha is not None and args.beta is not None:
        params = {"alpha": args.alpha, "beta": args.beta, "given": True}
        plain.reset_params(alpha=args.alpha, beta=args.beta)
    else:
        params = tune(plain, lines["dev"], refs["dev"], args.beam_width)
    print("alpha, beta on dev:", json.dumps(params), flush=True)
    systems = {"beam + nextword": decode(plain, lines["test"], args.beam_width)}
    dev_errors: dict[str, int] = {}
    for weight in HOTWORD_WEIGHTS:
        kw = {"hotwords": list(NAMES), "hotword_weight": weight}
        hyps = decode(plain, lines["dev"], args.beam_width, **kw)
        dev_errors[f"hotwords {weight}"] = errors(refs["dev"], hyps)
    hot = min(HOTWORD_WEIGHTS, key=lambda w: dev_errors[f"hotwords {w}"])
    systems[f"+ hotwords (weight {hot:g}, chosen on dev)"] = decode(
        plain, lines["test"], args.beam_width, hotwords=list(NAMES), hotword_weight=hot
    )
    systems["+ hotwords (default weight 10)"] = decode(
        plain, lines["test"], args.beam_width, hotwords=list(NAMES), hotword_weight=10.0
    )
    biased = {}
    for weight in BIAS_WEIGHTS:
        adapter = NextwordCTCLM.in_process(rnn, tokenize=treebank_split)
        adapter.use_bias(list(NAMES), weight)  # the model's bias, and the names' spellings
        decoder = BeamSearchDecoderCTC(alphabet, adapter)
        decoder.reset_params(alpha=params["alpha"], beta=params["beta"])
        biased[weight] = decoder
        hyps = decode(decoder, lines["dev"], args.beam_width)
        dev_errors[f"bias {weight}"] = errors(refs["dev"], hyps)
    best = min(BIAS_WEIGHTS, key=lambda w: dev_errors[f"bias {w}"])
    systems[f"+ nextword bias (weight {best:g}, chosen on dev)"] = decode(
        biased[best], lines["test"], args.beam_width
    )
    table = {name: rates(refs["test"], hyps) | name_rates(refs["test"], hyps)
             for name, hyps in systems.items()}  # fmt: skip
    print(f"\n{args.prefix}: {len(refs['test'])} test lines, beam {args.beam_width}")
    print("| decoder | WER | CER | B-WER (names) | U-WER |\n|---|---|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | {row['wer']:.2f} | {row['cer']:.2f} | {row['b_wer']:.2f} | "
              f"{row['u_wer']:.2f} |")  # fmt: skip
    result = {"benchmark": "recognisers/bias_ctc", "command": " ".join(sys.argv),
              "date": time.strftime("%Y-%m-%d %H:%M"), "params": params,
              "dev_word_errors": dev_errors, "table": table,
              "seconds": round(time.time() - started)}  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
