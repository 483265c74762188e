"""The scoring endpoints.

The NumPy work runs in the thread pool (``to_thread``), never on the event loop. The handlers
themselves are ``async`` so that each request makes one trip to the pool, not three (FastAPI
would also send a plain ``def`` handler's response serialisation there).
"""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter

from app import schemas, service
from app.api.deps import RegistryDep, SettingsDep

router = APIRouter(
    prefix="/v1", tags=["scoring"], responses=schemas.error_responses(400, 404, 408, 413, 422, 503)
)


@router.post("/candidates")
async def candidates(
    req: schemas.CandidatesRequest, registry: RegistryDep, settings: SettingsDep
) -> schemas.CandidatesResponse:
    """Probability of each candidate next word or phrase after a context (chain rule)."""
    m = registry.get(req.model)
    return await to_thread.run_sync(
        service.candidates, m.lm, m.name, req, settings, m.batcher.submit
    )


@router.post("/predict")
async def predict(
    req: schemas.PredictRequest, registry: RegistryDep, settings: SettingsDep
) -> schemas.PredictResponse:
    """The k most probable next words after a context, most probable first."""
    m = registry.get(req.model)
    return await to_thread.run_sync(service.predict, m.lm, m.name, req, settings)


@router.post("/score")
async def score(
    req: schemas.ScoreRequest, registry: RegistryDep, settings: SettingsDep
) -> schemas.ScoreResponse:
    """Whole-sentence log-probabilities, computed as one padded batch, in request order."""
    m = registry.get(req.model)
    return await to_thread.run_sync(service.score, m.lm, m.name, req, settings)


@router.post("/rerank")
async def rerank(
    req: schemas.RerankRequest, registry: RegistryDep, settings: SettingsDep
) -> schemas.RerankResponse:
    """N-best rescoring, sorted by score + lm_weight · lm_log_prob + length_bonus · tokens."""
    m = registry.get(req.model)
    return await to_thread.run_sync(service.rerank, m.lm, m.name, req, settings)


@router.post("/fill")
async def fill(
    req: schemas.FillRequest, registry: RegistryDep, settings: SettingsDep
) -> schemas.FillResponse:
    """Candidates for a gap between left and right context: a bidirectional model, or whole
    sentences under a left-to-right one."""
    m = registry.get(req.model)
    return await to_thread.run_sync(service.fill, m.lm, m.name, req, settings)
