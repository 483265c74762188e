"""The ``nextword`` console script: the model commands (train, eval, info) plus ``serve``.

    nextword serve --model models/default                    # http://127.0.0.1:8000
    nextword serve --model ptb=runs/ptb --model tm=models/default --default ptb --workers 2

Options override the ``NEXTWORD_*`` environment variables (see app/core/config.py and README).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path


def serve(args: argparse.Namespace) -> int:
    """Run the service with uvicorn; worker processes read their settings from the environment."""
    if args.model:
        os.environ["NEXTWORD_MODEL_DIR"] = ",".join(args.model)
    if args.default:
        os.environ["NEXTWORD_DEFAULT_MODEL"] = args.default
    os.environ["NEXTWORD_LOG_LEVEL"] = args.log_level
    if args.workers == 0:  # one per core this process may use (a container's CPU quota)
        args.workers = available_cores()
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        # One BLAS thread per worker: a server runs many small products at once, and threaded
        # BLAS calls from concurrent requests fight over the cores (bench/RESULTS.md: half the
        # throughput with 2). Parallelism comes from --workers, up to the cores available.
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        if args.workers == 1 and (os.cpu_count() or 1) > 1:  # numpy has read it here already
            os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # the same command
    metrics_dir = None
    if args.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        metrics_dir = tempfile.mkdtemp(prefix="nextword-metrics-")  # /metrics sums all workers
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from pydantic import ValidationError

    from app.core.config import Settings

    try:
        settings = Settings()
        settings.model_specs()  # a bad NEXTWORD_MODEL_DIR fails here, not in every worker
    except (ValueError, ValidationError) as e:
        sys.stderr.write(f"nextword serve: {e}\n")
        return 2
    from app.server import run

    try:
        return run(settings, args.host, args.port, args.workers, args.log_level)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def available_cores() -> int:
    """CPUs this process may use: a cgroup CPU quota (containers) or else its affinity mask."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            return max(1, int(quota) // int(period))
    except (OSError, ValueError):
        pass
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parser() -> argparse.ArgumentParser:
    from model.cli import build_parser  # numpy and the model: imported once SIGHUP is ignored

    p = build_parser()
    commands = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    s = commands.add_parser("serve", help="run the HTTP service")
    s.add_argument(
        "--model", action="append", metavar="[NAME=]DIR", help="checkpoint to serve (repeatable)"
    )
    s.add_argument(
        "--default", help="the model used when a request names none (default: the first)"
    )
    s.add_argument("--host", default=os.environ.get("NEXTWORD_HOST", "127.0.0.1"))
    s.add_argument("--port", type=int, default=int(os.environ.get("NEXTWORD_PORT", "8000")))
    s.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("NEXTWORD_WORKERS", "1")),
        help="worker processes; 0: one per available core (default: NEXTWORD_WORKERS or 1)",
    )
    s.add_argument("--log-level", default=os.environ.get("NEXTWORD_LOG_LEVEL", "info"),
                   choices=["critical", "error", "warning", "info", "debug"])  # fmt: skip
    s.set_defaults(run=serve)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    if "serve" in words and hasattr(signal, "SIGHUP"):
        # Until the server handles SIGHUP (reload), its default action would kill it: ignored
        # from the first moment, before the slow imports; the disposition survives execv.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
