"""The only place that turns errors into HTTP answers.

Every failure answers ``{"success": false, "error": {"message", "code", "type", "details"}}``;
nothing a caller receives is a stack trace.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from bfstream.errors import BfstreamError
from bfstream.scrub import scrub_json
from bfstream.text import repair_json

log = logging.getLogger("bfstream.api")

# FastAPI raises a bare 400 only when a body cannot be decoded at all (e.g. invalid UTF-8).
_HTTP_TYPES = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


class ErrorInfo(BaseModel):
    message: str
    code: int | str = Field(description="An HTTP status, or the provider's own status or code.")
    type: str
    details: Any = Field(None, description="Field problems [{field, message}], or the provider's error.")


class ErrorResponse(BaseModel):
    """Every failure, whatever the endpoint."""

    success: bool = False
    error: ErrorInfo


def document_errors(openapi: dict[str, Any]) -> dict[str, Any]:
    """Describe the errors as they are sent: one shape, 4xx and 5xx, never FastAPI's 422."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas.update(ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}").pop("$defs"))
    schemas["ErrorResponse"] = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas["ErrorResponse"].pop("$defs", None)
    error = {
        "description": "An error: 400 invalid request, 401 bad app key, 404 not found, 413 body too large, "
        "429 too many streams, 502 the provider refused or failed, 503 shutting down, broker unreachable or "
        "another instance silent, 504 provider time-out.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses["default"] = error
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


def error_response(exc: BfstreamError) -> JSONResponse:
    wait = retry_after(exc)
    headers = {"Retry-After": str(wait)} if wait is not None else None
    return JSONResponse(
        error_body(exc.message, exc.code, exc.type, exc.details), status_code=exc.status, headers=headers
    )


async def _on_bfstream_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BfstreamError)
    return error_response(exc)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse(error_body("The request body is not valid JSON", 400, "invalid_json"), status_code=400)
    body = error_body("The request is invalid", 400, "validation_error", validation_details(errors))
    return JSONResponse(body, status_code=400)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    type_ = _HTTP_TYPES.get(exc.status_code, "http_error")
    # The exception's headers go along: a 405 must say which methods are allowed (Allow).
    body = error_body(str(exc.detail), exc.status_code, type_)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return JSONResponse(error_body("Internal server error", 500, "internal_error"), status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(BfstreamError, _on_bfstream_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
