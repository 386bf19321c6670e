"""``service: "anthropic"`` end to end: a fake Anthropic speaking its real wire format, the real server,
real WebSocket clients. The channel events must look exactly like those of an OpenAI stream."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import PROVIDER_KEY, Server, ServerFactory, assert_well_formed, seed_body
from tests.fakes.anthropic_server import (
    MODEL,
    FakeAnthropic,
    JsonReply,
    StreamReply,
    block_delta,
    block_start,
    block_stop,
    error_event,
    error_reply,
    message,
    message_delta,
    message_start,
    message_stop,
    ping,
    split_every,
    split_inside,
    sse,
    text_block,
    text_delta,
    text_stream,
    tool_use_block,
    tool_use_stream,
    usage,
)

pytestmark = pytest.mark.anyio

ASKED_MODEL = "claude-sonnet-4-5"
PARTS = ["Why do ", "programmers ", "prefer dark mode? ", "Because light ", "attracts bugs. 🐛 Olé!"]


@pytest.fixture
async def server(start_server: ServerFactory, fake_anthropic: FakeAnthropic) -> Server:
    return await start_server()


def claude_body(server: Server, **payload: Any) -> dict[str, Any]:
    """The documented example body, sent to Anthropic: OpenAI-only fields (seed, functions: []) included."""
    body = seed_body(server, model=ASKED_MODEL, **payload)
    body["service"] = "anthropic"
    return body


async def run_stream(server: Server, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    client = await server.ws(channels=("anonymous",))
    response = await server.post("/stream/create", body)
    assert response.status_code == 200, response.text
    stream_id = response.json()["streamId"]
    events = await client.stream_events()
    assert_well_formed(events, stream_id)
    return stream_id, events


@pytest.mark.parametrize("cut", ["whole", "inside-emoji", "every-3-bytes"])
async def test_text_stream_reaches_the_channel_like_an_openai_stream(
    server: Server, fake_anthropic: FakeAnthropic, cut: str
) -> None:
    body = text_stream(PARTS, input_tokens=31, output_tokens=17)
    pieces = {"whole": [body], "inside-emoji": split_inside(body, "🐛"), "every-3-bytes": split_every(body, 3)}[cut]
    fake_anthropic.enqueue(StreamReply(pieces, delay=0.0005))

    stream_id, events = await run_stream(server, claude_body(server))

    assert [e["type"] for e in events] == ["threadInfo"] + ["delta"] * len(PARTS) + ["end"]  # ping sends nothing
    assert events[0]["content"] == {"streamId": stream_id, "service": "anthropic", "model": ASKED_MODEL}
    assert [e["content"] for e in events[1:-1]] == PARTS
    end = events[-1]
    assert end["text"] == "".join(PARTS)
    assert end["finish_reason"] == "stop"
    assert end["usage"] == {"prompt_tokens": 31, "completion_tokens": 17, "total_tokens": 48}

    (sent,) = fake_anthropic.requests
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert sent.json() == {
        "model": ASKED_MODEL,
        "temperature": 0,
        "system": "You are a Chuck Norris Joke teller.",
        "messages": [{"role": "user", "content": "create a joke about software developers"}],
        "max_tokens": 4000,
        "stream": True,
    }  # seed and the empty functions array are OpenAI's: Anthropic would answer 400 to them


async def test_request_translation_as_anthropic_receives_it(
    start_server: ServerFactory, fake_anthropic: FakeAnthropic
) -> None:
    beta = "fine-grained-tool-streaming-2025-05-14"
    server = await start_server(services={"anthropic": {"max_tokens": 1234, "headers": {"anthropic-beta": beta}}})
    fake_anthropic.enqueue(StreamReply([text_stream(["Il fait beau."])]))
    weather_schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these pictures, and the weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "toolu_01A",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'},
                },
                {"id": "toolu_01B", "type": "function", "function": {"name": "get_time", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01A", "content": "18°C, sunny"},
        {"role": "tool", "tool_call_id": "toolu_01B", "content": [{"type": "text", "text": "14:02"}]},
        {"role": "user", "content": "Thanks! Summarise."},
    ]
    tools = [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Current weather", "parameters": weather_schema},
        },
        {"type": "function", "function": {"name": "get_time"}},
    ]
    body = claude_body(
        server,
        messages=messages,
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        stop="\n\nHuman:",
        user="user-42",
        top_k=5,
        stream_options={"include_usage": True},
        presence_penalty=0.5,
        n=1,
        provider="anthropic",
    )
    del body["payload"]["max_tokens"]

    _, events = await run_stream(server, body)
    assert events[-1]["text"] == "Il fait beau."

    (sent,) = fake_anthropic.requests
    assert sent.headers["x-api-key"] == PROVIDER_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == beta
    assert sent.headers["content-type"] == "application/json"
    assert "authorization" not in sent.headers
    assert PROVIDER_KEY.encode() not in sent.body
    assert sent.json() == {
        "model": ASKED_MODEL,
        "temperature": 0,
        "top_k": 5,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Answer in French."}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these pictures, and the weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Zürich"}},
                    {"type": "tool_use", "id": "toolu_01B", "name": "get_time", "input": {}},
                ],
            },
            {
                # Both results in one user turn, before the text that followed them: Anthropic's rule.
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18°C, sunny"},
                    {"type": "tool_result", "tool_use_id": "toolu_01B", "content": [{"type": "text", "text": "14:02"}]},
                    {"type": "text", "text": "Thanks! Summarise."},
                ],
            },
        ],
        "tools": [
            {"name": "get_weather", "description": "Current weather", "input_schema": weather_schema},
            {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
        ],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        "stop_sequences": ["\n\nHuman:"],
        "metadata": {"user_id": "user-42"},
        "max_tokens": 1234,  # the service's default: the payload had none, and Anthropic requires it
        "stream": True,
    }


async def test_legacy_functions_api_is_translated(server: Server, fake_anthropic: FakeAnthropic) -> None:
    """BetterForms payloads use OpenAI's deprecated functions API, whose calls carry no ids."""
    fake_anthropic.enqueue(StreamReply([text_stream(["Found 3 jokes."])]))
    functions = [{"name": "search", "description": "Search jokes", "parameters": {"type": "object"}}]
    messages = [
        {"role": "user", "content": "Find jokes"},
        {"role": "assistant", "content": None, "function_call": {"name": "search", "arguments": '{"q": "jokes"}'}},
        {"role": "function", "name": "search", "content": "3 results"},
    ]
    body = claude_body(server, functions=functions, function_call={"name": "search"}, messages=messages)
    await run_stream(server, body)
    sent = fake_anthropic.requests[0].json()
    assert sent["tools"] == [{"name": "search", "description": "Search jokes", "input_schema": {"type": "object"}}]
    assert sent["tool_choice"] == {"type": "tool", "name": "search"}
    (call,) = sent["messages"][1]["content"]
    (result,) = sent["messages"][2]["content"]
    assert call == {"type": "tool_use", "id": call["id"], "name": "search", "input": {"q": "jokes"}}
    assert result == {"type": "tool_result", "tool_use_id": call["id"], "content": "3 results"}
    assert "functions" not in sent and "function_call" not in sent


