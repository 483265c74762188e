"""SIGHUP reloads every model in the background, in place.

With several workers the supervisor (``app.server.ModelReloadingSupervisor``) forwards SIGHUP to
each of them, so every worker reloads the same way a single process does.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading

from app.registry import ModelRegistry


def reload_on_sighup(registry: ModelRegistry) -> None:
    """Install the handler on the running loop (only the main thread can take signals)."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, registry.request_reload_all)
