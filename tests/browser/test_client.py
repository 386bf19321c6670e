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


REFUSED = """async ({ url, appId, transport }) => {
  const log = { states: [], errors: [] };
  const client = bfstream.connect({ url, appId, transport, backoff: { base: 100, max: 400 } });
  client.onState((state) => log.states.push(state));
  client.onError((error) => log.errors.push({ code: error.code, message: error.message, retry: error.retry }));
  client.join("room");  // not caught: the refusal must not become a page error
  const awaited = await client.join("other").then(() => null, (error) => error.code);
  const closed = (resolve) => client.onState((state) => state === "closed" && resolve());
  if (client.state !== "closed") await new Promise(closed);
  return { ...log, awaited };
}"""


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_an_origin_the_app_does_not_list_reaches_on_error_and_no_page_error(
    server: Server, open_page: OpenPage, transport: str
) -> None:
    await server.change_app(lambda store: store.set_origins(server.app_id, ["https://elsewhere.example"]))
    page = await open_page(server.url)
    setup = {"url": server.url, "appId": server.app_id, "transport": transport}
    log = await page.evaluate(REFUSED, setup)
    code = 4403 if transport == "websocket" else 403
    assert len(log["errors"]) == 1, log  # once, over SSE too: its 403 says it is the origin, not a channel
    assert log["errors"][0]["code"] == code
    assert "origin may not connect" in log["errors"][0]["message"]
    assert log["errors"][0]["retry"] is False
    assert log["awaited"] == code and log["states"] == ["closed"]
    await page.evaluate("() => new Promise((resolve) => setTimeout(resolve, 0))")  # a task for the page to report in
    assert page.failures == []


BATCH = """async ({ url, appId, transport, names }) => {
  const log = { errors: [], messages: [] };
  const client = bfstream.connect({ url, appId, transport });
  client.onError((error) => log.errors.push({ code: error.code, channel: error.channel, message: error.message }));
  client.onMessage((message, frame) => log.messages.push(frame.channel));
  window.clients = { batch: client };
  window.logs = { batch: log };
  log.outcomes = await Promise.all(names.map((name) => client.join(name).then(() => "joined", (error) => error.code)));
  return log;
}"""


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_joins_made_together_with_a_bad_or_refused_name_join_the_good_ones(
    server: Server, open_page: OpenPage, transport: str
) -> None:
    # A channel for its added users only: an anonymous page is refused it (403), as the server decides.
    added = {"id": "alice", "channels": [{"name": "members", "mode": "listen"}]}
    response = await server.post("/message/adduser", {"apiKey": server.api_key, "users": [added]})
    assert response.status_code == 201, response.text
    page = await open_page(server.url)
    long = "x" * 201
    names = ["news", long, "", "members", "sport"]
    setup = {"url": server.url, "appId": server.app_id, "transport": transport, "names": names}
    log = await page.evaluate(BATCH, setup)
    assert log["outcomes"] == ["joined", 400, 400, 403, "joined"], log
    errors = sorted((e["code"], e["channel"]) for e in log["errors"])
    assert errors == [(400, ""), (400, long), (403, "members")], "each refused join reported once"
    assert next(e for e in log["errors"] if e["code"] == 400 and e["channel"] == long)["message"] == (
        "channel names are at most 200 characters"
    )
    for channel in ("news", "sport"):
        await server.send(channel, {"actions": [], "model": {"to": channel}})
    await wait_in_page(page, "log.messages.length >= 2", name="batch")
    assert sorted((await log_of(page, "batch"))["messages"]) == ["news", "sport"]
    assert await page.evaluate("() => window.clients.batch.state") == "open"
    await page.evaluate("() => window.clients.batch.close()")
    assert page.failures == []


PUBLISH = """async ({ url, appId }) => {
  const writer = bfstream.connect({ url, appId, transport: "websocket" });
  const reader = bfstream.connect({ url, appId, transport: "sse", browserActions: true });
  const alerts = [];
  reader.onAction((action, message) => alerts.push([action.action, action.options.text, message.model.n]));
  await reader.join("room", { catchUp: false });
  await writer.join("room", { catchUp: false });
  const message = { actions: [{ action: "showAlert", options: { text: "Hello from Message" } }], model: { n: 1 } };
  const accepted = await writer.publish("room", message);
  await new Promise((resolve) => { const poll = () => (alerts.length ? resolve() : setTimeout(poll, 10)); poll(); });
  const overSSE = await reader.publish("room", message).then(() => null, (error) => error.code);
  writer.close(); reader.close();
  return { accepted, alerts, overSSE };
}"""


async def test_a_page_publishes_over_a_websocket_and_a_page_over_sse_runs_its_actions(
    server: Server, open_page: OpenPage
) -> None:
    await server.allow_browser_publish()
    page = await open_page(server.url)
    result = await page.evaluate(PUBLISH, {"url": server.url, "appId": server.app_id})
    assert result["accepted"]["channel"] == "room" and result["accepted"]["offset"] >= 1, result
    assert isinstance(result["accepted"]["epoch"], str)
    assert result["alerts"] == [["showAlert", "Hello from Message", 1]]
    assert result["overSSE"] == "sse_cannot_publish"
    assert page.failures == []


async def test_a_publish_the_app_does_not_allow_is_refused_with_the_servers_code(
    server: Server, open_page: OpenPage
) -> None:
    page = await open_page(server.url)
    script = """async ({ url, appId }) => {
      const client = bfstream.connect({ url, appId, transport: "websocket" });
      const errors = [];
      client.onError((error) => errors.push(error.code));
      await client.join("room", { catchUp: false });
      const refused = await client.publish("room", { actions: [] })
        .then(() => null, (e) => [e.code, e.channel, e.message]);
      client.close();
      return { refused, errors };
    }"""
    result = await page.evaluate(script, {"url": server.url, "appId": server.app_id})
    assert result["refused"][:2] == [403, "room"], result
    assert "publishing from browsers" in result["refused"][2]
    assert result["errors"] == [403]
