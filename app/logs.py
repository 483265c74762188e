"""The service's logging: its own lines to stderr, and a cap on the lines an attacker can cause."""

from __future__ import annotations

import logging
import time


class OncePer:
    """A logging filter that lets one record with a given message through per ``seconds``.

    asyncio logs every accept() that fails for want of file descriptors, with a traceback, up to
    `backlog` times per pass: a connection flood would otherwise write megabytes a second.
    """

    def __init__(self, message: str, seconds: float = 10.0) -> None:
        self.message, self.seconds, self.last, self.dropped = message, seconds, -seconds, 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != self.message:
            return True
        now = time.monotonic()
        if now - self.last < self.seconds:
            self.dropped += 1
            return False
        if self.dropped:
            record.msg = f"{record.msg} (and {self.dropped} more since the last such line)"
        self.last, self.dropped = now, 0
        return True


ACCEPT_FAILED = "socket.accept() out of system resource"


def configure_logging(level: str) -> None:
    """The service's own log lines to stderr at ``level``; other libraries' loggers untouched,
    but for asyncio's failed-accept lines, which are thinned to one per 10 s."""
    logger = logging.getLogger("nextword")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    aio = logging.getLogger("asyncio")
    if not any(isinstance(f, OncePer) for f in aio.filters):
        aio.addFilter(OncePer(ACCEPT_FAILED))
