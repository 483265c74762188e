"""The ``nextword`` console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model import __version__
from model.cli import main
from model.inference.checkpoint import save_checkpoint
from model.inference.recurrent_lm import RecurrentLM


def test_info_describes_a_checkpoint(
    tmp_path: Path, tiny_lm: RecurrentLM, capsys: pytest.CaptureFixture
) -> None:
    save_checkpoint(tmp_path, tiny_lm, metadata={"corpus": "tiny"})
    assert main(["info", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"]["cell"] == "lstm"
    assert out["vocab_size"] == len(tiny_lm.vocab)
    assert out["parameters"] == tiny_lm.net.num_parameters()
    assert out["metadata"]["corpus"] == "tiny"


def test_info_on_a_non_checkpoint_fails_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["info", str(tmp_path)]) == 2
    assert "is not a nextword checkpoint" in capsys.readouterr().err


def test_console_script_reports_its_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "model.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"nextword {__version__}"
