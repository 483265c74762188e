"""Start ``nextword serve`` in a child process on a free loopback port and wait until it is ready.

Used by the end-to-end tests and the benchmarks, which talk to a real server over HTTP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def is_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def limit_memory(address_space: int) -> None:
    """In the child before it runs: its address space (and its workers') at most this."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))


def start_server(
    models: list[str],
    workers: int = 1,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    output: int | None = subprocess.DEVNULL,
    address_space: int | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Run ``nextword serve --model M ...``; returns (process, base URL) once /readyz says 200.

    ``models`` are ``[NAME=]DIR`` entries; ``env`` adds environment variables (NEXTWORD_*);
    ``address_space`` limits the server's memory (bytes of address space, ``ulimit -v``);
    ``cwd`` serves from another checkout of nextword (the benchmarks' ``--code``).
    """
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "app.cli",
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    for model in models:
        command += ["--model", model]
    process = subprocess.Popen(
        [*command, "--log-level", "warning"],
        env=os.environ | (env or {}),
        stdout=output,
        stderr=output,
        cwd=cwd,
        preexec_fn=None if address_space is None else lambda: limit_memory(address_space),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while not is_ready(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(
                f"nextword serve {models} did not become ready (exit {process.poll()})"
            )
        time.sleep(0.1)
    return process, url