async def test_tool_use_becomes_one_function_call(server: Server, fake_anthropic: FakeAnthropic) -> None:
    await server.make_tool_arguments_public()  # the reassembled arguments are what is checked
    weather = json.dumps({"city": "Zürich", "userMessage": "Checking the weather in Zürich…"}, ensure_ascii=False)
    calls = [("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", weather), ("toolu_01Q2w3E4r5T6", "get_time", "")]
    fake_anthropic.enqueue(StreamReply(split_every(tool_use_stream(calls, text=["Okay", ", let me check."]), 50)))

    _, events = await run_stream(server, claude_body(server))

    assert [e["type"] for e in events] == ["threadInfo", "delta", "delta", "function_call", "end"]
    assert events[-2]["content"]["functions"] == [
        {
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather",
            "arguments": weather,
            "userMessage": "Checking the weather in Zürich…",
        },
        # A tool without input streams no JSON at all; its input is still an object.
        {"id": "toolu_01Q2w3E4r5T6", "name": "get_time", "arguments": "{}", "userMessage": None},
    ]
    end = events[-1]
    assert end["text"] == "Okay, let me check."
    assert end["finish_reason"] == "tool_calls"
    assert end["usage"] == {"prompt_tokens": 472, "completion_tokens": 89, "total_tokens": 561}


