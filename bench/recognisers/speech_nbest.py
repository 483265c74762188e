"""N-best lists from a real speech recogniser, for measuring language-model reranking on what a
recogniser actually confuses (issue 13).

The set: every text of ``texts.select(per_source)`` (PTB validation and held-out Time Machine
sentences) is said by flite's ``rms`` voice, converted to 16 kHz mono 16-bit by sox, and decoded
by pocketsphinx 5 with its stock US English acoustic model, CMUdict and trigram LM (or, with
``--lm unigram``, that LM's unigram distribution alone, so the recogniser's own LM helps less and
an external one can matter more). One JSON line per text::

    {"id", "source", "split", "reference", "best", "hypotheses": [{"text", "score",
     "acoustic", "recogniser_lm"}, ...]}

``reference`` and every ``text`` are in PTB's form (``texts.normalise`` after fillers such as
``<sil>`` and ``[NOISE]`` and alternate-pronunciation marks such as ``read(2)`` are dropped).
``best`` is the recogniser's own 1-best (``Decoder.hyp()``, its lattice best path). The
hypotheses are pocketsphinx's A* N-best, unique by PTB-form text (best score kept), sorted best
first, at most ``--nbest``, always with the 1-best among them (A* cannot follow a path through
a silence between words, whose LM score it takes as log-zero, so such a 1-best may come only
from ``hyp()``). All scores are natural logs,
higher is better, and ``score = acoustic + LM share`` exactly:

- ``score``: the recogniser's total path score, as its bestpath search adds it up: acoustic
  log-likelihood + ``bestpathlw`` (9.5) × LM log-probability + (9.5/6.5) × ln(wip = 0.65) per
  word and ``</s>`` (about -0.63); silences and fillers add only their acoustic scores
  (pocketsphinx takes their penalty out of the lattice link and adds no LM term). pocketsphinx
  keeps integer logs of base 1.0001 shifted right by 10 bits (units of 1.0001**1024, 0.1024
  nats); they are recovered exactly and converted. A* N-best scores include the ``<s>``
  unigram (log10 -99) and leave out the final ``</s>`` node's acoustic score, which
  ``hyp()`` counts; both are the same for every path of an utterance, and are put right, so
  every entry is on ``hyp()``'s scale (checked: the 1-best's own A* entry lands within 2
  units of ``hyp()``, the float32 rounding of pocketsphinx's sums).
- ``acoustic``: the acoustic part of that path score: the lattice links' acoustic scores plus
  the final node's, i.e. ``score`` less the LM share recomputed from the LM the way bestpath
  does. pocketsphinx normalises each frame by its best active senone, so it is comparable only
  between hypotheses of one utterance (as is ``score``).
- ``recogniser_lm``: the recogniser's own LM log-probability of the words (``<s>`` context,
  ``</s>`` scored, fillers skipped as bestpath skips them), unweighted.
  ``score - acoustic`` is 9.5 × ``recogniser_lm`` - 0.63 × (recogniser words + 1) up to
  rounding (each word's weighted LM score is truncated to 0.1 nats).

Rebuild (about 7 minutes a set on one core; audio is cached under
runs/recognisers/speech/audio, so a rerun only decodes)::

    .venv/bin/python bench/recognisers/speech_nbest.py --out runs/recognisers/speech.jsonl
    .venv/bin/python bench/recognisers/speech_nbest.py --lm unigram  # speech-unigram.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
import warnings
import wave
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import pocketsphinx as ps  # noqa: E402

from bench.recognisers.texts import (  # noqa: E402
    Text,
    display,
    normalise,
    ptb_documents,
    select,
)
from bench.recognisers.wer import word_errors  # noqa: E402

RUNS = ROOT / "runs" / "recognisers"
AUDIO = RUNS / "speech" / "audio"
TRIGRAM = Path(ps.get_model_path("en-us/en-us.lm.bin"))
DICTIONARY = Path(ps.get_model_path("en-us/cmudict-en-us.dict"))
SENSCR_SHIFT = 10  # pocketsphinx's hmm.h: search scores are logs shifted right by 10 bits
VOICE = "rms"
_ALT_PRONUNCIATION = re.compile(r"\(\d+\)$")


@dataclass
class Candidate:
    words: list[str]  # the recogniser's words: no fillers, no pronunciation marks
    text: str  # PTB form
    units: int  # total path score in shifted log units, on hyp()'s scale
    lm_units: int  # the part of it the recogniser's weighted LM gave, same units
    lm_logprob: float  # the recogniser's LM log-probability, natural log, unweighted


@dataclass(frozen=True)
class Weights:
    """How the decoder weights its LM, to take a path score apart as its bestpath and A*
    searches put it together."""

    lw: float  # weight applied inside the LM (the first pass's)
    ratio: float  # bestpathlw / lw, applied on top by bestpath and A*
    log_wip: int  # word-insertion penalty, log units
    ln_unit: float  # natural log of one log unit: ln(logbase)

    @classmethod
    def of(cls, decoder: ps.Decoder) -> Weights:
        """The weights of ``decoder``'s configuration."""
        c = decoder.config
        ln_unit = decoder.logmath.log_to_ln(1.0)
        assert math.isclose(ln_unit, math.log(c["logbase"]), rel_tol=1e-9)
        return cls(c["lw"], c["bestpathlw"] / c["lw"], int(math.log(c["wip"]) / ln_unit), ln_unit)

    @property
    def shifted_ln(self) -> float:
        """Natural log of one shifted unit, the unit of search scores."""
        return self.ln_unit * 2**SENSCR_SHIFT


