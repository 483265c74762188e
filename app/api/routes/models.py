"""What the server has loaded: models, their provenance, and their vocabularies."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from app import schemas
from app.api.deps import RegistryDep

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
def list_models(registry: RegistryDep) -> dict[str, Any]:
    """Every loaded model: architecture, vocabulary, corpus, perplexity, checksum, load time."""
    registry.get()  # 503 while loading
    return {"default": registry.default, "models": [m.describe() for m in registry.models.values()]}


@router.get("/{name}")
def get_model(name: str, registry: RegistryDep) -> dict[str, Any]:
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


@router.get("/{name}/vocab/{token}")
def vocabulary_membership(name: str, token: str, registry: RegistryDep) -> schemas.VocabMembership:
    """Whether one token is in the vocabulary (always 200; ``in_vocabulary`` says)."""
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
