"""``resume/config.json`` is checked like a checkpoint before a run continues from it: each edit
below (a wrong type, a value out of range, a field that disagrees with the weights, the history
or the training configuration) is refused by ``nextword train --resume`` with exit code 2 and a
message naming the field, never a traceback and never a silently different model.

The snapshot keeps a sha256 of the metadata that defines the run, which refuses any edit; the
cases recompute it (as an editor who knew it would), so that the field checks behind it, which
also guard snapshots of older versions that have no digest, are the ones tested."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

import model.training.tasks
import model.training.trainer
from model.cli import main
from model.inference.checkpoint import load_checkpoint
from model.training.config import merge
from model.training.snapshot import StoppedError
from model.training.trainer import train
from tests.test_train import write_corpus
from tests.test_train_faults import StopWhen

Config = dict[str, Any]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped in the middle of its second epoch (Adam, dropout, 2 layers): the snapshot
    holds history, optimizer moments, a carried state and a generator that is in use."""
    tmp = tmp_path_factory.mktemp("stopped")
    corpus = write_corpus(tmp / "train.txt", 200)
    options = {"layers": 2, "emb": 8, "hidden": 8, "batch_size": 4, "bptt": 6, "epochs": 3}
    options |= {"optimizer": "adam", "lr": 0.01, "dropout": 0.2, "tie_weights": False}
    windows: list[int] = []
    real = model.training.tasks.train_step
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model.training.tasks, "train_step", lambda *a: windows.append(1) or real(*a))
        with pytest.raises(StoppedError):
            cfg = merge({"train": str(corpus), "out": str(tmp / "run"), **options})
            train(cfg, stop=StopWhen(lambda: len(windows) >= 60 + 7))  # epoch 2, window 7
    return tmp / "run"


