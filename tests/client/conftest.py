"""Each client test runs twice, with ``Client`` and with ``AsyncClient``, against the real server
of ``tests/conftest.py``. That server runs in the test's event loop, so the blocking client is
driven from a worker thread (``asyncio.to_thread``), as a threaded back end would call it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bfstream.client import AsyncClient, Client
from tests.conftest import Server

AnyClient = Client | AsyncClient


async def call(client: AnyClient, method: str, *args: Any, **kwargs: Any) -> Any:
    """``client.method(...)``, awaited for either kind of client."""
    if isinstance(client, AsyncClient):
        return await getattr(client, method)(*args, **kwargs)
    return await asyncio.to_thread(getattr(client, method), *args, **kwargs)


async def read_events(client: AnyClient, stream_id: str, timeout: float = 10, **kwargs: Any) -> list[dict[str, Any]]:
    """Every event ``client.events`` gives, to the stream's end."""
    async with asyncio.timeout(timeout):
        if isinstance(client, AsyncClient):
            return [event async for event in client.events(stream_id, **kwargs)]
        return await asyncio.to_thread(lambda: list(client.events(stream_id, **kwargs)))


def make_client(kind: str, url: str, api_key: str, **options: Any) -> AnyClient:
    return (Client if kind == "sync" else AsyncClient)(url, api_key, **options)


async def close(client: AnyClient) -> None:
    if isinstance(client, AsyncClient):
        await client.aclose()
    else:
        client.close()


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def client(kind: str, server: Server) -> AsyncIterator[AnyClient]:
    """A client of the test server, for its test app."""
    made = make_client(kind, server.url, server.api_key)
    yield made
    await close(made)
