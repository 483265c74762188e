"""N-best lists and CTC posteriors from two real OCR engines, for measuring language-model
reranking and CTC fusion on what a recogniser actually misreads (issue 13).

The set: every text of ``texts.select(per_source)`` (PTB validation and held-out Time Machine
sentences) is printed as one line of DejaVu Sans at 32 px (``texts.display``: lower case,
clitics joined back) and degraded the way a cheap scan or a phone photo degrades it: scaled
down (to 29–35 %), blurred, given Gaussian noise and saved as a low-quality JPEG, each line with
its own draw of those four settings (a seeded generator per line, so a rebuild is identical).
The degraded line is read by two engines nobody here wrote:

- **tesseract 5** (Debian's ``tesseract-ocr`` with ``-eng``, through ``tesserocr``, one line per
  image, LSTM engine). Its text goes through its dictionary; with ``lstm_choice_mode=2`` it
  also reports, for every symbol the LSTM read, the alternatives with a rating (lower is
  better). Each word's candidates are tesseract's own word, at the rating of the word's
  cheapest LSTM path, and the 8 cheapest strings through the word's symbol alternatives; a
  beam over the words (``--beam`` wide) gives the line's N-best. A candidate's ``score`` is
  minus the sum of its ratings (tesseract's own scale, higher is better, not a normalised log
  probability: the reranker's LM weight is tuned against it). Candidates are unique by
  PTB-form text (best score kept), best first, at most ``--nbest``; ``best`` is tesseract's
  own text, which heads its list. Written to ``ocr.jsonl``::

      {"id", "source", "split", "reference", "best", "hypotheses": [{"text", "score"}, ...]}

- **PP-OCRv4** (the Chinese + English recogniser that the ``rapidocr-onnxruntime`` wheel ships,
  run directly by ``onnxruntime``: 48 px high, RGB scaled to [-1, 1]). Its per-frame softmax
  over 6,625 labels is cut to the blank, the printable ASCII characters and the space (the
  only labels an English line needs; the rest hold under 1 % of the mass on these lines) and
  renormalised, as natural logs: ``ppocr.npz`` (one (frames, labels) float32 array per id),
  ``ppocr_labels.json`` (pyctcdecode's label list, ``""`` the blank, ``" "`` the space) and
  ``ppocr.jsonl`` (id, source, split, reference, greedy).

References and hypotheses are in PTB's form (``texts.normalise``). The images are kept under
``runs/recognisers/ocr/`` for a look. Rebuild (about two minutes on one core)::

    .venv/bin/python bench/recognisers/ocr_nbest.py
"""

from __future__ import annotations

import argparse
import io
import json
import string
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ctc_decode import greedy
from texts import ROOT, Text, display, name_documents, normalise, select
from wer import word_errors

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
TESSDATA = "/usr/share/tesseract-ocr/5/tessdata/"
OUT = ROOT / "runs" / "recognisers"
PPOCR_HEIGHT = 48
PER_WORD = 8  # LSTM strings per word, beside tesseract's own


def render(text: str, size: int = 32) -> Image.Image:
    """One line of black text on white, with a margin."""
    font = ImageFont.truetype(str(FONT), size)
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("L", (right - left + 40, bottom - top + 30), 255)
    ImageDraw.Draw(image).text((20 - left, 15 - top), text, font=font, fill=0)
    return image


