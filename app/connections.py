"""HTTP/1.1 connections that cannot take a worker down: a header deadline and a connection cap.

uvicorn closes a keep-alive connection that stays silent after a response, but not one that
never completes its request headers, and its ``limit_concurrency`` counts such connections: a
few hundred sockets that send nothing made every request, the health probes included, answer a
plain-text 503 for as long as they stayed open. This protocol (uvicorn's h11 one, extended):

- closes a connection whose request headers are not complete ``header_timeout`` seconds after it
  opened, or after the first byte of a request that follows a response (a 408 when part of a
  request arrived, silence when nothing did). Once the headers are in, the body deadline of
  ``app.middleware.BodySizeLimit`` takes over; a connection left in any other state once its
  response is complete (a body still trickling in after an early 408 or 413) meets the same
  deadline;
- keeps at most ``max_connections`` open by closing the connection that has waited longest
  without a request in progress whenever a new one would exceed the cap. New connections are
  always accepted, so a probe gets through however many idle sockets an attacker holds; requests
  already being answered are never cut; and a connection accepted less than ``IDLE_GRACE`` ago
  is not yet idle (its request may be in the socket, unread), unless the process is near its
  file-descriptor limit (``hard_max_connections``), which would stop every accept.

Refusing work is left to the app (``ConcurrencyLimit``: 503 with ``Retry-After``, probes exempt),
so uvicorn's own ``limit_concurrency`` stays off. bench/idle_connections.py measures this beside
stock uvicorn, uvicorn with httptools, Hypercorn and Granian (bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

log = logging.getLogger("nextword")


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps({"detail": f"request headers not received within {seconds:g} s"}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-header deadline and an idle-first connection cap."""

    IDLE_GRACE = 1.0  # seconds a new connection has for its first bytes to be read
    WARN_EVERY = 10.0  # seconds between warnings that the cap cannot be kept

    _last_warning = 0.0  # per process: an attacker must not control the log's volume

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        header_timeout: float = 10.0,
        max_connections: int = 512,
        hard_max_connections: int | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout, self.max_connections = header_timeout, max_connections
        self.hard_max_connections = hard_max_connections or max_connections
        self._header_timer: asyncio.TimerHandle | None = None
        self._partial_request = False  # bytes of the next request have arrived
        self._kept_alive = False  # waiting after a response: the clock starts at the first byte
        self.waiting_since = 0.0  # loop time at which this connection began to await a request

    # ------------------------------------------------------------ the header deadline
    def _await_request(self, after_response: bool = False) -> None:
        """Start the clock for the next request's headers.

        On a new connection the deadline runs from now. After a response, uvicorn's keep-alive
        timer closes a silent connection; the header deadline then runs from the first byte
        (``data_received``), bounded meanwhile by keep-alive plus header time.
        """
        self._cancel_header_timer()
        self.waiting_since = self.loop.time()
        buffered = bool(self.conn.trailing_data[0]) or self.conn.their_state is not h11.IDLE
        self._partial_request = buffered  # a pipelined request, or the rest of an answered one
        self._kept_alive = after_response and not buffered
        wait = self.header_timeout + (self.timeout_keep_alive if self._kept_alive else 0)
        self._header_timer = self.loop.call_later(wait, self._headers_too_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self.awaiting_request:
            return
        if self._partial_request and self.conn.their_state is h11.IDLE:
            self.transport.write(_timeout_response(self.header_timeout))  # a slow client: why
        self._close()

    @property
    def awaiting_request(self) -> bool:
        """No response in progress: waiting for (the rest of) a request, or for the rest of the
        body of one already answered."""
        return self.cycle is None or self.cycle.response_complete

    def _close(self) -> None:
        self._cancel_header_timer()
        self._unset_keepalive_if_required()
        if not self.transport.is_closing():
            self.transport.close()

    # ------------------------------------------------------------ the connection cap
    def _evict_idle_connections(self) -> None:
        """Over the cap: close the connections that have waited longest without a request."""
        excess = len(self.connections) - self.max_connections
        if excess <= 0:
            return
        now = self.loop.time()
        idle = sorted(
            (
                c
                for c in self.connections
                if c is not self and isinstance(c, GuardedH11Protocol) and c.awaiting_request
            ),
            key=lambda c: c.waiting_since,
        )
        settled = [c for c in idle if now - c.waiting_since >= self.IDLE_GRACE]
        victims = settled[:excess]
        over_hard = len(self.connections) - self.hard_max_connections
        if over_hard > len(victims):  # near the descriptor limit: young idle ones go too
            young = [c for c in idle if now - c.waiting_since < self.IDLE_GRACE]
            victims += young[: over_hard - len(victims)]
        for connection in victims:
            connection._close()
        if len(victims) < excess and now - GuardedH11Protocol._last_warning > self.WARN_EVERY:
            GuardedH11Protocol._last_warning = now
            log.warning(
                "%d connections open, over the cap of %d: the others are busy or just arrived",
                len(self.connections) - len(victims),
                self.max_connections,
            )

    # ------------------------------------------------------------ uvicorn's hooks
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_request()
        self._evict_idle_connections()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            return
        if not self.awaiting_request:  # the headers are complete: the request is the app's now
            self._cancel_header_timer()
        elif self._kept_alive and not self._partial_request:  # a new request after a response
            self._partial_request, self._kept_alive = True, False
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_late)
        else:
            self._partial_request = True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.awaiting_request:
            self._await_request(after_response=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)
