"""App keys: every REST call names its app by the secret key in its body."""

from __future__ import annotations

from fastapi import Request

from bfstream.errors import Unauthorized
from bfstream.store.records import App
from bfstream.store.store import Store


def store_of(request: Request) -> Store:
    return request.app.state.store


async def authenticate(request: Request, api_key: str) -> App:
    app = await store_of(request).app_by_key(api_key) if api_key else None
    if app is None:
        raise Unauthorized("Invalid or missing apiKey")
    return app
