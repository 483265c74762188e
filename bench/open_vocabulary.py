"""The open vocabulary (issue 30): perplexity over every word on text with unknown words, and the
cost of scoring an unknown word.

    python bench/open_vocabulary.py --model ptb-kn5=runs/ptb-kn5 --model builtin=models/default

For each model, on each text (held-out *The Time Machine*, the last 2,000 lines of Tiny
Shakespeare; in PTB's form for a model with the whitespace tokenizer, else read with the
model's own tokenizer and normalisation), every sentence scored alone (as the service reads
text), ``</s>`` counted. The OOV words' probabilities under each way of scoring them:

- ``unk``: the whole P(<unk> | h) for every OOV word (the closed-vocabulary convention). Not a
  distribution over words: summed over the strings outside V it is unbounded, so its figure is
  a bound no normalised model can reach, shown for reference;
- ``uniform over the text's OOV types`` (an oracle): P(<unk> | h) / K for the K distinct OOV
  words of this very text, the best any constant penalty can do while summing to at most 1
  over them (it knows in advance which words will come);
- ``spell, order 1``: the spelling model with character unigrams (the length and the letters);
- ``spell, order N``: the spelling model the model carries (``nextword train``'s, order 5).

Reported: per-token cross-entropy and perplexity, the OOV share, and the cost of the spelling
share per OOV token (first time, and again: the model keeps the words it has scored).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from model.inference.checkpoint import load_checkpoint  # noqa: E402
from model.inference.language_model import LanguageModel  # noqa: E402
from model.inference.spelling import SpellingModel  # noqa: E402
from model.text.vocab import SPECIALS  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def time_machine_held_out() -> list[str]:
    """The last 10 % of the book's sentences (no PTB model saw the book; the built-in model
    holds this part out), lower case, letters only."""
    from recognisers.texts import time_machine_sentences

    return time_machine_sentences()


def shakespeare(limit: int = 2000) -> list[str]:
    """Tiny Shakespeare's lines of 4 words or more, its last ``limit``."""
    lines = [ln.strip() for ln in (DATA / "tiny-shakespeare.txt").read_text().splitlines()]
    return [ln for ln in lines if len(ln.split()) >= 4 and not ln.endswith(":")][-limit:]


def figures(lm: LanguageModel, texts: list[str]) -> dict[str, object]:
    if lm.tokenizer.name == "whitespace":  # a Penn Treebank model reads text in PTB's form
        from recognisers.texts import normalise

        texts = [normalise(t) for t in texts]
    sentences = [lm.tokenize(t) for t in texts]
    sentences = [s for s in sentences if s]
    closed = lm.text_log_probs(sentences)  # each sentence alone, its targets and </s>
    targets = [w for s in sentences for w in [*s, "</s>"]]
    assert len(targets) == len(closed)
    oov = [i for i, w in enumerate(targets) if w not in lm.vocab]
    words = [targets[i] for i in oov]
    tokens = len(targets)
    unk_total = math.fsum(closed)
    kinds = len(set(words))
    rows: dict[str, float] = {"unk (not normalised: a bound)": unk_total}
    rows[f"uniform over the text's {kinds} OOV types (oracle)"] = unk_total - len(oov) * math.log(
        max(kinds, 1)
    )
    known = [t for t in lm.vocab.tokens if t not in SPECIALS]
    assert lm.spelling is not None, "the model has no spelling model: nextword spell adds one"
    spellings = {
        "spell, order 1": SpellingModel.train(known, order=1).fit(lm.vocab.tokens),
        f"spell, order {lm.spelling.order} (the model's)": lm.spelling,
    }
    for name, spelling in spellings.items():
        rows[name] = unk_total + math.fsum(spelling.log_prob(w) for w in words)
    spelling = lm.spelling
    spelling._cache.clear()
    started = time.perf_counter()
    for w in words:
        spelling.log_prob(w)
    first = (time.perf_counter() - started) / max(len(words), 1)
    started = time.perf_counter()
    for w in words:
        spelling.log_prob(w)
    again = (time.perf_counter() - started) / max(len(words), 1)
    return {
        "sentences": len(sentences), "tokens": tokens, "oov_tokens": len(oov),
        "oov_rate": round(len(oov) / tokens, 4), "oov_types": kinds,
        "perplexity": {name: round(math.exp(-total / tokens), 2) for name, total in rows.items()},
        "spelling_us_per_oov_token": {"first": round(1e6 * first, 2),
                                      "again": round(1e6 * again, 2)},
        "examples": {w: round(spelling.log_prob(w), 2) for w in sorted(set(words))[:8]},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=DIR")
    args = parser.parse_args()
    texts = {"time machine (held out)": time_machine_held_out(), "shakespeare": shakespeare()}
    out: dict[str, object] = {"machine": platform.node(), "date": time.strftime("%Y-%m-%d"),
                              "python": platform.python_version()}  # fmt: skip
    for spec in args.model:
        name, _, path = spec.partition("=")
        lm = load_checkpoint(path)
        out[name] = {text: figures(lm, sentences) for text, sentences in texts.items()}
    print(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
