"""The browser side of messaging over a real WebSocket."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import Server, ServerFactory
from tests.messaging.write_paths import WritePath

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server(start_server: ServerFactory, write_path: WritePath) -> Server:
    """Every test here runs on both write paths, with the same assertions (tests/messaging/conftest.py)."""
    return await start_server(messaging=write_path.settings)


async def test_hello_puts_each_connection_in_its_private_channel(server: Server, write_path: WritePath) -> None:
    first, second = await server.ws(), await server.ws()
    for client in (first, second):
        assert client.hello["op"] == "hello"
        assert client.hello["channels"] == [f"tab|{client.hello['connectionId']}"]
    assert first.hello["connectionId"] != second.hello["connectionId"]
    write_path.assert_taken()


async def test_join_leave_ping_replies_echo_the_id(server: Server) -> None:
    client = await server.ws()
    joined = await client.request({"op": "join", "channel": "room1", "id": 1})
    assert joined == {
        "op": "joined",
        "channel": "room1",
        "recovered": False,
        "offset": 0,
        "epoch": joined["epoch"],
        "id": 1,
    }
    assert await client.request({"op": "ping", "id": "p"}) == {"op": "pong", "id": "p"}
    assert await client.request({"op": "leave", "channel": "room1", "id": 2}) == {
        "op": "left",
        "channel": "room1",
        "id": 2,
    }
    await client.send({"op": "join", "channel": "room2"})
    reply = await client.recv()
    assert reply["op"] == "joined" and reply["channel"] == "room2" and reply["id"] is None


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", 400),
        ("[1, 2]", 400),
        ('{"op": "dance", "id": 5}', 400),
        ('{"op": "join", "id": 5}', 400),
        ('{"op": "join", "channel": "", "id": 5}', 400),
        ('{"op": "join", "channel": 12, "id": 5}', 400),
        ('{"op": "join", "channel": "tab|someone-else", "id": 5}', 403),
    ],
)
async def test_bad_frames_get_an_error_and_the_connection_stays_open(server: Server, frame: str, code: int) -> None:
    client = await server.ws()
    await client.send(frame)
    reply = await client.recv()
    assert reply["op"] == "error"
    assert reply["error"]["code"] == code and reply["error"]["message"]
    assert "id" in reply
    assert await client.request({"op": "ping", "id": "still-open"}) == {"op": "pong", "id": "still-open"}


async def test_binary_frame_is_refused_politely(server: Server) -> None:
    client = await server.ws()
    await client.conn.send(b"\x00\x01")
    reply = await client.recv()
    assert reply["op"] == "error" and reply["error"]["code"] == 400


@pytest.mark.parametrize(("query", "code"), [("?app=app_does_not_exist", 4404), ("", 4400)])
async def test_unknown_or_missing_app_is_closed_with_a_code(server: Server, query: str, code: int) -> None:
    async with connect(server.ws_url + query) as conn:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(conn.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code


async def test_sendmessage_reaches_its_channels_only(server: Server, write_path: WritePath) -> None:
    in_one = await server.ws(channels=("channel1",))
    in_both = await server.ws(channels=("channel1", "channel2"))
    outside = await server.ws(channels=("channel3",))
    other_app = await server.ws(app_id=server.other_app_id, channels=("channel1", "channel2"))
    message = {
        "actions": [{"action": "showAlert", "options": {"text": "Hello", "title": "Hi", "type": "information"}}],
        "model": {"myModelData": "modelData"},
        "app": {"myAppData": "appModelData"},
    }
    response = await server.post(
        "/message/sendmessage", {"apiKey": server.api_key, "channels": ["channel1", "channel2"], "message": message}
    )
    assert response.status_code == 201
    assert response.json() == {"message": message, "channels": ["channel1", "channel2"]}

    frame = await in_one.recv()
    assert frame == {
        "op": "message", "channel": "channel1", "offset": 1, "epoch": frame["epoch"],
        "from": {"kind": "api"}, "message": message,
    }  # fmt: skip
    got = [await in_both.recv(), await in_both.recv()]
    assert sorted(f["channel"] for f in got) == ["channel1", "channel2"]
    assert all(f["message"] == message for f in got)
    assert await outside.messages_so_far() == []
    assert await other_app.messages_so_far() == []
    write_path.assert_taken()


async def test_sendmessage_to_a_private_tab_channel(server: Server) -> None:
    tab = await server.ws()
    private = tab.hello["channels"][0]
    body = {"apiKey": server.api_key, "channels": [private], "message": {"actions": [{"action": "refresh"}]}}
    assert (await server.post("/message/sendmessage", body)).status_code == 201
    frame = await tab.recv()
    assert frame["channel"] == private and frame["message"] == {"actions": [{"action": "refresh"}]}


async def test_left_channel_gets_nothing_more(server: Server) -> None:
    client = await server.ws(channels=("room",))
    await client.request({"op": "leave", "channel": "room", "id": "l"})
    body = {"apiKey": server.api_key, "channels": ["room"], "message": {"actions": []}}
    assert (await server.post("/message/sendmessage", body)).status_code == 201
    assert await client.messages_so_far() == []


@pytest.mark.parametrize(
    "change",
    [
        {"channels": []},
        {"channels": "channel1"},
        {"message": {"actions": "x"}},
        {"message": {"oops": 1, "actions": []}},
    ],
)
async def test_sendmessage_validation(server: Server, change: dict) -> None:
    body = {"apiKey": server.api_key, "channels": ["channel1"], "message": {"actions": []}, **change}
    response = await server.post("/message/sendmessage", body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "validation_error"
