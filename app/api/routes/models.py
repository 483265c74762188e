"""What the server has loaded: models, their provenance, and their vocabularies."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Header, HTTPException, Query

from app import schemas
from app.api.deps import RegistryDep, SettingsDep
from app.registry import ModelNotFoundError
from app.service import RequestError

router = APIRouter(
    prefix="/v1/models", tags=["models"], responses=schemas.error_responses(404, 422, 503)
)


@router.get("")
def list_models(registry: RegistryDep) -> schemas.ModelList:
    """Every loaded model: architecture, vocabulary, corpus, perplexity, checksum, load time."""
    registry.get()  # 503 while loading
    described = [m.describe() for m in registry.models.values()]
    return schemas.ModelList(default=registry.default, models=described)


@router.get("/{name}")
def get_model(name: str, registry: RegistryDep) -> schemas.ModelDescription:
    """One model's description."""
    return registry.get(name).describe()


@router.get("/{name}/vocab")
def vocabulary(
    name: str,
    registry: RegistryDep,
    prefix: str = Query("", max_length=200, description="only tokens starting with this"),
    offset: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=1000),
) -> schemas.VocabPage:
    """Page through the vocabulary in id order (most frequent first), optionally by prefix."""
    m = registry.get(name)
    vocab = m.lm.vocab
    ids = (
        [i for i, t in enumerate(vocab.tokens) if t.startswith(prefix)]
        if prefix
        else range(len(vocab))
    )
    page = ids[offset : offset + limit]
    entries = [schemas.VocabEntry(token=vocab.tokens[i], id=i, count=vocab.counts[i]) for i in page]
    return schemas.VocabPage(
        model=m.name, total=len(ids), offset=offset, limit=limit, tokens=entries
    )


@router.get("/{name}/vocab/{token:path}")
def vocabulary_membership(name: str, token: str, registry: RegistryDep) -> schemas.VocabMembership:
    """Whether one token is in the vocabulary (always 200; ``in_vocabulary`` says).

    Any token can be asked, ``/`` included: percent-encode it (``</s>`` is ``%3C%2Fs%3E``).
    """
    if not token:
        raise RequestError("token", "is empty; percent-encode the token after /vocab/")
    m = registry.get(name)
    known = token in m.lm.vocab
    i = m.lm.vocab.id(token) if known else None
    return schemas.VocabMembership(
        model=m.name,
        token=token,
        in_vocabulary=known,
        id=i,
        count=m.lm.vocab.counts[i] if i is not None else None,
    )


@router.post("/{name}/reload", responses=schemas.error_responses(401, 403, 409))
def reload_model(
    name: str,
    registry: RegistryDep,
    settings: SettingsDep,
    authorization: str | None = Header(None, description="Bearer NEXTWORD_RELOAD_TOKEN"),
) -> schemas.ModelDescription:
    """Load the model's checkpoint directory again (after a new checkpoint was written there).

    Guarded by the token in NEXTWORD_RELOAD_TOKEN; disabled when it is not set. In-flight requests
    finish on the old model; a damaged checkpoint is refused and the old model keeps serving.
    With several workers this reloads only the worker that answers: send the server SIGHUP
    instead, which every worker receives and reloads on, in place.
    """
    if not settings.reload_token:
        raise HTTPException(403, "reload is disabled: set NEXTWORD_RELOAD_TOKEN to enable it")
    expected = f"Bearer {settings.reload_token}".encode()
    if not hmac.compare_digest((authorization or "").encode(), expected):
        raise HTTPException(401, "authorization: expected 'Bearer <NEXTWORD_RELOAD_TOKEN>'")
    try:
        loaded = registry.reload(name)
    except ModelNotFoundError:
        raise
    except Exception as e:
        detail = f"{registry.redact(str(e))}; the old model keeps serving"
        raise HTTPException(409, detail) from None
    return loaded.describe()  # outside the try: once swapped in, the new model is serving
