"""Authenticated users: connection tokens, channel membership, live changes, and the listings."""

from __future__ import annotations

import asyncio
import base64
import json
import sys

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bfstream.messaging.protocol import encode_positions
from tests.conftest import Server, WSClient, sse_connect

pytestmark = pytest.mark.anyio

MESSAGE = {"actions": [{"action": "showAlert", "options": {"text": "for members"}}]}


async def add_user(server: Server, user_id: str, *channels: str, path: str = "/message/adduser") -> None:
    body = {
        "apiKey": server.api_key,
        "users": [{"id": user_id, "channels": [{"name": c, "mode": "listen"} for c in channels]}],
    }
    response = await server.post(path, body)
    assert response.status_code == 201, response.text
    assert response.json() == {"users": [user_id]}


async def close_code(url: str) -> int:
    async with connect(url) as conn:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(conn.recv(), 5)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def test_user_added_before_connecting_listens_at_once(server: Server) -> None:
    await add_user(server, "u1", "sales")
    token = await server.token("u1", "ann@example.com")
    client = await server.ws_user(token)
    assert client.hello["user"] == {
        "id": "u1",
        "email": "ann@example.com",
        "channels": [{"name": "sales", "mode": "listen"}],
    }
    assert "sales" in client.hello["channels"]
    joined = await client.recv()
    assert joined["op"] == "joined" and joined["channel"] == "sales"
    await server.send("sales", MESSAGE)
    frame = await client.recv()
    assert frame["op"] == "message" and frame["channel"] == "sales" and frame["message"] == MESSAGE


async def test_adding_and_removing_apply_live(server: Server) -> None:
    client = await server.ws_user(await server.token("u2"))
    await add_user(server, "u2", "support")
    joined = await client.recv()
    assert joined["op"] == "joined" and joined["channel"] == "support"
    await server.send("support", MESSAGE)
    assert (await client.recv())["message"] == MESSAGE

    await add_user(server, "u2", "support", path="/message/removeuser")
    left = await client.recv()
    assert left["op"] == "left" and left["channel"] == "support"
    await server.send("support", {"actions": [{"action": "after-removal"}]})
    assert [f for f in await client.messages_so_far() if f["message"]["actions"][0]["action"] == "after-removal"] == []
    # Emptied of its users, the channel stays authenticated rather than opening up to everyone.
    reply = await client.request({"op": "join", "channel": "support", "id": "again"})
    assert reply["op"] == "error" and reply["error"]["code"] == 403


async def test_authenticated_channel_refuses_others(server: Server) -> None:
    await add_user(server, "member", "board")
    anonymous = await server.ws()
    reply = await anonymous.request({"op": "join", "channel": "board", "id": 1})
    assert reply == {"op": "error", "error": {"message": reply["error"]["message"], "code": 403}, "id": 1}
    stranger = await server.ws_user(await server.token("stranger"))
    assert (await stranger.request({"op": "join", "channel": "board", "id": 2}))["error"]["code"] == 403
    async with sse_connect(server, ["board"]) as sse:
        assert sse.response.status_code == 403
    # Anonymous channels stay open to everyone.
    assert (await anonymous.request({"op": "join", "channel": "lobby", "id": 3}))["op"] == "joined"


async def test_sse_with_a_token(server: Server) -> None:
    await add_user(server, "u3", "orders")
    async with sse_connect(server, [], token=await server.token("u3")) as sse:
        hello = await sse.next()
        assert hello.event == "hello" and hello.data["user"]["id"] == "u3"
        assert (await sse.next()).event == "joined"
        await server.send("orders", MESSAGE)
        event = await sse.next()
        assert event.event == "message" and event.data["message"] == MESSAGE