def degrade(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Scale down, blur, add noise, save as JPEG: each setting drawn for this line."""
    scale = rng.uniform(0.29, 0.35)
    blur = rng.uniform(0.4, 0.7)
    noise = rng.uniform(8.0, 18.0)
    quality = int(rng.integers(18, 36))
    width, height = image.size
    small = image.resize((round(width * scale), round(height * scale)), Image.Resampling.BILINEAR)
    small = small.filter(ImageFilter.GaussianBlur(blur))
    pixels = np.asarray(small, dtype=np.float32)
    pixels = pixels + rng.normal(0.0, noise, pixels.shape)
    noisy = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    noisy.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("L")


def cheapest(options: list[list[tuple[str, float]]], beam: int) -> list[tuple[str, float]]:
    """The ``beam`` cheapest concatenations, one option per slot (text, total rating). Sorting
    is stable: among equal totals, earlier options win."""
    paths: list[tuple[str, float]] = [("", 0.0)]
    for slot in options:
        grown = [(text + option, cost + rating) for text, cost in paths for option, rating in slot]
        grown.sort(key=lambda path: path[1])
        paths = grown[:beam]
    return paths


def word_options(
    word: str, symbols: list[list[tuple[str, float]]], per_word: int
) -> list[tuple[str, float]]:
    """One word's candidates: tesseract's own word (dictionary-corrected, so it may be no
    single LSTM path) first, at the cheapest path's rating, then the ``per_word`` cheapest
    strings through the LSTM's symbol alternatives. The space before a word is its own symbol;
    it is left out (words are joined with a space)."""
    if symbols and symbols[0] and symbols[0][0][0] == " ":
        symbols = symbols[1:]
    paths = cheapest(symbols, per_word)
    best = paths[0][1] if paths else 0.0
    return [(word, best), *[(text, cost) for text, cost in paths if text != word]]


def tesseract_record(
    api: Any, image: Image.Image, text: Text, nbest: int, beam: int
) -> dict[str, Any]:
    """tesseract's own text and its N-best: a beam over its words, each word's candidates from
    the LSTM's symbol alternatives."""
    from tesserocr import RIL, iterate_level  # type: ignore[import-not-found]

    api.SetImage(image)
    api.Recognize()
    words = [w.GetUTF8Text(RIL.WORD) for w in iterate_level(api.GetIterator(), RIL.WORD)]
    choices = api.GetBestLSTMSymbolChoices()
    if len(words) != len(choices):  # not seen on these lines; then only the 1-best
        choices = [[] for _ in words]
    options = [
        [(" " * (k > 0) + w, c) for w, c in word_options(word, symbols, PER_WORD)]
        for k, (word, symbols) in enumerate(zip(words, choices, strict=True))
    ]
    unique: dict[str, float] = {}
    for raw, cost in cheapest(options, beam):
        unique.setdefault(normalise(raw), -cost)  # cheapest first: the first is the best
    ranked = list(unique.items())[:nbest]
    return {
        "id": text.id,
        "source": text.source,
        "split": text.split,
        "reference": text.text,
        "best": normalise(" ".join(words)),
        "hypotheses": [{"text": t, "score": round(s, 4)} for t, s in ranked],
    }


class PPOCR:
    """PP-OCRv4's recogniser through onnxruntime, its posteriors cut to an English alphabet."""

    def __init__(self) -> None:
        import onnxruntime  # type: ignore[import-not-found]
        import rapidocr_onnxruntime  # type: ignore[import-not-found]

        path = Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_rec_infer.onnx"
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options)
        characters = self.session.get_modelmeta().custom_metadata_map["character"].splitlines()
        everything = ["", *characters, " "]  # rapidocr's order: blank first, space last
        keep = [0] + [k for k, c in enumerate(everything) if len(c) == 1 and c in string.printable]
        self.columns = np.array(keep)
        self.labels = [everything[k] for k in keep]

    def log_posteriors(self, image: Image.Image) -> tuple[np.ndarray, float]:
        """(frames, labels) natural-log posteriors, and the mass the cut kept (mean per frame)."""
        rgb = image.convert("RGB")
        width = int(np.ceil(PPOCR_HEIGHT * rgb.width / rgb.height))
        pixels = np.asarray(rgb.resize((width, PPOCR_HEIGHT), Image.Resampling.BILINEAR))
        batch = ((pixels.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None]
        probs = self.session.run(None, {self.session.get_inputs()[0].name: batch})[0][0]
        kept = probs[:, self.columns]
        mass = kept.sum(axis=1, keepdims=True)
        return np.log(kept / mass).astype(np.float32), float(mass.mean())


def wer(pairs: list[tuple[str, str]]) -> float:
    errors = sum(word_errors(ref.split(), hyp.split()) for ref, hyp in pairs)
    return 100 * errors / max(sum(len(ref.split()) for ref, _ in pairs), 1)


def main() -> None:
    import tesserocr  # type: ignore[import-not-found]

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="directory for the sets")
    parser.add_argument("--per-source", type=int, default=300, help="texts per source, at most")
    parser.add_argument("--nbest", type=int, default=50)
    parser.add_argument("--beam", type=int, default=500, help="line paths kept over words")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--names", type=int, default=0, metavar="DOCUMENTS",
        help="instead: the first DOCUMENTS documents of the book that name its cast "
        "(texts.name_documents), written as names-ocr.jsonl, names-ppocr.* (issue 31, bias)",
    )  # fmt: skip
    args = parser.parse_args()
    prefix = "names-" if args.names else ""
    images = args.out / f"{prefix}ocr"
    images.mkdir(parents=True, exist_ok=True)
    texts = name_documents(args.names) if args.names else select(args.per_source)
    ppocr = PPOCR()
    records, ppocr_meta, posteriors, masses = [], [], {}, []
    start = time.perf_counter()
    with tesserocr.PyTessBaseAPI(path=TESSDATA, lang="eng", psm=tesserocr.PSM.SINGLE_LINE) as api:
        api.SetVariable("lstm_choice_mode", "2")
        for k, text in enumerate(texts):
            rng = np.random.default_rng([args.seed, k])
            image = degrade(render(display(text.text)), rng)
            image.save(images / f"{text.id}.png")
            records.append(tesseract_record(api, image, text, args.nbest, args.beam))
            log_probs, mass = ppocr.log_posteriors(image)
            posteriors[text.id], masses = log_probs, [*masses, mass]
            ppocr_meta.append({"id": text.id, "source": text.source, "split": text.split,
                               "reference": text.text,
                               "greedy": normalise(greedy(log_probs, ppocr.labels))})  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{prefix}ocr.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    np.savez_compressed(args.out / f"{prefix}ppocr.npz", **posteriors)
    (args.out / "ppocr_labels.json").write_text(json.dumps(ppocr.labels) + "\n")
    (args.out / f"{prefix}ppocr.jsonl").write_text(
        "".join(json.dumps(m) + "\n" for m in ppocr_meta)
    )
    tesseract = [(r["reference"], r["best"]) for r in records]
    oracle = [(r["reference"], min((h["text"] for h in r["hypotheses"]),
                                   key=lambda h: word_errors(r["reference"].split(), h.split())))
              for r in records]  # fmt: skip
    sizes = [len(r["hypotheses"]) for r in records]
    print(f"{len(records)} lines in {time.perf_counter() - start:.0f} s -> {args.out}")
    print(f"tesseract 1-best WER {wer(tesseract):.2f} %, {args.nbest}-best oracle "
          f"{wer(oracle):.2f} %, mean list {np.mean(sizes):.1f}")  # fmt: skip
    ppocr_pairs = [(m["reference"], m["greedy"]) for m in ppocr_meta]
    print(f"PP-OCR greedy WER {wer(ppocr_pairs):.2f} %, "
          f"mass kept by the alphabet cut {min(masses):.4f} (least line mean)")  # fmt: skip


if __name__ == "__main__":
    main()
