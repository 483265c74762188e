"""Every bad request gets a 4xx whose message names the field; nothing becomes a 500.

- invalid JSON → 400; schema violations (types, ranges, empty lists, NaN) → 422 naming each field;
- limits and OOV rejection from the service → 422 naming the field;
- unknown model → 404; models still loading → 503 with Retry-After;
- a body over the size limit → 413, decided before the body is parsed (``app.middleware``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.registry import ModelNotFoundError, NotReadyError
from app.service import RequestError

log = logging.getLogger("nextword")


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """("body", "candidates", 2) → "candidates[2]"; the "body" prefix is implied."""
    parts = [p for p in loc if p not in ("body", "query", "path")]
    name = ""
    for p in parts:
        if isinstance(p, int):
            name += f"[{p}]"
        elif p in ("str", "list[str]", "function-after[...]") or "constrained-str" in str(p):
            continue  # pydantic's union-branch labels are not fields
        else:
            name += f".{p}" if name else str(p)
    return name or "body"


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    for e in errors:
        if e.get("type") == "json_invalid":
            reason = str(e.get("ctx", {}).get("error", "")).strip()
            return JSONResponse({"detail": f"the request body is not valid JSON: {reason}"}, 400)
        if tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), str | bytes):
            detail = "the request body must be a JSON object (send Content-Type: application/json)"
            return JSONResponse({"detail": detail}, 400)
    messages = []
    for e in errors:
        message = f"{field_name(e.get('loc', ()))}: {e.get('msg', 'invalid')}"
        if message not in messages:
            messages.append(message)
    # the offending values are not echoed back: they may be huge, or NaN (not valid JSON)
    listed = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in errors]
    return JSONResponse({"detail": "; ".join(messages), "errors": jsonable_encoder(listed)}, 422)


async def request_error(_: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "field": exc.field, **exc.extra}, exc.status)


async def model_not_found(_: Request, exc: ModelNotFoundError) -> JSONResponse:
    return JSONResponse({"detail": str(exc.args[0]), "field": "model"}, 404)


async def not_ready(_: Request, exc: NotReadyError) -> JSONResponse:
    return JSONResponse({"detail": f"not ready: {exc}"}, 503, headers={"Retry-After": "5"})


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error; it is logged"}, 500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestError, request_error)  # type: ignore[arg-type]
    app.add_exception_handler(ModelNotFoundError, model_not_found)  # type: ignore[arg-type]
    app.add_exception_handler(NotReadyError, not_ready)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected)
