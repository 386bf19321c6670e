"""Who may call: back ends name their app by the secret key in the body of every REST call; the
operator's endpoints (``/metrics``, ``/admin``) take a bearer token of their own from the settings."""

from __future__ import annotations

import hmac

from fastapi import Request

from bfstream.errors import NotFound, Unauthorized
from bfstream.store.records import App
from bfstream.store.store import Store


def store_of(request: Request) -> Store:
    return request.app.state.store


def _bytes(text: str) -> bytes:
    # surrogateescape: a token read from the environment may hold bytes that are not UTF-8.
    return text.encode("utf-8", "surrogateescape")


def require_bearer(request: Request, token: str | None, setting: str) -> None:
    """Without the setting the endpoint answers as an unknown path does (404), so an instance that
    does not offer it does not say it could; with it, ``Authorization: Bearer <token>`` is needed."""
    if token is None:
        raise NotFound("Not Found")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Compared in constant time whatever was sent, so the answer's timing tells nothing about the token.
    if not hmac.compare_digest(_bytes(given.strip()), _bytes(token)) or scheme.lower() != "bearer":
        raise Unauthorized(f"A valid token is required: Authorization: Bearer <{setting}>")


async def authenticate(request: Request, api_key: str) -> App:
    app = await store_of(request).app_by_key(api_key) if api_key else None
    if app is None:
        raise Unauthorized("Invalid or missing apiKey")
    return app
