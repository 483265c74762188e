"""Run the app under uvicorn: guarded connections, and SIGHUP that reloads models in place.

``nextword serve`` calls ``run``. With one worker, uvicorn's ``Server`` runs in this process; with
several, ``ModelReloadingSupervisor`` (uvicorn's ``Multiprocess``) keeps them alive. uvicorn's own
SIGHUP restarts every worker, and a replacement loads whatever checkpoint is on disk: a damaged
one left both workers failing. Here SIGHUP is forwarded to each running worker instead, and each
reloads in place like a single process does (``app.signals.reload_on_sighup``): it validates the new
checkpoint, keeps serving the old model if it is refused, and swaps atomically if not, so
requests in flight finish on the old model and none fails.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import socket

import uvicorn
from prometheus_client import multiprocess
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

from app.connections import GuardedH11Protocol
from app.core.config import Settings

log = logging.getLogger("uvicorn.error")
APP = "app.main:create_app"


class ModelReloadingSupervisor(Multiprocess):
    """uvicorn's worker supervisor, with SIGHUP forwarded to the workers instead of restarting them.

    A worker that is still starting gets the signal as soon as it serves (until then it has no
    handler, and SIGHUP would kill it).
    """

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self.pending: list[Process] = []  # workers that have a SIGHUP to receive

    def handle_hup(self) -> None:
        log.info("Received SIGHUP: every worker reloads its models in place.")
        self.pending = list(self.processes)  # handle_signals forwards it, now and on each tick

    def handle_signals(self) -> None:
        super().handle_signals()
        self.forward_pending()

    def keep_subprocess_alive(self) -> None:
        """uvicorn replaces a dead worker; its live gauges (model info, readiness) go with it."""
        before = {p.pid for p in self.processes}
        super().keep_subprocess_alive()
        for pid in before - {p.pid for p in self.processes}:
            if pid is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                # not app.metrics: importing it here would give the supervisor gauges of its own
                multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]

    def forward_pending(self) -> None:
        waiting = []
        for process in self.pending:
            if process not in self.processes or process.pid is None:
                continue  # replaced meanwhile: its successor loads the checkpoint on disk
            if process.is_ready(timeout=1):
                os.kill(process.pid, signal.SIGHUP)
            else:
                waiting.append(process)
        self.pending = waiting


def raise_open_file_limit(reserve: int = 64) -> int | None:
    """Connections this process can hold before accept() fails: its open-file limit, raised to
    the hard limit first (the soft one is often 1024), less a reserve for the model files, pipes
    and logs (None when the platform does not say)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # kept by the workers
            soft = hard
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else max(1, soft - reserve)


def uvicorn_config(
    settings: Settings, host: str, port: int, workers: int, log_level: str
) -> uvicorn.Config:
    hard = raise_open_file_limit()
    cap = settings.max_connections if hard is None else min(settings.max_connections, hard)
    if cap < settings.max_connections:
        log.warning(
            "NEXTWORD_MAX_CONNECTIONS %d is above what the open-file limit allows; using %d",
            settings.max_connections,
            cap,
        )
    # asyncio accepts up to `backlog` connections in one pass before any of them can be closed
    # (and logs every failed accept()): one pass must fit in the descriptors left above the cap
    backlog = 2048 if hard is None else max(16, min(2048, (hard - cap) // 2))
    protocol = functools.partial(
        GuardedH11Protocol,
        header_timeout=settings.header_timeout_s,
        max_connections=cap,
        hard_max_connections=hard or cap,
    )
    return uvicorn.Config(
        APP,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        http=protocol,  # type: ignore[arg-type]
        limit_concurrency=None,  # the app refuses work itself: 503 with Retry-After, probes exempt
        # the peer address is who a client is (the fair queue): a header must not choose it
        proxy_headers=False,
        timeout_keep_alive=settings.keep_alive_s,
        timeout_graceful_shutdown=30,  # in-flight requests finish on SIGTERM
        backlog=backlog,
    )


def run(settings: Settings, host: str, port: int, workers: int, log_level: str) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code (as ``uvicorn.run`` would exit)."""
    config = uvicorn_config(settings, host, port, workers, log_level)
    if workers > 1:
        ModelReloadingSupervisor(config, sockets=[config.bind_socket()]).run()
        return 0
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0 if server.started else 3  # uvicorn's STARTUP_FAILURE
