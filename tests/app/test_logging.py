"""Log volume an attacker cannot drive: asyncio's failed-accept lines are thinned."""

from __future__ import annotations

import logging

import pytest

import app.logs
from app.logs import ACCEPT_FAILED, OncePer, configure_logging


def test_failed_accepts_are_logged_once_per_interval(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    monkeypatch.setattr(app.logs.time, "monotonic", lambda: now[0])
    configure_logging("info")
    configure_logging("info")  # idempotent: one filter
    aio = logging.getLogger("asyncio")
    assert sum(isinstance(f, OncePer) for f in aio.filters) == 1
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        for _ in range(2048):  # what one accept pass logs when descriptors run out
            aio.error(ACCEPT_FAILED)
        aio.error("something else")
        now[0] += 11
        aio.error(ACCEPT_FAILED)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        ACCEPT_FAILED,
        "something else",
        f"{ACCEPT_FAILED} (and 2047 more since the last such line)",
    ]
