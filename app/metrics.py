"""Prometheus metrics: traffic and latency per endpoint, and language-model health signals.

The OOV rate (``nextword_oov_tokens_total / nextword_scored_tokens_total``) and the mean
log-probability per token (``-nextword_neg_log_prob_total / nextword_scored_tokens_total``) show
drift in the input: a decoder sending a new domain, a tokenisation change, a broken client.

With several worker processes, ``nextword serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` so that
``/metrics`` sums all workers instead of reporting whichever one answered.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("nextword_requests", "HTTP requests", ["endpoint", "method", "status"])
ERRORS = Counter(
    "nextword_request_errors", "HTTP requests answered 4xx or 5xx", ["endpoint", "status"]
)
LATENCY = Histogram(
    "nextword_request_duration_seconds",
    "Time to answer, by endpoint",
    ["endpoint"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
SCORED = Counter("nextword_scored_tokens", "Tokens scored (candidates, sentences)", ["model"])
OOV = Counter("nextword_oov_tokens", "Scored tokens outside the vocabulary", ["model"])
NEG_LOG_PROB = Counter("nextword_neg_log_prob", "Sum of -log P of scored tokens (nats)", ["model"])
CANDIDATES = Histogram(
    "nextword_candidates_per_request", "Candidates per /v1/candidates request", ["model"],
    buckets=(1, 2, 3, 5, 10, 20, 50, 100, 200),
)  # fmt: skip
MODEL_INFO = Gauge(
    "nextword_model_info",
    "Loaded models (value 1); kind: recurrent, ngram or interpolation",
    ["model", "kind", "cell", "vocab_size", "checksum"],
    multiprocess_mode="livemax",
)  # fmt: skip
MODEL_LOAD_SECONDS = Gauge(
    "nextword_model_load_seconds", "Checkpoint load time", ["model"], multiprocess_mode="livemax"
)
PREFIX_CACHE = Counter(
    "nextword_prefix_cache_lookups", "Prefix-state cache lookups", ["model", "result"]
)
STEPS_SAVED = Counter(
    "nextword_prefix_cache_steps_saved", "Network steps the prefix cache saved", ["model"]
)
MODEL_LOADS = Counter(
    "nextword_model_loads",
    "Checkpoint loads by trigger (start, reload) and result (loaded; failed at start; refused "
    "on reload, the old model keeping on serving), summed over workers",
    ["model", "trigger", "result"],
)
READY = Gauge(
    "nextword_ready", "1 when the models are loaded and warm", multiprocess_mode="livemin"
)


# every label value comes from a closed set: a client cannot add series (random methods, paths)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def status_label(status: int | None) -> str:
    """The status code; 499 when the client went away before an answer (nginx's convention)."""
    if status is None:
        return "499"
    return str(status) if 100 <= status <= 599 else "other"


def observe_scores(
    model: str, tokens: int, oov_tokens: int, log_probs: Sequence[float], candidates: int | None
) -> None:
    SCORED.labels(model).inc(tokens)
    OOV.labels(model).inc(oov_tokens)
    NEG_LOG_PROB.labels(model).inc(max(0.0, -sum(log_probs)))
    if candidates is not None:
        CANDIDATES.labels(model).observe(candidates)


class RequestMetrics:
    """ASGI middleware: count and time every request by endpoint and status.

    Labels come from closed sets: the endpoint is the route template (``/v1/models/{name}``),
    not the raw path, and "other" for unmatched paths and requests answered before routing
    (413, 408, 503); a method outside the standard ones is "other".
    A plain ASGI class, not Starlette's BaseHTTPMiddleware, which costs a task per request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), None

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            status = status or 500  # answered 500 further out
            raise
        finally:
            # no response and no error: the client went away (499), not a server fault
            label = status_label(status)
            endpoint = getattr(scope.get("route"), "path", "other")
            LATENCY.labels(endpoint).observe(time.perf_counter() - start)
            REQUESTS.labels(endpoint, method_label(scope["method"]), label).inc()
            if status is None or status >= 400:
                ERRORS.labels(endpoint, label).inc()


def metrics_response() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = DEFAULT_REGISTRY
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def cache_observer(model: str) -> Callable[[bool, int], None]:
    """Count a model's prefix-cache hits, misses and the network steps its hits saved."""
    hit, miss, saved = (
        PREFIX_CACHE.labels(model, "hit"),
        PREFIX_CACHE.labels(model, "miss"),
        STEPS_SAVED.labels(model),
    )

    def observe(is_hit: bool, steps: int) -> None:
        (hit if is_hit else miss).inc()
        saved.inc(steps)

    return observe


def worker_exiting() -> None:
    """Drop this worker's live gauges from the shared directory (several workers only)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
