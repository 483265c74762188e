"""``nextword spell`` gives an older checkpoint an open vocabulary without retraining it, and
``nextword train`` / ``ngram`` / ``combine`` build one by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.cli import main
from model.inference.checkpoint import load_checkpoint, save_checkpoint
from model.inference.recurrent_lm import RecurrentLM

TEXT = "the cat sat on the mat\nthe dog ran on the mat\nweena ran to filby\n" * 20


def test_spell_adds_replaces_and_removes_the_open_vocabulary(
    tiny_lm: RecurrentLM, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_checkpoint(tmp_path / "m", tiny_lm)  # as saved before the open vocabulary
    before = load_checkpoint(tmp_path / "m")
    assert before.spelling is None

    assert main(["spell", "--model", str(tmp_path / "m")]) == 0
    spelled = load_checkpoint(tmp_path / "m")
    assert spelled.spelling is not None
    assert spelled.spelling.trained_on == {"source": "vocabulary", "types": 9}
    assert spelled.checksum == before.checksum  # the weights are the same model
    assert "order 5, 9 word types" in capsys.readouterr().out

    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    assert main(["spell", "--model", str(tmp_path / "m"), "--text", str(text), "--order", "3"]) == 0
    spelling = load_checkpoint(tmp_path / "m").spelling
    assert spelling is not None and spelling.order == 3
    assert spelling.trained_on["types"] == 12  # the vocabulary's 9 and weena, to, filby
    info = json.loads(run_info(tmp_path / "m", capsys))
    assert info["open_vocabulary"]["order"] == 3

    assert main(["spell", "--model", str(tmp_path / "m"), "--none"]) == 0
    assert load_checkpoint(tmp_path / "m").spelling is None


def run_info(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    return capsys.readouterr().out


def test_spell_refuses_bad_input_and_writes_nothing(
    tiny_lm: RecurrentLM, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_checkpoint(tmp_path / "m", tiny_lm)
    config = (tmp_path / "m" / "config.json").read_bytes()
    assert main(["spell", "--model", str(tmp_path / "m"), "--order", "11"]) == 2
    assert "--order must be 1 to 10" in capsys.readouterr().err
    assert main(["spell", "--model", str(tmp_path / "m"), "--text", str(tmp_path / "no")]) == 2
    assert "no" in capsys.readouterr().err
    assert main(["spell", "--model", str(tmp_path / "nothing")]) == 2
    assert (tmp_path / "m" / "config.json").read_bytes() == config


def test_ngram_and_combine_build_one_by_default(tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    for order, out in [(2, "a"), (3, "b")]:
        assert main(["ngram", "--train", str(text), "--order", str(order),
                     "--out", str(tmp_path / out)]) == 0  # fmt: skip
        lm = load_checkpoint(tmp_path / out)
        assert lm.spelling is not None and lm.spelling.trained_on["source"] == "training text"
    assert main(["combine", "--model", str(tmp_path / "a"), "--model", str(tmp_path / "b"),
                 "--weights", "0.5", "0.5", "--out", str(tmp_path / "ab")]) == 0  # fmt: skip
    mixed = load_checkpoint(tmp_path / "ab")
    assert mixed.spelling is not None
    (score,) = mixed.score_candidates("the", ["weeno"])  # outside: min-count is 1, so not seen
    assert score.oov_targets == [0]