def synthesise(text: Text, audio_dir: Path) -> Path:
    """The text said by flite, as 16 kHz mono 16-bit audio; cached, since reruns should only
    redo the decoding. An id names a different text for another ``--per-source``, so the
    spoken text is kept beside the audio and a mismatch is synthesised again."""
    out, said = audio_dir / f"{text.id}.wav", audio_dir / f"{text.id}.txt"
    spoken = display(text.text)
    if out.exists() and said.exists() and said.read_text() == spoken:
        return out
    audio_dir.mkdir(parents=True, exist_ok=True)
    raw, tmp = out.with_suffix(".flite.wav"), out.with_suffix(".tmp.wav")
    subprocess.run(["flite", "-voice", VOICE, "-t", spoken, "-o", str(raw)], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(tmp)], check=True)
    raw.unlink()
    tmp.replace(out)
    said.write_text(spoken)  # written last: only a finished pair counts as cached
    return out


def read_audio(path: Path) -> bytes:
    """The 16-bit samples of a wav file, as ``process_raw`` takes them."""
    with wave.open(str(path)) as w:
        return w.readframes(w.getnframes())


def decode(decoder: ps.Decoder, audio: bytes) -> None:
    """One whole utterance. ``start_stream`` (deprecated, and said to be unnecessary) resets
    the noise-removal statistics; without it scores depend on the utterances decoded before."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        decoder.start_stream()
    decoder.start_utt()
    decoder.process_raw(audio, full_utt=True)
    decoder.end_utt()


def log_units(value: float, w: Weights) -> int:
    """The integer log pocketsphinx computed: its Python layer hands scores back as
    ``base ** log`` (``logmath_exp``), which loses nothing unless it underflows."""
    if value <= 0.0:
        raise ValueError("pocketsphinx score underflowed to 0; its log is lost")
    return round(math.log(value) / w.ln_unit)


def recogniser_words(hypstr: str) -> list[str]:
    """The words of a recogniser output: fillers (``<sil>``, ``[NOISE]``, ``++...++``) and
    alternate-pronunciation marks (``read(2)``) dropped."""
    return [
        _ALT_PRONUNCIATION.sub("", w) for w in hypstr.split() if not w.startswith(("<", "[", "+"))
    ]


def lm_terms(lm: ps.NGramModel, words: list[str]) -> list[int]:
    """Unweighted log-probabilities (log units) of each word and ``</s>`` after ``<s>``, with
    the trigram contexts bestpath and A* use (fillers skipped)."""
    context = ["<s>", *words, "</s>"]
    return [  # the word, then up to two words before it, nearest first
        lm.prob([context[j] for j in range(i, max(i - 3, -1), -1)]) for i in range(1, len(context))
    ]


def weighted_lm(terms: list[int], w: Weights) -> int:
    """The LM's share of a path score (shifted units), as bestpath adds it: per word the LM
    score weighted by lw plus the insertion penalty (``trie`` scoring), shifted, times the
    bestpath ratio, truncated towards zero. (C sums in float32; this may be 1 unit off.)"""
    return sum(math.ceil(w.ratio * (int(p * w.lw + w.log_wip) >> SENSCR_SHIFT)) for p in terms)


def start_constant(lm: ps.NGramModel, w: Weights) -> int:
    """The ``<s>`` term every A* path starts with and bestpath leaves out (shifted units), as
    ``ps_astar_start`` computes it: the ``<s>`` unigram (log10 -99) weighted, times the ratio."""
    return int(w.ratio * int(lm.prob(["<s>"]) * w.lw + w.log_wip)) >> SENSCR_SHIFT


def final_node_score(decoder: ps.Decoder, hyp_units: int, lm_units: int, w: Weights) -> int:
    """The final ``</s>`` node's acoustic score (shifted units), which ``hyp()`` counts and A*
    leaves out: the 1-best's score less its links' acoustic scores and its LM share. The
    segmentation's last entry (``</s>``) repeats the last link's score, so it is skipped."""
    segments = list(decoder.seg())
    if not segments or segments[-1].word != "</s>":
        raise RuntimeError("unexpected 1-best segmentation: no final </s>")
    links = sum(log_units(s.ascore, w) for s in segments[:-1])  # in log units, << 10
    return hyp_units - (links >> SENSCR_SHIFT) - lm_units


def candidate(words: list[str], units: int, lm: ps.NGramModel, w: Weights) -> Candidate:
    """A hypothesis with its score and the recogniser LM's parts of it."""
    terms = lm_terms(lm, words)
    text = normalise(" ".join(words))
    return Candidate(words, text, units, weighted_lm(terms, w), sum(terms) * w.ln_unit)


