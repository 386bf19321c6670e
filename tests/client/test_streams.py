"""The client's stream calls against a real server with the fake OpenAI: create, the stream's events
to its end (across the server's reconnects, and resumed from an offset), query, stop and status."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bfstream.client import Answer, BfstreamAPIError, Started
from bfstream.client._events import EventCursor
from tests.client.conftest import AnyClient, call, read_events
from tests.conftest import PROVIDER_KEY, Server, assert_well_formed
from tests.fakes.openai_server import FakeOpenAI, JsonReply, StreamReply, completion, text_stream
from tests.streams.test_lifecycle import slow_stream

pytestmark = pytest.mark.anyio

PARTS = ["Why do ", "programmers ", "prefer ", "dark ", "mode? ", "Because ", "light ", "attracts ", "bugs."]
PAYLOAD: dict[str, Any] = {
    "apiKey": PROVIDER_KEY,
    "model": "gpt-4.1",
    "messages": [{"role": "user", "content": "Tell a joke about developers"}],
}


async def test_create_then_events_reads_the_whole_answer(client: AnyClient, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(StreamReply([text_stream(PARTS)]))
    started = await call(
        client, "create",
        channels="room", action_name="onAnswer", service="openAI", payload=PAYLOAD,
        metadata={"recordId": "FM-1"}, coalesce_ms=0,
    )  # fmt: skip
    assert isinstance(started, Started)
    events = await read_events(client, started.stream_id)
    assert_well_formed(events, started.stream_id)
    text = "".join(e["content"] for e in events if e["type"] == "delta")
    assert text == "".join(PARTS) == events[-1]["text"]
    sent = fake_openai.requests[0].json()
    assert sent["model"] == "gpt-4.1" and sent["stream"] is True
    assert fake_openai.requests[0].headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    async with asyncio.timeout(5):
        while (record := await call(client, "status", started.stream_id))["status"] == "running":
            await asyncio.sleep(0.01)
    assert record["status"] == "completed" and record["text"] == text and record["channels"] == ["room"]
    assert record["actionName"] == "onAnswer" and record["usage"]["completion_tokens"] > 0


async def test_events_reconnect_where_the_server_closed_and_resume_from_an_offset(
    client: AnyClient, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server ends each SSE answer after SSE_SECONDS (a minute in production): here many times
    # during one stream, so the client must carry on from the offset each time, missing nothing.
    monkeypatch.setattr("bfstream.api.stream_events.SSE_SECONDS", 0.15)
    connections: list[dict[str, str]] = []
    params = EventCursor.params

    def counted(cursor: EventCursor) -> dict[str, str]:
        connections.append(params(cursor))
        return connections[-1]

    monkeypatch.setattr(EventCursor, "params", counted)
    parts = [f"w{i} " for i in range(30)]
    fake_openai.enqueue(slow_stream(parts, delay=0.02))
    started = await call(client, "create", channels=["room"], action_name="onAnswer", payload=PAYLOAD)
    events = await read_events(client, started.stream_id)
    assert_well_formed(events, started.stream_id)
    assert len(connections) > 1 and connections[0] == {"offset": "-1", "live": "sse"}
    assert connections[1]["offset"] > f"{0:016d}"  # each reconnect from where the last one stopped
    assert "".join(e["content"] for e in events if e["type"] == "delta") == "".join(parts)

    # Resumed after the fifth event: the events after it, each once, to the end.
    assert events[4]["seq"] == 4
    rest = await read_events(client, started.stream_id, offset=f"{5:016d}")
    assert rest == events[5:]


async def test_an_event_stream_left_early_says_where_to_resume(server: Server, fake_openai: FakeOpenAI) -> None:
    from bfstream.client import AsyncClient

    fake_openai.enqueue(StreamReply([text_stream(PARTS)]))
    async with AsyncClient(server.url, server.api_key) as client:
        started = await client.create(channels="room", action_name="onAnswer", payload=PAYLOAD)
        assert isinstance(started, Started)
        async with client.events(started.stream_id) as reader:
            first = [await anext(reader) for _ in range(3)]
            offset = reader.offset
        rest = [event async for event in client.events(started.stream_id, offset=offset)]
    assert [e["seq"] for e in first + rest] == list(range(len(first + rest)))
    assert rest[-1]["type"] == "end"


async def test_query_with_stream_false_answers_the_completion(client: AnyClient, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(JsonReply(200, completion("Because light attracts bugs.")))
    answer = await call(
        client, "query",
        action_name="onAnswer", stream=False, provider="openai",
        payload=PAYLOAD, provider_args={"temperature": 0.2},
    )  # fmt: skip
    assert isinstance(answer, Answer)
    assert answer.text == "Because light attracts bugs." and answer.completion["object"] == "chat.completion"
    assert answer.usage is not None and answer.usage["total_tokens"] > 0
    sent = fake_openai.requests[0].json()
    assert sent["stream"] is False and sent["temperature"] == 0.2


async def test_a_streaming_query_starts_a_stream_and_create_with_stream_false_answers(
    client: AnyClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(StreamReply([text_stream(PARTS)]), JsonReply(200, completion("Short.")))
    started = await call(client, "query", channels=["room"], action_name="onAnswer", payload=PAYLOAD)
    assert isinstance(started, Started)
    assert (await read_events(client, started.stream_id))[-1]["text"] == "".join(PARTS)
    answer = await call(client, "create", service="openAI", payload=PAYLOAD, stream=False)
    assert isinstance(answer, Answer) and answer.text == "Short."


async def test_stop_ends_a_running_stream_once(client: AnyClient, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(slow_stream())
    started = await call(client, "create", channels=["room"], action_name="onAnswer", payload=PAYLOAD)
    async with asyncio.timeout(5):
        while not (await call(client, "status", started.stream_id))["text"]:
            await asyncio.sleep(0.01)
    assert await call(client, "stop", started.stream_id) is True
    events = await read_events(client, started.stream_id)
    assert events[-1]["type"] == "end" and events[-1]["finish_reason"] == "stopped"
    async with asyncio.timeout(5):
        while (record := await call(client, "status", started.stream_id))["status"] == "running":
            await asyncio.sleep(0.01)
    assert record["status"] == "stopped" and record["finishReason"] == "stopped"
    assert await call(client, "stop", started.stream_id) is False


async def test_a_retry_with_the_idempotency_key_gets_the_first_answer(
    client: AnyClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(StreamReply([text_stream(PARTS)]), JsonReply(200, completion("Whole.")))
    fields = {"channels": "room", "action_name": "onAnswer", "payload": PAYLOAD}
    first = await call(client, "create", **fields, idempotency_key="retry-1")
    again = await call(client, "create", **fields, idempotency_key="retry-1")
    assert isinstance(first, Started) and again == first
    whole = await call(client, "query", payload=PAYLOAD, stream=False, idempotency_key="retry-2")
    assert whole == await call(client, "query", payload=PAYLOAD, stream=False, idempotency_key="retry-2")
    assert isinstance(whole, Answer) and whole.text == "Whole."
    with pytest.raises(BfstreamAPIError) as reused:
        await call(client, "create", **fields, idempotency_key="retry-2")  # another request, same key
    assert (reused.value.status, reused.value.type) == (422, "idempotency_key_reused")
    assert len(fake_openai.requests) == 2
