"""The only place that turns errors into HTTP answers.

Every failure answers ``{"success": false, "error": {"message", "code", "type", "details"}}``;
nothing a caller receives is a stack trace.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from bfstream.api.refused_calls import note_refusal
from bfstream.errors import BfstreamError
from bfstream.scrub import scrub_json
from bfstream.text import repair_json

log = logging.getLogger("bfstream.api")

# FastAPI raises a bare 400 only when a body cannot be decoded at all (e.g. invalid UTF-8).
_HTTP_TYPES = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


class ErrorInfo(BaseModel):
    # Serialization mode: every field is always sent, so every one is required in the document.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    message: str
    code: int | str = Field(description="An HTTP status, or the provider's own status or code.")
    type: str
    details: Any = Field(None, description="Field problems [{field, message}], or the provider's error.")


class ErrorResponse(BaseModel):
    """Every failure, whatever the endpoint."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    success: Literal[False] = False
    error: ErrorInfo


_STATUS_TEXT = {
    400: "Invalid request: not JSON, invalid fields (`details` lists `{field, message}`), text that is not "
    "Unicode, nesting too deep, or an unknown service.",
    401: "Bad or missing app key; for /message/sse, a bad or expired connection token.",
    403: "Not allowed: a private tab| channel, a channel for its added users only, a token of another app, or "
    "a page whose origin the app does not list.",
    404: "Not found: no such stream or app, or (/llm/tool-response) no tool call awaiting this answer.",
    409: "A request with this Idempotency-Key is still being answered after streams.max_duration"
    " (code idempotency_key_in_use).",
    410: "The offset lies in the part of the stream folded into a snapshot, which the ai-sdk encoding cannot "
    "resume from: read from the start.",
    413: "The body is larger than max_body_bytes.",
    422: "This Idempotency-Key came with a different request in the last 24 hours (idempotency_key_reused).",
    429: "Too many streams running at once, or past a rate limit; Retry-After says when to try again.",
    502: "The provider refused (`code` is its HTTP status, `details` its message) or broke off.",
    503: "Shutting down (shutting_down), the broker or the database unreachable (broker_unavailable, "
    "store_unavailable), in a fleet the instance running a stream silent (unavailable), or the app's stored "
    "provider key unreadable with this server's credentials_key (credential_unavailable).",
    504: "The provider timed out.",
}
# Every JSON body can be unreadable (400) or too large (413), and every endpoint that reads the
# database or the broker can find it unreachable (503).
_BODY = (400, 413, 503)
_STREAM = (*_BODY, 401, 409, 422, 429, 502, 504)
_APP = (*_BODY, 401)
# What each operation answers besides its success. A path not named here keeps the responses its
# route declares (``/healthz``).
ERRORS_BY_PATH: dict[str, tuple[int, ...]] = {
    "/stream/create": _STREAM,
    "/llm/query": _STREAM,
    "/stream/stop": _BODY,
    "/llm/query/stop": _BODY,
    "/llm/tool-response": (*_BODY, 403, 404),
    "/stream/status": (*_APP, 404),
    "/message/sendmessage": (*_APP, 429),
    "/message/token": _APP,
    "/message/adduser": _APP,
    "/message/removeuser": _APP,
    "/message/channels": _APP,
    "/message/users": _APP,
    "/message/allusers": _APP,
    "/message/sse": (400, 401, 403, 404, 429, 503),
    "/stream/{streamId}/events": (400, 403, 404, 410, 503),
}


def document_errors(openapi: dict[str, Any]) -> dict[str, Any]:
    """Describe the errors as they are sent: one shape, the statuses each operation can answer, never
    FastAPI's 422."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    shape = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
    schemas.update(shape.pop("$defs"))
    schemas["ErrorResponse"] = shape
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    retry_after = {
        "description": "Whole seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
    for path, operations in openapi.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in ERRORS_BY_PATH.get(path, ()):
                response: dict[str, Any] = {"description": _STATUS_TEXT[status], "content": content}
                if status == 429:
                    response["headers"] = {"Retry-After": retry_after}
                responses[str(status)] = response
    return openapi


def error_body(message: str, code: int | str, type_: str, details: Any = None) -> dict[str, Any]:
    """Scrubbed of secrets, and repaired: a provider's error may quote text that is not valid Unicode."""
    error = {"message": message, "code": code, "type": type_, "details": details}
    return {"success": False, "error": scrub_json(repair_json(error))}


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "(body)"


def validation_details(errors: list[Any]) -> list[dict[str, str]]:
    """Field paths and reasons only: pydantic's ``input`` is left out, as it could hold a provider key."""
    return [{"field": _field_path(tuple(e.get("loc", ()))), "message": e.get("msg", "invalid")} for e in errors]


def retry_after(exc: BfstreamError) -> int | None:
    """Whole seconds (Retry-After takes no fractions), rounded up so a client that waits is let in."""
    wait = getattr(exc, "retry_after", None)
    return None if wait is None else max(1, math.ceil(wait))


def error_response(exc: BfstreamError, action_name: str | None = None) -> JSONResponse:
    wait = retry_after(exc)
    headers = {"Retry-After": str(wait)} if wait is not None else None
    body = _with_action(error_body(exc.message, exc.code, exc.type, exc.details), action_name)
    return JSONResponse(body, status_code=exc.status, headers=headers)


def _with_action(body: dict[str, Any], action_name: Any) -> dict[str, Any]:
    """``/llm/query`` answers failures with the request's ``actionName``, as the reference does."""
    if not isinstance(action_name, str):
        return body
    return {"success": False, "actionName": scrub_json(repair_json(action_name)), "error": body["error"]}


def _action_name(request: Request, body: Any = None) -> Any:
    if request.url.path != "/llm/query":
        return None
    given = getattr(request.state, "action_name", None)
    return given if given is not None else body.get("actionName") if isinstance(body, dict) else None


async def _on_bfstream_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BfstreamError)
    return error_response(exc, _action_name(request))


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse(error_body("The request body is not valid JSON", 400, "invalid_json"), status_code=400)
    body = error_body("The request is invalid", 400, "validation_error", validation_details(errors))
    return JSONResponse(_with_action(body, _action_name(request, exc.body)), status_code=400)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    type_ = _HTTP_TYPES.get(exc.status_code, "http_error")
    # The exception's headers go along: a 405 must say which methods are allowed (Allow).
    body = error_body(str(exc.detail), exc.status_code, type_)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return JSONResponse(error_body("Internal server error", 500, "internal_error"), status_code=500)


Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]


def _noted(handler: Handler) -> Handler:
    """Every error answer passes here, so the dashboard's list of refused calls misses none."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return note_refusal(request, await handler(request, exc))

    return handle


def install(app: FastAPI) -> None:
    app.add_exception_handler(BfstreamError, _noted(_on_bfstream_error))
    app.add_exception_handler(RequestValidationError, _noted(_on_validation_error))
    app.add_exception_handler(HTTPException, _noted(_on_http_error))
    app.add_exception_handler(Exception, _noted(_on_unexpected))
