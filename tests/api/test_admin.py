"""The streams dashboard's API: off without admin_token, behind it otherwise, read through the store
and presence (so a fleet shows every instance's streams), with a stop of its own."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import Server, ServerFactory

pytestmark = pytest.mark.anyio

TOKEN = "admin-token-for-the-tests-0123"


def echo(server: Server, words: int) -> dict:
    return {
        "apiKey": server.api_key,
        "channels": ["room"],
        "actionName": "onStream",
        "service": "echo",
        "payload": {"model": "echo", "messages": [{"role": "user", "content": " ".join(["word"] * words)}]},
    }


async def overview(server: Server) -> dict:
    answer = await server.http.get(server.url + "/admin/api/overview", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def streams_of(server: Server) -> list[dict]:
    return next(a for a in (await overview(server))["apps"] if a["id"] == server.app_id)["streams"]


async def test_without_the_token_setting_the_dashboard_does_not_exist(server: Server) -> None:
    for path in ("/admin", "/admin/api/overview"):
        assert (await server.http.get(server.url + path)).status_code == 404
    assert 'href="/admin"' not in (await server.http.get(server.url + "/")).text


async def test_the_dashboard_shows_a_running_stream_then_its_end_and_can_stop_one(start_server: ServerFactory) -> None:
    server = await start_server(admin_token=TOKEN, services={"echo": {"delay_ms": 20}})
    assert (await server.http.get(server.url + "/admin")).status_code == 200  # the page holds no data
    for wrong in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
        assert (await server.http.get(server.url + "/admin/api/overview", headers=wrong)).status_code == 401
    listener = await server.ws(channels=("room",))
    short = (await server.post("/stream/create", echo(server, 30))).json()["streamId"]
    long = (await server.post("/stream/create", echo(server, 2000))).json()["streamId"]

    app = next(a for a in (await overview(server))["apps"] if a["id"] == server.app_id)
    assert app["running"] == 2 and app["connections"] == 1 and app["channels"] == 1 and app["listeners"] == 1
    by_id = {s["streamId"]: s for s in app["streams"]}
    assert by_id[short]["status"] == "running" and by_id[short]["service"] == "echo"
    assert by_id[short]["text"] is None  # answers are not the dashboard's to show

    deadline = time.monotonic() + 10
    while True:  # the short one completes, counted by the provider's usage now
        shown = {
            s["streamId"]: s
            for s in next(a for a in (await overview(server))["apps"] if a["id"] == server.app_id)["streams"]
        }
        if shown[short]["status"] == "completed":
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert shown[short]["tokens"] == 30 and shown[short]["tokensEstimated"] is False
    assert shown[long]["status"] == "running" and shown[long]["tokensEstimated"] is True

    stopped = await server.http.post(
        server.url + "/admin/api/stop", json={"streamId": long}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert stopped.json() == {"status": "stopped", "streamId": long}
    deadline = time.monotonic() + 10
    while next(s for s in await streams_of(server) if s["streamId"] == long)["status"] != "stopped":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert listener.frames[0]["op"] == "hello"
    assert 'href="/admin"' in (await server.http.get(server.url + "/")).text