async def test_bad_tokens_are_refused(server: Server) -> None:
    token = await server.token("u4")
    payload, _, signature = token.partition(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged_payload = base64.urlsafe_b64encode(json.dumps({**claims, "sub": "admin"}).encode()).rstrip(b"=").decode()
    other_app = (await server.post("/message/token", {"apiKey": server.other_api_key, "userId": "u4"})).json()["token"]
    base = f"{server.ws_url}?app={server.app_id}&token="
    assert await close_code(base + f"{forged_payload}.{signature}") == 4401
    assert await close_code(base + "garbage") == 4401
    assert await close_code(base + other_app) == 4403
    async with sse_connect(server, ["x"], token=other_app) as sse:
        assert sse.response.status_code == 403

    short = await server.token("u4", ttl=1)
    await asyncio.sleep(1.1)
    assert await close_code(base + short) == 4401
    async with sse_connect(server, ["x"], token=short) as sse:
        assert sse.response.status_code == 401
        await sse.response.aread()
        assert sse.response.json()["error"]["message"] == "Connection token expired"


async def test_token_request_validation(server: Server) -> None:
    assert (await server.post("/message/token", {"apiKey": "BFAPI_nope", "userId": "u"})).status_code == 401
    assert (await server.post("/message/token", {"apiKey": server.api_key})).status_code == 400
    too_long = {"apiKey": server.api_key, "userId": "u", "ttl": 10**9}
    assert (await server.post("/message/token", too_long)).status_code == 400
    as_text = {"apiKey": server.api_key, "userId": "u", "ttl": "60"}
    assert (await server.post("/message/token", as_text)).status_code == 400


async def test_listing_channels_and_users(server: Server) -> None:
    await add_user(server, "u5", "sales")
    await add_user(server, "u6", "sales")
    ann = await server.ws_user(await server.token("u5", "ann@example.com"))
    await ann.recv()
    bob = await server.ws_user(await server.token("u6", "bob@example.com"))
    await bob.recv()
    await server.ws(channels=("lobby",))
    await server.ws(channels=("lobby",))
    await server.ws(app_id=server.other_app_id, channels=("elsewhere",))

    channels = await server.post("/message/channels", {"apiKey": server.api_key})
    assert channels.status_code == 201
    assert channels.json() == {"authenticated": ["sales"], "anonymous": ["lobby"]}

    users = (await server.post("/message/users", {"apiKey": server.api_key})).json()
    assert users["lobby"] == 2
    assert sorted(users["sales"], key=lambda u: u["id"]) == [
        {"id": "u5", "email": "ann@example.com"},
        {"id": "u6", "email": "bob@example.com"},
    ]
    assert users[ann.hello["channels"][0]] == {"id": "u5", "email": "ann@example.com"}
    only = (await server.post("/message/users", {"apiKey": server.api_key, "channel": "lobby"})).json()
    assert only == {"lobby": 2}


async def test_browser_publish(start_server) -> None:
    server = await start_server(messaging={"publish_burst": 3, "publish_rate": 0.01, "max_message_bytes": 200})
    await server.allow_browser_publish()
    sender, receiver = await server.ws(channels=("chat",)), await server.ws(channels=("chat",))
    reply = await sender.request({"op": "publish", "channel": "chat", "message": MESSAGE, "id": "p1"})
    assert reply["op"] == "published" and reply["offset"] == 1
    frame = await receiver.recv()
    assert frame["op"] == "message" and frame["message"] == MESSAGE

    not_in = await sender.request({"op": "publish", "channel": "other", "message": MESSAGE, "id": "p2"})
    assert not_in["error"]["code"] == 403
    big = {"actions": [{"action": "x", "options": {"text": "y" * 300}}]}
    assert (await sender.request({"op": "publish", "channel": "chat", "message": big, "id": 3}))["error"]["code"] == 413
    bad = await sender.request({"op": "publish", "channel": "chat", "message": "hi", "id": 4})
    assert bad["error"]["code"] == 400
    replies = [
        await sender.request({"op": "publish", "channel": "chat", "message": MESSAGE, "id": i}) for i in range(3)
    ]
    assert [r["op"] for r in replies] == ["published", "published", "error"]
    assert replies[-1]["error"]["code"] == 429


async def test_browser_publish_can_be_turned_off_per_app(server: Server) -> None:
    await server.allow_browser_publish()
    client = await server.ws(channels=("chat",))  # already connected when the setting changes
    assert (await client.request({"op": "publish", "channel": "chat", "message": MESSAGE, "id": 1}))[
        "op"
    ] == "published"
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bfstream.cli", "apps", "update", server.app_id, "--browser-publish", "off",
        "--data-dir", str(server.data_dir), stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await cli.wait() == 0
    reply = await client.request({"op": "publish", "channel": "chat", "message": MESSAGE, "id": 2})
    assert reply["error"]["code"] == 403


@pytest.mark.parametrize("message", [{"model": {}}, {"actions": [], "junk": 1}, {"actions": "x"}, []])
async def test_browser_publish_takes_the_same_message_shape_as_sendmessage(server: Server, message: object) -> None:
    await server.allow_browser_publish()
    client = await server.ws(channels=("chat",))
    reply = await client.request({"op": "publish", "channel": "chat", "message": message, "id": 1})
    assert reply["op"] == "error" and reply["error"]["code"] == 400
    assert (
        await server.post("/message/sendmessage", {"apiKey": server.api_key, "channels": ["chat"], "message": message})
    ).status_code == 400


async def test_a_user_connection_resumes_its_channels_with_since(server: Server) -> None:
    """Channels a user's connection joins by itself resume from positions given when connecting."""
    await add_user(server, "u7", "feed")
    for i in range(5):
        await server.send("feed", {"actions": [{"action": "n", "options": {"i": i}}]})
    token = await server.token("u7")
    first = await server.ws_user(token)
    joined = await first.recv()
    assert joined["op"] == "joined" and joined["offset"] == 5
    await first.conn.close()
    for i in range(5, 8):  # published while the user was away
        await server.send("feed", {"actions": [{"action": "n", "options": {"i": i}}]})

    since = encode_positions({"feed": (2, joined["epoch"])})
    conn = await connect(f"{server.ws_url}?app={server.app_id}&token={token}&since={since}")
    back = WSClient(conn, json.loads(await conn.recv()))
    rejoined = await back.recv()
    assert rejoined["op"] == "joined" and rejoined["recovered"] is True and rejoined["offset"] == 2
    frames = [await back.recv() for _ in range(6)]
    assert [f["offset"] for f in frames] == [3, 4, 5, 6, 7, 8]
    assert await back.messages_so_far() == frames  # each once


async def test_a_channel_that_becomes_authenticated_drops_its_anonymous_listeners(server: Server) -> None:
    anonymous = await server.ws(channels=("becomes-private",))
    await add_user(server, "carol", "becomes-private")
    left = await anonymous.recv()
    assert left["op"] == "left" and left["channel"] == "becomes-private"
    await server.send("becomes-private", MESSAGE)
    assert await anonymous.messages_so_far() == []
