"""A stream's life: stop, status and records, retries, limits, coalescing, cancellation."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import httpx
import pytest

from tests.conftest import PROVIDER_KEY, Server, seed_body
from tests.fakes.openai_server import (
    FakeOpenAI,
    JsonReply,
    StreamReply,
    chunk,
    completion,
    error_body,
    sse,
    text_stream,
)

pytestmark = pytest.mark.anyio

PARTS = [f"part{i} " for i in range(60)]


def slow_stream(parts: list[str] = PARTS, delay: float = 0.03) -> StreamReply:
    """One HTTP chunk per SSE event, spaced out like a model typing."""
    body = text_stream(parts)
    events = [piece + b"\n\n" for piece in body.split(b"\n\n") if piece]
    return StreamReply(events, delay=delay)


async def status_of(server: Server, stream_id: str) -> dict:
    response = await server.post("/stream/status", {"apiKey": server.api_key, "streamId": stream_id})
    assert response.status_code == 200, response.text
    return response.json()


async def finished(server: Server, stream_id: str) -> dict:
    """The record once the stream is over (it is written just after the end event goes out)."""
    async with asyncio.timeout(5):
        while (record := await status_of(server, stream_id))["status"] == "running":
            await asyncio.sleep(0.01)
    return record


async def test_stop_closes_the_provider_at_once_and_ends_with_stopped(server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(slow_stream())
    client = await server.ws(channels=("anonymous",))
    stream_id = (await server.post("/stream/create", seed_body(server))).json()["streamId"]
    seen = []
    while len(seen) < 5:
        frame = await client.recv()
        if frame["op"] == "message" and frame["message"]["actions"][0]["options"]["type"] == "delta":
            seen.append(frame["message"]["actions"][0]["options"]["content"])

    live = await status_of(server, stream_id)
    assert live["status"] == "running" and live["text"].startswith("".join(seen))

    asked = time.perf_counter()
    response = await server.post("/stream/stop", {"streamId": stream_id})
    closed = await fake_openai.wait_closed()
    assert response.json() == {"status": "stopped", "streamId": stream_id}
    assert closed - asked < 0.1, f"provider connection closed {closed - asked:.3f}s after the stop"

    events = await client.stream_events()
    assert "error" not in [e["type"] for e in events]
    end = events[-1]
    assert end["type"] == "end" and end["finish_reason"] == "stopped"
    text = "".join(seen) + "".join(e["content"] for e in events if e["type"] == "delta")
    assert end["text"] == text and text != "".join(PARTS)

    record = await status_of(server, stream_id)
    assert record["status"] == "stopped" and record["text"] == text and record["finishReason"] == "stopped"
    again = await server.post("/llm/query/stop", {"streamId": stream_id})
    assert again.json() == {"status": "not_found", "streamId": stream_id}


async def test_record_of_a_completed_stream(server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(StreamReply([text_stream(["Hello", " world"])]))
    client = await server.ws(channels=("anonymous",))
    stream_id = (await server.post("/stream/create", seed_body(server))).json()["streamId"]
    await client.stream_events()
    record = await finished(server, stream_id)
    assert record["status"] == "completed" and record["text"] == "Hello world"
    assert record["finishReason"] == "stop" and record["usage"]["completion_tokens"] == 2
    assert record["service"] == "openai" and record["model"] == "gpt-4-turbo-preview"
    assert record["channels"] == ["anonymous"] and record["actionName"] == "assistantReceiveResultsStream"
    assert PROVIDER_KEY not in str(record)
    other = await server.post("/stream/status", {"apiKey": server.other_api_key, "streamId": stream_id})
    assert other.status_code == 404  # records belong to their app


async def test_retry_after_429_then_success(server: Server, fake_openai: FakeOpenAI) -> None:
    limited = error_body("Rate limit reached for requests", type="requests", code="rate_limit_exceeded")
    fake_openai.enqueue(JsonReply(429, limited, headers={"retry-after": "1"}), StreamReply([text_stream(["ok"])]))
    client = await server.ws(channels=("anonymous",))
    started = time.monotonic()
    response = await server.post("/stream/create", seed_body(server))
    assert response.status_code == 200
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    events = await client.stream_events()
    assert events[-1]["text"] == "ok" and [e["type"] for e in events].count("threadInfo") == 1
    assert len(fake_openai.requests) == 2


async def test_5xx_is_retried_a_bounded_number_of_times(start_server, fake_openai: FakeOpenAI) -> None:
    server = await start_server(services={"openai": {"retries": 1}})
    down = error_body("The server is overloaded", type="server_error")
    fake_openai.enqueue(JsonReply(503, down, headers={"retry-after": "0"}), JsonReply(503, down))
    response = await server.post("/stream/create", seed_body(server))
    assert response.status_code == 502 and response.json()["error"]["code"] == 503
    assert len(fake_openai.requests) == 2
    fake_openai.enqueue(JsonReply(400, error_body("Bad model")))  # a client error is not retried
    assert (await server.post("/stream/create", seed_body(server))).status_code == 502
    assert len(fake_openai.requests) == 3


async def test_failure_after_output_started_is_not_retried(server: Server, fake_openai: FakeOpenAI) -> None:
    # The chunk and the cut arrive together (delay 0): aiohttp raised the cut and dropped the chunk,
    # found when a loaded machine made the old 2 ms gap vanish. The words before a cut are kept.
    fake_openai.enqueue(StreamReply([sse(chunk({"content": "Half"}))], disconnect=True, delay=0))
    client = await server.ws(channels=("anonymous",))
    fake_openai.enqueue(StreamReply([text_stream(["a retry would take this"])]))
    created = await server.post("/stream/create", seed_body(server))
    events = await client.stream_events()
    assert [e["type"] for e in events] == ["threadInfo", "delta", "error", "end"]
    assert (await finished(server, created.json()["streamId"]))["status"] == "failed"
    assert len(fake_openai.requests) == 1


async def test_concurrent_streams_per_app_are_limited(start_server, fake_openai: FakeOpenAI) -> None:
    server = await start_server(streams={"max_per_app": 1})
    fake_openai.enqueue(slow_stream(delay=0.02))
    first = await server.post("/stream/create", seed_body(server))
    assert first.status_code == 200
    second = await server.post("/stream/create", seed_body(server))
    assert second.status_code == 429 and second.json()["error"]["type"] == "rate_limited"
    other = seed_body(server)
    other["apiKey"], other["service"] = server.other_api_key, "echo"
    assert (await server.post("/stream/create", other)).status_code == 200  # other apps are not affected
    await server.post("/stream/stop", {"streamId": first.json()["streamId"]})


async def test_maximum_duration(start_server, fake_openai: FakeOpenAI) -> None:
    server = await start_server(streams={"max_duration": 0.3})
    fake_openai.enqueue(slow_stream(delay=0.05))
    client = await server.ws(channels=("anonymous",))
    stream_id = (await server.post("/stream/create", seed_body(server))).json()["streamId"]
    events = await client.stream_events()
    assert events[-2]["type"] == "error" and events[-2]["error"]["code"] == 504
    assert events[-1]["finish_reason"] == "error"
    await fake_openai.wait_closed()
    assert (await finished(server, stream_id))["status"] == "failed"


async def test_coalescing_merges_close_deltas(server: Server, fake_openai: FakeOpenAI) -> None:
    parts = [f"t{i} " for i in range(40)]
    fake_openai.enqueue(slow_stream(parts, delay=0.004))
    client = await server.ws(channels=("anonymous",))
    body = seed_body(server)
    body["coalesceMs"] = 60
    assert (await server.post("/stream/create", body)).status_code == 200
    events = await client.stream_events()
    deltas = [e["content"] for e in events if e["type"] == "delta"]
    assert "".join(deltas) == "".join(parts) == events[-1]["text"]
    assert len(deltas) < len(parts) / 3, deltas


async def test_coalescing_merges_reasoning_apart_from_the_answer(server: Server, fake_openai: FakeOpenAI) -> None:
    """Thinking pieces merge with thinking pieces, answer pieces with answer pieces; never across, and
    the order of the two stays as the model wrote them."""
    thoughts, answer = [f"r{i} " for i in range(40)], [f"t{i} " for i in range(40)]
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": None, "reasoning_content": ""}]
    deltas += [{"content": None, "reasoning_content": piece} for piece in thoughts]
    deltas += [{"content": piece} for piece in answer]
    events_out = [sse(chunk(delta)) for delta in deltas] + [sse(chunk({}, finish_reason="stop")), sse("[DONE]")]
    fake_openai.enqueue(StreamReply(events_out, delay=0.004))
    client = await server.ws(channels=("anonymous",))
    body = {**seed_body(server), "coalesceMs": 60, "includeReasoning": True}
    assert (await server.post("/stream/create", body)).status_code == 200
    events = await client.stream_events()
    kinds = [e["type"] for e in events]
    reasoning = [e["content"] for e in events if e["type"] == "reasoning"]
    text = [e["content"] for e in events if e["type"] == "delta"]
    assert kinds == ["threadInfo", *["reasoning"] * len(reasoning), *["delta"] * len(text), "end"]
    assert "".join(reasoning) == "".join(thoughts) == events[-1]["reasoning"]
    assert "".join(text) == "".join(answer) == events[-1]["text"]
    assert len(reasoning) < len(thoughts) / 3 and len(text) < len(answer) / 3, (reasoning, text)


async def test_non_stream_caller_hanging_up_cancels_the_provider_call(server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(JsonReply(200, completion("too late"), delay=5))
    async with httpx.AsyncClient() as caller:
        call = asyncio.create_task(caller.post(server.url + "/stream/create", json=seed_body(server, stream=False)))
        async with asyncio.timeout(5):
            while not fake_openai.requests:
                await asyncio.sleep(0.01)
        hung_up = time.perf_counter()
        call.cancel()  # the HTTP caller goes away
        closed = await fake_openai.wait_closed()
    assert closed - hung_up < 0.25, f"provider connection closed {closed - hung_up:.3f}s after the caller left"


async def test_named_openai_compatible_service(start_server, fake_openai: FakeOpenAI) -> None:
    local = {
        "kind": "openai",
        "base_url": fake_openai.base_url,
        "api_key": "local-server-key",
        "headers": {"X-Tenant": "acme"},
        "stream_options": False,
    }
    server = await start_server(services={"ollama": local, "echo": {"delay_ms": 1}})
    fake_openai.enqueue(StreamReply([text_stream(["local"], usage=None)]))
    client = await server.ws(channels=("anonymous",))
    body = seed_body(server, model="llama3.2")
    body["service"] = "Ollama"
    del body["payload"]["apiKey"]
    assert (await server.post("/stream/create", body)).status_code == 200
    events = await client.stream_events()
    assert events[0]["content"]["service"] == "ollama" and events[-1]["text"] == "local"
    sent = fake_openai.requests[0]
    assert sent.headers["authorization"] == "Bearer local-server-key" and sent.headers["x-tenant"] == "acme"
    assert "stream_options" not in sent.json()


async def test_text_retention_can_be_turned_off(server: Server, fake_openai: FakeOpenAI) -> None:
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bfstream.cli", "apps", "update", server.app_id, "--retain-text", "off",
        "--data-dir", str(server.data_dir), stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await cli.wait() == 0
    fake_openai.enqueue(StreamReply([text_stream(["secret answer"])]))
    client = await server.ws(channels=("anonymous",))
    stream_id = (await server.post("/stream/create", seed_body(server))).json()["streamId"]
    assert (await client.stream_events())[-1]["text"] == "secret answer"  # the channel still gets it
    record = await finished(server, stream_id)
    assert record["status"] == "completed" and record["text"] is None


async def test_simultaneous_requests_cannot_exceed_the_per_app_limit(start_server, fake_openai: FakeOpenAI) -> None:
    """Calls still waiting for the provider's headers hold their slot, so a burst cannot slip through."""
    server = await start_server(streams={"max_per_app": 2})
    fake_openai.enqueue(*(StreamReply([text_stream(["ok"])], head_delay=0.5) for _ in range(2)))
    burst = await asyncio.gather(*(server.post("/stream/create", seed_body(server)) for _ in range(5)))
    assert sorted(r.status_code for r in burst) == [200, 200, 429, 429, 429]
    assert len(fake_openai.requests) == 2
    for response in burst:
        if response.status_code == 200:  # wait for both admitted streams to be over
            await finished(server, response.json()["streamId"])

    fake_openai.enqueue(*(JsonReply(200, completion("ok"), delay=0.5) for _ in range(3)))
    calls = await asyncio.gather(*(server.post("/stream/create", seed_body(server, stream=False)) for _ in range(3)))
    assert sorted(r.status_code for r in calls) == [200, 200, 429]  # stream: false calls count too