def candidates(
    decoder: ps.Decoder, lm: ps.NGramModel, w: Weights, n: int, raw_limit: int
) -> tuple[Candidate, list[Candidate], int | None]:
    """(1-best, up to ``n`` unique candidates best first with the 1-best among them, and how
    far the 1-best's own A* entry lands from ``hyp()``'s score: a check, 0 when the scales
    agree; None when there is nothing to compare: the 1-best has a filler between words, which
    A* cannot follow, or is not among the entries read).

    The A* list is unsorted (its order uses a bigram estimate) and repeats texts (other
    segmentations and pronunciations), so ``raw_limit`` entries are read and deduplicated; its
    scores are put on ``hyp()``'s scale by removing the ``<s>`` term and adding the final
    node's acoustic score, both the same for every path of the utterance."""
    hyp = decoder.hyp()
    if hyp is None:  # nothing decoded at all
        return (nothing := candidate([], 0, lm, w)), [nothing], None
    best = candidate(recogniser_words(hyp.hypstr), log_units(hyp.score, w), lm, w)
    shift = final_node_score(decoder, best.units, best.lm_units, w) - start_constant(lm, w)
    entries: dict[str, int] = {}
    for k, entry in enumerate(decoder.nbest() or []):
        if k >= raw_limit:
            break
        words, units = " ".join(recogniser_words(entry.hypstr)), log_units(entry.score, w)
        entries[words] = max(units, entries.get(words, units))
    unique: dict[str, Candidate] = {best.text: best}
    for words, units in entries.items():
        cand = candidate(words.split(), units + shift, lm, w)
        if cand.text and (cand.text not in unique or cand.units > unique[cand.text].units):
            unique[cand.text] = cand
    ranked = sorted(unique.values(), key=lambda c: (-c.units, c.text))[:n]
    if best.text not in {c.text for c in ranked}:
        ranked = sorted([*ranked[: n - 1], unique[best.text]], key=lambda c: (-c.units, c.text))
    own = entries.get(" ".join(best.words))
    fillers = any(s.word.startswith(("<", "[", "+")) for s in list(decoder.seg())[1:-1])
    check = None if own is None or fillers else own + shift - best.units
    return unique[best.text], ranked, check


def unigram_lm(path: Path) -> Path:
    """An ARPA file holding only the unigram level of pocketsphinx's trigram LM, built once.
    (``NGramModel.write`` crashes on the trigram model, so the unigrams are read word by word:
    every CMUdict word the LM knows, plus ``<s>`` and ``</s>``.)"""
    if path.exists():
        return path
    lm = ps.NGramModel.readfile(str(TRIGRAM))
    words = {line.split(maxsplit=1)[0] for line in DICTIONARY.read_text().splitlines() if line}
    base = sorted({_ALT_PRONUNCIATION.sub("", w) for w in words} | {"<s>", "</s>"})
    known = [(w, lm.prob([w])) for w in base]
    known = [(w, p) for w, p in known if p > -(10**8)]  # an unknown word gets log-zero
    to_log10 = math.log(1.0001) / math.log(10)
    lines = ["\\data\\", f"ngram 1={len(known)}", "", "\\1-grams:"]
    lines += [f"{p * to_log10:.6f}\t{w}" for w, p in known]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join([*lines, "", "\\end\\", ""]))
    tmp.rename(path)
    return path


