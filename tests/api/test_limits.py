"""Abuse limits: per-app rate limits (429 with Retry-After), connections per app and per client
address, WebSocket frame size, channels per request. One app's limit never touches another app."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerFactory

pytestmark = pytest.mark.anyio

SLOW = {"rate": 0.01, "burst": 3}  # three at once, then one every 100 s: nothing refills during a test
FAST = {"rate": 1e6, "burst": 10**6}


def echo(server: Any, api_key: str | None = None, channel: str = "room") -> dict[str, Any]:
    return {
        "apiKey": api_key or server.api_key,
        "service": "echo",
        "channels": [channel],
        "actionName": "onStream",
        "payload": {"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
    }


def message(n: int) -> dict[str, Any]:
    return {"actions": [{"action": "n", "options": {"n": n}}]}


async def test_stream_creation_is_rate_limited_per_app_with_retry_after(start_server: ServerFactory) -> None:
    server = await start_server(limits={"streams": SLOW, "messages": FAST, "publishes": FAST})
    answers = [await server.post("/stream/create", echo(server)) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[3]
    assert refused.json()["error"]["type"] == "rate_limited"
    assert refused.json()["success"] is False
    assert 90 <= int(refused.headers["Retry-After"]) <= 101  # one token every 100 s, rounded up
    # stream:false calls draw from the same bucket; the other app has a bucket of its own.
    no_stream = {**echo(server), "payload": {"model": "echo", "stream": False, "messages": [{"role": "user"}]}}
    assert (await server.post("/stream/create", no_stream)).status_code == 429
    assert (await server.post("/stream/create", echo(server, server.other_api_key))).status_code == 200


async def test_sendmessage_is_rate_limited_per_app(start_server: ServerFactory) -> None:
    server = await start_server(limits={"streams": FAST, "messages": SLOW, "publishes": FAST})
    listener = await server.ws(channels=("room",))
    body = {"apiKey": server.api_key, "channels": ["room"], "message": message(0)}
    codes = [(await server.post("/message/sendmessage", body)).status_code for _ in range(4)]
    assert codes == [201, 201, 201, 429]
    other = {**body, "apiKey": server.other_api_key}
    assert (await server.post("/message/sendmessage", other)).status_code == 201
    frames = [await listener.recv() for _ in range(3)]
    assert [f["op"] for f in frames] == ["message"] * 3  # exactly the three accepted, no more
    with pytest.raises(TimeoutError):
        await listener.recv(timeout=0.3)


async def test_browser_publishes_are_limited_for_the_whole_app_not_per_connection(
    start_server: ServerFactory,
) -> None:
    server = await start_server(limits={"streams": FAST, "messages": FAST, "publishes": SLOW})
    await server.allow_browser_publish()
    tabs = [await server.ws(channels=("room",)) for _ in range(2)]
    replies = []
    for i in range(4):  # alternating tabs: each stays well inside its own per-connection bucket
        replies.append(await tabs[i % 2].request({"op": "publish", "id": i, "channel": "room", "message": message(i)}))
    assert [r["op"] for r in replies] == ["published", "published", "published", "error"]
    error = replies[3]["error"]
    assert error["code"] == 429 and 90 <= error["retryAfter"] <= 101
    assert "publishes" in error["message"]
    # The refused tab is still connected and served.
    assert (await tabs[1].request({"op": "ping", "id": "p"}))["op"] == "pong"


async def test_connections_per_app_are_capped_and_freed_on_close(start_server: ServerFactory) -> None:
    server = await start_server(limits={"connections_per_app": 2})
    first, second = await server.ws(), await server.ws()
    async with connect(f"{server.ws_url}?app={server.app_id}") as third:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(third.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
    sse = await server.http.get(server.url + "/message/sse", params={"app": server.app_id, "channel": "x"})
    assert sse.status_code == 429 and sse.json()["error"]["type"] == "rate_limited"
    assert int(sse.headers["Retry-After"]) >= 1
    other = await server.ws(app_id=server.other_app_id)  # another app is not counted with this one
    assert other.hello["op"] == "hello"

    await first.conn.close()
    async with asyncio.timeout(5):  # the slot is freed as the connection closes
        while True:
            async with connect(f"{server.ws_url}?app={server.app_id}") as again:
                with contextlib.suppress(ConnectionClosed):  # refused until the close is through
                    if json.loads(await asyncio.wait_for(again.recv(), 5))["op"] == "hello":
                        break
            await asyncio.sleep(0.02)
    await second.conn.close()


async def test_connections_per_client_address_count_every_app(start_server: ServerFactory) -> None:
    server = await start_server(limits={"connections_per_address": 2})
    await server.ws()
    await server.ws(app_id=server.other_app_id)
    async with connect(f"{server.ws_url}?app={server.app_id}") as third:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(third.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
    assert "client address" in closed.value.rcvd.reason


async def test_an_oversized_websocket_frame_closes_only_that_connection(start_server: ServerFactory) -> None:
    server = await start_server(messaging={"max_frame_bytes": 4096})
    bystander = await server.ws(channels=("room",))
    big = await server.ws()
    await big.send({"op": "ping", "pad": "x" * 5000})
    with pytest.raises(ConnectionClosed) as closed:
        await big.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    await server.send("room", message(1))
    assert (await bystander.recv())["message"] == message(1)


async def test_a_request_names_at_most_max_channels(start_server: ServerFactory) -> None:
    server = await start_server(messaging={"max_channels": 5})
    channels = [f"c{i}" for i in range(6)]
    sent = await server.post(
        "/message/sendmessage", {"apiKey": server.api_key, "channels": channels, "message": message(1)}
    )
    assert sent.status_code == 400
    assert {"field": "channels", "message": "at most 5 channels"} in sent.json()["error"]["details"]
    created = await server.post("/stream/create", {**echo(server), "channels": channels})
    assert created.status_code == 400
    assert {"field": "channels", "message": "at most 5 channels"} in created.json()["error"]["details"]
    async with httpx.AsyncClient() as http:
        sse = await http.get(server.url + "/message/sse", params={"app": server.app_id, "channel": channels})
    assert sse.status_code == 400


async def test_request_bytes_per_client_address_are_budgeted_before_parsing(start_server: ServerFactory) -> None:
    server = await start_server(max_body_bytes=100_000, limits={"body_bytes_per_address": {"rate": 100, "burst": 1}})
    padded = {"apiKey": server.api_key, "channels": ["room"], "message": {"actions": [], "model": {"p": "x" * 40_000}}}
    codes = [(await server.post("/message/sendmessage", padded)).status_code for _ in range(3)]
    assert codes == [201, 201, 429]  # a budget of max_body_bytes at once: two of these, then 100 bytes a second
    refused = await server.post("/message/sendmessage", padded)
    assert refused.json()["error"]["type"] == "rate_limited" and int(refused.headers["Retry-After"]) >= 1
    small = await server.post("/message/sendmessage", {**padded, "message": message(1)})
    assert small.status_code == 201  # small bodies still fit in what refills
