"""ASGI middlewares that decide before the app does: the body-size limit (413, or 408 for a body
that does not arrive in time) and admission (503 with Retry-After, probes exempt: too many
requests in progress, or the client's queued work over its limit).

They answer in the error format of ``app.errors`` (``detail`` and, where there is one, ``field``).
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.scheduler import Busy, FairScheduler


def has_body(scope: Scope) -> bool:
    """The request announces a body (a length above 0, or chunked transfer)."""
    headers = dict(scope.get("headers") or [])
    return headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers


class BodySizeLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, by Content-Length or while it arrives.

    The body is read here, before the app sees the request, and handed on whole: the app would
    buffer it anyway, and an error raised while FastAPI reads a body would become a 400.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 10.0) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.reject(send)
            return
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + self.timeout
        while True:
            try:  # a slow client cannot hold a request open for longer than the timeout
                message = await asyncio.wait_for(
                    receive(), deadline - asyncio.get_running_loop().time()
                )
            except TimeoutError:
                await self.reject(send, 408, f"request body not received within {self.timeout:g} s")
                return
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self.reject(send)
                return
            if not message.get("more_body"):
                break
        body, delivered = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: wait for a disconnect, as usual
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def reject(self, send: Send, status: int = 413, detail: str | None = None) -> None:
        detail = detail or f"request body over the limit of {self.max_bytes} bytes"
        body = json.dumps({"detail": detail}).encode()
        length = str(len(body)).encode()
        # answered before the body was read: the connection closes (its rest would be a request)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", length),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


COMPUTE_PATHS = frozenset(
    f"/v1/{call}" for call in ("candidates", "predict", "score", "rerank", "fill")
)


class ConcurrencyLimit:
    """ASGI middleware: 503 (with Retry-After) when ``limit`` requests are already in progress,
    when this client holds half of them, or (on the scoring endpoints) when its work queued on
    the compute thread is already over its limit (``FairScheduler.admit``): refused before the
    body is read, in well under a millisecond.

    A bounded queue instead of an unbounded one: an overloaded worker says so at once. Health,
    readiness and metrics are never refused, so probes still tell the truth under load.
    """

    EXEMPT = ("/healthz", "/readyz", "/metrics")

    def __init__(self, app: ASGIApp, limit: int, scheduler: FairScheduler | None = None) -> None:
        self.app, self.limit, self.active, self.scheduler = app, limit, 0, scheduler
        # one client may hold half the slots: the others always find room (a client's own
        # requests beyond it wait on its side, not in everyone's way)
        self.per_client = max(1, limit // 2)
        self.by_client: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.EXEMPT:
            await self.app(scope, receive, send)
            return
        refusal = None
        client = client_of(scope)
        if self.active >= self.limit:
            refusal = f"busy: {self.limit} requests in progress; retry", 1
        elif self.by_client.get(client, 0) >= self.per_client:
            refusal = (f"busy: this client has {self.per_client} requests in progress, the most "
                       "one client may; wait for their answers", 1)  # fmt: skip
        elif self.scheduler is not None and scope["path"] in COMPUTE_PATHS:
            try:
                self.scheduler.admit(client)
            except Busy as busy:
                refusal = busy.detail, busy.retry_after
        if refusal is not None:
            await self.refuse(scope, send, *refusal)
            return
        self.active += 1  # one event loop per worker: no lock needed
        self.by_client[client] = self.by_client.get(client, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
            self.by_client[client] -= 1
            if not self.by_client[client]:
                del self.by_client[client]

    async def refuse(self, scope: Scope, send: Send, detail: str, retry_after: int) -> None:
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"retry-after", str(retry_after).encode())]  # fmt: skip
        if has_body(scope):  # never read: what follows on the connection is not a request
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def client_of(scope: Scope) -> str:
    """Who sent the request, for the fair queue: the peer's address."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
