"""The scoring endpoints. Handlers are plain ``def``: FastAPI runs them in its thread pool, so
NumPy work never blocks the event loop."""

from __future__ import annotations

from fastapi import APIRouter

from app import schemas, service
from app.api.deps import RegistryDep, SettingsDep

router = APIRouter(
    prefix="/v1", tags=["scoring"], responses=schemas.error_responses(400, 404, 408, 413, 422, 503)
)


@router.post("/candidates")
def candidates(
    req: schemas.CandidatesRequest, registry: RegistryDep, settings: SettingsDep
) -> schemas.CandidatesResponse:
    """Probability of each candidate next word or phrase after a context (chain rule)."""
    m = registry.get(req.model)
    return service.candidates(m.lm, m.name, req, settings, m.batcher.submit)


@router.post("/predict")
def predict(
    req: schemas.PredictRequest, registry: RegistryDep, settings: SettingsDep
) -> schemas.PredictResponse:
    """The k most probable next words after a context, most probable first."""
    m = registry.get(req.model)
    return service.predict(m.lm, m.name, req, settings)


@router.post("/score")
def score(
    req: schemas.ScoreRequest, registry: RegistryDep, settings: SettingsDep
) -> schemas.ScoreResponse:
    """Whole-sentence log-probabilities, computed as one padded batch, in request order."""
    m = registry.get(req.model)
    return service.score(m.lm, m.name, req, settings)


@router.post("/rerank")
def rerank(
    req: schemas.RerankRequest, registry: RegistryDep, settings: SettingsDep
) -> schemas.RerankResponse:
    """N-best rescoring, sorted by score + lm_weight · lm_log_prob + length_bonus · tokens."""
    m = registry.get(req.model)
    return service.rerank(m.lm, m.name, req, settings)


@router.post("/fill")
def fill(
    req: schemas.FillRequest, registry: RegistryDep, settings: SettingsDep
) -> schemas.FillResponse:
    """Candidates for a gap between left and right context: a bidirectional model, or whole
    sentences under a left-to-right one."""
    m = registry.get(req.model)
    return service.fill(m.lm, m.name, req, settings)
