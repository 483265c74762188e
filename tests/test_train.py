"""``nextword train`` and ``nextword eval`` end to end on small corpora: files written, options
stored, bad input refused, and a run killed at any moment resumes to the very same model."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from model.cli import main
from model.inference.checkpoint import load_checkpoint
from model.network.class_softmax import WordClasses
from model.training.command import add_train_arguments
from model.training.config import TrainConfig, merge
from model.training.snapshot import StoppedError
from model.training.trainer import StopRequest, train

SUBJECTS = ["the cat", "a dog", "the old man", "my sister", "the bird"]
VERBS = ["sat on", "looked at", "ran to", "saw", "liked"]
OBJECTS = ["the mat", "a tree", "the house", "the river", "a small box"]


def write_corpus(path: Path, sentences: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
        for _ in range(sentences)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


TINY = ["--layers", "1", "--emb", "8", "--hidden", "8", "--batch-size", "4", "--bptt", "6"]


def test_train_writes_a_checkpoint_with_metrics_and_its_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 200)
    out = tmp_path / "model"
    args = ["train", "--train", str(corpus), "--out", str(out), *TINY, "--epochs", "3"]
    assert main([*args, "--optimizer", "adam", "--lr", "0.01"]) == 0
    err = capsys.readouterr().err
    assert "epoch 3: train ppl" in err and "valid ppl" in err
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["valid_ppl"] < history[0]["valid_ppl"]  # it learns
    assert not (out / "resume").exists()  # the snapshot is dropped once the run is done
    lm = load_checkpoint(out)
    meta = lm.metadata
    assert meta["training"]["optimizer"] == "adam" and meta["training"]["hidden"] == 8
    assert meta["training"]["train"] == str(corpus.resolve())
    best = min(history, key=lambda r: r["valid_ppl"])
    assert meta["valid_perplexity"] == best["valid_ppl"] and meta["epoch"] == best["epoch"]
    kept = corpus.read_text().splitlines()[:180]  # 90%: the last 10% are held out for validation
    assert meta["corpus"]["train_tokens"] == sum(len(line.split()) + 1 for line in kept)  # + </s>
    assert len(meta["corpus"]["train_sha256"]) == 64


def test_config_file_then_command_line_options(tmp_path: Path) -> None:
    write_corpus(tmp_path / "train.txt", 120)
    config = tmp_path / "run.toml"
    config.write_text(
        'train = "train.txt"\ncell = "gru"\nhidden = 6\nemb = 6\nepochs = 1\nlayers = 1\n'
    )
    out = tmp_path / "m"
    assert (
        main(["train", "--config", str(config), "--out", str(out), "--hidden", "7", "--emb", "7"])
        == 0
    )
    training = load_checkpoint(out).metadata["training"]
    assert training["cell"] == "gru"  # from the file
    assert training["hidden"] == 7  # the command line wins
    assert training["train"] == str((tmp_path / "train.txt").resolve())  # relative to the file


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("layers = true", "layers must be of type int, got True"),  # a bool is no integer
        ('lr = "fast"', "lr must be of type float | None, got 'fast'"),
        ("dropout = nan", "dropout must be of type float, got nan"),
    ],
)
def test_a_config_file_value_of_the_wrong_type_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture, line: str, message: str
) -> None:
    write_corpus(tmp_path / "train.txt", 100)
    config = tmp_path / "run.toml"
    config.write_text(f'train = "train.txt"\n{line}\n')
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "m")]) == 2
    assert message in capsys.readouterr().err


def test_an_output_directory_holding_a_model_is_refused_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 100)
    out = tmp_path / "m"
    args = ["train", "--train", str(corpus), "--out", str(out), *TINY, "--epochs", "1"]
    assert main(args) == 0
    assert main(args) == 2
    assert "already holds a model; pass --force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (None, [], "no such file"),
        (b"\n\n", [], "the file is empty"),
        (b"ok fine\n\xff\xfe bad\n" * 30, [], "not UTF-8 at line 2, column 1"),
        (b"a b\nc d\ne f\ng h\ni j\n", ["--min-count", "1"], "fewer than one batch"),
        (b"same same same\n" * 300, [], "the vocabulary has 1 words"),
        (b"a b c d\n" * 50, ["--cell", "cnn"], "invalid choice: 'cnn'"),
        (b"a b c d\n" * 50, ["--dropout", "1.5"], "dropout must be in"),
        (
            b"a b c d\n" * 50,
            ["--classes", "4"],
            "classes must be a positive integer with --softmax",
        ),
        (b"a b c d\n" * 50, ["--softmax", "class", "--classes", "0"], "classes must be a positive"),
        (b"a b c d\n" * 50, ["--softmax", "sampled"], "invalid choice: 'sampled'"),
        (b"a b c d\n" * 50, ["--shortlist", "2"], "shortlist must be 0 or more, and with"),
        (b"a b c d\n" * 50, ["--softmax", "class", "--shortlist", "-1"], "shortlist must be"),
    ],
)
def test_bad_input_fails_early_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture, content: bytes | None, extra: list, message: str
) -> None:
    corpus = tmp_path / "corpus.txt"
    if content is not None:
        corpus.write_bytes(content)
    args = [
        "train",
        "--train",
        str(corpus),
        "--out",
        str(tmp_path / "m"),
        *TINY,
        "--epochs",
        "1",
        *extra,
    ]
    with pytest.raises(SystemExit) if "invalid choice" in message else contextlib.nullcontext():
        assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m" / "config.json").exists()


def run_cli(*args: str) -> subprocess.Popen:
    env = os.environ | {"OPENBLAS_NUM_THREADS": "1"}  # bit-identical sums in every run
    return subprocess.Popen(
        [sys.executable, "-m", "model.training.command", *args],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


def resumable_args(corpus: Path, out: Path) -> list[str]:
    options = "--layers 2 --emb 16 --hidden 16 --batch-size 4 --bptt 5 --epochs 4 --dropout 0.2"
    options += " --optimizer adam --lr 0.01 --checkpoint-every 3"
    return ["--train", str(corpus), "--out", str(out), *options.split()]


def weights(out: Path) -> dict[str, np.ndarray]:
    return load_checkpoint(out).net.params


@pytest.mark.slow  # three training processes
@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
def test_a_stopped_run_resumes_to_exactly_the_uninterrupted_result(
    tmp_path: Path, how: str
) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 1500, seed=1)
    reference = run_cli(*resumable_args(corpus, tmp_path / "straight"))  # beside the stopped one
    out = tmp_path / "stopped"
    first = run_cli(*resumable_args(corpus, out))
    deadline = time.monotonic() + 60
    while not (out / "metrics.jsonl").exists():  # stop it after the first epoch, mid-second
        assert first.poll() is None and time.monotonic() < deadline, "the run ended too early"
        time.sleep(0.02)
    time.sleep(0.3)
    first.send_signal(signal.SIGKILL if how == "kill -9" else signal.SIGTERM)
    code = first.wait(timeout=30)
    if how == "SIGTERM":
        assert code == 3
        assert "stopped; the run is saved" in first.stderr.read()
    snapshot = json.loads((out / "resume" / "config.json").read_text())["metadata"]["resume"]
    assert (snapshot["epoch"], snapshot["step"]) != (4, 0)  # it really stopped midway
    assert reference.wait(timeout=120) == 0, reference.stderr.read()

    resumed = run_cli("--resume", "--out", str(out))
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read()
    for name, p in weights(tmp_path / "straight").items():
        np.testing.assert_array_equal(weights(out)[name], p, err_msg=name)
    strip = lambda path: [  # noqa: E731 - timings differ, the learning does not
        {
            k: v
            for k, v in json.loads(line).items()
            if k not in ("tokens_per_s", "elapsed_s", "validate_s")
        }
        for line in (path / "metrics.jsonl").read_text().splitlines()
    ]
    assert strip(out) == strip(tmp_path / "straight")


def test_resume_needs_a_saved_run_and_refuses_changed_options(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 100)
    out = tmp_path / "m"
    assert main(["train", "--train", str(corpus), "--out", str(out), *TINY, "--epochs", "1"]) == 0
    assert main(["train", "--resume", "--out", str(out)]) == 2
    assert "no saved run to resume" in capsys.readouterr().err
    # a run stopped by a signal leaves its snapshot: stop one after its first window
    stopped = StopRequest()
    stopped.requested = True
    options = {"layers": 1, "emb": 8, "hidden": 8, "batch_size": 4, "bptt": 6, "epochs": 2}
    with pytest.raises(StoppedError):
        train(merge({"train": str(corpus), "out": str(tmp_path / "s"), **options}), stop=stopped)
    assert main(["train", "--resume", "--out", str(tmp_path / "s"), "--hidden", "9"]) == 2
    assert "options differ from it: ['hidden']" in capsys.readouterr().err
    assert (
        main(["train", "--resume", "--out", str(tmp_path / "s"), "--epochs", "3"]) == 0
    )  # allowed
    history = (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == [1, 2, 3]


def test_eval_reports_penn_treebank_style_perplexity(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 200)
    out = tmp_path / "m"
    assert main(["train", "--train", str(corpus), "--out", str(out), *TINY, "--epochs", "1"]) == 0
    capsys.readouterr()
    data = tmp_path / "test.txt"
    data.write_text("the cat sat on the mat\nthe zebra saw a unicorn\n", encoding="utf-8")
    assert main(["eval", "--model", str(out), "--data", str(data)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"tokens", "cross_entropy", "perplexity", "oov_rate", "task",
                           "isolated_cross_entropy", "isolated_perplexity", "open_cross_entropy",
                           "open_perplexity", "open_isolated_cross_entropy",
                           "open_isolated_perplexity"}  # fmt: skip
    # the open vocabulary's figures: zebra and unicorn scored by spelling, not all of <unk>
    assert result["open_perplexity"] > result["perplexity"]
    assert result["task"] == "next-word"  # a gap-filling model says "gap-filling"
    assert result["tokens"] == 6 + 5 + 2  # words plus one </s> per line
    assert result["oov_rate"] == pytest.approx(2 / 13, abs=1e-6)  # zebra, unicorn
    assert result["perplexity"] == pytest.approx(math.exp(result["cross_entropy"]), rel=1e-4)
    lm = load_checkpoint(out)
    by_sentence = lm.score_sentences(["the cat sat on the mat"])[0].log_prob
    assert by_sentence < 0
    alone = sum(s.log_prob for s in lm.score_sentences(data.read_text().splitlines()))
    assert result["isolated_perplexity"] == pytest.approx(math.exp(-alone / 13), rel=1e-4)


def test_python_dash_m_model_train_is_the_same_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "model.training.command", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "--checkpoint-every" in result.stdout and "--tie-weights" in result.stdout


def test_the_plot_is_drawn_with_matplotlib_and_skipped_with_a_notice_without(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 100)
    args = ["train", "--train", str(corpus), *TINY, "--epochs", "2"]
    assert main([*args, "--out", str(tmp_path / "with")]) == 0
    assert (tmp_path / "with" / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "without")]) == 0
    assert "plot skipped: matplotlib is not installed" in capsys.readouterr().err
    assert not (tmp_path / "without" / "training.png").exists()


def test_every_training_option_is_a_generated_command_line_option() -> None:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    options = {a.dest: a for a in parser._actions}
    for f in fields(TrainConfig):
        assert f.name in options, f.name
        assert f.metadata["help"].split(" (")[0] in options[f.name].help
    args = parser.parse_args(
        ["--layers", "3", "--dropout", "0.5", "--no-lowercase", "--tokenizer", "chars",
         "--max-vocab", "90", "--progress-every", "2.5"]
    )  # fmt: skip
    assert vars(args) == {"resume": False, "force": False, "layers": 3, "dropout": 0.5,
                          "lowercase": False, "tokenizer": "chars", "max_vocab": 90,
                          "progress_every": 2.5}  # fmt: skip
    with pytest.raises(SystemExit):
        parser.parse_args(["--optimizer", "rmsprop"])  # choices come from the field
    assert "(0.25)" in options["clip"].help and options["progress_every"].metavar == "SECONDS"


def test_softmax_class_trains_a_normalised_model_with_classes_by_frequency(
    tmp_path: Path,
) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 200)
    out = tmp_path / "model"
    args = ["train", "--train", str(corpus), "--out", str(out), *TINY, "--epochs", "2"]
    assert main([*args, "--softmax", "class", "--classes", "4"]) == 0
    lm = load_checkpoint(out)
    classes = lm.net.config.classes
    assert classes is not None and 1 < classes.num_classes <= 4
    assert classes == WordClasses.by_frequency(lm.vocab.counts, 4)  # cut from the counts
    assert lm.next_distribution("the cat").sum() == pytest.approx(1.0, abs=1e-5)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["valid_ppl"] < len(lm.vocab)  # it learns


def test_a_shortlist_gives_frequent_words_their_own_head_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 200)
    out = tmp_path / "model"
    args = ["train", "--train", str(corpus), "--out", str(out), *TINY, "--epochs", "2"]
    assert main([*args, "--softmax", "class", "--shortlist", "5", "--classes", "3"]) == 0
    assert "class softmax: a shortlist of 5 words, then" in capsys.readouterr().err
    lm = load_checkpoint(out)
    classes = lm.net.config.classes
    assert classes == WordClasses.by_frequency(lm.vocab.counts, 3, shortlist=5)
    assert classes.shortlist == 5 and classes.num_classes <= 5 + 3
    assert lm.next_distribution("the cat").sum() == pytest.approx(1.0, abs=1e-5)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["valid_ppl"] < len(lm.vocab)


def test_a_bidirectional_model_trains_with_a_class_softmax(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 200)
    out = tmp_path / "model"
    args = ["train", "--train", str(corpus), "--out", str(out), *TINY, "--epochs", "2"]
    assert main([*args, "--bidirectional", "--softmax", "class", "--classes", "4"]) == 0
    lm = load_checkpoint(out)
    assert lm.task == "gap-filling" and lm.net.classes is not None
    left, right = lm.vocab.encode(["the"]), lm.vocab.encode(["sat"])
    every_word = [np.array([w]) for w in range(len(lm.vocab))]
    log_p = np.concatenate(lm.net.fill_scores(left, right, every_word))
    assert np.exp(log_p).sum() == pytest.approx(1.0, abs=1e-5)
    (cat,) = lm.fill("the", "sat", ["cat"]).scores
    assert cat.log_prob == pytest.approx(log_p[lm.vocab.encode(["cat"])[0]], abs=1e-6)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["valid_ppl"] < len(lm.vocab)
