"""HTTP/1.1 connections that cannot take a worker down: a header deadline and a connection cap.

uvicorn closes a keep-alive connection that stays silent after a response, but not one that
never completes its request headers, and its ``limit_concurrency`` counts such connections: a
few hundred sockets that send nothing made every request, the health probes included, answer a
plain-text 503 for as long as they stayed open. This protocol (uvicorn's h11 one, extended):

- closes a connection whose request headers are not complete ``header_timeout`` seconds after it
  opened or after its previous response (a 408 when part of a request arrived, silence when
  nothing did); once the headers are in, the body deadline of ``app.errors.BodySizeLimit``
  takes over;
- keeps at most ``max_connections`` open by closing the connection that has waited longest
  without a request in progress whenever a new one would exceed the cap. New connections are
  always accepted, so a probe gets through however many idle sockets an attacker holds, and
  requests already being answered are never cut.

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

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        header_timeout: float = 10.0,
        max_connections: int = 512,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout, self.max_connections = header_timeout, max_connections
        self._header_timer: asyncio.TimerHandle | None = None
        self._partial_request = False  # bytes of the next request's headers have arrived
        self.waiting_since = 0.0  # loop time at which this connection began to await a request

    # ------------------------------------------------------------ the header deadline
    def _await_request(self) -> None:
        """Start the clock: the next request's headers must be complete within the timeout."""
        self._cancel_header_timer()
        self._partial_request = False
        self.waiting_since = self.loop.time()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self.awaiting_request:
            return
        if self._partial_request:  # a slow client gets told why; a silent socket is just closed
            self.transport.write(_timeout_response(self.header_timeout))
        self._close()

    @property
    def awaiting_request(self) -> bool:
        """No request in progress: the connection waits for (the rest of) request headers."""
        return self.conn.their_state is h11.IDLE and (
            self.cycle is None or self.cycle.response_complete
        )

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
        idle = [
            c
            for c in self.connections
            if c is not self and isinstance(c, GuardedH11Protocol) and c.awaiting_request
        ]
        idle.sort(key=lambda c: c.waiting_since)
        for connection in idle[:excess]:
            connection._close()
        if len(idle) < excess:
            log.warning(
                "%d connections open, over the cap of %d; %d have requests in progress",
                len(self.connections),
                self.max_connections,
                len(self.connections) - len(idle),
            )

    # ------------------------------------------------------------ uvicorn's hooks
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_request()
        self._evict_idle_connections()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is not None:
            if self.awaiting_request:
                self._partial_request = True
            else:  # the headers are complete: the request is the app's now
                self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.awaiting_request:
            self._await_request()  # beside uvicorn's keep-alive timer, which a byte would cancel

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)
