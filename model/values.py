"""Values read from JSON and TOML files: what counts as an integer or a number, and how a value
is quoted in an error message (short enough to read, whatever a damaged file holds)."""

from __future__ import annotations

import math
from typing import Any


def is_int(value: Any) -> bool:
    """An integer, and not a bool (``true`` is no count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any, finite: bool = False) -> bool:
    """An int or float, not a bool and not NaN; with ``finite``, not infinite either. An integer
    too large for a float (JSON allows 1e400 written out) is no number either: nothing could
    compute with it."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value) if finite else not math.isnan(value)
    except OverflowError:
        return False


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a damaged file can hold megabytes in a field."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
