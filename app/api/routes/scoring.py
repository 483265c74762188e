"""The scoring endpoints.

The NumPy work runs on the worker's compute thread, a slice at a time, in the fair queue of
``app.scheduler`` (never on the event loop, and never in FastAPI's thread pool, where requests
queued out of sight and shared the core all at once). /v1/candidates under cross-request
batching (``NEXTWORD_BATCH_WINDOW_MS`` above 0) runs in the thread pool, batched with others.
"""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter

from app import schemas, service
from app.api.deps import ClientDep, DisconnectedDep, RegistryDep, SchedulerDep, SettingsDep

router = APIRouter(
    prefix="/v1", tags=["scoring"], responses=schemas.error_responses(400, 404, 408, 413, 422, 503)
)


@router.post("/candidates")
async def candidates(
    req: schemas.CandidatesRequest,
    registry: RegistryDep,
    settings: SettingsDep,
    compute: SchedulerDep,
    client: ClientDep,
    gone: DisconnectedDep,
) -> schemas.CandidatesResponse:
    """Probability of each candidate next word or phrase after a context (chain rule)."""
    m = registry.get(req.model)
    if settings.batch_window_ms > 0:
        work = service.candidates(m.lm, m.name, req, settings, m.batcher.submit)
        return await to_thread.run_sync(service.complete, work)
    kind = f"{m.name}/candidates"
    work = service.candidates(m.lm, m.name, req, settings, None, compute.slice_cost(kind))
    return await compute.run(client, work, kind, gone)


@router.post("/predict")
async def predict(
    req: schemas.PredictRequest,
    registry: RegistryDep,
    settings: SettingsDep,
    compute: SchedulerDep,
    client: ClientDep,
    gone: DisconnectedDep,
) -> schemas.PredictResponse:
    """The k most probable next words after a context, most probable first."""
    m = registry.get(req.model)
    work = service.predict(m.lm, m.name, req, settings)
    return await compute.run(client, work, f"{m.name}/predict", gone)


@router.post("/score")
async def score(
    req: schemas.ScoreRequest,
    registry: RegistryDep,
    settings: SettingsDep,
    compute: SchedulerDep,
    client: ClientDep,
    gone: DisconnectedDep,
) -> schemas.ScoreResponse:
    """Whole-sentence log-probabilities, in slices of padded batches, in request order."""
    m = registry.get(req.model)
    kind = f"{m.name}/score"  # /v1/rerank does the same work: one rate for both
    work = service.score(m.lm, m.name, req, settings, compute.slice_cost(kind))
    return await compute.run(client, work, kind, gone)


@router.post("/rerank")
async def rerank(
    req: schemas.RerankRequest,
    registry: RegistryDep,
    settings: SettingsDep,
    compute: SchedulerDep,
    client: ClientDep,
    gone: DisconnectedDep,
) -> schemas.RerankResponse:
    """N-best rescoring, sorted by score + lm_weight · lm_log_prob + length_bonus · tokens."""
    m = registry.get(req.model)
    kind = f"{m.name}/score"
    work = service.rerank(m.lm, m.name, req, settings, compute.slice_cost(kind))
    return await compute.run(client, work, kind, gone)


@router.post("/fill")
async def fill(
    req: schemas.FillRequest,
    registry: RegistryDep,
    settings: SettingsDep,
    compute: SchedulerDep,
    client: ClientDep,
    gone: DisconnectedDep,
) -> schemas.FillResponse:
    """Candidates for a gap between left and right context: a bidirectional model, or whole
    sentences under a left-to-right one."""
    m = registry.get(req.model)
    kind = f"{m.name}/fill"
    work = service.fill(m.lm, m.name, req, settings, compute.slice_cost(kind))
    return await compute.run(client, work, kind, gone)
