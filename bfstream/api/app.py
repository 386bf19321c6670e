"""The ASGI application: routes, error handlers, and what lives for the server's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from bfstream import __version__
from bfstream.api import errors, messages, realtime, streams
from bfstream.api.limits import BodyLimit
from bfstream.config import Settings
from bfstream.messaging.brokers.memory import MemoryBroker
from bfstream.messaging.hub import Hub
from bfstream.store.sqlite import Store
from bfstream.streams.registry import StreamRegistry


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app.state
        state.settings = settings
        state.store = Store(settings.database_path)
        # One pooled client for every provider call; each call sets its own time-outs.
        state.http = httpx.AsyncClient(
            timeout=None, limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        )
        state.hub = Hub(MemoryBroker())
        state.streams = StreamRegistry()
        await state.hub.start()
        try:
            yield
        finally:
            await state.streams.close()
            await state.hub.stop()
            await state.http.aclose()
            state.store.close()

    app = FastAPI(
        title="bfstream",
        version=__version__,
        description="Streams LLM output to BetterForms-style messaging channels.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(streams.router)
    app.include_router(messages.router)
    app.include_router(realtime.router)

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "version": __version__}

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
