"""Liveness, readiness and metrics, with the semantics Kubernetes and Triton users expect."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from app.api.deps import RegistryDep
from app.metrics import metrics_response

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive (nothing else is checked)."""
    return {"status": "alive"}


@router.get("/readyz", responses={503: {"description": "models loading or failed to load"}})
async def readyz(registry: RegistryDep) -> Any:
    """200 only when every model is loaded and has answered its warm-up pass; 503 otherwise.

    It answers from the registry's state without computing, so a busy worker still answers
    its probe at once (a model is only marked loaded after a forward pass succeeded).
    """
    if registry.state != "ready":
        body = {"status": registry.state, "error": registry.error}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    return {"status": "ready", "models": sorted(registry.models), "default": registry.default}


@router.get("/metrics", response_class=Response)
def metrics() -> Response:
    """Prometheus: requests, latencies, errors, model info, OOV rate, log-probabilities."""
    return metrics_response()
