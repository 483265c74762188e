"""The real server under faults: SIGHUP picks up a new checkpoint, a killed worker is replaced."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.launch import is_ready, start_server
from model.checkpoint import load_checkpoint, save_checkpoint
from model.network import RNNLM
from model.scoring import LanguageModel


def start(model_dir: Path, workers: int) -> tuple[subprocess.Popen, str]:
    return start_server([f"m={model_dir}"], workers=workers)


def ready(url: str) -> bool:
    return is_ready(url)


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.1)


def children(pid: int) -> set[int]:
    """The worker processes of the server ``pid`` (multiprocessing children running spawn_main)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in command:
                found.add(int(entry.name))
    return found


@pytest.fixture
def model_dir(tmp_path: Path, tiny_lm: LanguageModel) -> Iterator[Path]:
    save_checkpoint(tmp_path / "m", tiny_lm)
    yield tmp_path / "m"


def checksum(url: str) -> str:
    return httpx.get(f"{url}/v1/models/m", timeout=5).json()["checksum"]


def test_sighup_reloads_a_checkpoint_written_while_serving(
    model_dir: Path, tiny_lm: LanguageModel
) -> None:
    process, url = start(model_dir, workers=1)
    try:
        before = checksum(url)
        new = LanguageModel(
            RNNLM(tiny_lm.net.config, seed=21, dtype=np.float64), tiny_lm.vocab, tiny_lm.tokenizer
        )
        save_checkpoint(model_dir, new)
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: checksum(url) != before, 30, "the new checksum")
        assert checksum(url) == load_checkpoint(model_dir).checksum
        assert ready(url)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_killed_worker_is_replaced_and_the_service_keeps_answering(model_dir: Path) -> None:
    process, url = start(model_dir, workers=2)
    try:
        wait_until(lambda: len(children(process.pid)) >= 2, 30, "two workers")
        workers = children(process.pid)
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: victim not in children(process.pid) and len(children(process.pid)) >= 2,
            60,
            "a new worker",
        )
        wait_until(lambda: ready(url), 60, "ready again")
        answers = [
            httpx.post(f"{url}/v1/candidates", json={"candidates": ["cat"]}, timeout=10).status_code
            for _ in range(20)
        ]
        assert answers == [200] * 20
    finally:
        process.terminate()
        process.wait(timeout=30)
