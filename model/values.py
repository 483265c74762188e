"""Values quoted in error messages: short enough to read, whatever a damaged file holds."""

from __future__ import annotations

from typing import Any


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a damaged file can hold megabytes in a field."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
