"""A real server under a real memory limit (``ulimit -v``): a dozen maximal requests at once
are answered (200, or 503 with Retry-After), and the worker lives on.

Issue 29: each request computed its whole batch at once in its own thread, about 190 MB each
for a 10,000-word model, so twelve of them OOM-killed a worker in a 2 GiB container. Requests
now run a slice at a time on one compute thread (``app.scheduler``), and the logits are formed
16 MB at a time; a worker's memory no longer grows with the requests in flight.
"""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.launch import start_server
from model.inference.checkpoint import save_checkpoint
from model.inference.recurrent_lm import RecurrentLM
from model.network.recurrent import RNNLM, ModelConfig
from model.text.tokenize import Tokenizer
from model.text.vocab import SPECIALS, Vocabulary

pytestmark = pytest.mark.slow  # real processes and sockets: `make test-fast` skips them

VOCAB = 10_000  # the PTB size of the report: a (2048, V) block of logits was 82 MB
SENTENCES, TOKENS = 32, 256  # every limit at its maximum (32 sentences keeps the test short)
BUDGET = 400 * 2**20  # address space allowed above the idle, warmed-up server


def wide_model(path: Path) -> Path:
    """An untrained LSTM with a 10,000-word output and a small recurrence: memory, not time."""
    words = [f"w{i}" for i in range(len(SPECIALS), VOCAB)]
    vocab = Vocabulary([*SPECIALS, *words])
    config = ModelConfig(VOCAB, "lstm", embed_size=16, hidden_size=16)
    save_checkpoint(path, RecurrentLM(RNNLM(config, seed=0), vocab, Tokenizer("whitespace")))
    return path


def peak_address_space(pid: int) -> int:
    """The process's largest address space so far (VmPeak), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmPeak:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmPeak in /proc/PID/status")


def maximal_body() -> dict[str, object]:
    words = [" ".join(f"w{(7 * i + j) % (VOCAB - 10) + 4}" for j in range(TOKENS))
             for i in range(SENTENCES)]  # fmt: skip
    return {"sentences": words}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_a_dozen_maximal_requests_fit_a_bounded_worker(tmp_path: Path) -> None:
    model = wide_model(tmp_path / "wide")
    env = {"NEXTWORD_MAX_SENTENCES": str(SENTENCES), "NEXTWORD_MAX_TOKENS": str(TOKENS),
           "OPENBLAS_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}  # fmt: skip
    small = {"sentences": ["w5 w6 w7"]}

    # the idle server's address space, warmed up by a small request: the limit is set above it
    process, url = start_server([f"wide={model}"], env=env)
    try:
        assert httpx.post(f"{url}/v1/score", json=small, timeout=30).status_code == 200
        idle = peak_address_space(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)

    process, url = start_server([f"wide={model}"], env=env, address_space=idle + BUDGET)
    try:
        body = maximal_body()

        def send(_: int) -> httpx.Response:
            return httpx.post(f"{url}/v1/score", json=body, timeout=300)

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(send, range(12)))
        codes = [r.status_code for r in answers]
        assert set(codes) <= {200, 503}, [(r.status_code, r.text[:200]) for r in answers]
        assert codes.count(200) >= 1, codes
        for r in answers:
            if r.status_code == 200:
                results = r.json()["results"]
                assert len(results) == SENTENCES
                assert all(len(s["token_log_probs"]) == TOKENS + 1 for s in results)  # and </s>
            else:
                assert int(r.headers["retry-after"]) >= 1
                assert "busy" in r.json()["detail"]
        assert process.poll() is None  # the worker lived through it
        assert httpx.post(f"{url}/v1/score", json=small, timeout=30).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


def scored_tokens(url: str) -> float:
    """nextword_scored_tokens_total summed over models, from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("nextword_scored_tokens_total"))  # fmt: skip


def test_requests_whose_clients_disconnect_stop_computing(tmp_path: Path) -> None:
    """Four maximal requests sent on raw sockets that close at once: at most the one in
    progress is finished; the others are dropped before their next slice."""
    model = wide_model(tmp_path / "wide")
    env = {"NEXTWORD_MAX_SENTENCES": str(SENTENCES), "NEXTWORD_MAX_TOKENS": str(TOKENS),
           "OPENBLAS_NUM_THREADS": "1"}  # fmt: skip
    process, url = start_server([f"wide={model}"], env=env)
    try:
        body = json.dumps(maximal_body()).encode()
        head = (f"POST /v1/score HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n\r\n").encode()  # fmt: skip
        port = int(url.rsplit(":", 1)[1])
        sockets = []
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(head + body)
            sockets.append(s)
        time.sleep(0.3)  # read, validated, queued; the first computing
        for s in sockets:
            s.close()
        time.sleep(3.0)  # what is still computed is done by now
        one_request = SENTENCES * (TOKENS + 1)
        assert scored_tokens(url) <= one_request, scored_tokens(url)
        small = {"sentences": ["w5 w6 w7"]}
        assert httpx.post(f"{url}/v1/score", json=small, timeout=30).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