def record(
    text: Text,
    audio: bytes,
    decoder: ps.Decoder,
    lm: ps.NGramModel,
    n: int,
    raw_limit: int,
) -> tuple[dict[str, Any], int | None]:
    """One text's JSON record, and the scale check of ``candidates``."""
    decode(decoder, audio)
    w = Weights.of(decoder)
    best, ranked, check = candidates(decoder, lm, w, n, raw_limit)
    hypotheses = [
        {
            "text": c.text,
            "score": c.units * w.shifted_ln,
            "acoustic": (c.units - c.lm_units) * w.shifted_ln,
            "recogniser_lm": c.lm_logprob,
        }
        for c in ranked
    ]
    out = {"id": text.id, "source": text.source, "split": text.split, "reference": text.text}
    return {**out, "best": best.text, "hypotheses": hypotheses}, check


def summary(records: list[dict[str, Any]]) -> list[str]:
    """Lines per source and overall: utterances, mean list size, 1-best and oracle WER."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[r["source"]].append(r)
    groups["all"] = records
    lines = [f"{'source':8s} {'utts':>5s} {'list':>6s} {'1-best WER':>11s} {'oracle WER':>11s}"]
    for name, rs in groups.items():
        words = sum(len(r["reference"].split()) for r in rs)
        first = sum(word_errors(r["reference"].split(), r["best"].split()) for r in rs)
        oracle = sum(
            min(word_errors(r["reference"].split(), h["text"].split()) for h in r["hypotheses"])
            for r in rs
        )
        size = sum(len(r["hypotheses"]) for r in rs) / len(rs)
        lines.append(
            f"{name:8s} {len(rs):5d} {size:6.1f} {100 * first / words:10.2f}% "
            f"{100 * oracle / words:10.2f}%"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="default: runs/recognisers/…")
    parser.add_argument("--per-source", type=int, default=300, help="texts per source, at most")
    parser.add_argument("--nbest", type=int, default=50)
    parser.add_argument("--raw", type=int, default=1000, help="A* entries read per utterance")
    parser.add_argument("--lm", choices=["trigram", "unigram"], default="trigram")
    parser.add_argument("--audio", type=Path, default=AUDIO)
    parser.add_argument(
        "--documents", type=int, default=0, metavar="N",
        help="instead: the first N documents of consecutive PTB validation lines "
        "(texts.ptb_documents), for reranking with history; written as speech-documents.jsonl",
    )  # fmt: skip
    args = parser.parse_args()
    suffix = "" if args.lm == "trigram" else f"-{args.lm}"
    suffix = "-documents" + suffix if args.documents else suffix
    out = args.out or RUNS / f"speech{suffix}.jsonl"
    lm_path = TRIGRAM if args.lm == "trigram" else unigram_lm(RUNS / "speech" / "unigram.arpa")

    start = time.perf_counter()
    decoder = ps.Decoder(lm=str(lm_path), loglevel="ERROR")
    lm = ps.NGramModel.readfile(str(lm_path))
    texts = ptb_documents(args.documents) if args.documents else select(args.per_source)
    records: list[dict[str, Any]] = []
    checks: list[int] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for i, text in enumerate(texts, start=1):
            audio = read_audio(synthesise(text, args.audio))
            rec, check = record(text, audio, decoder, lm, args.nbest, args.raw)
            checks += [] if check is None else [check]
            records.append(rec)
            f.write(json.dumps(rec) + "\n")
            if i % 10 == 0 or i == len(texts):
                errors = sum(
                    word_errors(r["reference"].split(), r["best"].split()) for r in records
                )
                words = sum(len(r["reference"].split()) for r in records)
                print(
                    f"{i}/{len(texts)} {text.id} {time.perf_counter() - start:.0f}s "
                    f"1-best WER so far {100 * errors / words:.2f}%",
                    flush=True,
                )
    print(f"wrote {out} ({args.lm} recogniser LM)")
    print("\n".join(summary(records)))
    off = sum(abs(c) > 2 for c in checks)
    print(f"scale check: the 1-best's A* entry is within 2 units of hyp() in {len(checks) - off}")
    print(f"of {len(checks)} comparable lists (largest gap {max(map(abs, checks), default=0)})")
    demoted = sum(r["hypotheses"][0]["text"] != r["best"] for r in records)
    print(f"lists where an A* path outscores the 1-best: {demoted}")
    print(f"wall time {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
