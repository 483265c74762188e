"""``nextword train`` when things go wrong: an output directory that cannot be written (before or
during the run), training that diverges, a model whose state overflows on long text, and the
progress lines printed where there is no terminal."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import model.training.tasks
import model.training.trainer
from model.cli import main
from model.inference.checkpoint import load_checkpoint, save_checkpoint
from model.inference.recurrent_lm import RecurrentLM
from model.network.recurrent import RNNLM, ModelConfig
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary
from model.training.config import merge
from model.training.snapshot import StoppedError
from model.training.steps import Progress
from model.training.trainer import StopRequest, train
from tests.test_train import TINY, write_corpus


# ------------------------------------------------------------------ unwritable output
class Locks:
    """``lock(path)`` makes a directory or a file unwritable, even for root: ``chattr +i`` where
    it works (ext4 and friends), else every temporary file created in the directory and every
    rename onto the path raise PermissionError, as the immutable flag makes them. Either way the
    lock is checked, so no test passes for want of one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch, self.immutable, self.patched = monkeypatch, [], set()
        self.real_mkstemp, self.real_replace = tempfile.mkstemp, os.replace

    def lock(self, path: Path) -> None:
        try:
            made = subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
        except FileNotFoundError:  # no chattr here
            made = False
        if made and _writes_fail(path):
            self.immutable.append(path)
            return
        if made:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        self.monkeypatch.setattr(tempfile, "mkstemp", self.mkstemp)
        self.monkeypatch.setattr(os, "replace", self.replace)
        self.patched.add(path.resolve())
        assert _writes_fail(path), f"{path} could not be locked"

    def unlock(self) -> None:
        for path in self.immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        self.immutable, self.patched = [], set()

    def _refuse(self, path: str | os.PathLike[str]) -> None:
        if {Path(path).resolve(), Path(path).resolve().parent} & self.patched:
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(path))

    def mkstemp(self, *args: Any, dir: str | None = None, **kwargs: Any) -> tuple[int, str]:
        if dir is not None and Path(dir).resolve() in self.patched:
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), dir)
        return self.real_mkstemp(*args, dir=dir, **kwargs)

    def replace(self, src: Any, dst: Any, **kwargs: Any) -> None:
        self._refuse(dst)
        self.real_replace(src, dst, **kwargs)


def _writes_fail(path: Path) -> bool:
    """Whether a new file in the directory ``path``, or replacing the file ``path`` (by a copy of
    itself, so nothing is lost when it works), is refused."""
    try:
        fd, probe = tempfile.mkstemp(dir=path if path.is_dir() else path.parent)
    except PermissionError:
        return True
    try:
        if not path.is_dir():
            os.write(fd, path.read_bytes())
            os.replace(probe, path)
    except PermissionError:
        return True
    finally:
        os.close(fd)
        Path(probe).unlink(missing_ok=True)
    return False


@pytest.fixture
def locks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Locks]:
    locks = Locks(monkeypatch)
    yield locks
    locks.unlock()


