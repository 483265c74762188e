"""The app under test: a ready registry of tiny in-memory models, and httpx on the ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from app.core.config import Settings
from app.main import create_app
from app.registry import ModelRegistry
from model.inference.recurrent_lm import RecurrentLM
from model.network.recurrent import RNNLM


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def other_lm(tiny_lm: RecurrentLM) -> RecurrentLM:
    net = RNNLM(tiny_lm.net.config, seed=42, dtype=np.float64)
    return RecurrentLM(net, tiny_lm.vocab, tiny_lm.tokenizer)


@pytest.fixture
def registry(tiny_lm: RecurrentLM, other_lm: RecurrentLM) -> ModelRegistry:
    return ModelRegistry.from_models({"tiny": tiny_lm, "other": other_lm})


@pytest.fixture
def settings() -> Settings:
    return Settings(max_candidates=5, max_sentences=4, max_tokens=12, max_k=20, max_body_bytes=4096)


@pytest.fixture
async def client(registry: ModelRegistry, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://nextword.test") as c:
        yield c
