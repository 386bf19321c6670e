"""``GET /stream/{id}/events``: a stream read back by offset, as the Durable Streams protocol reads
(catch-up, long-poll, SSE), and as the AI SDK's UI message stream.

Every stream here is an echo answer whose text is known beforehand; its events are also read by a
WebSocket page joined before the stream started (an independent path), and every read must give
those same events, ending with the same ``end.text``. The official clients read it too: the npm
``@durable-streams/client`` and the AI SDK (``ai``) under Node, and PyPI's ``durable-streams``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from durable_streams import AsyncDurableStream, StreamNotFoundError, astream

from bfstream.api import stream_events
from tests import peers
from tests.conftest import Server, ServerFactory, assert_well_formed, seed_body
from tests.fakes.openai_server import FakeOpenAI, StreamReply, chunk, sse, stream_error
from tests.services import delete_keys, require_redis, unique_prefix

pytestmark = pytest.mark.anyio

CHANNEL = "room"


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def offset_of(position: int) -> str:
    """The documented offset format: the number of events before the position, in 16 digits."""
    return f"{position:016d}"


def text_of(events: list[dict[str, Any]]) -> str:
    """The answer as a client builds it: deltas appended, a snapshot's text replacing what came before."""
    text = ""
    for event in events:
        if event["type"] == "delta":
            text += event["content"]
        elif event["type"] == "snapshot":
            text = event["text"]
    return text


async def start_echo(server: Server, n: int) -> tuple[str, str]:
    text = words(n)
    body = {
        "apiKey": server.api_key,
        "channels": [CHANNEL],
        "actionName": "onStream",
        "service": "echo",
        "payload": {"model": "echo", "messages": [{"role": "user", "content": text}]},
    }
    response = await server.post("/stream/create", body)
    assert response.status_code == 200, response.text
    return response.json()["streamId"], text


async def watched_echo(server: Server, n: int) -> tuple[str, list[dict[str, Any]]]:
    """An echo stream of ``n`` words, run to its end, and its events as a page joined before it saw them."""
    page = await server.ws(channels=(CHANNEL,))
    try:
        stream_id, text = await start_echo(server, n)
        events = await page.stream_events(timeout=30)
    finally:
        await page.conn.close()
    assert_well_formed(events, stream_id)
    assert events[-1]["text"] == text == text_of(events)
    return stream_id, events


def url(server: Server, stream_id: str) -> str:
    return f"{server.url}/stream/{stream_id}/events"


async def get(server: Server, stream_id: str, **params: str) -> httpx.Response:
    return await server.http.get(url(server, stream_id), params=params)


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and set(body["error"]) == {"message", "code", "type", "details"}, body
    return body["error"]


async def drop_log(redis_settings: dict[str, Any], server: Server, stream_id: str, seq: int | None = None) -> None:
    """Delete a stream's log from Redis, or only the event of ``seq`` in it."""
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_settings["broker_url"])
    try:
        key = f"{redis_settings['broker_prefix']}:{{{server.app_id}/{CHANNEL}}}:log:{stream_id}"
        removed = await (redis.delete(key) if seq is None else redis.zremrangebyscore(key, seq, seq))
        assert removed == 1, key
    finally:
        await redis.aclose()


# --- catch-up ------------------------------------------------------------------------------------


