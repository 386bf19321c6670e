"""POST /stream/create against a fake OpenAI, watched through real WebSocket clients."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.conftest import PROVIDER_KEY, Server, assert_well_formed, seed_body
from tests.fakes.openai_server import (
    FakeOpenAI,
    JsonReply,
    StreamReply,
    chunk,
    completion,
    crlf,
    invalid_key_reply,
    keepalive,
    legacy_function_call_stream,
    split_every,
    split_inside,
    sse,
    stream_error,
    text_stream,
    tool_call_stream,
)

pytestmark = pytest.mark.anyio

PARTS = ["Why do ", "programmers ", "prefer dark mode? ", "Because light ", "attracts bugs. 🐛 Olé!"]


async def test_seed_body_streams_to_every_subscribed_channel(server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(StreamReply(split_every(text_stream(PARTS), 40)))
    first = await server.ws(channels=("anonymous",))
    second = await server.ws(channels=("second",))
    bystander = await server.ws(channels=("elsewhere",))
    other_app = await server.ws(app_id=server.other_app_id, channels=("anonymous", "second"))

    body = seed_body(server)
    body["channels"] = ["anonymous", "second"]
    response = await server.post("/stream/create", body)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["success"] is True and reply["message"] == "Streaming setup complete"
    stream_id = reply["streamId"]

    for client in (first, second):
        events = await client.stream_events()
        assert_well_formed(events, stream_id)
        assert events[0]["content"] == {"streamId": stream_id, "service": "openai", "model": "gpt-4-turbo-preview"}
        assert [e["content"] for e in events if e["type"] == "delta"] == PARTS
        end = events[-1]
        assert end["text"] == "".join(PARTS)
        assert end["finish_reason"] == "stop"
        assert end["usage"]["completion_tokens"] == len(PARTS)
        frame = next(f for f in client.frames if f.get("op") == "message")
        (action,) = frame["message"]["actions"]
        assert action["action"] == "namedAction" and action["name"] == "assistantReceiveResultsStream"

    assert await bystander.messages_so_far() == []
    assert await other_app.messages_so_far() == []

    (sent,) = fake_openai.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    upstream = sent.json()
    assert "apiKey" not in upstream and "functions" not in upstream  # OpenAI rejects an empty functions array
    assert upstream["stream"] is True and upstream["stream_options"] == {"include_usage": True}
    assert upstream["max_tokens"] == 4000 and upstream["seed"] == 1 and upstream["temperature"] == 0
    assert upstream["messages"] == body["payload"]["messages"]


async def test_non_stream_returns_the_chat_completion_as_openai_sent_it(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    answer = completion("Chuck Norris writes code that optimizes itself.")
    fake_openai.enqueue(JsonReply(200, answer))
    response = await server.post("/stream/create", seed_body(server, stream=False, user="u-1"))
    assert response.status_code == 200
    assert response.json() == answer
    upstream = fake_openai.requests[0].json()
    assert upstream["stream"] is False and "stream_options" not in upstream
    assert upstream["user"] == "u-1"  # unknown fields pass through


@pytest.mark.parametrize("cut", ["inside-emoji", "every-3-bytes", "crlf-every-7"])
async def test_bytes_cut_anywhere_arrive_intact(server: Server, fake_openai: FakeOpenAI, cut: str) -> None:
    body = text_stream(PARTS)
    pieces = {
        "inside-emoji": split_inside(body, "🐛"),
        "every-3-bytes": split_every(body, 3),
        "crlf-every-7": split_every(crlf(body), 7),
    }[cut]
    fake_openai.enqueue(StreamReply(pieces, delay=0.0005))
    client = await server.ws(channels=("anonymous",))
    await server.post("/stream/create", seed_body(server))
    events = await client.stream_events()
    assert "".join(e["content"] for e in events if e["type"] == "delta") == "".join(PARTS)
    assert events[-1]["text"] == "".join(PARTS)
    assert events[-1]["finish_reason"] == "stop"


async def test_keepalive_comments_and_usage_only_chunk(server: Server, fake_openai: FakeOpenAI) -> None:
    usage = {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32}
    fake_openai.enqueue(StreamReply([keepalive(), text_stream(["Hi", " there"], usage=usage), keepalive()]))
    client = await server.ws(channels=("anonymous",))
    await server.post("/stream/create", seed_body(server))
    events = await client.stream_events()
    assert [e["type"] for e in events] == ["threadInfo", "delta", "delta", "end"]
    assert events[-1]["usage"] == usage


async def test_tool_call_fragments_become_one_function_call(server: Server, fake_openai: FakeOpenAI) -> None:
    await server.make_tool_arguments_public()  # the reassembled arguments are what is checked
    weather = json.dumps({"city": "Boston", "userMessage": "Checking the weather in Boston."})
    time_args = json.dumps({"tz": "Europe/Zürich"})
    fake_openai.enqueue(
        StreamReply(
            split_every(tool_call_stream([("call_1", "get_weather", weather), ("call_2", "now", time_args)]), 50)
        )
    )
    client = await server.ws(channels=("anonymous",))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    await server.post("/stream/create", seed_body(server, tools=tools))
    events = await client.stream_events()
    calls = [e for e in events if e["type"] == "function_call"]
    assert len(calls) == 1
    assert calls[0]["content"]["functions"] == [
        {"id": "call_1", "name": "get_weather", "arguments": weather, "userMessage": "Checking the weather in Boston."},
        {"id": "call_2", "name": "now", "arguments": time_args, "userMessage": None},
    ]
    assert events[-1]["finish_reason"] == "tool_calls"
    assert fake_openai.requests[0].json()["tools"] == tools
    # The record keeps what was announced, for the page that comes once the stream's log is gone.
    status = await server.post("/stream/status", {"apiKey": server.api_key, "streamId": events[0]["streamId"]})
    assert status.json()["functions"] == calls[0]["content"]["functions"]


async def test_backend_tool_arguments_stay_on_the_server_unless_the_app_makes_them_public(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    """The reference: a backend tool's arguments are processed by the back end. A page learns that a
    call is made, and its ``userMessage``; a ``ui_*`` tool's arguments are the page's own, always."""
    lookup = json.dumps({"customer": "C-1042", "email": "ann@example.com", "userMessage": "Looking you up…"})
    form = json.dumps({"title": "Sign up"})
    calls = [("call_1", "lookup_customer", lookup), ("call_2", "ui_show_form", form)]
    tools = [
        {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
        for name in ("lookup_customer", "ui_show_form")
    ]
    told = []
    for public in (False, True):
        if public:
            await server.make_tool_arguments_public()
        fake_openai.enqueue(StreamReply([tool_call_stream(calls)]))
        client = await server.ws(channels=("anonymous",))
        await server.post("/stream/create", seed_body(server, tools=tools))
        events = await client.stream_events()
        (call,) = [e for e in events if e["type"] == "function_call"]
        told.append(call["content"]["functions"])
        assert "C-1042" not in json.dumps(events) or public  # nowhere on the channel, end included
    private, shown = told
    assert private == [
        {"id": "call_1", "name": "lookup_customer", "userMessage": "Looking you up…"},
        {"id": "call_2", "name": "ui_show_form", "arguments": form, "userMessage": None},
    ]
    assert shown[0] == {**private[0], "arguments": lookup} and shown[1] == private[1]


async def test_legacy_function_call_is_reassembled(server: Server, fake_openai: FakeOpenAI) -> None:
    await server.make_tool_arguments_public()  # the reassembled arguments are what is checked
    args = json.dumps({"query": "jokes", "userMessage": None})
    fake_openai.enqueue(StreamReply([legacy_function_call_stream("search", args)]))
    client = await server.ws(channels=("anonymous",))
    await server.post("/stream/create", seed_body(server))
    events = await client.stream_events()
    (call,) = [e for e in events if e["type"] == "function_call"]
    assert call["content"]["functions"] == [{"id": None, "name": "search", "arguments": args, "userMessage": None}]
    assert events[-1]["finish_reason"] == "tool_calls"  # the legacy "function_call" in today's word


async def test_provider_refusal_fails_the_post_and_sends_nothing(server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(invalid_key_reply(PROVIDER_KEY))
    client = await server.ws(channels=("anonymous",))
    response = await server.post("/stream/create", seed_body(server))
    assert response.status_code == 502
    error = response.json()
    assert error["success"] is False
    assert error["error"]["code"] == 401 and error["error"]["type"] == "provider_error"
    assert "Incorrect API key provided" in error["error"]["details"]
    assert PROVIDER_KEY[:8] not in response.text and PROVIDER_KEY[-4:] not in response.text
    assert await client.messages_so_far() == []


async def test_mid_stream_error_gives_error_then_end(server: Server, fake_openai: FakeOpenAI) -> None:
    head = b"".join(
        sse(chunk(delta))
        for delta in ({"role": "assistant", "content": ""}, {"content": "Partial "}, {"content": "answer"})
    )
    fake_openai.enqueue(StreamReply([head, stream_error("The server had an error while processing your request.")]))
    client = await server.ws(channels=("anonymous",))
    await server.post("/stream/create", seed_body(server))
    events = await client.stream_events()
    assert [e["type"] for e in events] == ["threadInfo", "delta", "delta", "error", "end"]
    assert events[3]["error"]["message"] == "The server had an error while processing your request."
    assert events[3]["error"]["code"] == "server_error"
    assert events[-1]["finish_reason"] == "error"
    assert events[-1]["text"] == "Partial answer"


async def test_early_disconnect_gives_error_then_end(server: Server, fake_openai: FakeOpenAI) -> None:
    body = text_stream(["One ", "two ", "three"], done=False)
    fake_openai.enqueue(StreamReply([body[: len(body) // 2]], disconnect=True))
    client = await server.ws(channels=("anonymous",))
    await server.post("/stream/create", seed_body(server))
    events = await client.stream_events()
    assert [e["type"] for e in events][-2:] == ["error", "end"]
    assert events[-1]["finish_reason"] == "error"
    assert events[-2]["error"]["code"] == 502


async def test_stream_without_done_marker_is_an_error(server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(StreamReply([text_stream(["Almost"], done=False)]))
    client = await server.ws(channels=("anonymous",))
    await server.post("/stream/create", seed_body(server))
    events = await client.stream_events()
    assert [e["type"] for e in events] == ["threadInfo", "delta", "error", "end"]
    assert events[-1]["text"] == "Almost"


async def test_one_failing_stream_does_not_disturb_another(server: Server, fake_openai: FakeOpenAI) -> None:
    good_parts = [f"word{i} " for i in range(40)]
    fake_openai.enqueue(
        StreamReply(split_every(text_stream(good_parts), 30), delay=0.003),
        StreamReply([text_stream(["bad"], done=False)[:60]], disconnect=True),
    )
    good = await server.ws(channels=("good",))
    bad = await server.ws(channels=("bad",))
    good_body, bad_body = seed_body(server), seed_body(server)
    good_body["channels"], bad_body["channels"] = ["good"], ["bad"]
    first = await server.post("/stream/create", good_body)
    second = await server.post("/stream/create", bad_body)
    assert first.status_code == second.status_code == 200
    bad_events, good_events = await asyncio.gather(bad.stream_events(), good.stream_events())
    assert bad_events[-2]["type"] == "error"
    assert good_events[-1]["text"] == "".join(good_parts) and good_events[-1]["finish_reason"] == "stop"


async def test_timeouts(start_server, fake_openai: FakeOpenAI) -> None:
    quick = {"connect": 1, "first_byte": 0.3, "idle": 0.3, "request": 0.5}
    server = await start_server(services={"openai": {"timeouts": quick}})
    # Headers never come: the POST itself times out.
    fake_openai.enqueue(JsonReply(200, completion("late"), delay=2))
    response = await server.post("/stream/create", seed_body(server))
    assert response.status_code == 504 and response.json()["error"]["type"] == "provider_timeout"
    # Silence between chunks: error + end on the channel.
    head = text_stream(["Hello"], done=False)
    fake_openai.enqueue(StreamReply([head, b"data: [DONE]\n\n"], delay=1.5))
    client = await server.ws(channels=("anonymous",))
    assert (await server.post("/stream/create", seed_body(server))).status_code == 200
    events = await client.stream_events()
    assert events[-2]["type"] == "error" and events[-2]["error"]["code"] == 504
    # A non-streaming call longer than its whole-request limit.
    fake_openai.enqueue(JsonReply(200, completion("late"), delay=2))
    response = await server.post("/stream/create", seed_body(server, stream=False))
    assert response.status_code == 504


async def test_unreachable_provider_is_502(start_server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL")  # else it wins over the config below, as documented
    server = await start_server(services={"openai": {"base_url": "http://127.0.0.1:9/v1"}})
    response = await server.post("/stream/create", seed_body(server))
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "provider_error" and error["message"] == "Could not connect to the provider"


async def test_error_event_with_plain_text_data(server: Server, fake_openai: FakeOpenAI) -> None:
    """Some compatible servers signal failure with an SSE ``event: error`` whose data is plain text."""
    fake_openai.enqueue(StreamReply([sse(chunk({"content": "So"})), b"event: error\ndata: upstream overloaded\n\n"]))
    client = await server.ws(channels=("anonymous",))
    await server.post("/stream/create", seed_body(server))
    events = await client.stream_events()
    assert [e["type"] for e in events] == ["threadInfo", "delta", "error", "end"]
    assert events[2]["error"]["message"] == "upstream overloaded"


async def test_stream_options_can_be_turned_off(start_server, fake_openai: FakeOpenAI) -> None:
    server = await start_server(services={"openai": {"stream_options": False}})
    fake_openai.enqueue(StreamReply([text_stream(["ok"], usage=None)]))
    client = await server.ws(channels=("anonymous",))
    await server.post("/stream/create", seed_body(server))
    events = await client.stream_events()
    assert events[-1]["text"] == "ok" and events[-1]["usage"] is None
    assert "stream_options" not in fake_openai.requests[0].json()


async def test_only_the_first_choice_is_relayed_when_n_is_above_1(server: Server, fake_openai: FakeOpenAI) -> None:
    pieces = [
        sse(chunk({"role": "assistant", "content": ""}, index=0)),
        sse(chunk({"role": "assistant", "content": ""}, index=1)),
        sse(chunk({"content": "A1 "}, index=0)),
        sse(chunk({"content": "B1 "}, index=1)),
        sse(chunk({"content": "A2"}, index=0)),
        sse(chunk({"content": "B2"}, index=1)),
        sse(chunk({}, finish_reason="stop", index=0)),
        sse(chunk({}, finish_reason="length", index=1)),
        b"data: [DONE]\n\n",
    ]
    fake_openai.enqueue(StreamReply(pieces))
    client = await server.ws(channels=("anonymous",))
    await server.post("/stream/create", seed_body(server, n=2))
    events = await client.stream_events()
    assert [e["content"] for e in events if e["type"] == "delta"] == ["A1 ", "A2"]
    assert events[-1]["text"] == "A1 A2" and events[-1]["finish_reason"] == "stop"


async def test_an_explicit_include_usage_false_is_respected(server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(StreamReply([text_stream(["ok"], usage=None)]))
    client = await server.ws(channels=("anonymous",))
    await server.post("/stream/create", seed_body(server, stream_options={"include_usage": False}))
    await client.stream_events()
    assert fake_openai.requests[0].json()["stream_options"] == {"include_usage": False}


async def test_a_provider_line_past_the_limit_ends_the_stream_with_error(
    start_server: Any, fake_openai: FakeOpenAI
) -> None:
    server = await start_server(services={"echo": {"delay_ms": 1}, "openai": {"max_line": 10_000}})
    runaway = b'data: {"choices":[{"delta":{"content":"' + b"z" * 50_000 + b'"}}]}\n\n'
    fake_openai.enqueue(StreamReply([sse(chunk({"role": "assistant", "content": "Hi"})), runaway]))
    client = await server.ws(channels=("anonymous",))
    assert (await server.post("/stream/create", seed_body(server))).status_code == 200
    events = await client.stream_events()
    assert [e["type"] for e in events] == ["threadInfo", "delta", "error", "end"]
    assert "longer than 10000" in events[2]["error"]["message"] and events[-1]["text"] == "Hi"


async def test_a_provider_that_trickles_bytes_without_finishing_a_line_times_out(
    start_server: Any, fake_openai: FakeOpenAI
) -> None:
    """Each byte comes well within the idle time-out, but no line is ever finished within it."""
    timeouts = {"connect": 5, "first_byte": 5, "idle": 0.3, "request": 5}
    server = await start_server(services={"echo": {"delay_ms": 1}, "openai": {"timeouts": timeouts}})
    hello = sse(chunk({"role": "assistant", "content": "Hi"}))
    trickle = [bytes([b]) for b in b'data: {"choices":[{"delta":{"content":"never finished']
    fake_openai.enqueue(StreamReply([hello, *trickle], delay=0.05))
    client = await server.ws(channels=("anonymous",))
    assert (await server.post("/stream/create", seed_body(server))).status_code == 200
    events = await client.stream_events()
    assert [e["type"] for e in events] == ["threadInfo", "delta", "error", "end"]
    assert events[2]["error"]["code"] == 504 and events[-1]["text"] == "Hi"


async def test_a_non_stream_answer_past_the_limit_is_a_502_not_a_memory_sink(
    start_server: Any, fake_openai: FakeOpenAI
) -> None:
    server = await start_server(services={"echo": {"delay_ms": 1}, "openai": {"max_line": 10_000}})
    fake_openai.enqueue(JsonReply(200, completion("z" * 50_000)))
    response = await server.post("/stream/create", seed_body(server, stream=False))
    assert response.status_code == 502 and "larger than 10000" in response.json()["error"]["message"]


async def test_tool_fields_that_are_not_lists_are_refused(server: Server) -> None:
    """``"tools": true`` once reached a list unpacking and answered 500 (found by the OpenAPI fuzz)."""
    for field in ("tools", "functions"):
        body = {
            "apiKey": server.api_key,
            "channels": ["room"],
            "actionName": "onStream",
            "service": "echo",
            "payload": {"messages": [{"role": "user", "content": "hi"}], field: True},
        }
        response = await server.post("/stream/create", body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["details"][0]["field"] == f"payload.{field}"
        body["payload"][field] = []
        assert (await server.post("/stream/create", body)).status_code == 200
