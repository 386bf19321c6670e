"""Dead and slow clients: dropped, with a clear close code, before they cost the server memory."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import Server, StalledClient
from tests.messaging.write_paths import WritePath

pytestmark = pytest.mark.anyio


async def connections_in(server: Server, channel: str) -> int:
    users = (await server.post("/message/users", {"apiKey": server.api_key, "channel": channel})).json()
    return users.get(channel, 0)


async def stalled_client(server: Server, channel: str) -> StalledClient:
    client = await StalledClient.open(f"{server.ws_url}?app={server.app_id}")
    await client.send({"op": "join", "channel": channel, "id": 1})
    while not any(f.get("op") == "joined" for f in client.texts):
        await client._read_some()
    client.stall()
    return client


async def test_slow_consumer_is_dropped_and_memory_stays_bounded(start_server, write_path: WritePath) -> None:
    server = await start_server(messaging={"send_queue": 50, **write_path.settings})
    slow = await stalled_client(server, "firehose")
    watcher = await server.ws(channels=("firehose",))

    pad = "x" * 20_000
    sent = 0
    async with asyncio.timeout(30):
        while await connections_in(server, "firehose") == 2:
            await server.send("firehose", {"actions": [{"action": "n", "options": {"i": sent, "pad": pad}}]})
            sent += 1
    # Cut once its 50-frame queue filled behind what the sockets buffer (a few MB on loopback),
    # long before the 2,000 messages (40 MB) that would show the server piling everything up.
    assert 50 < sent < 2000, sent

    # Once it reads again it gets what was already in flight, then the close code saying why.
    assert await slow.read_to_close() == 4408
    received = [f for f in slow.texts if f.get("op") == "message"]
    assert 0 < len(received) < sent
    assert [f["offset"] for f in received] == list(range(1, len(received) + 1))  # it knows where to resume
    # The healthy client was not disturbed.
    assert [f["offset"] for f in await watcher.messages_so_far()] == list(range(1, sent + 1))
    write_path.assert_taken()


async def test_dead_connection_is_dropped_within_two_ping_intervals(start_server) -> None:
    interval = 0.3
    server = await start_server(messaging={"ping_interval": interval})
    alive = await server.ws(channels=("room",))
    await stalled_client(server, "room")  # stops answering pings, like a phone that lost signal
    started = time.monotonic()
    async with asyncio.timeout(10):
        while await connections_in(server, "room") > 1:
            await asyncio.sleep(0.02)
    assert time.monotonic() - started <= 2 * interval + 0.3
    assert await alive.request({"op": "ping", "id": 1}) == {"op": "pong", "id": 1}  # answered pings: kept


async def test_channel_limit_per_connection(start_server) -> None:
    server = await start_server(messaging={"max_channels": 3})
    client = await server.ws(channels=("a", "b", "c"))
    reply = await client.request({"op": "join", "channel": "d", "id": 1})
    assert reply["op"] == "error" and reply["error"]["code"] == 400 and "at most 3" in reply["error"]["message"]
    assert (await client.request({"op": "join", "channel": "a", "id": 2}))["op"] == "joined"  # re-join is fine