async def test_catch_up_from_the_start_the_middle_and_the_tail(server: Server) -> None:
    stream_id, events = await watched_echo(server, 300)
    n = len(events)
    readings = [(None, events), ("-1", events), (offset_of(0), events), (offset_of(n // 2), events[n // 2 :]),
                (offset_of(n - 1), events[-1:]), (offset_of(n), [])]  # fmt: skip
    for offset, expected in readings:
        response = await get(server, stream_id, **({"offset": offset} if offset else {}))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == expected, offset
        assert response.headers["stream-next-offset"] == offset_of(n)
        assert response.headers["stream-up-to-date"] == "true"
        assert response.headers["stream-closed"] == "true"
        assert "stream-next-offset" in response.headers["access-control-expose-headers"].lower()
    assert text_of(events) == events[-1]["text"]


async def test_a_long_catch_up_comes_in_runs(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``CHUNK_BYTES`` an answer stops short: no Stream-Up-To-Date, and the next offset reads on."""
    monkeypatch.setattr(stream_events, "CHUNK_BYTES", 2_000)
    stream_id, events = await watched_echo(server, 200)
    got: list[dict[str, Any]] = []
    offset, answers = "-1", 0
    while True:
        response = await get(server, stream_id, offset=offset)
        answers += 1
        batch = response.json()
        assert batch and len(json.dumps(batch)) < 2_000 + 200
        got += batch
        offset = response.headers["stream-next-offset"]
        assert offset == offset_of(batch[-1]["seq"] + 1)
        if "stream-up-to-date" in response.headers:
            assert response.headers["stream-closed"] == "true"
            break
        assert "stream-closed" not in response.headers
    assert got == events and answers > 5


async def test_offset_now_and_the_cache_headers(server: Server) -> None:
    stream_id, events = await watched_echo(server, 20)
    tail = offset_of(len(events))
    now = await get(server, stream_id, offset="now")
    assert now.status_code == 200 and now.json() == []
    assert now.headers["stream-next-offset"] == tail and now.headers["stream-closed"] == "true"
    assert now.headers["cache-control"] == "no-store" and "etag" not in now.headers

    whole = await get(server, stream_id)
    assert whole.headers["cache-control"].startswith("private, max-age=60")
    etag = whole.headers["etag"]
    assert etag.endswith(':c"'), etag  # the closure is part of the tag
    again = await server.http.get(url(server, stream_id), headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    # HTTP's weak comparison: a tag a compressing proxy marked weak, one of a list, or any.
    for given in (f"W/{etag}", f'"other", {etag}', "*"):
        assert (await server.http.get(url(server, stream_id), headers={"If-None-Match": given})).status_code == 304
    assert (await server.http.get(url(server, stream_id), headers={"If-None-Match": '"other"'})).status_code == 200
    other = await get(server, stream_id, offset=offset_of(3))
    assert other.headers["etag"] != etag


async def test_head_tells_the_tail_and_the_closure(start_server: ServerFactory) -> None:
    server = await start_server(services={"echo": {"delay_ms": 3000}})
    stream_id, _ = await start_echo(server, 3)
    running = await server.http.head(url(server, stream_id))
    assert running.status_code == 200 and running.content == b""
    assert "stream-closed" not in running.headers and running.headers["cache-control"] == "no-store"
    first = await get(server, stream_id)
    assert running.headers["stream-next-offset"] == first.headers["stream-next-offset"]
    await server.post("/stream/stop", {"streamId": stream_id})
    got, _ = await follow_by_long_poll(server, stream_id, first.headers["stream-next-offset"])
    ended = await server.http.head(url(server, stream_id))
    assert ended.headers["stream-closed"] == "true"
    assert ended.headers["stream-next-offset"] == offset_of(got[-1]["seq"] + 1)
    assert (await server.http.head(url(server, "0" * 32))).status_code == 404


# --- long-poll -----------------------------------------------------------------------------------


async def follow_by_long_poll(server: Server, stream_id: str, offset: str = "-1") -> tuple[list[dict[str, Any]], int]:
    """Read to the close with long-polls, as the protocol's clients do; the events and how many answers."""
    got: list[dict[str, Any]] = []
    answers = 0
    while True:
        response = await get(server, stream_id, offset=offset, live="long-poll")
        answers += 1
        offset = response.headers["stream-next-offset"]
        if response.status_code == 204:
            assert response.headers["stream-up-to-date"] == "true"
            if response.headers.get("stream-closed") == "true":
                return got, answers
            continue
        assert response.status_code == 200, response.text
        got += response.json()
        if response.headers.get("stream-closed") == "true":
            assert "stream-cursor" not in response.headers
            return got, answers
        assert response.headers["stream-cursor"].isdigit()


async def test_long_poll_follows_a_running_stream_to_its_close(start_server: ServerFactory) -> None:
    server = await start_server(services={"echo": {"delay_ms": 10}})
    page = await server.ws(channels=(CHANNEL,))
    stream_id, text = await start_echo(server, 80)
    got, answers = await follow_by_long_poll(server, stream_id)
    events = await page.stream_events(timeout=30)
    assert got == events and text_of(got) == got[-1]["text"] == text
    assert answers > 3  # it waited for events as they came, not for the end

    # From the middle, once it is over: at once, and the same events.
    half = len(events) // 2
    rest, _ = await follow_by_long_poll(server, stream_id, offset_of(half))
    assert rest == events[half:]


async def test_waiting_readers_count_as_the_apps_connections(start_server: ServerFactory) -> None:
    # A stream id in many hands cannot hold more open than the app's pages may: a reader that waits
    # (long-poll, SSE) holds one of the app's connections while it waits, as a page does.
    server = await start_server(services={"echo": {"delay_ms": 200}}, limits={"connections_per_app": 1})
    stream_id, _ = await start_echo(server, 3)
    page = await server.ws()  # the app's one connection
    tail = (await get(server, stream_id)).headers["stream-next-offset"]
    for live in ("long-poll", "sse"):
        refused = await get(server, stream_id, offset=tail, live=live)
        assert_error(refused, 429)
        assert refused.headers["retry-after"]
    assert (await get(server, stream_id)).status_code == 200  # a catch-up waits for nothing: never refused
    await page.conn.close()
    async with asyncio.timeout(10):  # the page's slot is given back as its socket closes
        while (waited := await get(server, stream_id, offset=tail, live="long-poll")).status_code == 429:
            await asyncio.sleep(0.05)
    assert waited.status_code in (200, 204)


async def test_long_poll_times_out_with_204_and_a_closed_tail_answers_at_once(
    start_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_events, "LONG_POLL_SECONDS", 0.3)
    server = await start_server(services={"echo": {"delay_ms": 3000}})
    stream_id, _ = await start_echo(server, 5)
    first = await get(server, stream_id, offset="-1", live="long-poll")
    assert first.status_code == 200 and first.json()[0]["type"] == "threadInfo"
    tail = first.headers["stream-next-offset"]
    started = time.monotonic()
    idle = await get(server, stream_id, offset=tail, live="long-poll", cursor=first.headers["stream-cursor"])
    assert idle.status_code == 204, idle.text
    assert 0.25 < time.monotonic() - started < 2.5
    assert idle.headers["stream-next-offset"] == tail and idle.headers["stream-up-to-date"] == "true"
    assert "stream-closed" not in idle.headers
    assert int(idle.headers["stream-cursor"]) > int(first.headers["stream-cursor"])  # the echo moves it on
    assert idle.headers["cache-control"] == "no-store"

    stopped = await server.post("/stream/stop", {"streamId": stream_id})
    assert stopped.json()["status"] == "stopped"
    got, _ = await follow_by_long_poll(server, stream_id, tail)
    assert got[-1]["type"] == "end" and got[-1]["finish_reason"] == "stopped"
    end = offset_of(got[-1]["seq"] + 1)
    monkeypatch.setattr(stream_events, "LONG_POLL_SECONDS", 30)
    started = time.monotonic()
    closed = await get(server, stream_id, offset=end, live="long-poll")
    assert closed.status_code == 204 and time.monotonic() - started < 1
    assert closed.headers["stream-closed"] == "true" and closed.headers["stream-up-to-date"] == "true"
    assert closed.headers["stream-next-offset"] == end


# --- SSE -----------------------------------------------------------------------------------------


async def sse_events(server: Server, stream_id: str, **params: str) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of each Server-Sent Event, parsed here; ends when the server ends the answer."""
    async with server.http.stream("GET", url(server, stream_id), params=params) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name, data = "message", []
        async for line in response.aiter_lines():
            if line == "":
                if data:
                    yield name, "\n".join(data)
                name, data = "message", []
            elif line.startswith(":"):
                continue
            else:
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    name = value
                elif field == "data":
                    data.append(value)


async def read_sse(
    server: Server, stream_id: str, offset: str, timeout: float = 30
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The events and the control events of one SSE answer, read to the end the server gives it."""
    got: list[dict[str, Any]] = []
    controls: list[dict[str, Any]] = []
    previous = None
    async with asyncio.timeout(timeout):
        async for name, data in sse_events(server, stream_id, offset=offset, live="sse"):
            if name == "data":
                assert previous != "data"  # a control follows every data event
                got += json.loads(data)
            else:
                assert name == "control"
                controls.append(json.loads(data))
            previous = name
    return got, controls


async def test_sse_follows_a_running_stream_to_its_close(start_server: ServerFactory) -> None:
    server = await start_server(services={"echo": {"delay_ms": 10}})
    page = await server.ws(channels=(CHANNEL,))
    stream_id, text = await start_echo(server, 100)
    got, controls = await read_sse(server, stream_id, "-1")
    events = await page.stream_events(timeout=30)
    assert got == events and text_of(got) == text
    assert len(controls) > 3  # live: events as they came
    assert controls[-1] == {"streamNextOffset": offset_of(len(events)), "upToDate": True, "streamClosed": True}
    assert all("streamClosed" not in c and c["streamCursor"].isdigit() for c in controls[:-1])

    # From the middle of a stream that is over: one run, closed; from its end, only the closure.
    got, controls = await read_sse(server, stream_id, offset_of(40))
    assert got == events[40:] and controls[-1]["streamClosed"] is True
    got, controls = await read_sse(server, stream_id, offset_of(len(events)))
    assert got == [] and controls == [
        {"streamNextOffset": offset_of(len(events)), "upToDate": True, "streamClosed": True}
    ]
    got, controls = await read_sse(server, stream_id, "now")
    assert got == [] and controls[-1]["streamClosed"] is True


# --- bad input -----------------------------------------------------------------------------------


async def test_bad_input_gets_the_documented_error_shape(server: Server) -> None:
    stream_id, events = await watched_echo(server, 5)
    for params in [{"offset": "abc"}, {"offset": "12"}, {"offset": "9" * 17}, {"offset": "-2"}, {"offset": ""},
                   {"offset": offset_of(10**15)}, {"offset": offset_of(len(events) + 1)}, {"live": "true"},
                   {"live": "long-poll", "offset": "x"}, {"format": "openai"}, {"format": ""}]:  # fmt: skip
        error = assert_error(await get(server, stream_id, **params), 400)
        assert error["type"] == "validation_error", params
    past = assert_error(await get(server, stream_id, offset=offset_of(len(events) + 1)), 400)
    assert past["details"] == [{"field": "offset", "message": "past the stream's last event"}]
    assert_error(await get(server, "0" * 32), 404)
    assert_error(await get(server, "nope", live="sse"), 404)
    assert_error(await get(server, "x" * 201), 400)
    assert (await server.http.head(url(server, "x" * 201))).status_code == 400  # HEAD as GET
    refused = await server.http.get(url(server, stream_id), params={"format": "ai-sdk"}, headers={"Last-Event-ID": "7"})
    assert assert_error(refused, 400)["details"][0]["field"] == "Last-Event-ID"


async def test_the_apps_origins_apply(server: Server) -> None:
    stream_id, events = await watched_echo(server, 5)
    await server.change_app(lambda store: store.set_origins(server.app_id, ["https://shop.example"]))
    refused = await server.http.get(url(server, stream_id), headers={"Origin": "https://evil.example"})
    assert assert_error(refused, 403)["type"] == "forbidden"
    allowed = await server.http.get(url(server, stream_id), headers={"Origin": "https://shop.example"})
    assert allowed.status_code == 200 and allowed.json() == events
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
    assert "stream-closed" in allowed.headers["access-control-expose-headers"].lower()
    assert (await get(server, stream_id)).status_code == 200  # no Origin: a back end, or the same origin


# --- the log expired -----------------------------------------------------------------------------


async def test_once_the_log_expired_the_record_stands_in(
    start_server: ServerFactory, redis_settings: dict[str, Any]
) -> None:
    """The log's key is deleted as its expiry would (``streams.log_ttl`` is 10 s at the least)."""
    server = await start_server(**redis_settings)
    stream_id, events = await watched_echo(server, 50)
    n = len(events)
    await drop_log(redis_settings, server, stream_id)
    got = (await get(server, stream_id)).json()
    snapshot, end = got
    assert snapshot == {"type": "snapshot", "streamId": stream_id, "seq": n - 2, "text": events[-1]["text"],
                        "status": "running", "service": "echo", "model": "echo"}  # fmt: skip
    assert end == events[-1]
    assert text_of(got) == events[-1]["text"]
    middle = await get(server, stream_id, offset=offset_of(n // 2))
    assert middle.json() == got and middle.headers["stream-closed"] == "true"
    assert (await get(server, stream_id, offset=offset_of(n - 1))).json() == [end]
    assert_error(await get(server, stream_id, offset=offset_of(n + 1)), 400)


# --- the official clients ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def js_peers() -> Path:
    return peers.install()


async def test_the_npm_durable_streams_client_reads_it(start_server: ServerFactory, js_peers: Path) -> None:
    server = await start_server(services={"echo": {"delay_ms": 5}})
    stream_id, events = await watched_echo(server, 150)
    n = len(events)
    for live in ("false", "long-poll", "sse"):
        for start in (0, n // 2, n):
            read = await peers.run(js_peers, "read-durable.mjs", url(server, stream_id), offset_of(start), live)
            assert read["items"] == events[start:], (live, start)
            assert read["streamClosed"] is True and read["offset"] == offset_of(n), (live, start)
        read = await peers.run(js_peers, "read-durable.mjs", url(server, stream_id), "-1", live)
        assert text_of(read["items"]) == events[-1]["text"]

    # Live: the stream still running when the client reaches its tail.
    for live in ("long-poll", "sse"):
        page = await server.ws(channels=(CHANNEL,))
        stream_id, text = await start_echo(server, 150)
        read = await peers.run(js_peers, "read-durable.mjs", url(server, stream_id), "-1", live)
        events = await page.stream_events(timeout=30)
        assert read["items"] == events and read["streamClosed"] is True, live
        assert text_of(read["items"]) == text == events[-1]["text"]


async def test_the_pypi_durable_streams_client_reads_it(start_server: ServerFactory) -> None:
    """durable-streams 0.1.0 knows no closure: it reads catch-up to Stream-Up-To-Date, and live until
    the caller stops (here, at ``end``); SSE ends when the server closes the answer."""
    server = await start_server(services={"echo": {"delay_ms": 5}})
    stream_id, events = await watched_echo(server, 150)
    n = len(events)
    for start in (0, n // 2, n):
        async with astream(url(server, stream_id), offset=offset_of(start), live=False) as res:
            items = await res.read_json()
            assert res.headers.get("stream-closed") == "true"
        assert items == events[start:]
    head = await AsyncDurableStream.head_static(url(server, stream_id))
    assert head.offset == offset_of(n) and head.content_type == "application/json"
    with pytest.raises(StreamNotFoundError):
        await AsyncDurableStream.head_static(url(server, "0" * 32))

    page = await server.ws(channels=(CHANNEL,))
    stream_id, text = await start_echo(server, 150)
    async with astream(url(server, stream_id), offset="-1", live="long-poll") as res:
        items = []
        async for item in res.iter_json():
            items.append(item)
            if item["type"] == "end":
                break
        assert res.headers.get("stream-closed") == "true"
    events = await page.stream_events(timeout=30)
    assert items == events and text_of(items) == text

    for start in (0, n // 2):
        async with astream(url(server, stream_id), offset=offset_of(start), live="sse") as res:
            items = [item async for item in res.iter_json()]
            assert res.up_to_date
        assert items == events[start:]


# --- the AI SDK's encoding -----------------------------------------------------------------------


async def ui_parts(server: Server, stream_id: str, **params: str) -> tuple[httpx.Headers, list[Any]]:
    async with server.http.stream("GET", url(server, stream_id), params={"format": "ai-sdk", **params}) as response:
        assert response.status_code == 200, await response.aread()
        parts = [line[len("data: ") :] async for line in response.aiter_lines() if line.startswith("data: ")]
    return response.headers, [part if part == "[DONE]" else json.loads(part) for part in parts]


async def test_the_ai_sdk_encoding(start_server: ServerFactory) -> None:
    server = await start_server(services={"echo": {"delay_ms": 1}})
    stream_id, events = await watched_echo(server, 30)
    headers, parts = await ui_parts(server, stream_id)
    assert headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert headers["content-type"].startswith("text/event-stream")
    assert parts[:2] == [{"type": "start", "messageId": stream_id}, {"type": "text-start", "id": "text"}]
    metadata = {"finishReason": "stop", "usage": events[-1]["usage"]}
    assert parts[-3:] == [
        {"type": "text-end", "id": "text"},
        {"type": "finish", "finishReason": "stop", "messageMetadata": metadata},
        "[DONE]",
    ]
    deltas = parts[2:-3]
    assert all(p["type"] == "text-delta" and p["id"] == "text" for p in deltas)
    assert "".join(p["delta"] for p in deltas) == events[-1]["text"]

    # Resumed from an offset (or a Last-Event-ID): the text after it.
    _, parts = await ui_parts(server, stream_id, offset=offset_of(10))
    assert "".join(p["delta"] for p in parts if isinstance(p, dict) and p["type"] == "text-delta") == text_of(
        events[10:]
    )
    assert parts[:2] == [{"type": "start", "messageId": stream_id}, {"type": "text-start", "id": "text"}]

    # A stopped stream finishes as "other", its metadata saying why.
    slow = await start_server(services={"echo": {"delay_ms": 2000}})
    stream_id, _ = await start_echo(slow, 5)
    reading = asyncio.ensure_future(ui_parts(slow, stream_id))
    await slow.post("/stream/stop", {"streamId": stream_id})
    _, parts = await asyncio.wait_for(reading, 10)
    assert parts[-2]["type"] == "finish" and parts[-2]["finishReason"] == "other"
    assert parts[-2]["messageMetadata"]["finishReason"] == "stopped" and parts[-1] == "[DONE]"


async def test_the_ai_sdk_reads_it(start_server: ServerFactory, js_peers: Path) -> None:
    server = await start_server(services={"echo": {"delay_ms": 5}})
    stream_id, events = await watched_echo(server, 120)
    read = await peers.run(js_peers, "read-ai-sdk.mjs", url(server, stream_id) + "?format=ai-sdk")
    assert read["text"] == events[-1]["text"] and read["finishReason"] == "stop"
    assert read["messageId"] == stream_id
    assert read["types"][:2] == ["start", "text-start"] and read["types"][-2:] == ["text-end", "finish"]

    # Live, the stream still running.
    page = await server.ws(channels=(CHANNEL,))
    stream_id, text = await start_echo(server, 150)
    read = await peers.run(js_peers, "read-ai-sdk.mjs", url(server, stream_id) + "?format=ai-sdk")
    assert read["text"] == text == (await page.stream_events(timeout=30))[-1]["text"]


# --- Redis ---------------------------------------------------------------------------------------


@pytest.fixture
async def redis_settings() -> AsyncIterator[dict[str, Any]]:
    redis_url = require_redis()
    prefix = unique_prefix()
    yield {"broker_url": redis_url, "broker_prefix": prefix}
    await delete_keys(redis_url, prefix)


async def test_read_over_redis(start_server: ServerFactory, redis_settings: dict[str, Any], js_peers: Path) -> None:
    server = await start_server(services={"echo": {"delay_ms": 5}}, **redis_settings)
    page = await server.ws(channels=(CHANNEL,))
    stream_id, text = await start_echo(server, 150)
    got, answers = await follow_by_long_poll(server, stream_id)
    events = await page.stream_events(timeout=30)
    assert got == events and text_of(got) == text and answers > 1
    assert (await read_sse(server, stream_id, offset_of(7)))[0] == events[7:]
    read = await peers.run(js_peers, "read-durable.mjs", url(server, stream_id), offset_of(3), "sse")
    assert read["items"] == events[3:] and read["streamClosed"] is True


# --- a folded log --------------------------------------------------------------------------------


async def test_a_folded_log_reads_as_a_snapshot_then_the_rest(start_server: ServerFactory, js_peers: Path) -> None:
    """Past ``streams.log_bytes`` the owner folds the log's oldest events into a snapshot: a reader
    from before the fold gets the snapshot in their place, and ends with the same text."""
    server = await start_server(services={"echo": {"delay_ms": 2}}, streams={"log_bytes": 4096})
    page = await server.ws(channels=(CHANNEL,))
    stream_id, text = await start_echo(server, 400)
    live, _ = await follow_by_long_poll(server, stream_id)
    events = await page.stream_events(timeout=30)
    assert text_of(live) == text == events[-1]["text"]
    seqs = [e["seq"] for e in live]
    assert seqs == sorted(set(seqs)) and live[-1] == events[-1]

    whole = (await get(server, stream_id)).json()
    snapshot = whole[0]
    assert snapshot["type"] == "snapshot" and snapshot["seq"] > 0, snapshot["type"]
    assert snapshot["text"] == text_of(events[: snapshot["seq"] + 1])
    assert whole[1:] == events[snapshot["seq"] + 1 :] and text_of(whole) == text
    inside = (await get(server, stream_id, offset=offset_of(snapshot["seq"] // 2))).json()
    assert inside == whole  # from inside the folded part: the snapshot stands for it

    for live_mode in ("false", "sse"):
        read = await peers.run(js_peers, "read-durable.mjs", url(server, stream_id), "-1", live_mode)
        assert read["items"] == whole and read["streamClosed"] is True
    read = await peers.run(js_peers, "read-ai-sdk.mjs", url(server, stream_id) + "?format=ai-sdk")
    assert read["text"] == text
    gone = await get(server, stream_id, format="ai-sdk", offset=offset_of(snapshot["seq"] // 2))
    assert assert_error(gone, 410)["type"] == "gone"


async def test_a_failed_stream_reads_with_its_error(server: Server, fake_openai: FakeOpenAI, js_peers: Path) -> None:
    head = b"".join(sse(chunk(delta)) for delta in ({"role": "assistant", "content": ""}, {"content": "Partial "}))
    fake_openai.enqueue(StreamReply([head, stream_error("The server had an error while processing your request.")]))
    page = await server.ws(channels=("anonymous",))
    created = await server.post("/stream/create", seed_body(server))
    stream_id = created.json()["streamId"]
    events = await page.stream_events()
    assert [e["type"] for e in events][-2:] == ["error", "end"]

    assert (await get(server, stream_id)).json() == events
    _, parts = await ui_parts(server, stream_id)
    error = {"type": "error", "errorText": "The server had an error while processing your request."}
    assert error in parts and parts[-2]["finishReason"] == "error" and parts[-1] == "[DONE]"
    read = await peers.run(js_peers, "read-ai-sdk.mjs", url(server, stream_id) + "?format=ai-sdk")
    assert read["text"] == "Partial " and "error" in read["types"] and read["finishReason"] == "error"


async def test_reasoning_and_sources_read_as_the_ai_sdk_parts(
    server: Server, fake_openai: FakeOpenAI, js_peers: Path
) -> None:
    """A reasoning model's answer read through the AI SDK: its thinking is a reasoning part before the
    text part, its source a source-url part, as ``useChat`` renders them."""
    found = {"url": "https://example.org/", "title": "Example", "start_index": 0, "end_index": 2}
    cite = {"type": "url_citation", "url_citation": found}
    deltas = [
        {"role": "assistant", "content": None, "reasoning_content": ""},
        *({"content": None, "reasoning_content": piece} for piece in ("Hm, ", "two ", "and two.")),
        {"content": "4"},
        {"annotations": [cite]},
        {"content": ", surely."},
    ]
    body = b"".join(sse(chunk(delta)) for delta in deltas) + sse(chunk({}, finish_reason="stop")) + sse("[DONE]")
    fake_openai.enqueue(StreamReply([body]))
    page = await server.ws(channels=("anonymous",))
    created = await server.post("/stream/create", {**seed_body(server), "includeReasoning": True})
    stream_id = created.json()["streamId"]
    events = await page.stream_events()
    assert events[-1]["reasoning"] == "Hm, two and two." and events[-1]["text"] == "4, surely."

    _, parts = await ui_parts(server, stream_id)
    kinds = [part["type"] if isinstance(part, dict) else part for part in parts]
    assert kinds == [
        "start", "reasoning-start", "reasoning-delta", "reasoning-delta", "reasoning-delta", "reasoning-end",
        "text-start", "text-delta", "source-url", "text-delta", "text-end", "finish", "[DONE]",
    ]  # fmt: skip
    read = await peers.run(js_peers, "read-ai-sdk.mjs", url(server, stream_id) + "?format=ai-sdk")
    assert (read["reasoning"], read["text"]) == ("Hm, two and two.", "4, surely.")
    assert read["sources"] == [{"url": "https://example.org/", "title": "Example"}]
    assert read["order"] == ["reasoning", "text", "source-url"] and read["finishReason"] == "stop"


async def test_an_end_the_log_never_got_comes_from_the_record(
    start_server: ServerFactory, redis_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An owner that stopped with the broker away wrote its record's ending but could not log its
    ``end``: readers close on the record's instead of waiting for an end that will never come."""
    from bfstream.streams import reader

    monkeypatch.setattr(reader, "RECHECK_SECONDS", 0.2)
    server = await start_server(**redis_settings)
    stream_id, events = await watched_echo(server, 10)
    end = events[-1]
    await drop_log(redis_settings, server, stream_id, end["seq"])
    tail = offset_of(end["seq"])
    started = time.monotonic()
    answer = await get(server, stream_id, offset=tail, live="long-poll")
    assert answer.status_code == 200 and answer.json() == [end]  # the record's ending, at the seq it had
    assert answer.headers["stream-closed"] == "true" and time.monotonic() - started < 2
    assert (await get(server, stream_id)).json() == events