def metadata_sha256(metadata: Config) -> str:
    """The digest a snapshot keeps of the sections that define the run: sha256 of their
    canonical JSON (sorted keys, no whitespace), written here independently of model/."""
    sections = {name: metadata.get(name) for name in ("resume", "training", "corpus")}
    return hashlib.sha256(
        json.dumps(sections, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def edit_config(resume: Path, edit: Callable[[Config], None], digest: bool = True) -> None:
    """Apply ``edit`` to config.json; with ``digest`` (the default), recompute the metadata's
    sha256 when it has one, so that the field check under test fires rather than the digest."""
    path = resume / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    metadata = config.get("metadata")
    if digest and isinstance(metadata, dict) and "metadata_sha256" in metadata:
        metadata["metadata_sha256"] = metadata_sha256(metadata)
    path.write_text(json.dumps(config))


def edit_tensors(resume: Path, role: str, edit: Callable[[dict[str, np.ndarray]], None]) -> None:
    """Rewrite the tensor file playing ``role``, with its size and sha256 in config.json."""
    config = json.loads((resume / "config.json").read_text())
    name = config["roles"][role]
    tensors = dict(load_safetensors((resume / name).read_bytes()))
    edit(tensors)
    data = save_safetensors(tensors)
    (resume / name).write_bytes(data)
    config["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (resume / "config.json").write_text(json.dumps(config))


def resume_field(key: str, value: Any, digest: bool = True) -> Callable[[Path], None]:
    def edit(config: Config) -> None:
        config["metadata"]["resume"][key] = value

    return lambda resume: edit_config(resume, edit, digest)


def history_field(key: str, value: Any) -> Callable[[Path], None]:
    def edit(config: Config) -> None:
        config["metadata"]["resume"]["history"][0][key] = value

    return lambda resume: edit_config(resume, edit)


def drop_resume_field(key: str) -> Callable[[Path], None]:
    return lambda resume: edit_config(resume, lambda c: c["metadata"]["resume"].pop(key))


def training_field(key: str, value: Any, digest: bool = True) -> Callable[[Path], None]:
    def edit(config: Config) -> None:
        config["metadata"]["training"][key] = value

    return lambda resume: edit_config(resume, edit, digest)


def rng_field(key: str, value: Any) -> Callable[[Path], None]:
    def edit(config: Config) -> None:
        config["metadata"]["resume"]["rng"][key] = value

    return lambda resume: edit_config(resume, edit)


def tensor(role: str, key: str, change: Callable[[np.ndarray], np.ndarray | None]) -> Callable:
    """Replace tensor ``key`` of group ``role`` by ``change(it)``; None drops it."""

    def edit(tensors: dict[str, np.ndarray]) -> None:
        new = change(tensors.pop(key))
        if new is not None:
            tensors[key] = np.asarray(new)  # a 0-d array's arithmetic gives a numpy scalar

    return lambda resume: edit_tensors(resume, role, edit)


def sgd_everywhere(resume: Path) -> None:
    def edit(config: Config) -> None:
        config["metadata"]["resume"]["optimizer"] = "sgd"
        config["metadata"]["training"]["optimizer"] = "sgd"
        config["metadata"]["training"]["lr"] = None

    edit_config(resume, edit)


def no_carry(resume: Path) -> None:
    edit_tensors(resume, "carry", lambda tensors: tensors.clear())


def older_version_with_best_valid_0(resume: Path) -> None:
    def edit(config: Config) -> None:
        config["metadata"].pop("metadata_sha256", None)  # older versions wrote none
        config["metadata"]["resume"]["best_valid"] = 0

    edit_config(resume, edit)


EDITS = {
    # the resume counters: presence, types (bool is no int), ranges and agreement
    "rng missing": (drop_resume_field("rng"), "resume.rng is missing"),
    "step missing": (drop_resume_field("step"), "resume.step is missing"),
    "step a string": (resume_field("step", "x"), "resume.step must be an integer"),
    "step a bool": (resume_field("step", True), "resume.step must be an integer"),
    "step negative": (resume_field("step", -5), "resume.step must be an integer in 0..60"),
    "step past the epoch": (resume_field("step", 61), "resume.step must be an integer in 0..60"),
    "epoch 99": (resume_field("epoch", 99), "resume.epoch must be the number of epoch records"),
    "epoch a float": (resume_field("epoch", 1.0), "resume.epoch must be"),
    "history not a list": (resume_field("history", "x"), "resume.history must be a list"),
    "history out of order": (resume_field("history", [{"epoch": 2}]), "resume.history must be"),
    "bad_epochs above epoch": (resume_field("bad_epochs", 2), "resume.bad_epochs must be"),
    "tokens negative": (resume_field("tokens", -3), "resume.tokens must be an integer ≥ 0"),
    "tokens a float": (resume_field("tokens", 1.5), "resume.tokens must be an integer ≥ 0"),
    "loss_sum NaN": (resume_field("loss_sum", float("nan")), "resume.loss_sum must be a finite"),
    "loss_sum negative": (resume_field("loss_sum", -1.0), "resume.loss_sum must be a finite"),
    "elapsed infinite": (resume_field("elapsed", float("inf")), "resume.elapsed must be"),
    "best_valid NaN": (resume_field("best_valid", float("nan")), "resume.best_valid must be"),
    "best_valid a string": (resume_field("best_valid", "low"), "resume.best_valid must be"),
    "recoveries not a list": (resume_field("recoveries", 3), "resume.recoveries must be"),
    "recoveries of empty records": (
        resume_field("recoveries", [{}] * 9),
        "resume.recoveries[0].after_window is missing",
    ),
    "best_valid 0": (
        resume_field("best_valid", 0),
        "resume.best_valid must be the smallest valid_loss in resume.history",
    ),
    "best_valid above the best": (resume_field("best_valid", 1e300), "resume.best_valid must be"),
    "bad_epochs 1 after a best epoch": (
        resume_field("bad_epochs", 1),
        "resume.bad_epochs must be the number of epochs since the last best one "
        "(0, by resume.history), got 1",
    ),
    "tokens beyond the windows done": (
        resume_field("tokens", 10**30),
        "resume.tokens must be an integer in 0..168 (resume.step × batch_size × bptt)",
    ),
    # the epoch records, which the log, metrics.jsonl, the plot and the recoveries count read
    "history record of an epoch alone": (
        resume_field("history", [{"epoch": 1}]),
        "resume.history[0].train_loss is missing",
    ),
    "history record not the best": (history_field("best", False), "resume.bad_epochs must be"),
    "history record's best a number": (
        history_field("best", 1),
        "resume.history[0].best must be true or false",
    ),
    "history record's valid_ppl a string": (
        history_field("valid_ppl", "x"),
        "resume.history[0].valid_ppl must be a perplexity ≥ 1, or null",
    ),
    "history record's lr negative": (
        history_field("lr", -1.0),
        "resume.history[0].lr must be a finite number > 0",
    ),
    "history record's recoveries a number": (
        history_field("recoveries", 5),
        "resume.history[0].recoveries must be a list of recovery records",
    ),
    "history record's recoveries a string": (
        history_field("recoveries", "xxxx"),
        "resume.history[0].recoveries must be a list of recovery records",
    ),
    "history record's recovery without its lr": (
        history_field("recoveries", [{"after_window": 9, "error": "x", "resumed_from_window": 0}]),
        "resume.history[0].recoveries[0].lr is missing",
    ),
    "no digest (an older version), best_valid 0": (
        older_version_with_best_valid_0,
        "resume.best_valid must be the smallest valid_loss",
    ),
    # edited without recomputing the digest: refused whatever the field
    "bptt edited, digest not recomputed": (
        training_field("bptt", 20, digest=False),
        "resume/config.json: metadata was edited (sha256 does not match); cannot resume",
    ),
    "clip edited, digest not recomputed": (
        training_field("clip", 100.0, digest=False),
        "metadata was edited (sha256 does not match)",
    ),
    "best_valid edited, digest not recomputed": (
        resume_field("best_valid", 0, digest=False),
        "metadata was edited (sha256 does not match)",
    ),
    "optimizer sgd over Adam state": (resume_field("optimizer", "sgd"), "resume.optimizer"),
    # the dropout generator
    "rng of another generator": (rng_field("bit_generator", "MT19937"), "resume.rng must be"),
    "rng state mangled": (rng_field("state", {"state": "x"}), "resume.rng is not a valid"),
    "rng not an object": (resume_field("rng", 42), "resume.rng must be the state of a PCG64"),
    # the training configuration: types, and agreement with the saved network
    "layers changed": (training_field("layers", 3), "layers 3 ≠ 2"),
    "hidden changed": (training_field("hidden", 9), "hidden 9 ≠ 8"),
    "cell changed": (training_field("cell", "gru"), "cell 'gru' ≠ 'lstm'"),
    "layers a bool": (training_field("layers", True), "layers must be of type int"),
    "lr a string": (training_field("lr", "x"), "lr must be of type float | None"),
    "training.train missing": (
        lambda r: edit_config(r, lambda c: c["metadata"]["training"].pop("train")),
        "metadata.training.train must be the training corpus's path, got None",
    ),
    "training missing": (
        lambda r: edit_config(r, lambda c: c["metadata"].pop("training")),
        "metadata.training is missing",
    ),
    "resume section missing": (
        lambda r: edit_config(r, lambda c: c["metadata"].pop("resume")),
        "metadata.resume is missing",
    ),
    # the optimizer tensors: exactly the expected names and shapes, finite
    "optimizer sgd throughout, Adam tensors": (sgd_everywhere, "unexpected ['m.embedding.W'"),
    "optimizer moment NaN": (
        tensor("optimizer", "m.output.b", lambda t: np.full_like(t, np.nan)),
        "'m.output.b'",
    ),
    "optimizer moment missing": (tensor("optimizer", "v.output.b", lambda t: None), "v.output.b"),
    "optimizer moment reshaped": (
        tensor("optimizer", "m.output.b", lambda t: t[:-1]),
        "optimizer tensor 'm.output.b': float32 (25,), expected floats (26,)",
    ),
    "second moment negative": (
        tensor("optimizer", "v.output.b", lambda t: -t - 1),
        "'v.output.b': a second moment below 0",
    ),
    "optimizer lr above the start": (
        tensor("optimizer", "lr", lambda t: t * 10),
        "optimizer lr 0.1 is not in (0, 0.01]",
    ),
    "adam step count negative": (
        tensor("optimizer", "t", lambda t: -t),
        "optimizer tensor 't' must be an integer ≥ 0",
    ),
    # the carried hidden state: present mid-epoch, layers × (h, c), each (batch, hidden), finite
    "carry empty mid-epoch": (no_carry, "the carry tensors must be ['0.0', '0.1', '1.0', '1.1']"),
    "carry NaN": (tensor("carry", "1.0", lambda t: np.full_like(t, np.nan)), "'1.0'"),
    "carry reshaped": (
        tensor("carry", "0.1", lambda t: t[:2]),
        "carry tensor '0.1' must be finite float32 (4, 8), got float32 (2, 8)",
    ),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_snapshot_is_refused_naming_the_field(
    stopped: Path, tmp_path: Path, capsys: pytest.CaptureFixture, edit: str
) -> None:
    out = tmp_path / "run"
    shutil.copytree(stopped, out)
    change, message = EDITS[edit]
    change(out / "resume")
    assert main(["train", "--resume", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(out / "resume") in err and "Traceback" not in err
    assert (out / "metrics.jsonl").read_text().count("\n") == 1  # nothing trained on


def test_the_unedited_snapshot_resumes(stopped: Path, tmp_path: Path) -> None:
    metadata = json.loads((stopped / "resume" / "config.json").read_text())["metadata"]
    assert metadata["metadata_sha256"] == metadata_sha256(metadata)
    shutil.copytree(stopped, tmp_path / "run")
    assert main(["train", "--resume", "--out", str(tmp_path / "run")]) == 0


def test_a_run_saved_before_per_cell_defaults_resumes_as_it_started(tmp_path: Path) -> None:
    """A ReLU RNN run with SGD's old default rate 20 and no norm bound, stopped mid-epoch by an
    older nextword: its snapshot lacks the new options and the bound's vectors."""
    corpus = write_corpus(tmp_path / "train.txt", 200)
    options = {"cell": "rnn", "activation": "relu", "layers": 1, "emb": 8, "hidden": 8}
    options |= {"batch_size": 4, "bptt": 6, "epochs": 2, "lr": 20.0, "max_recurrent_norm": 0.0}
    options |= {"optimizer": "sgd"}  # the default then
    windows: list[int] = []
    real = model.training.tasks.train_step
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model.training.tasks, "train_step", lambda *a: windows.append(1) or real(*a))
        with pytest.raises(StoppedError):
            cfg = merge({"train": str(corpus), "out": str(tmp_path / "run"), **options})
            train(cfg, stop=StopWhen(lambda: len(windows) >= 7))
    resume = tmp_path / "run" / "resume"

    def older(config: Config) -> None:
        training = config["metadata"]["training"]
        for key in ("max_recurrent_norm", "max_recoveries", "progress_every"):
            training.pop(key)
        training["lr"] = None  # the default then was 20 for every cell; now 3 for a ReLU RNN
        config["metadata"]["resume"].pop("recoveries")
        config["metadata"].pop("metadata_sha256", None)  # nor the digest: fields checked alone
        assert "norm_cap" not in config["roles"]  # no bound, no vectors

    edit_config(resume, older)
    assert main(["train", "--resume", "--out", str(tmp_path / "run")]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["metadata"]["training"]
    assert (saved["lr"], saved["max_recurrent_norm"]) == (20.0, 0.0)


def test_a_run_saved_before_the_warm_up_and_normalisation_resumes_as_it_started(
    tmp_path: Path,
) -> None:
    """An Adam run stopped by a version without ``warmup`` and ``normalize``: it continues with
    no warm-up (the default now warms up for an epoch) and no normalisation, and ends with the
    weights of an uninterrupted run of the same options with --warmup 0."""
    corpus = write_corpus(tmp_path / "train.txt", 200)
    options = {"layers": 1, "emb": 8, "hidden": 8, "batch_size": 4, "bptt": 6, "epochs": 2}
    options |= {"optimizer": "adam", "lr": 0.01, "dropout": 0.0}
    windows: list[int] = []
    real = model.training.tasks.train_step
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model.training.tasks, "train_step", lambda *a: windows.append(1) or real(*a))
        with pytest.raises(StoppedError):
            cfg = merge(
                {"train": str(corpus), "out": str(tmp_path / "run"), "warmup": 0, **options}
            )
            train(cfg, stop=StopWhen(lambda: len(windows) >= 5))

    def older(config: Config) -> None:
        for key in ("warmup", "normalize"):
            config["metadata"]["training"].pop(key)
        config["metadata"].pop("metadata_sha256", None)

    edit_config(tmp_path / "run" / "resume", older)
    assert main(["train", "--resume", "--out", str(tmp_path / "run")]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["metadata"]["training"]
    assert (saved["warmup"], saved["normalize"]) == (0, "none")
    straight = merge({"train": str(corpus), "out": str(tmp_path / "straight"), "warmup": 0,
                      **options})  # fmt: skip
    train(straight)
    for name, p in load_checkpoint(tmp_path / "straight").net.params.items():
        np.testing.assert_array_equal(load_checkpoint(tmp_path / "run").net.params[name], p)
