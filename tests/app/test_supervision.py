"""The real server under faults: SIGHUP picks up a new checkpoint, a killed worker is replaced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.launch import free_port, is_ready, start_server
from model.inference.checkpoint import load_checkpoint, save_checkpoint
from model.inference.gap_filling_lm import GapFillingLM
from model.inference.recurrent_lm import RecurrentLM
from model.network.bidirectional import BiRNNLM
from model.network.recurrent import RNNLM, ModelConfig

pytestmark = pytest.mark.slow  # real processes and sockets: `make test-fast` skips them


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
def model_dir(tmp_path: Path, tiny_lm: RecurrentLM) -> Iterator[Path]:
    save_checkpoint(tmp_path / "m", tiny_lm)
    yield tmp_path / "m"


def checksum(url: str) -> str:
    return httpx.get(f"{url}/v1/models/m", timeout=5).json()["checksum"]


def test_sighup_reloads_a_checkpoint_written_while_serving(
    model_dir: Path, tiny_lm: RecurrentLM
) -> None:
    process, url = start(model_dir, workers=1)
    try:
        before = checksum(url)
        new = RecurrentLM(
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


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the series of ``name`` in /metrics that carry ``labels`` (0 when none does)."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        series = line.startswith((f"{name}{{", f"{name} "))
        if series and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Traffic:
    """Requests on fresh connections (so both workers get them) until stopped; every answer kept."""

    def __init__(self, url: str) -> None:
        self.url, self.answers, self.stop = url, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            for path, body in (("/v1/candidates", {"candidates": ["cat"]}), ("/readyz", None)):
                try:
                    r = (
                        httpx.post(f"{self.url}{path}", json=body, timeout=10)
                        if body
                        else httpx.get(f"{self.url}{path}", timeout=10)
                    )
                    self.answers.append((path, r.status_code))
                except httpx.TransportError as e:
                    self.answers.append((path, type(e).__name__))

    def finish(self) -> list[tuple[str, object]]:
        self.stop.set()
        self.thread.join(30)
        return self.answers


def loads(url: str, **labels: str) -> float:
    """Checkpoint loads counted in /metrics (all workers), e.g. ``result="refused"``."""
    return metric(url, "nextword_model_loads_total", **labels)


def damage(model_dir: Path) -> None:
    weights = next(model_dir.glob("weights.*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))


@pytest.fixture
def two_workers(model_dir: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """A server with two workers, both of which have loaded the model."""
    process, url = start(model_dir, workers=2)
    try:
        wait_until(lambda: loads(url, trigger="start") == 2, 30, "both workers loaded the model")
        yield process, url
    finally:
        process.terminate()
        process.wait(timeout=30)


def random_model(like: RecurrentLM, seed: int) -> RecurrentLM:
    return RecurrentLM(RNNLM(like.net.config, seed=seed), like.vocab, like.tokenizer)


def test_sighup_with_two_workers_keeps_a_refused_checkpoint_out_and_reloads_a_good_one(
    two_workers: tuple[subprocess.Popen, str], model_dir: Path, tiny_lm: RecurrentLM
) -> None:
    process, url = two_workers
    assert metric(url, "nextword_ready") == 1  # every worker ready (the supervisor has no vote)
    before = checksum(url)
    traffic = Traffic(url)
    config = tiny_lm.net.config
    save_checkpoint(model_dir, random_model(tiny_lm, seed=5))
    damage(model_dir)  # the new checkpoint is corrupted
    process.send_signal(signal.SIGHUP)
    wait_until(lambda: loads(url, result="refused") == 2, 30, "both refuse the damaged one")
    bidirectional = ModelConfig(**{**config.to_dict(), "bidirectional": True})
    save_checkpoint(
        model_dir,
        GapFillingLM(BiRNNLM(bidirectional, seed=6), tiny_lm.vocab, tiny_lm.tokenizer),
    )
    process.send_signal(signal.SIGHUP)  # a model of the other kind cannot replace this one
    wait_until(lambda: loads(url, result="refused") == 4, 30, "both refuse the other kind")
    assert {checksum(url) for _ in range(10)} == {before}
    save_checkpoint(model_dir, random_model(tiny_lm, seed=7))
    process.send_signal(signal.SIGHUP)
    wait_until(lambda: loads(url, result="loaded") == 4, 30, "both load the good one")
    answers = traffic.finish()
    after = load_checkpoint(model_dir).checksum
    assert {checksum(url) for _ in range(10)} == {after}
    assert metric(url, "nextword_model_info", checksum=after) == 1
    assert metric(url, "nextword_model_info", checksum=before) == 0  # in no worker any more
    failed = [a for a in answers if a[1] != 200]
    assert len(answers) > 20 and not failed, failed[:5]
    assert len(children(process.pid)) == 2  # the same workers: reloaded in place


@pytest.mark.parametrize("workers", [1, 2])
def test_a_sighup_while_the_server_starts_does_not_kill_it(model_dir: Path, workers: int) -> None:
    port = free_port()
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    command += ["--workers", str(workers), "--model", f"m={model_dir}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # the interpreter's own start-up (before any code runs) is not covered
        for _ in range(6):  # through the imports, the re-exec and the workers' start
            process.send_signal(signal.SIGHUP)
            time.sleep(0.15)
        wait_until(lambda: ready(f"http://127.0.0.1:{port}"), 60, "ready despite SIGHUP")
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_killed_worker_leaves_no_stale_model_info(
    two_workers: tuple[subprocess.Popen, str], model_dir: Path, tiny_lm: RecurrentLM
) -> None:
    process, url = two_workers
    before = checksum(url)
    os.kill(sorted(children(process.pid))[0], signal.SIGKILL)  # no chance to clean up
    wait_until(lambda: loads(url, trigger="start") == 3, 60, "its replacement loaded")
    save_checkpoint(model_dir, random_model(tiny_lm, seed=8))
    process.send_signal(signal.SIGHUP)
    wait_until(lambda: loads(url, trigger="reload") == 2, 30, "both workers reloaded")
    after = load_checkpoint(model_dir).checksum
    assert metric(url, "nextword_model_info", checksum=after) == 1
    assert metric(url, "nextword_model_info", checksum=before) == 0  # not the dead worker's
