"""The FastAPI application: ``create_app()`` assembles it from the modules that do the work;
``nextword serve`` runs it with uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

import model
from app.api.routes import health, models, scoring, ui
from app.core.config import Settings
from app.errors import install_error_handlers
from app.logs import configure_logging
from app.metrics import READY, RequestMetrics, cache_observer, worker_exiting
from app.middleware import BodySizeLimit, ConcurrencyLimit
from app.model_metrics import publish
from app.openapi import with_limits
from app.registry import ModelRegistry
from app.scheduler import FairScheduler
from app.signals import reload_on_sighup

DESCRIPTION = """Language-model scores for reranking speech-to-text and OCR output.

All log-probabilities are natural logarithms under the model's full softmax over its vocabulary.
A context is read as `<s> context`: an empty context asks for the first word of a sentence.
"""


def create_app(settings: Settings | None = None, registry: ModelRegistry | None = None) -> FastAPI:
    """The app for ``settings`` (default: from the environment).

    Without ``registry`` the checkpoints named in the settings load in the background at start-up;
    tests pass a ready registry of in-memory models instead.
    """
    settings = settings or Settings()
    configure_logging(settings.log_level)
    preloaded = registry is not None
    registry = registry or ModelRegistry(
        settings.model_specs(), settings.default_model, publish, settings, cache_observer
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if preloaded:
            publish(registry)
        else:
            registry.start_loading()
        reload_on_sighup(registry)
        yield
        READY.set(0)
        app.state.scheduler.close()
        worker_exiting()

    # the Swagger UI and ReDoc assets are served from the fastapi-offline package, not a CDN,
    # so /docs works on a machine without internet access
    app = FastAPIOffline(
        title="nextword", version=model.__version__, description=DESCRIPTION, lifespan=lifespan
    )
    app.state.settings, app.state.registry = settings, registry
    app.state.scheduler = FairScheduler(settings.max_queue_s)
    # the last added runs first: metrics see every answer, including 413, 408 and 503
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s
    )
    app.add_middleware(
        ConcurrencyLimit, limit=settings.max_concurrency, scheduler=app.state.scheduler
    )
    app.add_middleware(RequestMetrics)
    install_error_handlers(app)
    for router in (scoring.router, models.router, health.router, ui.router):
        app.include_router(router)
    app.openapi = with_limits(app, settings)  # type: ignore[method-assign]
    return app
