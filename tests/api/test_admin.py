"""The streams dashboard's API: off without admin_token, behind it otherwise, read through the store
and presence (so a fleet shows every instance's streams), with a stop of its own."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.conftest import Server, ServerFactory, seed_body
from tests.fakes.http_server import StreamReply
from tests.fakes.openai_server import FakeOpenAI, chunk, sse, stream_error
from tests.secret_scan import PROVIDER_KEY

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


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def view(server: Server, stream_id: str, after: int = -1, token: str = TOKEN) -> httpx.Response:
    return await server.http.get(
        f"{server.url}/admin/api/streams/{stream_id}/events", params={"after": after}, headers=bearer(token)
    )


async def test_a_stream_view_reads_a_running_streams_events_as_they_come_then_its_end(
    start_server: ServerFactory,
) -> None:
    server = await start_server(admin_token=TOKEN, services={"echo": {"delay_ms": 20}})
    stream_id = (await server.post("/stream/create", echo(server, 40))).json()["streamId"]
    events: list[dict] = []
    polls = 0
    deadline = time.monotonic() + 15
    while True:  # as the page does: each answer from the last seq it has
        answer = await view(server, stream_id, events[-1]["seq"] if events else -1)
        assert answer.status_code == 200, answer.text
        polls += 1
        got = answer.json()
        events += got["events"]
        if got["closed"]:
            break
        assert time.monotonic() < deadline  # (its record may say it ended before its end is read: next poll)
    assert polls > 2  # it came in pieces, while the stream ran
    assert [e["seq"] for e in events] == list(range(len(events)))  # each event once, in order
    assert events[0]["type"] == "threadInfo" and events[-1]["type"] == "end"
    text = "".join(e["content"] for e in events if e["type"] == "delta")
    assert text == events[-1]["text"] and text.count("word") == 40
    assert got["stream"]["status"] == "completed" and got["stream"]["text"] is None  # the text: from the events

    again = await view(server, stream_id, events[-1]["seq"])  # at the end of a closed stream: at once
    assert again.json()["events"] == [] and again.json()["closed"] is True


async def test_a_stream_view_needs_the_token_and_answers_bad_ids_and_positions_in_the_error_shape(
    start_server: ServerFactory,
) -> None:
    server = await start_server(admin_token=TOKEN)
    stream_id = (await server.post("/stream/create", echo(server, 3))).json()["streamId"]
    assert (await view(server, stream_id, token="not-the-admin-token")).status_code == 401
    for answer, status in (
        (await view(server, "no-such-stream"), 404),
        (await view(server, stream_id, after=-2), 400),
        (await view(server, stream_id, after=10**6), 400),  # past its last event
    ):
        assert answer.status_code == status
        assert answer.json()["success"] is False and answer.json()["error"]["code"] == status


async def test_refused_calls_are_listed_with_their_error_and_failed_streams_with_theirs(
    start_server: ServerFactory, fake_openai: FakeOpenAI
) -> None:
    server = await start_server(admin_token=TOKEN)
    wrong_key = "sk_wrong_" + "x" * 30
    assert (await server.post("/stream/create", {**echo(server, 3), "apiKey": wrong_key})).status_code == 401
    assert (await server.post("/llm/query", {**echo(server, 3), "channels": "room"})).status_code == 400
    assert (await server.post("/message/sendmessage", {"apiKey": wrong_key})).status_code in (400, 401)  # not listed
    head = sse(chunk({"role": "assistant", "content": "Half "}))
    fake_openai.enqueue(StreamReply([head, stream_error("The server had an error while processing your request.")]))
    failed = (await server.post("/stream/create", seed_body(server))).json()["streamId"]

    deadline = time.monotonic() + 10
    while not (app := next(a for a in (await overview(server))["apps"] if a["id"] == server.app_id))["failures"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    [failure] = app["failures"]
    assert failure["streamId"] == failed and failure["status"] == "failed"
    assert failure["error"]["message"] == "The server had an error while processing your request."

    shown = await server.http.get(server.url + "/admin/api/overview", headers=bearer())
    refused = shown.json()["refusedCalls"]
    assert [(r["path"], r["status"]) for r in refused] == [("/llm/query", 400), ("/stream/create", 401)]  # newest first
    assert refused[1]["message"] == "Invalid or missing apiKey" and refused[1]["type"] == "unauthorized"
    assert any(d["field"] == "channels" for d in refused[0]["details"])
    assert wrong_key not in shown.text and PROVIDER_KEY not in shown.text
