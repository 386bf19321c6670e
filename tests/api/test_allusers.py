"""``POST /message/allusers``: the app's connections on every instance, per data center, plus ``_total``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, ServerFactory, WSClient
from tests.services import delete_keys, require_redis, throwaway_database, unique_prefix

pytestmark = pytest.mark.anyio


async def all_users(server: Server, **options: Any) -> dict[str, Any]:
    response = await server.post("/message/allusers", {"apiKey": server.api_key, **options})
    assert response.status_code == 201, response.text
    return response.json()


async def connect(server: Server) -> list[WSClient]:
    """Two anonymous tabs (one of them in an extra channel), alice in two tabs, bob in one, and a tab of another app."""
    alice = await server.token("alice", "alice@example.com")
    return [
        await server.ws(),
        await server.ws(channels=("lobby",)),
        await server.ws_user(alice),
        await server.ws_user(alice),
        await server.ws_user(await server.token("bob", "bob@example.com")),
        await server.ws(server.other_app_id),
    ]


async def test_counts_connections(server: Server) -> None:
    assert await all_users(server) == {
        "local": {"authenticated": 0, "anonymous": 0},
        "_total": {"authenticated": 0, "anonymous": 0},
    }
    await connect(server)
    # Connections, not users, nor channel memberships: alice's two tabs count two, the lobby tab one.
    assert await all_users(server) == {
        "local": {"authenticated": 3, "anonymous": 2},
        "_total": {"authenticated": 3, "anonymous": 2},
    }


async def test_include_users_lists_each_user_once(server: Server) -> None:
    await connect(server)
    alice, bob = {"id": "alice", "email": "alice@example.com"}, {"id": "bob", "email": "bob@example.com"}
    assert await all_users(server, includeUsers=True) == {
        "local": {"authenticated": [alice, bob], "authenticatedCount": 2, "anonymous": 2},
        "_total": {"authenticated": 2, "anonymous": 2},
    }
    assert await all_users(server, includeUsers=True, dedupeUsers=False) == {
        "local": {"authenticated": [alice, alice, bob], "authenticatedCount": 3, "anonymous": 2},
        "_total": {"authenticated": 3, "anonymous": 2},
    }


async def test_a_closed_connection_stops_counting(server: Server) -> None:
    tabs = await connect(server)
    await tabs[0].conn.close()
    async with asyncio.timeout(5):
        while (await all_users(server))["_total"]["anonymous"] != 1:
            await asyncio.sleep(0.01)


async def test_the_datacenter_setting_names_the_group(start_server: ServerFactory) -> None:
    server = await start_server(datacenter="eu-west-1")
    await server.ws()
    assert await all_users(server) == {
        "eu-west-1": {"authenticated": 0, "anonymous": 1},
        "_total": {"authenticated": 0, "anonymous": 1},
    }


async def test_bad_key(server: Server) -> None:
    response = await server.post("/message/allusers", {"apiKey": "BFAPI_not-a-key-of-any-app"})
    assert response.status_code == 401, response.text
    assert response.json()["success"] is False
    response = await server.post("/message/allusers", {"apiKey": server.api_key, "includeUsers": "yes"})
    assert response.status_code == 400, response.text


@pytest.fixture
async def shared() -> AsyncIterator[dict[str, str]]:
    """What two instances of a fleet share: a Redis prefix and a PostgreSQL database."""
    redis_url, prefix = require_redis(), unique_prefix()
    async with throwaway_database() as database_url:
        try:
            yield {"broker_url": redis_url, "broker_prefix": prefix, "database_url": database_url}
        finally:
            await delete_keys(redis_url, prefix)


async def test_counts_the_whole_fleet(start_server: ServerFactory, shared: dict[str, str], tmp_path: Path) -> None:
    """Connections held by another instance count too (presence is shared); all under the asking
    instance's data center, as presence does not say where a connection is held."""
    first = await start_server(tmp_path / "fleet", datacenter="us-east-1", **shared)
    second = await start_server(tmp_path / "fleet", datacenter="eu-west-1", **shared)
    await first.ws()
    await second.ws_user(await second.token("carol", "carol@example.com"))
    for server, datacenter in ((first, "us-east-1"), (second, "eu-west-1")):
        assert await all_users(server) == {
            datacenter: {"authenticated": 1, "anonymous": 1},
            "_total": {"authenticated": 1, "anonymous": 1},
        }
