"""What a new user follows: the README's commands and the Makefile's ``run``."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import parser as build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
GUIDES = [README, *(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md")))]


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S)


def nextword_commands(text: str) -> list[list[str]]:
    """Every ``nextword …`` command of the README's shell blocks, as arguments (comments,
    continuation lines and ``$(…)`` joined and dropped as a shell would)."""
    commands = []
    for block in shell_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("nextword "):
                commands.append(shlex.split(line)[1:])
    return commands


COMMANDS = [args for text in GUIDES for args in nextword_commands(text)]


def test_the_guides_have_nextword_commands_to_check() -> None:
    assert len(nextword_commands(README)) >= 5 and len(COMMANDS) >= 20


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_every_documented_nextword_command_parses(args: list[str]) -> None:
    """Each command's subcommand and options exist as written (argparse exits 2 on any other;
    ``--help`` exits 0 after printing)."""
    try:
        build_parser().parse_args(args)
    except SystemExit as e:
        assert e.code == 0 and "--help" in args


def test_the_quick_start_says_how_to_reach_the_nextword_command() -> None:
    """``make run`` installs into .venv, which is not on PATH: every ``nextword`` example failed
    with "command not found" until the quick start said to activate it."""
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    first_use = quick.find("nextword ")
    activation = quick.find(". .venv/bin/activate")
    assert activation != -1 and activation < first_use


@pytest.mark.slow  # make and a process
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_refuses_a_model_directory_that_holds_no_model(tmp_path: Path) -> None:
    """A typo in MODEL= trained the built-in model into the misspelt directory and served it;
    only the built-in default may be trained by ``make run``."""
    typo = tmp_path / "models" / "clals-adam"
    venv_bin = Path(sys.prefix) / "bin"
    result = subprocess.run(
        ["make", "-o", f"{venv_bin}/.installed", "run", f"MODEL={typo}", f"VENV={sys.prefix}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{typo} holds no model" in result.stderr
    assert not typo.exists()
