"""A client of the app serving one in-memory model, without a socket: the adapters' HTTP paths
tested against the same model in process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from fastapi.testclient import TestClient

from app.client import NextwordClient
from app.core.config import Settings
from app.main import create_app
from app.registry import ModelRegistry
from model.inference.language_model import LanguageModel


@contextmanager
def served_client(lm: LanguageModel, name: str = "m") -> Iterator[NextwordClient]:
    """A ``NextwordClient`` naming ``name``, its requests answered by the app serving ``lm``."""
    test_client = TestClient(create_app(Settings(), ModelRegistry.from_models({name: lm})))

    def forward(request: httpx.Request) -> httpx.Response:
        r = test_client.request(request.method, request.url.path, content=request.content,
                                headers=dict(request.headers))  # fmt: skip
        return httpx.Response(r.status_code, content=r.content, headers=r.headers)

    with NextwordClient("http://t", model=name, transport=httpx.MockTransport(forward)) as client:
        yield client