async def test_thinking_unknown_events_and_cached_input(server: Server, fake_anthropic: FakeAnthropic) -> None:
    start_usage = usage(10, 1, cache_creation_input_tokens=100, cache_read_input_tokens=1000)
    body = b"".join(
        [
            message_start(message_usage=start_usage),
            block_start(0, {"type": "thinking", "thinking": ""}),
            ping(),
            block_delta(0, {"type": "thinking_delta", "thinking": "27 * 453 = 12,231"}),
            block_delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl"}),
            block_stop(0),
            sse("content_block_future", {"type": "content_block_future", "index": 0, "hint": "new"}),
            block_start(1, {"type": "text", "text": ""}),
            text_delta(1, "12,231"),
            block_stop(1),
            message_delta("end_turn", 7, input_tokens=10, cache_read_input_tokens=1000),
            ping(),
            message_stop(),
        ]
    )
    fake_anthropic.enqueue(StreamReply([body]))
    _, events = await run_stream(server, claude_body(server, thinking={"type": "enabled", "budget_tokens": 2000}))
    assert [e["type"] for e in events] == ["threadInfo", "delta", "end"]
    assert events[1]["content"] == "12,231"
    # Anthropic's input total is input_tokens plus both cache counts; OpenAI's prompt_tokens includes cached ones.
    assert events[-1]["usage"] == {"prompt_tokens": 1110, "completion_tokens": 7, "total_tokens": 1117}
    assert fake_anthropic.requests[0].json()["thinking"] == {"type": "enabled", "budget_tokens": 2000}


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
async def test_stop_reasons_in_openai_words(
    server: Server, fake_anthropic: FakeAnthropic, stop_reason: str, finish_reason: str
) -> None:
    fake_anthropic.enqueue(StreamReply([text_stream(["Cut"], stop_reason=stop_reason)]))
    _, events = await run_stream(server, claude_body(server))
    assert events[-1]["finish_reason"] == finish_reason


async def test_mid_stream_overloaded_error_gives_error_then_end(server: Server, fake_anthropic: FakeAnthropic) -> None:
    head = b"".join(
        [
            message_start(),
            block_start(0, {"type": "text", "text": ""}),
            ping(),
            text_delta(0, "Partial "),
            text_delta(0, "answer"),
        ]
    )
    fake_anthropic.enqueue(StreamReply([head, error_event("overloaded_error", "Overloaded")]))
    _, events = await run_stream(server, claude_body(server))
    assert [e["type"] for e in events] == ["threadInfo", "delta", "delta", "error", "end"]
    assert events[3]["error"] == {
        "message": "Overloaded",
        "code": "overloaded_error",
        "details": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert events[-1]["finish_reason"] == "error"
    assert events[-1]["text"] == "Partial answer"


async def test_stream_without_message_stop_is_an_error(server: Server, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.enqueue(StreamReply([text_stream(["Almost"], stop=False)]))
    _, events = await run_stream(server, claude_body(server))
    assert [e["type"] for e in events] == ["threadInfo", "delta", "error", "end"]
    assert events[2]["error"]["code"] == 502
    assert events[2]["error"]["message"] == "The provider closed the stream before it was complete"
    assert events[-1]["finish_reason"] == "error" and events[-1]["text"] == "Almost"


@pytest.mark.parametrize(
    ("status", "type_", "message_text"),
    [
        (401, "authentication_error", "invalid x-api-key"),
        (400, "invalid_request_error", "max_tokens: 100000 > 64000, which is the maximum allowed"),
    ],
)
async def test_provider_refusal_fails_the_post_and_sends_nothing(
    server: Server, fake_anthropic: FakeAnthropic, status: int, type_: str, message_text: str
) -> None:
    fake_anthropic.enqueue(error_reply(status, type_, message_text))
    client = await server.ws(channels=("anonymous",))
    response = await server.post("/stream/create", claude_body(server))
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "provider_error" and error["code"] == status
    assert error["details"] == message_text
    assert PROVIDER_KEY not in response.text
    assert await client.messages_so_far() == []


async def test_untranslatable_payload_is_refused_before_calling_anthropic(
    server: Server, fake_anthropic: FakeAnthropic
) -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "ftp://example.com/cat.png"}},
                {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}},
                {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}},
            ],
        },
        {
            "role": "assistant",
            "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "[1]"}}],
        },
    ]
    client = await server.ws(channels=("anonymous",))
    response = await server.post("/stream/create", claude_body(server, messages=messages, n=2))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "validation_error"
    assert {d["field"] for d in error["details"]} == {
        "payload.messages.0.content.0.image_url",
        "payload.messages.0.content.1.image_url",
        "payload.messages.0.content.2",
        "payload.messages.1.tool_calls.0.function.arguments",
        "payload.n",
    }
    assert fake_anthropic.requests == []
    assert await client.messages_so_far() == []


