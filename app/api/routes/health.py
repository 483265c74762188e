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
def readyz(registry: RegistryDep) -> Any:
    """200 only when the models are loaded and each answers a forward pass; 503 otherwise."""
    if registry.state != "ready":
        body = {"status": registry.state, "error": registry.error}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    for m in registry.models.values():
        m.lm.self_check()  # the model answers
    return {"status": "ready", "models": sorted(registry.models), "default": registry.default}


@router.get("/metrics", response_class=Response)
def metrics() -> Response:
    """Prometheus: requests, latencies, errors, model info, OOV rate, log-probabilities."""
    return metrics_response()
