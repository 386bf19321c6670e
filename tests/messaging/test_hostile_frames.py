"""Frames and bodies an attacker would send: refused one by one, never costing the connection."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import Server, ServerFactory

pytestmark = pytest.mark.anyio


async def test_deeply_nested_json_in_a_frame_gets_an_error_frame(server: Server) -> None:
    client = await server.ws()
    await client.send('{"op": "ping", "id": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    reply = await client.recv()
    assert reply["op"] == "error" and "nest" in reply["error"]["message"]
    assert (await client.request({"op": "ping", "id": "after"}))["op"] == "pong"


async def test_deeply_nested_json_in_a_body_is_a_400(server: Server) -> None:
    body = '{"apiKey": "k", "channels": ["c"], "message": ' + "[" * 100_000 + "]" * 100_000 + "}"
    answer = await server.http.post(server.url + "/message/sendmessage", content=body)
    assert answer.status_code == 400 and "nest" in answer.json()["error"]["message"]
    shallow = '{"apiKey": "' + server.api_key + '", "channels": ["c"], "message": {"actions": [{"a": {"b": [[1]]}}]}}'
    assert (await server.http.post(server.url + "/message/sendmessage", content=shallow)).status_code == 201


async def test_a_client_that_pipelines_requests_gets_every_reply(server: Server) -> None:
    """More requests sent ahead than the send queue holds (1024): the replies go out as they come."""
    client = await server.ws()
    for i in range(3000):
        await client.send({"op": "ping", "id": i})
    replies = [await client.recv() for _ in range(3000)]
    assert [r["id"] for r in replies] == list(range(3000))


async def test_a_405_says_which_methods_are_allowed(server: Server) -> None:
    answer = await server.http.get(server.url + "/stream/create")
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"
    assert answer.json()["error"]["type"] == "method_not_allowed"


async def test_a_resume_point_nested_deep_on_purpose_counts_as_none(server: Server) -> None:
    import base64

    deep = base64.urlsafe_b64encode(b"[" * 1500 + b"]" * 1500).rstrip(b"=").decode()
    params = {"app": server.app_id, "channel": "c", "lastEventId": deep}
    async with server.http.stream("GET", server.url + "/message/sse", params=params) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        assert await anext(lines) == "event: hello"
    client = await server.ws()  # and the same as a WebSocket's since, on a fresh connection
    async with connect(f"{server.ws_url}?app={server.app_id}&since={deep}") as ws:
        assert '"op":"hello"' in await ws.recv()
    assert (await client.request({"op": "ping", "id": 1}))["op"] == "pong"


async def test_health_answers_head_too(server: Server) -> None:
    assert (await server.http.head(server.url + "/healthz")).status_code == 200


async def test_a_text_frame_that_is_not_utf8_closes_with_1007_and_logs_no_traceback(server: Server) -> None:
    """A lone surrogate sent as its CESU-8 bytes: uvicorn closes with 1007, as RFC 6455 says, but
    logged an ERROR with a traceback for it, one per frame any page chose to send."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    log = logging.getLogger("uvicorn.error")  # uvicorn's own logging set-up keeps it from the root logger
    log.addHandler(handler)
    try:
        async with connect(f"{server.ws_url}?app={server.app_id}") as ws:
            assert '"op":"hello"' in await ws.recv()
            await ws.send(b'{"op": "ping", "id": "\xed\xa0\x80"}', text=True)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1007
        client = await server.ws()  # the server itself carries on
        assert (await client.request({"op": "ping", "id": 1}))["op"] == "pong"
    finally:
        log.removeHandler(handler)
    assert not [r for r in records if r.levelno >= logging.WARNING or r.exc_info], [r.getMessage() for r in records]


async def test_a_connection_sending_more_than_its_share_is_read_slower_and_its_neighbours_are_not(
    start_server: ServerFactory,
) -> None:
    server = await start_server(messaging={"read_rate": 200_000, "read_burst": 50_000})
    flooder, neighbour = await server.ws(), await server.ws()
    pad = "x" * 20_000
    started = time.monotonic()
    for i in range(10):  # 200 KB: 50 KB at once, then 150 KB at 200 KB/s
        await flooder.send({"op": "ping", "id": i, "pad": pad})
    neighbour_waited = []
    for i in range(5):  # meanwhile, the neighbour is answered at once
        asked = time.monotonic()
        assert (await neighbour.request({"op": "ping", "id": f"n{i}"}))["op"] == "pong"
        neighbour_waited.append(time.monotonic() - asked)
    replies = [await flooder.recv() for _ in range(10)]
    assert [r["id"] for r in replies] == list(range(10))  # nothing refused, nothing lost: only later
    assert time.monotonic() - started >= 0.6  # paced: at least the debt's worth of time
    assert max(neighbour_waited) < 0.5
    assert (await server.post("/stream/stop", {"streamId": "x" * 70_000})).status_code == 413  # small bodies
