"""Dead and slow clients: dropped, with a clear close code, before they cost the server memory."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GENEROUS_RATES, ServeProcess, Server, StalledClient
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


BIG = 512 * 1024  # one message's padding, as in the outside test that found the queue unbounded in bytes
MiB = 1024 * 1024
GENEROUS = {name: {"rate": 1e6, "burst": 10**6} for name in GENEROUS_RATES}
# Half a megabyte a message goes past the body-bytes budget of one address (the tests' only one).
NO_BODY_BUDGET = {**GENEROUS, "body_bytes_per_address": {"rate": 1e12, "burst": 10**12}}


def big_message(i: int) -> dict[str, Any]:
    return {"actions": [{"action": "n", "options": {"i": i, "pad": "x" * BIG}}]}


class StalledSSE:
    """An EventSource that stops reading once its channel is joined: a raw socket, so no client
    library buffers on its behalf."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, app_id: str, channel: str) -> StalledSSE:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /message/sse?app={app_id}&channel={channel} HTTP/1.1\r\nHost: bfstream\r\n\r\n".encode())
        seen = b""
        async with asyncio.timeout(5):
            while b"event: joined" not in seen:
                chunk = await reader.read(65536)
                assert chunk, seen
                seen += chunk
        writer.transport.pause_reading()
        return cls(reader, writer)

    async def read_to_end(self, timeout: float = 20) -> int:
        """Resume reading; the bytes read until the server closed the connection."""
        self.writer.transport.resume_reading()
        read = 0
        async with asyncio.timeout(timeout):
            while chunk := await self.reader.read(1 << 20):
                read += len(chunk)
        self.writer.close()
        return read


async def flood_until_one_leaves(server: Server, channel: str, listening: int) -> int:
    """Big messages to ``channel`` until fewer than ``listening`` connections are left in it; how many."""
    sent = 0
    async with asyncio.timeout(60):
        while await connections_in(server, channel) == listening:
            await server.send(channel, big_message(sent))
            sent += 1
    return sent


async def test_a_slow_reader_of_big_messages_is_dropped_by_bytes_not_frames(start_server) -> None:
    bound = 2 * MiB
    server = await start_server(messaging={"send_queue_bytes": bound}, limits=NO_BODY_BUDGET)
    slow = await stalled_client(server, "firehose")
    watcher = await server.ws(channels=("firehose",))

    sent = await flood_until_one_leaves(server, "firehose", 2)
    # The 1,024-frame bound alone would have let 512 MB pile up. Cut once the byte bound filled
    # behind what the sockets buffer (a few MB on loopback).
    assert bound // BIG < sent < (bound + 16 * MiB) // BIG, sent

    assert await slow.read_to_close() == 4408
    received = [f for f in slow.texts if f.get("op") == "message"]
    assert [f["offset"] for f in received] == list(range(1, len(received) + 1))  # it knows where to resume
    assert [f["offset"] for f in await watcher.messages_so_far()] == list(range(1, sent + 1))


async def test_a_slow_sse_reader_of_big_messages_is_dropped_by_bytes(start_server) -> None:
    bound = 2 * MiB
    server = await start_server(messaging={"send_queue_bytes": bound}, limits=NO_BODY_BUDGET)
    slow = await StalledSSE.open(int(server.url.rsplit(":", 1)[1]), server.app_id, "firehose")

    sent = await flood_until_one_leaves(server, "firehose", 1)
    assert bound // BIG < sent < (bound + 16 * MiB) // BIG, sent
    # Closed: once it reads again it gets what was in flight, then the end of the connection.
    assert 0 < await slow.read_to_end() < sent * BIG


def peak_rss(pid: int) -> int:
    """The process's resident memory at its highest so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


async def test_slow_readers_cost_the_server_at_most_their_byte_bound(tmp_path: Path) -> None:
    """20 clients that never read, each in a channel of its own (so no frame is shared between
    them), sent half a megabyte a message: the server's memory grows by at most the byte bound per
    client, plus what each connection buffers beside its queue."""
    bound, clients = 2 * MiB, 20
    env = {
        "BFSTREAM_MESSAGING__SEND_QUEUE_BYTES": str(bound),
        "BFSTREAM_LIMITS__MESSAGES__RATE": "1000000",
        "BFSTREAM_LIMITS__MESSAGES__BURST": "1000000",
        "BFSTREAM_LIMITS__BODY_BYTES_PER_ADDRESS__RATE": "1000000000000",
        "BFSTREAM_LIMITS__BODY_BYTES_PER_ADDRESS__BURST": "1000000000000",
    }
    proc = await ServeProcess.start(tmp_path / "data", **env)
    try:
        url = f"ws://127.0.0.1:{proc.port}/message/ws?app={proc.app_id}"
        channels = [f"c{i}" for i in range(clients)]
        stalled: list[Any] = []
        for channel in channels[: clients // 2]:
            ws = await StalledClient.open(url)
            await ws.send({"op": "join", "channel": channel, "id": 1})
            while not any(f.get("op") == "joined" for f in ws.texts):
                await ws._read_some()
            ws.stall()
            stalled.append(ws)
        for channel in channels[clients // 2 :]:
            stalled.append(await StalledSSE.open(proc.port, proc.app_id, channel))

        async with httpx.AsyncClient(timeout=30) as http:

            async def listening() -> int:
                answer = await http.post(f"{proc.url}/message/users", json={"apiKey": proc.api_key})
                return sum(answer.json().get(channel, 0) for channel in channels)

            assert await listening() == clients
            before = peak_rss(proc.proc.pid)
            # Per client: its queue, what its transport holds beside it (a frame, and 64 KiB more),
            # its channel's history (1 MiB) and the frame its writer holds; then room for the
            # requests' own garbage and the allocator's fragmentation.
            budget = clients * (bound + 3 * MiB) + 64 * MiB
            rounds = 0
            async with asyncio.timeout(120):
                while await listening() and rounds < 48:  # 48 rounds: 24 MB per client without the bound
                    body = {"apiKey": proc.api_key, "channels": channels, "message": big_message(rounds)}
                    assert (await http.post(f"{proc.url}/message/sendmessage", json=body)).status_code == 201
                    rounds += 1
                    assert peak_rss(proc.proc.pid) - before < budget, (rounds, peak_rss(proc.proc.pid) - before)
            grown = peak_rss(proc.proc.pid) - before
        assert rounds < 48, "some slow reader was never cut"
        print(
            f"\n{clients} slow readers, {rounds} rounds of 512 KB: peak RSS grew {grown / MiB:.0f} MiB"
            f" (budget {budget / MiB:.0f} MiB)"
        )
        for client in stalled[: clients // 2]:
            assert await client.read_to_close() == 4408
        for client in stalled[clients // 2 :]:
            assert await client.read_to_end() > 0
    finally:
        await proc.stop()
