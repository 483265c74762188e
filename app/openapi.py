"""The OpenAPI document with this server's limits in it, so generated clients and fuzzers know them.

Request models mark the fields bounded by a setting (``schemas.limit("max_candidates")``); here
the marker becomes the configured bound: ``maxItems`` for a list, ``maximum`` for a number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from app.core.config import Settings
from app.schemas import LIMIT_KEY


def write_limits(node: Any, settings: Settings) -> None:
    """Replace every limit marker in the JSON schema ``node`` (in place) by the setting's value."""
    if isinstance(node, dict):
        setting = node.pop(LIMIT_KEY, None)
        if setting is not None:
            bound = int(getattr(settings, setting))
            if node.get("type") == "array":
                node["maxItems"] = min(bound, node.get("maxItems", bound))
            elif setting.endswith("_tokens") and "anyOf" in node:  # a text: its tokens
                node["x-max-tokens"] = bound
            else:
                node["maximum"] = min(bound, node.get("maximum", bound))
        for child in node.values():
            write_limits(child, settings)
    elif isinstance(node, list):
        for child in node:
            write_limits(child, settings)


def with_limits(app: FastAPI, settings: Settings) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` as FastAPI builds it, then the limits written in (once, then cached)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            write_limits(build(), settings)  # build() caches the document in app.openapi_schema
        return app.openapi_schema  # type: ignore[return-value]

    return openapi
