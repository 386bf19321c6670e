"""The client's messaging calls against a real server: a message reaches real WebSocket and SSE
subscribers, a token lets a user's WebSocket connect, and users are added to and removed from
channels live."""

from __future__ import annotations

import time

import pytest

from bfstream.client import Token
from tests.client.conftest import AnyClient, call
from tests.conftest import Server, sse_connect

pytestmark = pytest.mark.anyio

MESSAGE = {"actions": [{"action": "namedAction", "name": "showToast", "options": {"text": "Saved"}}]}


async def test_send_message_reaches_websocket_and_sse_subscribers(client: AnyClient, server: Server) -> None:
    page = await server.ws(channels=("room",))
    async with sse_connect(server, ["room"]) as sse:
        assert (await sse.next()).event == "hello"
        assert (await sse.next()).event == "joined"
        assert await call(client, "send_message", "room", MESSAGE) is None
        frame = await page.recv()
        event = await sse.next()
    assert frame["op"] == "message" and frame["channel"] == "room" and frame["message"] == MESSAGE
    assert frame["from"] == {"kind": "api"}  # sent by the back end, not by a stream
    assert event.event == "message" and event.data["message"] == MESSAGE


async def test_a_token_connects_a_user_who_is_added_and_removed_live(client: AnyClient, server: Server) -> None:
    token = await call(client, "token", "u1", email="ann@example.com", ttl=600)
    assert isinstance(token, Token) and abs(token.expires_at - (time.time() + 600)) < 5
    page = await server.ws_user(token.token)
    assert page.hello["user"] == {"id": "u1", "email": "ann@example.com", "channels": []}

    assert await call(client, "add_user", "u1", ["sales", "support"], mode="listen") is None
    joined = {(await page.recv())["channel"], (await page.recv())["channel"]}
    assert joined == {"sales", "support"}
    await call(client, "send_message", ["sales"], MESSAGE)
    assert (await page.recv())["message"] == MESSAGE

    assert await call(client, "remove_user", "u1", "sales") is None
    left = await page.recv()
    assert left["op"] == "left" and left["channel"] == "sales"
    stranger = await server.ws()  # sales is a channel for its added users now
    assert (await stranger.request({"op": "join", "channel": "sales", "id": 1}))["error"]["code"] == 403
    listed = await server.post("/message/users", {"apiKey": server.api_key, "channel": "support"})
    assert listed.json() == {"support": [{"id": "u1", "email": "ann@example.com"}]}
