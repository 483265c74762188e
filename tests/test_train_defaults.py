"""What ``nextword train`` does with no options: the update count set from the corpus, and a
model that learns more than word counts on a small text of one's own."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.cli import main
from model.inference.checkpoint import load_checkpoint
from model.training.config import TrainConfig
from model.training.optim import Adam

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("tokens", "batch"),
    [(5_500, 4), (1_000, 4), (33_000, 18), (44_000, 20), (930_000, 20)],
)
def test_the_batch_size_leaves_an_epoch_at_least_50_updates(tokens: int, batch: int) -> None:
    cfg = TrainConfig().with_batch_size(tokens)
    assert cfg.batch_size == batch
    assert TrainConfig(batch_size=7).with_batch_size(tokens).batch_size == 7  # as given


@pytest.mark.parametrize(
    ("updates", "epochs"), [(8, 50), (40, 50), (63, 48), (300, 10), (1_328, 10)]
)
def test_the_epochs_give_at_least_3000_updates_within_10_to_50(updates: int, epochs: int) -> None:
    assert TrainConfig().with_epochs(updates).epochs == epochs
    assert TrainConfig(epochs=3).with_epochs(updates).epochs == 3


def test_tied_embeddings_by_default_where_they_fit() -> None:
    assert TrainConfig().tie_weights is True
    assert TrainConfig(emb=100).tie_weights is False  # sizes differ: nothing to share
    assert TrainConfig(bidirectional=True).tie_weights is False
    with pytest.raises(ValueError, match="tie_weights needs"):
        TrainConfig(emb=100, tie_weights=True)


def test_adam_warms_up_linearly_then_keeps_its_rate() -> None:
    """A step during the warm-up is the full step scaled by t / warmup: with one constant
    gradient Adam's bias-corrected direction is the same at every step, so the size says it."""
    steps = []
    for warmup in (0, 4):
        p, opt = {"w": np.zeros(3)}, Adam(lr=0.1, warmup=warmup)
        sizes = []
        for _ in range(6):
            before = p["w"].copy()
            opt.step(p, {"w": np.full(3, 2.0)})
            sizes.append(float(np.abs(p["w"] - before)[0]))
        steps.append(sizes)
    full, warm = steps
    assert warm == pytest.approx([f * min(1, t / 4) for t, f in enumerate(full, start=1)])
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(optimizer="sgd", warmup=10)


@pytest.mark.slow  # trains with the defaults for a few hundred updates
def test_the_defaults_learn_more_than_word_counts_on_a_small_text(tmp_path: Path) -> None:
    """`nextword train --train calls.txt --out …` on 300 generated call-centre utterances (~2,800
    tokens), every optimisation option left to its default (the network made smaller, 2×64, to
    keep the test short): it gave the unigram's perplexity (10 epochs of 4 updates); now it
    beats the unigram model of the same vocabulary several times over."""
    data = tmp_path / "calls"
    made = subprocess.run(
        [sys.executable, str(ROOT / "bench/domain_text.py"), "--out", str(data), "--lines", "300",
         "--test-lines", "100"], capture_output=True, text=True,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    train, test = str(data / "train.txt"), str(data / "test.txt")
    small = ["--emb", "64", "--hidden", "64"]
    args = ["train", "--train", train, "--out", str(tmp_path / "rnn"), "--test", test, *small]
    assert main(args) == 0
    uni = ["ngram", "--train", train, "--order", "1", "--vocab-from", str(tmp_path / "rnn")]
    assert main([*uni, "--test", test, "--out", str(tmp_path / "uni")]) == 0
    rnn, unigram = (
        json.loads((tmp_path / name / "config.json").read_text())["metadata"]["test_perplexity"]
        for name in ("rnn", "uni")
    )
    training = json.loads((tmp_path / "rnn" / "config.json").read_text())["metadata"]["training"]
    assert training["batch_size"] == 4 and training["epochs"] == 50  # chosen from the corpus
    assert math.isfinite(rnn) and rnn < unigram / 5, (rnn, unigram)
    # the open vocabulary comes with it: an unknown word takes its spelling's share of <unk>,
    # so a misspelling no longer outranks the word the model expects
    lm = load_checkpoint(tmp_path / "rnn")
    assert lm.spelling is not None and lm.spelling.trained_on["source"] == "training text"
    you, typo = lm.score_candidates("thank", ["you", "yuo"])
    assert typo.oov and not you.oov
    assert math.fsum(lm.spelled(typo)) < typo.log_prob - 5 < you.log_prob
