"""Which state should an isolated sentence start from? Zero (today) or the mean state the model
is in at a sentence start of its own running text (issue 12).

    python bench/start_state.py --rnn runs/ptb --ngram runs/ptb-kn5 [--save runs/ptb-start]

A model trained on the running stream (``bench/ptb.toml``) never starts a sentence from a zero
state: after ``</s>`` its state holds the sentence before. Served text (``/v1/score``,
``/v1/rerank``) read from zero leave the model weaker (PTB test 86.77 on the stream, 104.22
isolated). Training now stores the mean boundary state (``model/inference/start_state.py``);
this script measures it on a checkpoint saved before that: the state at each ``<s>`` of the
first ``--boundaries`` training sentences read as one stream, averaged, then the test
perplexity of each sentence alone from zero and from that mean state, and each mixed per token
with the n-gram (weights by EM on the validation text, read the same way).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.inference.checkpoint import load_checkpoint, save_checkpoint
from model.inference.interpolated_lm import fit_weights
from model.inference.recurrent_lm import RecurrentLM
from model.inference.start_state import mean_boundary_state
from model.network.recurrent import RNNLM

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"


def read(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.split()]


def perplexity(log_probs: np.ndarray) -> float:
    return round(math.exp(-float(np.mean(log_probs))), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rnn", type=Path, required=True)
    parser.add_argument("--ngram", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DATA, help="ptb.{train,valid,test}.txt here")
    parser.add_argument("--boundaries", type=int, default=8000, help="(8000, as training)")
    parser.add_argument("--save", type=Path, help="write the RNN with the mean start state here")
    args = parser.parse_args()
    rnn, ngram = load_checkpoint(args.rnn), load_checkpoint(args.ngram)
    assert isinstance(rnn, RecurrentLM) and isinstance(rnn.net, RNNLM)
    net, vocab = rnn.net, rnn.vocab
    started = time.perf_counter()
    train = read(args.data / "ptb.train.txt")[: args.boundaries]
    net.start = None  # measure from zero first, whatever the checkpoint holds
    mean = mean_boundary_state(net, [vocab.encode(s) for s in train], vocab, args.boundaries)
    assert mean is not None
    results: dict[str, object] = {
        "benchmark": "start_state",
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "boundaries": len(train),
        "mean_state_seconds": round(time.perf_counter() - started, 1),
    }
    text = {name: read(args.data / f"ptb.{name}.txt") for name in ("valid", "test")}
    kn = {name: ngram.text_log_probs(s) for name, s in text.items()}
    for label, start in (("zero", None), ("mean", mean)):
        net.start = start  # what every call and the isolated evaluation read from
        lp = {name: rnn.text_log_probs(sentences) for name, sentences in text.items()}
        weights, _ = fit_weights([lp["valid"], kn["valid"]])
        stacked = np.log(weights)[:, None] + np.stack([lp["test"], kn["test"]])
        mixed = np.logaddexp(stacked[0], stacked[1])
        results[label] = {
            "rnn_test_isolated": perplexity(lp["test"]),
            "rnn_valid_isolated": perplexity(lp["valid"]),
            "weights": [round(float(w), 4) for w in weights],
            "mixed_test_isolated": perplexity(mixed),
        }
        print(label, results[label], file=sys.stderr)
    results["ngram_test"] = perplexity(kn["test"])
    if args.save:
        net.start = mean
        save_checkpoint(args.save, rnn, {**rnn.metadata, "start_state_from": str(args.rnn)})
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
