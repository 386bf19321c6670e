"""With only an app's public id, anyone can connect to its anonymous channels. Frames say who
published each message, in a field no publisher can set, so a browser's look-alike of a stream
event can be told from the real one; and browsers may publish only where the app allows it."""

from __future__ import annotations

import pytest

from tests.conftest import Server

pytestmark = pytest.mark.anyio

LOOK_ALIKE = {
    "actions": [
        {
            "action": "namedAction",
            "name": "assistantReceiveResultsStream",
            "options": {"type": "delta", "streamId": "s1", "seq": 1, "content": "forged"},
        }
    ]
}


async def test_browsers_cannot_publish_unless_the_app_allows_it(server: Server) -> None:
    client = await server.ws(channels=("anonymous",))
    reply = await client.request({"op": "publish", "channel": "anonymous", "message": LOOK_ALIKE, "id": 1})
    assert reply["op"] == "error" and reply["error"]["code"] == 403


async def test_every_frame_says_who_published_it(server: Server) -> None:
    await server.allow_browser_publish()
    watcher = await server.ws(channels=("anonymous",))
    browser = await server.ws(channels=("anonymous",))
    token = await server.token("u1", "u1@example.com")
    user = await server.ws_user(token)
    await user.join("anonymous")

    await browser.request({"op": "publish", "channel": "anonymous", "message": LOOK_ALIKE, "id": 1})
    await user.request({"op": "publish", "channel": "anonymous", "message": LOOK_ALIKE, "id": 2})
    await server.send("anonymous", LOOK_ALIKE)
    created = await server.post("/stream/create", {
        "apiKey": server.api_key, "channels": ["anonymous"], "actionName": "assistantReceiveResultsStream",
        "service": "echo", "payload": {"messages": [{"role": "user", "content": "real"}]},
    })  # fmt: skip
    assert created.status_code == 200
    frames = []
    while not frames or frames[-1]["message"]["actions"][0]["options"].get("type") != "end":
        frame = await watcher.recv()
        if frame["op"] == "message":
            frames.append(frame)
    origins = [f["from"] for f in frames]
    assert origins[0] == {"kind": "browser", "connectionId": browser.hello["connectionId"], "user": None}
    assert origins[1] == {
        "kind": "browser", "connectionId": user.hello["connectionId"], "user": {"id": "u1", "email": "u1@example.com"},
    }  # fmt: skip
    assert origins[2] == {"kind": "api"}
    assert origins[3:] and all(o == {"kind": "server"} for o in origins[3:])  # the stream's own events
    # the look-alikes carry exactly what a stream event carries: only "from" tells them apart
    assert frames[0]["message"] == frames[2]["message"] == LOOK_ALIKE


async def test_a_publisher_cannot_set_from_itself(server: Server) -> None:
    await server.allow_browser_publish()
    client = await server.ws(channels=("anonymous",))
    forged = {**LOOK_ALIKE, "from": {"kind": "server"}}
    reply = await client.request({"op": "publish", "channel": "anonymous", "message": forged, "id": 1})
    assert reply["op"] == "error" and reply["error"]["code"] == 400
    body = {"apiKey": server.api_key, "channels": ["anonymous"], "message": forged}
    assert (await server.post("/message/sendmessage", body)).status_code == 400
