"""bfstream.js in Chromium against the real server: whole streams across real connection cuts, over
WebSocket and SSE; one stream through two channels; catch-up; forged look-alikes.

The cut is real: the page talks to the server through a TCP relay (tests/services.py ``Proxy``)
that the test stops, which resets every connection and refuses new ones, and starts again on the
same port. Streams come from the ``echo`` service, one word every 40 ms.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.browser.conftest import OpenPage, log_of, start_client, wait_in_page
from tests.conftest import Server, ServerFactory, WSClient
from tests.services import Proxy, until

pytestmark = pytest.mark.anyio

ACTION = "assistantReceiveResultsStream"
PACED = {"services": {"echo": {"delay_ms": 40}}}


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


async def start_stream(server: Server, channels: list[str], text: str) -> str:
    body = {
        "apiKey": server.api_key,
        "channels": channels,
        "actionName": ACTION,
        "service": "echo",
        "payload": {"stream": True, "model": "echo", "messages": [{"role": "user", "content": text}]},
    }
    response = await server.post("/stream/create", body)
    assert response.status_code == 200, response.text
    return response.json()["streamId"]


def watch(client: WSClient) -> tuple[list[dict[str, Any]], asyncio.Task[None]]:
    """A listener on the server itself, beside the page: how far the stream has gone meanwhile."""
    events: list[dict[str, Any]] = []

    async def read() -> None:
        while True:
            frame = await client.recv(timeout=30)
            if frame["op"] == "message":
                events.extend(action["options"] for action in frame["message"]["actions"])

    return events, asyncio.create_task(read())


def assert_whole(events: list[dict[str, Any]], stream_id: str, text: str) -> None:
    """Every event of the stream exactly once, in order: threadInfo, one delta per word, end."""
    assert [e["seq"] for e in events] == list(range(len(text.split()) + 2)), [e["seq"] for e in events]
    assert {e["streamId"] for e in events} == {stream_id}
    assert events[0]["type"] == "threadInfo" and events[-1]["type"] == "end"
    assert "".join(e["content"] for e in events if e["type"] == "delta") == text
    assert events[-1]["text"] == text


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_a_page_gets_a_100_chunk_stream_whole_across_a_cut_connection(
    start_server: ServerFactory, open_page: OpenPage, transport: str
) -> None:
    server = await start_server(**PACED)
    proxy = Proxy(server.url)
    await proxy.start()
    try:
        page = await open_page(f"http://127.0.0.1:{proxy.port}")
        await start_client(page, server.app_id, ["room"], transport)
        watched, watcher = watch(await server.ws(channels=("room",)))
        text = words(100)
        stream_id = await start_stream(server, ["room"], text)

        await wait_in_page(page, "log.events.length >= 10")
        await proxy.stop()  # every connection reset, new ones refused
        cut_at = time.monotonic()
        await wait_in_page(page, "log.states.at(-1) === 'reconnecting'")
        seen_at_cut = len((await log_of(page))["events"])
        await until(lambda: len(watched) >= seen_at_cut + 50, timeout=10)  # 50 chunks (2 s) go by unseen
        assert len((await log_of(page))["events"]) == seen_at_cut, "the page heard nothing while cut off"
        await proxy.start()
        cut_for = time.monotonic() - cut_at

        await wait_in_page(page, "log.events.some((e) => e.type === 'end')")
        log = await log_of(page)
        assert_whole(log["events"], stream_id, text)
        assert len(log["raw"]) == len(log["events"]), "each message handled once, none replayed twice"
        assert log["states"] == ["open", "reconnecting", "open"]
        assert log["gaps"] == [] and log["errors"] == [] and page.failures == []
        assert await page.evaluate("(id) => window.clients.a.text(id)", stream_id) == text
        assert await page.evaluate("() => window.clients.a.state") == "open"
        assert cut_for >= 1.5
        watcher.cancel()
    finally:
        await proxy.stop()


async def test_a_page_in_two_channels_sees_each_event_of_a_stream_to_both_once(
    start_server: ServerFactory, open_page: OpenPage
) -> None:
    server = await start_server(**PACED)
    page = await open_page(server.url)
    await start_client(page, server.app_id, ["room-a", "room-b"])
    text = words(30)
    stream_id = await start_stream(server, ["room-a", "room-b"], text)
    await wait_in_page(page, "log.raw.filter((r) => r.message.actions[0].options.type === 'end').length === 2")
    log = await log_of(page)
    assert_whole(log["events"], stream_id, text)
    assert sorted(r["channel"] for r in log["raw"]) == ["room-a"] * 32 + ["room-b"] * 32  # both brought all


async def test_catch_up_shows_a_running_answer_from_its_first_word_and_not_an_ended_one(
    start_server: ServerFactory, open_page: OpenPage
) -> None:
    server = await start_server(**PACED)
    watched, watcher = watch(await server.ws(channels=("room",)))
    text = words(40)
    stream_id = await start_stream(server, ["room"], text)
    await until(lambda: len(watched) >= 15)
    page = await open_page(server.url)
    await start_client(page, server.app_id, ["room"], name="mid")  # joins mid-answer
    await wait_in_page(page, "log.events.some((e) => e.type === 'end')", name="mid")
    assert_whole((await log_of(page, "mid"))["events"], stream_id, text)

    await start_client(page, server.app_id, ["room"], name="after")  # joins once it has ended
    later = words(5, "new")
    later_id = await start_stream(server, ["room"], later)
    await wait_in_page(page, "log.events.some((e) => e.type === 'end')", name="after")
    log = await log_of(page, "after")
    assert_whole(log["events"], later_id, later)  # the new answer only: the old one is not run again
    assert all(r["message"]["actions"][0]["options"]["streamId"] == later_id for r in log["raw"])
    watcher.cancel()


async def test_a_browser_published_look_alike_never_reaches_the_named_action(
    server: Server, open_page: OpenPage
) -> None:
    await server.allow_browser_publish()
    page = await open_page(server.url)
    await start_client(page, server.app_id, ["room"])
    forger = await server.ws(channels=("room",))
    text = words(20)
    stream_id = await start_stream(server, ["room"], text)
    for options in (
        {"type": "delta", "streamId": stream_id, "seq": 1, "content": "FORGED "},  # the real stream's next slot
        {"type": "threadInfo", "streamId": "forged", "seq": 0, "content": {}},
        {"type": "end", "streamId": stream_id, "seq": 2, "finish_reason": "stop", "text": "FORGED"},
    ):
        message = {"actions": [{"action": "namedAction", "name": ACTION, "options": options}]}
        reply = await forger.request({"op": "publish", "channel": "room", "message": message, "id": options["seq"]})
        assert reply["op"] == "published", reply
    await wait_in_page(page, "log.events.some((e) => e.type === 'end') && log.raw.length >= 25")
    log = await log_of(page)
    assert_whole(log["events"], stream_id, text)
    assert [r["from"] for r in log["raw"]].count("browser") == 3, "the look-alikes did reach the page, as messages"
    assert "FORGED" not in await page.evaluate("(id) => window.clients.a.text(id)", stream_id)