def test_an_unwritable_output_directory_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture, locks: Locks
) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 100)
    args = ["train", "--train", str(corpus), *TINY, "--epochs", "1"]
    (tmp_path / "locked").mkdir()
    locks.lock(tmp_path / "locked")
    for out in (tmp_path / "locked", tmp_path / "locked" / "new" / "m"):  # existing; to be made
        assert main([*args, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"{out}: cannot write the output there (Operation not permitted)" in err
        assert "epoch 1" not in err  # refused before the first window, not after an epoch


WRITES = {  # what fails: the path locked before the n-th call of the trainer function writing it
    "resume snapshot": ("resume", "save_state", 3, "the resume snapshot in {out}/resume"),
    "best model": ("", "save_checkpoint", 2, "the best model in {out}"),
    "metrics": ("metrics.jsonl", "write_atomic", 2, "{out}/metrics.jsonl"),
}


@pytest.mark.parametrize("what", sorted(WRITES))
def test_a_write_failing_mid_run_stops_cleanly_and_the_run_resumes_exactly(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    locks: Locks,
    what: str,
) -> None:
    """The run stops with exit code 2 and a message naming what could not be written; once the
    directory is writable again, --resume continues to the very weights of an unbroken run."""
    corpus = write_corpus(tmp_path / "train.txt", 300)
    options = [*TINY, "--epochs", "3", "--optimizer", "adam", "--lr", "0.01"]
    args = ["train", "--train", str(corpus), *options, "--checkpoint-every", "10"]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    out = tmp_path / "broken"
    locked, function, nth, message = WRITES[what]
    real, calls = getattr(model.training.trainer, function), []

    def lock_then_write(*a: Any, **k: Any) -> Any:
        calls.append(1)
        if len(calls) == nth:  # the directory turns unwritable just before this write
            locks.lock(out / locked)
        return real(*a, **k)

    monkeypatch.setattr(model.training.trainer, function, lock_then_write)
    capsys.readouterr()
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(calls) == nth and "Traceback" not in err
    assert f"cannot write {message.format(out=out)} (Operation not permitted)" in err
    assert f"the last snapshot in {out / 'resume'} is intact" in err
    assert "continue with --resume" in err
    locks.unlock()
    monkeypatch.setattr(model.training.trainer, function, real)
    assert main(["train", "--resume", "--out", str(out)]) == 0
    for name, p in load_checkpoint(tmp_path / "straight").net.params.items():
        np.testing.assert_array_equal(load_checkpoint(out).net.params[name], p, err_msg=name)


# ------------------------------------------------------------------ divergence
@pytest.mark.parametrize("cell", ["rnn --activation relu", "rnn --activation tanh", "gru", "lstm"])
def test_every_cell_trains_with_its_default_options(
    tmp_path: Path, capsys: pytest.CaptureFixture, cell: str
) -> None:
    """No --lr, --clip or --optimizer: each cell learns the little grammar of the corpus (best
    perplexity about 2.2) without diverging or spiking on the way: every epoch stays below 1.5
    times a uniform guess (a tied LSTM with dropout spends its first epoch near the uniform
    guess, 26.8 for 26 ids; the spikes this guards against went to 10⁵ and beyond)."""
    corpus = write_corpus(tmp_path / "train.txt", 1000)
    out = tmp_path / "m"
    size = ["--layers", "2", "--emb", "16", "--hidden", "16", "--batch-size", "4", "--bptt", "10"]
    args = ["train", "--train", str(corpus), "--out", str(out), "--cell", *cell.split(), *size]
    assert main([*args, "--epochs", "6"]) == 0
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    vocab = len(load_checkpoint(out).vocab)
    for record in history:
        assert record["train_ppl"] < 1.5 * vocab and record["valid_ppl"] < 1.5 * vocab, record
    assert history[-1]["valid_ppl"] < 5
    assert "diverged" not in capsys.readouterr().err


class StopWhen(StopRequest):
    """A stop request that turns true when ``condition()`` does (checked after every window)."""

    def __init__(self, condition: Callable[[], bool]) -> None:
        self.condition = condition

    @property
    def requested(self) -> bool:  # type: ignore[override]
        return self.condition()

    @requested.setter
    def requested(self, value: bool) -> None:
        pass


def poison_once(monkeypatch: pytest.MonkeyPatch, lr: float, when: str) -> list[float]:
    """Make training blow up once, for real: NaN in the output bias, either before the 5th
    window (the loss turns NaN) or after the last window of epoch 1 (the validation does), while
    the learning rate is still ``lr``; a halved rate trains on unharmed. Returns the learning
    rate seen by every window."""
    real, rates = model.training.tasks.train_step, []

    def step(net: Any, optimizer: Any, *args: Any) -> Any:
        rates.append(optimizer.lr)
        if when == "window" and optimizer.lr == lr and len(rates) == 5:
            net.params["output.b"][:] = np.nan
        result = real(net, optimizer, *args)
        if when == "validation" and optimizer.lr == lr and len(rates) == WINDOWS:
            net.params["output.b"][:] = np.nan
        return result

    monkeypatch.setattr(model.training.tasks, "train_step", step)
    return rates


WINDOWS = 60  # BPTT windows per epoch of a 200-sentence corpus with TINY (asserted below)


@pytest.mark.parametrize("when", ["window", "validation"])
def test_a_diverging_run_rolls_back_halves_the_rate_and_resumes_identically(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 200)
    options = {"layers": 1, "emb": 8, "hidden": 8, "batch_size": 4, "bptt": 6, "epochs": 2}
    options |= {"optimizer": "adam", "lr": 0.01, "checkpoint_every": 3, "dropout": 0.1}
    config = lambda out: merge({"train": str(corpus), "out": str(out), **options})  # noqa: E731
    rates = poison_once(monkeypatch, 0.01, when)
    train(config(tmp_path / "straight"))
    err = capsys.readouterr().err
    assert rates.count(0.01) == (5 if when == "window" else WINDOWS)
    back_to = 3 if when == "window" else WINDOWS - 3  # the last snapshot, every 3 windows
    assert "training diverged (" in err
    assert (
        f"rolled back to window {back_to} of epoch 1 and halved the learning rate to 0.005" in err
    )
    history = [
        json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in history] == [1, 2]
    (recovery,) = history[0]["recoveries"]
    assert recovery["lr"] == 0.005 and recovery["resumed_from_window"] == back_to
    assert ("cross-entropy is nan" if when == "window" else "turn non-finite") in recovery["error"]
    assert history[1]["recoveries"] == [] and all(math.isfinite(r["valid_ppl"]) for r in history)

    # the same run stopped right after its recovery and resumed ends with the very same model
    rates = poison_once(monkeypatch, 0.01, when)
    with pytest.raises(StoppedError):
        train(config(tmp_path / "stopped"), stop=StopWhen(lambda: 0.005 in rates))
    assert main(["train", "--resume", "--out", str(tmp_path / "stopped")]) == 0
    for name, p in load_checkpoint(tmp_path / "straight").net.params.items():
        np.testing.assert_array_equal(load_checkpoint(tmp_path / "stopped").net.params[name], p)
    timeless = lambda out: [  # noqa: E731
        {
            k: v
            for k, v in json.loads(x).items()
            if k not in ("tokens_per_s", "elapsed_s", "validate_s")
        }
        for x in (out / "metrics.jsonl").read_text().splitlines()
    ]
    assert timeless(tmp_path / "stopped") == timeless(tmp_path / "straight")


def test_out_of_recoveries_the_run_stops_with_exit_1_and_a_sound_model(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 200)
    real, rates = model.training.tasks.train_step, []

    def step(net: Any, optimizer: Any, *args: Any) -> Any:  # every rate diverges in epoch 2
        rates.append(optimizer.lr)
        if len(rates) > WINDOWS + 4:
            net.params["output.b"][:] = np.inf
        return real(net, optimizer, *args)

    monkeypatch.setattr(model.training.tasks, "train_step", step)
    out = tmp_path / "m"
    args = ["train", "--train", str(corpus), "--out", str(out), *TINY, "--epochs", "3"]
    assert main([*args, "--optimizer", "adam", "--lr", "0.01", "--checkpoint-every", "3"]) == 1
    err = capsys.readouterr().err
    assert err.count("halved the learning rate") == 4  # --max-recoveries, default 4
    assert "nextword train: training diverged: " in err and "after 4 recoveries" in err
    assert sorted(set(rates), reverse=True) == [0.01, 0.005, 0.0025, 0.00125, 0.000625]
    assert load_checkpoint(out).metadata["epoch"] == 1  # the best model so far is kept, sound:
    assert main(["eval", "--model", str(out), "--data", str(corpus)]) == 0
    assert math.isfinite(json.loads(capsys.readouterr().out)["perplexity"])


def poison_validation(monkeypatch: pytest.MonkeyPatch, lr: float) -> None:
    """Make the model of epoch 1 far worse than a uniform guess yet finite, for real: while the
    learning rate is still ``lr``, the output bias of <unk> becomes 50 just before validation,
    so every other word costs about 50 nats. A rollback restores the weights; a halved rate is
    spared."""
    real = model.training.trainer.validate

    def validate(state: Any, corpus: Any, task: Any) -> float:
        if state.optimizer.lr == lr and state.epoch == 0:
            state.net.params["output.b"][corpus.vocab.unk_id] = 50.0
        return real(state, corpus, task)

    monkeypatch.setattr(model.training.trainer, "validate", validate)


@pytest.mark.parametrize("kind", ["next-word", "gap-filling"])
def test_a_validation_worse_than_twice_a_uniform_guess_is_a_divergence(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A finite validation cross-entropy above 2 ln V (perplexity V², a factor V worse than
    guessing uniformly) rolls back and halves the rate like a NaN, and is never saved."""
    corpus = write_corpus(tmp_path / "train.txt", 200)
    options = {"layers": 1, "emb": 8, "hidden": 8, "batch_size": 4, "bptt": 6, "epochs": 2}
    options |= {"optimizer": "adam", "lr": 0.01, "bidirectional": kind == "gap-filling"}
    poison_validation(monkeypatch, 0.01)
    out = tmp_path / "m"
    train(merge({"train": str(corpus), "out": str(out), **options}))
    err = capsys.readouterr().err
    vocab = len(load_checkpoint(out).vocab)
    limit = 2 * math.log(vocab)
    found = re.search(r"validation cross-entropy is ([\d.]+) nats, more than twice", err)
    assert found and 40 < float(found.group(1)) < 60, err
    assert f"that of a uniform guess (2 ln V = {limit:.3g}, V = {vocab} words)" in err
    assert "halved the learning rate to 0.005" in err
    history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2] and len(history[0]["recoveries"]) == 1
    assert all(r["valid_loss"] < limit for r in history)
    assert load_checkpoint(out).metadata["valid_cross_entropy"] < limit


@pytest.mark.parametrize("how", ["nan in a window", "validation worse than uniform"])
def test_a_run_diverging_before_its_first_model_says_no_model_was_saved(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 200)
    if how == "nan in a window":
        poison_once(monkeypatch, 0.01, "window")
    else:
        poison_validation(monkeypatch, 0.01)
    out = tmp_path / "m"
    args = ["train", "--train", str(corpus), "--out", str(out), *TINY, "--epochs", "1"]
    args += ["--optimizer", "adam", "--lr", "0.01", "--max-recoveries", "0"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert not (out / "config.json").exists() and not (out / "metrics.jsonl").exists()
    assert "nextword train: training diverged: " in err and "best model" not in err
    assert "start again with a lower --lr or --clip; no model was saved" in err

    # over an earlier model (--force): that one stays, and is said to be an earlier run's
    monkeypatch.undo()
    assert main([*args[:-2], "--force"]) == 0
    if how == "nan in a window":
        poison_once(monkeypatch, 0.01, "window")
    else:
        poison_validation(monkeypatch, 0.01)
    capsys.readouterr()
    assert main([*args, "--force"]) == 1
    err = capsys.readouterr().err
    assert f"no model was saved ({out} still holds the model of an earlier run)" in err
    assert load_checkpoint(out).metadata["epoch"] == 1


def test_huge_perplexities_read_as_numbers_and_metrics_stay_json(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A training loss of 448 nats is a perplexity of 195 digits, and one of 800 overflows a
    float: the log shows 3.664e+194 and inf, metrics.jsonl null (JSON has no Infinity), and a run
    with such a history resumes."""
    corpus = write_corpus(tmp_path / "train.txt", 200)
    real, windows = model.training.tasks.train_step, []

    def step(*args: Any) -> Any:
        windows.append(1)
        result, carry = real(*args)
        fake = {1: 800.0, 2: 448.0}.get(math.ceil(len(windows) / WINDOWS))
        return (result if fake is None else dataclasses.replace(result, loss=fake)), carry

    monkeypatch.setattr(model.training.tasks, "train_step", step)
    options = {"layers": 1, "emb": 8, "hidden": 8, "batch_size": 4, "bptt": 6, "epochs": 3}
    options |= {"progress_every": 1e-9}
    out = tmp_path / "m"
    with pytest.raises(StoppedError):
        cfg = merge({"train": str(corpus), "out": str(out), **options})
        train(cfg, stop=StopWhen(lambda: len(windows) >= 2 * WINDOWS + 3))
    err = capsys.readouterr().err
    both = r"\(stream \d+\.\d\d, isolated \d+\.\d\d\)"  # the two validation figures
    assert re.search(rf"^epoch 1: train ppl inf, valid ppl \d+\.\d\d {both}, ", err, re.M), err
    assert re.search(r"^epoch 2: train ppl 3\.66\de\+194, valid ppl \d+\.\d\d \(stream ", err, re.M)
    assert "ppl inf, " in err and re.search(r"ppl 3\.66\de\+194, ", err)  # progress lines
    assert max(len(line) for line in err.splitlines()) < 200

    def strict(text: str) -> list[dict[str, Any]]:
        def refuse(constant: str) -> None:
            raise AssertionError(f"{constant} in metrics.jsonl")

        return [json.loads(x, parse_constant=refuse) for x in text.splitlines()]

    history = strict((out / "metrics.jsonl").read_text())
    assert [(r["train_loss"], r["train_ppl"]) for r in history] == [
        (800.0, None),
        (448.0, pytest.approx(math.exp(448), rel=1e-9)),
    ]
    assert main(["train", "--resume", "--out", str(out)]) == 0
    assert [r["train_ppl"] for r in strict((out / "metrics.jsonl").read_text())][:2] == [
        None,
        pytest.approx(math.exp(448), rel=1e-9),
    ]


def long_text(path: Path, tokens: int) -> Path:
    """One line after another of the corpus's words: a stream of ``tokens`` tokens or more."""
    lines = write_corpus(path, tokens // 4).read_text()
    path.write_text(lines, encoding="utf-8")
    return path


def test_a_relu_rnn_never_saves_a_recurrence_that_can_blow_up_on_long_text(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Its state is unbounded: with ‖Wh‖₂ > 1 it can grow exponentially along a stream, and
    ``nextword eval`` reads a whole file as one. Every saved ‖Wh‖₂ is at most 1, so it cannot."""
    corpus = write_corpus(tmp_path / "train.txt", 300)
    out = tmp_path / "m"
    cell = ["--cell", "rnn", "--activation", "relu", "--layers", "2"]
    assert main(["train", "--train", str(corpus), "--out", str(out), *TINY, *cell]) == 0
    assert "spectral norm ≤ 1" in capsys.readouterr().err
    params = load_checkpoint(out).net.params
    for layer in (0, 1):
        assert np.linalg.norm(params[f"rnn.{layer}.Wh"].astype(np.float64), 2) <= 1 + 1e-6
    assert (
        main(["eval", "--model", str(out), "--data", str(long_text(tmp_path / "long.txt", 40_000))])
        == 0
    )
    assert math.isfinite(json.loads(capsys.readouterr().out)["cross_entropy"])


def test_eval_reports_a_model_whose_state_overflows_instead_of_printing_nan(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    vocab = Vocabulary.from_corpus(
        [line.split() for line in write_corpus(tmp_path / "c.txt", 50).read_text().splitlines()]
    )
    config = ModelConfig(len(vocab), "rnn", "relu", num_layers=1, embed_size=4, hidden_size=4)
    net = RNNLM(config)
    net.params["embedding.W"][:] = 0.5
    net.params["rnn.0.Wx"][:] = 0.5
    net.params["rnn.0.Wh"][:] = 1.5 * np.eye(4)  # h_t ≥ 1.5 h_{t-1}: overflows within ~250 steps
    save_checkpoint(tmp_path / "m", RecurrentLM(net, vocab, Tokenizer("whitespace")))
    data = long_text(tmp_path / "long.txt", 2000)
    assert main(["eval", "--model", str(tmp_path / "m"), "--data", str(data)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "log-probabilities turn non-finite within tokens" in captured.err
    assert "hidden state growing along it overflows" in captured.err
    assert captured.err.rstrip().endswith("no perplexity")


def test_eval_refuses_a_perplexity_that_overflows_a_float_instead_of_printing_infinity(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A cross-entropy of about 1000 nats is finite, but e^1000 is no float: JSON has no
    Infinity, so there is no perplexity to print (exit 1, like a non-finite output)."""
    vocab = Vocabulary.from_corpus(
        [line.split() for line in write_corpus(tmp_path / "c.txt", 50).read_text().splitlines()]
    )
    net = RNNLM(ModelConfig(len(vocab), "lstm", num_layers=1, embed_size=4, hidden_size=4))
    net.params["output.b"][vocab.unk_id] = 1000.0  # every word of the text costs ~1000 nats
    save_checkpoint(tmp_path / "m", RecurrentLM(net, vocab, Tokenizer("whitespace")))
    assert main(["eval", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "c.txt")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    found = re.search(
        r"cross-entropy is ([\d.]+) nats; its perplexity e\^\1 overflows a float", captured.err
    )
    assert found and abs(float(found.group(1)) - 1000) < 10, captured.err
    assert captured.err.rstrip().endswith("no perplexity")


# ------------------------------------------------------------------ progress without a terminal
LINE = re.compile(
    r"^epoch (\d+)/(\d+): window (\d+)/(\d+) \(([\d.]+)%\), loss ([\d.]+), ppl ([\d.]+), "
    r"([\d,]+) tok/s, ETA (\S+) \(this epoch (\S+)\)$"
)


def progress_lines(err: str) -> list[tuple[int, int, int, float, float, float, str, str]]:
    """(epoch, window, windows, percent, loss, ppl, run ETA, epoch ETA) of every progress line."""
    found = []
    for line in err.splitlines():
        if m := LINE.match(line):
            epoch, _, window, windows, pct, loss, ppl, _, eta, epoch_eta = m.groups()
            found.append((int(epoch), int(window), int(windows), float(pct), float(loss),
                          float(ppl), eta, epoch_eta))  # fmt: skip
    return found


def test_the_eta_is_the_whole_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """5 of 10 windows done in 5 s, 2 epochs after this one, 4 s after each epoch: 5 s of
    windows + 4 s, then 2 × (10 + 4) s. It was this epoch's windows alone (5 s)."""
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    progress = Progress(1.0, "epoch 1/3", total=10, first=0, epochs_after=2, between=4.0)
    clock[0] += 5.0
    assert progress.eta(5) == pytest.approx((5.0, 5.0 + 4.0 + 2 * (10.0 + 4.0)))
    assert progress.eta(10)[0] == 0.0


def seconds(duration: str) -> int:
    """1h02m03s, 4m05s or 12s in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(\d+)s", duration)
    assert parts, duration
    h, m, s = (int(x or 0) for x in parts.groups())
    return 3600 * h + 60 * m + s


def test_progress_lines_appear_every_so_often_when_stderr_is_no_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 200)
    out = tmp_path / "m"
    args = ["train", "--train", str(corpus), "--out", str(out), *TINY, "--epochs", "2"]
    assert main([*args, "--progress-every", "1e-9"]) == 0  # a line after every window
    lines = progress_lines(capsys.readouterr().err)
    history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for epoch in (1, 2):
        mine = [x for x in lines if x[0] == epoch]
        assert [x[1] for x in mine] == list(range(1, WINDOWS + 1))
        assert all(x[2] == WINDOWS and x[3] == round(100 * x[1] / WINDOWS, 1) for x in mine)
        assert all(abs(x[5] - math.exp(x[4])) <= 0.06 * x[5] for x in mine)  # ppl = e^loss
        assert mine[-1][4] == pytest.approx(history[epoch - 1]["train_loss"], abs=5e-4)
        assert mine[-1][7] == "0s" and all(seconds(x[6]) >= seconds(x[7]) for x in mine)
    assert [x for x in lines if x[0] == 2][-1][6] == "0s"  # the run's end

    # none by default within a quick run, none with 0, and none on a terminal (tqdm's bar is)
    for extra in ([], ["--progress-every", "0"]):
        assert main([*args, "--force", *extra]) == 0
        assert progress_lines(capsys.readouterr().err) == []
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main([*args, "--force", "--progress-every", "1e-9"]) == 0
    assert progress_lines(capsys.readouterr().err) == []
    monkeypatch.undo()

    # the interval may change on resume: stopped after 5 windows, resumed with lines from window 6
    options = {"layers": 1, "emb": 8, "hidden": 8, "batch_size": 4, "bptt": 6, "epochs": 1}
    done: list[int] = []
    real = model.training.tasks.train_step
    monkeypatch.setattr(model.training.tasks, "train_step", lambda *a: done.append(1) or real(*a))
    with pytest.raises(StoppedError):
        train(
            merge({"train": str(corpus), "out": str(tmp_path / "s"), **options}),
            stop=StopWhen(lambda: len(done) >= 5),
        )
    capsys.readouterr()
    assert (
        main(["train", "--resume", "--out", str(tmp_path / "s"), "--progress-every", "1e-9"]) == 0
    )
    assert [x[1] for x in progress_lines(capsys.readouterr().err)] == list(range(6, WINDOWS + 1))


# ------------------------------------------------------------------ one very long line
def one_long_line(path: Path, tokens: int) -> Path:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in rng.zipf(1.3, size=tokens) % 500]
    path.write_text(" ".join(words) + "\n" + "a short line\n" * 30, encoding="utf-8")
    return path


@pytest.mark.parametrize("task", [["--context", "sentence"], ["--bidirectional"]])
def test_a_task_reading_whole_sentences_cuts_a_very_long_line(
    tmp_path: Path, task: list[str]
) -> None:
    """A 200k-token line under a 1.5 GB address-space limit: whole-sentence training padded
    one batch to its length (a 5 MB line asked for 18.6 GiB) and died with a traceback (exit 1,
    the code for divergence); it is cut into pieces of 256 tokens, and the log says so."""
    corpus = one_long_line(tmp_path / "long.txt", 200_000)
    out = tmp_path / "m"
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))\n"
        "from model.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = ["train", "--train", str(corpus), "--out", str(out), "--layers", "1", "--emb", "8",
            "--hidden", "8", "--epochs", "1", "--min-count", "1", *task]  # fmt: skip
    env = os.environ | {"OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cut 1 training and 0 validation sentences longer than 256 tokens" in done.stderr
    metadata = json.loads((out / "config.json").read_text())["metadata"]
    assert metadata["corpus"]["sentences_cut"] == {"train": 1, "valid": 0, "max_tokens": 256}


def test_the_stream_reads_a_long_line_whole_and_scores_it_in_windows(tmp_path: Path) -> None:
    """Windows of the running text need no cut; the isolated validation figure reads a long
    sentence in windows of 256 steps with the state carried: the same number as at once."""
    from model.inference.evaluation import isolated_cross_entropy
    from model.training.snapshot import prepare_corpus

    corpus = one_long_line(tmp_path / "long.txt", 3_000)
    cfg, data = prepare_corpus(merge({"train": str(corpus), "min_count": 1, "hidden": 8,
                                      "emb": 8, "layers": 1}))  # fmt: skip
    assert max(len(s) for s in data.train_sentences) == 3_000
    assert "sentences_cut" not in data.info
    from model.network.recurrent import RNNLM

    net = RNNLM(cfg.model_config(len(data.vocab)), seed=0, dtype=np.float64)
    sentences = [data.train_sentences[0], *data.train_sentences[1:4]]
    windowed = isolated_cross_entropy(net, sentences, data.vocab, window=256)
    whole = isolated_cross_entropy(net, sentences, data.vocab, window=10_000)
    assert windowed == pytest.approx(whole, rel=1e-12)
