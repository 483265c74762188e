"""An untrained checkpoint with a large synthetic vocabulary (Zipf counts), for measuring speed
and memory where no corpus of that size is at hand (issue 14: V = 100k).

    python bench/zipf_model.py --vocab 100000 --softmax class --out runs/zipf100k-class
    python bench/serve_speed.py --model runs/zipf100k-class --valid none --no-http

The weights are random (seeded): latency and memory do not depend on what a model learnt.
Words are ``w3 … w99999`` numbered by falling count (counts ∝ 1 / rank, as the vocabulary
orders a real corpus), so the class bounds are the ones ``nextword train`` would cut.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from model.inference.checkpoint import save_checkpoint
from model.inference.recurrent_lm import RecurrentLM
from model.network.class_softmax import WordClasses
from model.network.recurrent import RNNLM, ModelConfig
from model.text.tokenize import Tokenizer
from model.text.vocab import SPECIALS, Vocabulary


def zipf_vocabulary(size: int) -> Vocabulary:
    """``size`` ids: the specials, then words with counts 10⁷ / rank."""
    words = [f"w{i}" for i in range(len(SPECIALS), size)]
    counts = [0] * len(SPECIALS) + [max(1, 10_000_000 // r) for r in range(1, len(words) + 1)]
    return Vocabulary([*SPECIALS, *words], counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=100_000)
    parser.add_argument("--softmax", choices=["full", "class"], default="class")
    parser.add_argument("--classes", type=int, default=0, help="0: √(V − shortlist)")
    parser.add_argument("--shortlist", type=int, default=0)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    vocab = zipf_vocabulary(args.vocab)
    bounds: tuple[int, ...] = ()
    short = 0
    if args.softmax == "class":  # the bounds `nextword train` cuts
        layout = WordClasses.cut(vocab.counts, args.classes, args.shortlist)
        bounds, short = layout.bounds, layout.shortlist
    config = ModelConfig(
        args.vocab, "lstm", num_layers=args.layers, embed_size=args.hidden,
        hidden_size=args.hidden, tie_weights=True, softmax=args.softmax, class_bounds=bounds,
        class_shortlist=short,
    )  # fmt: skip
    lm = RecurrentLM(RNNLM(config, seed=0), vocab, Tokenizer("whitespace"))
    save_checkpoint(args.out, lm, metadata={"note": "untrained: bench/zipf_model.py"})
    size = sum(p.nbytes for p in lm.net.params.values())
    print(f"{args.out}: V = {args.vocab}, softmax {args.softmax}, {size / 2**20:.1f} MiB weights")


if __name__ == "__main__":
    main()