async def test_non_stream_returns_a_chat_completion(server: Server, fake_anthropic: FakeAnthropic) -> None:
    text = "Chuck Norris writes code that optimizes itself. 💪"
    fake_anthropic.enqueue(JsonReply(200, message([text_block(text)], message_usage=usage(25, 12))))
    schema = {"type": "object", "properties": {"joke": {"type": "string"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "joke", "schema": schema}}
    before = int(time.time())
    response = await server.post("/stream/create", claude_body(server, stream=False, response_format=response_format))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert before <= answer.pop("created") <= int(time.time())
    assert answer == {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 25, "completion_tokens": 12, "total_tokens": 37},
    }
    sent = fake_anthropic.requests[0].json()
    assert sent["stream"] is False
    assert sent["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "response_format" not in sent


async def test_non_stream_tool_use_becomes_tool_calls(server: Server, fake_anthropic: FakeAnthropic) -> None:
    call = tool_use_block("toolu_01A09q90qw90lq917835lq9", "get_weather", {"city": "Zürich", "unit": "celsius"})
    fake_anthropic.enqueue(JsonReply(200, message([call], stop_reason="tool_use")))
    response = await server.post("/stream/create", claude_body(server, stream=False))
    assert response.status_code == 200, response.text
    (choice,) = response.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (tool_call,) = choice["message"]["tool_calls"]
    assert tool_call["id"] == "toolu_01A09q90qw90lq917835lq9" and tool_call["type"] == "function"
    assert tool_call["function"]["name"] == "get_weather"
    assert json.loads(tool_call["function"]["arguments"]) == {"city": "Zürich", "unit": "celsius"}


async def test_non_stream_refusal_is_502(server: Server, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.enqueue(error_reply(529, "overloaded_error", "Overloaded"))
    fake_anthropic.enqueue(error_reply(529, "overloaded_error", "Overloaded"))
    fake_anthropic.enqueue(error_reply(529, "overloaded_error", "Overloaded"))  # enough for any retry policy
    response = await server.post("/stream/create", claude_body(server, stream=False))
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == 529 and error["details"] == "Overloaded"


async def test_error_event_text_is_scrubbed_of_the_key(server: Server, fake_anthropic: FakeAnthropic) -> None:
    head = message_start() + block_start(0, {"type": "text", "text": ""})
    leak = f"key {PROVIDER_KEY} was revoked mid-stream"
    fake_anthropic.enqueue(StreamReply([head, error_event("authentication_error", leak)]))
    client = await server.ws(channels=("anonymous",))
    assert (await server.post("/stream/create", claude_body(server))).status_code == 200
    events = await client.stream_events()
    error = events[-2]["error"]
    assert error["code"] == "authentication_error"
    assert error["message"] == "key *** was revoked mid-stream"
    assert error["details"] == {"type": "authentication_error", "message": "key *** was revoked mid-stream"}
    assert not any(PROVIDER_KEY in json.dumps(f) for f in client.frames)


@pytest.mark.parametrize(("given", "sent"), [(1.5, 1.0), (2, 1.0), (0.7, 0.7), (0, 0)])
async def test_temperature_is_capped_to_anthropics_range(
    server: Server, fake_anthropic: FakeAnthropic, given: float, sent: float
) -> None:
    fake_anthropic.enqueue(StreamReply([text_stream(["ok"])]))
    await run_stream(server, claude_body(server, temperature=given))
    assert fake_anthropic.requests[0].json()["temperature"] == sent
