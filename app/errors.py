"""Every bad request gets a 4xx whose message names the field; nothing becomes a 500.

- invalid JSON → 400; schema violations (types, ranges, empty lists, NaN) → 422 naming each field;
- limits and OOV rejection from the service → 422 naming the field;
- unknown model → 404; models still loading, a client's queue over its limit (``app.scheduler``)
  or memory exhausted → 503 with Retry-After;
- a body over the size limit → 413, decided before the body is parsed (``app.middleware``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from app.registry import ModelNotFoundError, NotReadyError
from app.scheduler import Busy, ClientGone
from app.service import RequestError

log = logging.getLogger("nextword")


def is_branch_label(part: Any) -> bool:
    """pydantic's names for the branches of a union (``str``, ``list[constrained-str]``...) in
    an error's location: they are not fields."""
    return isinstance(part, str) and (
        part in ("str", "list[str]", "function-after[...]") or "constrained-str" in part
    )


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """("body", "candidates", 2) → "candidates[2]"; the "body" prefix is implied."""
    parts = [p for p in loc if p not in ("body", "query", "path")]
    name = ""
    for p in parts:
        if isinstance(p, int):
            name += f"[{p}]"
        elif is_branch_label(p):
            continue
        else:
            name += f".{p}" if name else str(p)
    return name or "body"


def relevant(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The errors a user can act on. A text is a string or a list of tokens, and pydantic
    reports a bad value against both branches of that union ("should match pattern '\\S';
    … should be a valid list"): the complaint that the value is not of the other branch's type
    is dropped, so what is left is about the type that was sent; a value of neither type gets
    one error saying what is expected."""
    kept: list[dict[str, Any]] = []
    neither: dict[str, dict[str, Any]] = {}
    for e in errors:
        labels = [p for p in e.get("loc", ()) if is_branch_label(p)]
        if labels and e.get("type") in ("string_type", "list_type") and labels[-1] == e["loc"][-1]:
            loc = tuple(p for p in e["loc"] if not is_branch_label(p))
            neither.setdefault(field_name(loc), {"type": "text_type", "loc": loc,
                               "msg": "must be a string or a list of token strings"})  # fmt: skip
            continue  # "not a string" of the list branch's value, or the reverse
        kept.append(e)
    answered = [field_name(e.get("loc", ())) for e in kept]
    return kept + [e for name, e in neither.items() if not within(name, answered)]


def within(name: str, fields: list[str]) -> bool:
    """Whether ``name`` or a part of it (``name[1]``, ``name.score``) is among ``fields``."""
    return any(f == name or f.startswith((f"{name}[", f"{name}.")) for f in fields)


def message(error: dict[str, Any]) -> str:
    """``field: what is wrong``, in words that say what to send instead."""
    name = field_name(error.get("loc", ()))
    kind, sent = error.get("type"), error.get("input")
    blank = isinstance(sent, str) and not sent.strip()
    if blank and kind in ("string_pattern_mismatch", "string_too_short"):
        return f"{name} is empty: give a word or phrase, or leave the item out"
    return f"{name}: {error.get('msg', 'invalid')}"


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    for e in errors:
        if e.get("type") == "json_invalid":
            reason = str(e.get("ctx", {}).get("error", "")).strip()
            return JSONResponse({"detail": f"the request body is not valid JSON: {reason}"}, 400)
        if tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), str | bytes):
            detail = "the request body must be a JSON object (send Content-Type: application/json)"
            return JSONResponse({"detail": detail}, 400)
    errors = relevant(list(errors))
    messages = []
    for e in errors:
        text = message(e)
        if text not in messages:
            messages.append(text)
    # the offending values are not echoed back: they may be huge, or NaN (not valid JSON)
    listed = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in errors]
    return JSONResponse({"detail": "; ".join(messages), "errors": jsonable_encoder(listed)}, 422)


async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's and FastAPI's own errors in the API's format. FastAPI reports a body it
    cannot decode as "There was an error parsing the body": say it must be UTF-8, and where it
    is not."""
    detail: Any = exc.detail
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        detail = not_utf8(cause.object)
    return JSONResponse({"detail": detail}, exc.status_code, headers=exc.headers)


def not_utf8(body: bytes) -> str:
    """What is wrong with a body JSON could not decode: where it stops being UTF-8, or that it
    is in another encoding (``json.loads`` guesses UTF-16 or UTF-32 from zero bytes or a
    byte-order mark, and then its error names a byte that is fine in UTF-8)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = body[e.start : e.start + 1].hex()
        return (f"the request body must be JSON in UTF-8; byte 0x{bad} at offset {e.start} is "
                "not UTF-8 (encode the text as UTF-8 before sending it)")  # fmt: skip
    return ("the request body must be JSON in UTF-8; it looks like UTF-16 or UTF-32 (zero bytes "
            "or a byte-order mark): encode it as UTF-8")  # fmt: skip


async def request_error(_: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "field": exc.field, **exc.extra}, exc.status)


async def model_not_found(_: Request, exc: ModelNotFoundError) -> JSONResponse:
    return JSONResponse({"detail": str(exc.args[0]), "field": "model"}, 404)


async def busy(_: Request, exc: Busy) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, 503, headers={"Retry-After": str(exc.retry_after)})


async def client_gone(_: Request, __: ClientGone) -> Response:
    """The client disconnected and its work was dropped: nobody reads this answer (nginx's
    499, "client closed request", for the logs and metrics)."""
    return Response(status_code=499)


async def out_of_memory(request: Request, _: MemoryError) -> JSONResponse:
    """The worker's memory limit reached (a limit below what its settings need): this request
    fails, the worker lives on, and the client is told to come back."""
    log.warning("out of memory on %s %s: refused with 503", request.method, request.url.path)
    detail = "out of memory in this worker; retry, or send a smaller request"
    return JSONResponse({"detail": detail}, 503, headers={"Retry-After": "5"})


async def not_ready(_: Request, exc: NotReadyError) -> JSONResponse:
    return JSONResponse({"detail": f"not ready: {exc}"}, 503, headers={"Retry-After": "5"})


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error; it is logged"}, 500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestError, request_error)  # type: ignore[arg-type]
    app.add_exception_handler(ModelNotFoundError, model_not_found)  # type: ignore[arg-type]
    app.add_exception_handler(NotReadyError, not_ready)  # type: ignore[arg-type]
    app.add_exception_handler(Busy, busy)  # type: ignore[arg-type]
    app.add_exception_handler(MemoryError, out_of_memory)  # type: ignore[arg-type]
    app.add_exception_handler(ClientGone, client_gone)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected)
