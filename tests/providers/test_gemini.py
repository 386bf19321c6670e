"""POST /stream/create with ``service: "gemini"`` against a fake Gemini API, watched through real WebSocket clients."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Server, ServerFactory, assert_well_formed, seed_body
from tests.fakes.gemini_server import (
    FakeGemini,
    RecordedRequest,
    blocked_prompt,
    chunk,
    error_reply,
    function_call_stream,
    invalid_key_reply,
    json_reply,
    quota_reply,
    response,
    safety_stop,
    split_every,
    split_inside,
    sse,
    stream_error,
    stream_reply,
    text_stream,
)

pytestmark = pytest.mark.anyio

GEMINI_KEY = "AIzaSyD-FakeGeminiKey_0123456789abcdefghi"
MODEL = "gemini-2.0-flash"
PARTS = ["Why do ", "programmers ", "prefer dark mode? ", "Because light ", "attracts bugs. 🐛 Olé!"]


@pytest.fixture
async def server(start_server: ServerFactory, fake_gemini: FakeGemini) -> Server:
    return await start_server()


def gemini_body(server: Server, **payload: Any) -> dict[str, Any]:
    body = seed_body(server, **{"model": MODEL, "apiKey": GEMINI_KEY, **payload})
    body["service"] = "gemini"
    return body


def only_request(fake: FakeGemini) -> RecordedRequest:
    (sent,) = fake.requests
    assert sent.method == "POST"
    assert sent.headers["x-goog-api-key"] == GEMINI_KEY
    assert GEMINI_KEY not in sent.path and "key=" not in sent.path  # URLs get logged; the key never goes there
    assert sent.headers["content-type"] == "application/json"
    return sent


async def stream(server: Server, body: dict[str, Any]) -> list[dict[str, Any]]:
    client = await server.ws(channels=("anonymous",))
    response = await server.post("/stream/create", body)
    assert response.status_code == 200, response.text
    events = await client.stream_events()
    assert_well_formed(events, response.json()["streamId"])
    return events


# ---- streaming text ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["whole", "inside-emoji", "every-3-bytes", "every-11-bytes"])
async def test_text_streams_like_openai_whatever_the_byte_cuts(
    server: Server, fake_gemini: FakeGemini, cut: str
) -> None:
    body = text_stream(PARTS)
    pieces = {
        "whole": [body],
        "inside-emoji": split_inside(body, "🐛"),
        "every-3-bytes": split_every(body, 3),
        "every-11-bytes": split_every(body, 11),
    }[cut]
    fake_gemini.enqueue(stream_reply(pieces, delay=0.0005))
    events = await stream(server, gemini_body(server))

    assert events[0]["content"]["service"] == "gemini" and events[0]["content"]["model"] == MODEL
    assert [e["content"] for e in events if e["type"] == "delta"] == PARTS
    assert [e["type"] for e in events] == ["threadInfo"] + ["delta"] * len(PARTS) + ["end"]
    end = events[-1]
    assert end["text"] == "".join(PARTS)
    assert end["finish_reason"] == "stop"
    assert end["usage"] == {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}

    sent = only_request(fake_gemini)
    assert sent.path == f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    upstream = sent.json()
    assert upstream == {
        "contents": [{"role": "user", "parts": [{"text": "create a joke about software developers"}]}],
        "system_instruction": {"parts": [{"text": "You are a Chuck Norris Joke teller."}]},
        "generationConfig": {"maxOutputTokens": 4000, "temperature": 0, "seed": 1},
    }  # no apiKey, provider, model, stream or empty functions: Gemini refuses unknown fields


async def test_thoughts_are_not_relayed_but_are_counted(server: Server, fake_gemini: FakeGemini) -> None:
    fake_gemini.enqueue(stream_reply([text_stream(["Forty-two."], thoughts=["The user asks...", " So: 42."])]))
    events = await stream(server, gemini_body(server))
    assert [e["content"] for e in events if e["type"] == "delta"] == ["Forty-two."]
    assert events[-1]["usage"] == {"prompt_tokens": 11, "completion_tokens": 1 + 14, "total_tokens": 26}


async def test_max_tokens_is_length(server: Server, fake_gemini: FakeGemini) -> None:
    fake_gemini.enqueue(stream_reply([text_stream(["Once upon a"], finish_reason="MAX_TOKENS")]))
    events = await stream(server, gemini_body(server, max_tokens=3))
    assert events[-1]["finish_reason"] == "length" and events[-1]["text"] == "Once upon a"


async def test_models_prefix_is_stripped(server: Server, fake_gemini: FakeGemini) -> None:
    fake_gemini.enqueue(stream_reply([text_stream(["ok"])]))
    events = await stream(server, gemini_body(server, model="models/gemini-2.5-pro"))
    assert events[0]["content"]["model"] == "gemini-2.5-pro"
    assert only_request(fake_gemini).path == "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"


# ---- function calls ------------------------------------------------------------------------------------------


async def test_function_calls_become_one_function_call_event(server: Server, fake_gemini: FakeGemini) -> None:
    await server.make_tool_arguments_public()  # the reassembled arguments are what is checked
    weather = {"city": "Boston", "userMessage": "Checking the weather in Boston."}
    clock = {"tz": "Europe/Zürich"}
    body = function_call_stream([("get_weather", weather), ("now", clock, "fc-7")])
    fake_gemini.enqueue(stream_reply(split_every(body, 17)))
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}},
    ]
    events = await stream(server, gemini_body(server, tools=tools))

    assert [e["type"] for e in events] == ["threadInfo", "function_call", "end"]
    functions = events[1]["content"]["functions"]
    assert [(f["id"], f["name"], f["userMessage"]) for f in functions] == [
        ("call_1", "get_weather", "Checking the weather in Boston."),  # Gemini sent no id: one is made up
        ("fc-7", "now", None),  # Gemini's own id is kept
    ]
    assert all(isinstance(f["arguments"], str) for f in functions)
    assert [json.loads(f["arguments"]) for f in functions] == [weather, clock]
    assert events[-1]["finish_reason"] == "tool_calls"
    assert events[-1]["usage"]["completion_tokens"] == 24


# ---- refusals, blocks and broken streams ----------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["SAFETY", "RECITATION", "PROHIBITED_CONTENT"])
async def test_withheld_answer_gives_error_then_end(server: Server, fake_gemini: FakeGemini, reason: str) -> None:
    fake_gemini.enqueue(stream_reply([safety_stop(["Here is ", "how "], reason=reason)]))
    events = await stream(server, gemini_body(server))
    assert [e["type"] for e in events] == ["threadInfo", "delta", "delta", "error", "end"]
    error = events[3]["error"]
    assert error["code"] == reason and error["message"].startswith("Gemini withheld the answer")
    assert error["details"]["finishReason"] == reason
    assert {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True} in error["details"][
        "safetyRatings"
    ]
    assert events[-1]["finish_reason"] == "error" and events[-1]["text"] == "Here is how "


async def test_blocked_prompt_gives_error_then_end(server: Server, fake_gemini: FakeGemini) -> None:
    fake_gemini.enqueue(stream_reply([sse(blocked_prompt("PROHIBITED_CONTENT"))]))
    events = await stream(server, gemini_body(server))
    assert [e["type"] for e in events] == ["threadInfo", "error", "end"]
    error = events[1]["error"]
    assert error["code"] == "PROHIBITED_CONTENT" and error["message"].startswith("Gemini refused the prompt")
    assert error["details"]["blockReason"] == "PROHIBITED_CONTENT"
    assert events[-1]["finish_reason"] == "error" and events[-1]["text"] == ""


async def test_error_mid_stream_gives_error_then_end(server: Server, fake_gemini: FakeGemini) -> None:
    message = "An internal error has occurred. Please retry or report in https://developers.generativeai.google"
    head = sse(chunk([{"text": "Partial "}])) + sse(chunk([{"text": "answer"}]))
    fake_gemini.enqueue(stream_reply([head, stream_error(500, message, "INTERNAL")]))
    events = await stream(server, gemini_body(server))
    assert [e["type"] for e in events] == ["threadInfo", "delta", "delta", "error", "end"]
    assert events[3]["error"]["message"] == message
    assert events[3]["error"]["code"] == 500
    assert events[3]["error"]["details"]["status"] == "INTERNAL"
    assert events[-1]["text"] == "Partial answer" and events[-1]["finish_reason"] == "error"


async def test_stream_without_finish_reason_is_an_error(server: Server, fake_gemini: FakeGemini) -> None:
    fake_gemini.enqueue(stream_reply([text_stream(["Almost", " there"], finish_reason=None)]))
    events = await stream(server, gemini_body(server))
    assert [e["type"] for e in events] == ["threadInfo", "delta", "delta", "error", "end"]
    assert events[3]["error"]["message"] == "The provider closed the stream before it was complete"
    assert events[-1]["finish_reason"] == "error" and events[-1]["text"] == "Almost there"


async def test_connection_dropped_mid_event_is_an_error(server: Server, fake_gemini: FakeGemini) -> None:
    body = text_stream(["One ", "two ", "three"])
    fake_gemini.enqueue(stream_reply([body[: len(body) // 2]], disconnect=True))
    events = await stream(server, gemini_body(server))
    assert [e["type"] for e in events][-2:] == ["error", "end"]
    assert events[-2]["error"]["code"] == 502


@pytest.mark.parametrize(
    ("reply", "code", "words"),
    [
        (invalid_key_reply(), 400, "API key not valid. Please pass a valid API key."),
        (error_reply(404, f"models/{MODEL} is not found for API version v1beta.", "NOT_FOUND"), 404, "is not found"),
    ],
)
async def test_refusal_fails_the_post_and_sends_nothing(
    server: Server, fake_gemini: FakeGemini, reply: Any, code: int, words: str
) -> None:
    fake_gemini.enqueue(reply)
    client = await server.ws(channels=("anonymous",))
    answer = await server.post("/stream/create", gemini_body(server))
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert error["type"] == "provider_error" and error["code"] == code
    assert words in error["details"]
    assert GEMINI_KEY not in answer.text
    assert await client.messages_so_far() == []


# ---- what is sent upstream -------------------------------------------------------------------------------------


def _conversation() -> list[dict[str, Any]]:
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Boston"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
    ]
    image = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=="
    return [
        {"role": "system", "content": "You are a weather bot."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Where is this? And the weather in Boston and Paris?"},
                {"type": "image_url", "image_url": {"url": image, "detail": "high"}},
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_a", "content": '{"temp_c": 21}'},
        {"role": "tool", "tool_call_id": "call_b", "content": "sunny"},
        {"role": "assistant", "content": "Boston is 21°C, Paris is sunny."},
        {"role": "user", "content": "Thanks! Tomorrow?"},
    ]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "strict": True,
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": ["string", "null"], "enum": ["c", "f"]},
                "days": {"type": "array", "items": {"type": "integer", "minimum": 1}, "maxItems": 7},
            },
            "required": ["city", "unit", "days"],
            "additionalProperties": False,
        },
    },
}


async def test_request_is_translated_to_gemini(server: Server, fake_gemini: FakeGemini) -> None:
    fake_gemini.enqueue(stream_reply([text_stream(["Rain."])]))
    safety = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
    body = gemini_body(
        server,
        messages=_conversation(),
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=256,
        temperature=0.2,
        top_p=0.9,
        stop="END",
        seed=7,
        n=1,
        response_format={"type": "json_object"},
        safetySettings=safety,
        generationConfig={"topK": 40},
        user="u-1",
        logit_bias={"50256": -100},
        parallel_tool_calls=True,
        stream_options={"include_usage": True},
    )
    await stream(server, body)

    upstream = only_request(fake_gemini).json()
    assert set(upstream) == {
        "contents",
        "system_instruction",
        "tools",
        "toolConfig",
        "generationConfig",
        "safetySettings",
    }
    assert upstream["system_instruction"] == {"parts": [{"text": "You are a weather bot."}]}
    assert upstream["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "Where is this? And the weather in Boston and Paris?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgoAAAANSUhEUg=="}},
            ],
        },
        {
            "role": "model",
            "parts": [
                {"functionCall": {"id": "call_a", "name": "get_weather", "args": {"city": "Boston"}}},
                {"functionCall": {"id": "call_b", "name": "get_weather", "args": {"city": "Paris"}}},
            ],
        },
        {
            "role": "user",  # both results in one turn, in call order, names found from the call ids
            "parts": [
                {"functionResponse": {"id": "call_a", "name": "get_weather", "response": {"temp_c": 21}}},
                {"functionResponse": {"id": "call_b", "name": "get_weather", "response": {"output": "sunny"}}},
            ],
        },
        {"role": "model", "parts": [{"text": "Boston is 21°C, Paris is sunny."}]},
        {"role": "user", "parts": [{"text": "Thanks! Tomorrow?"}]},
    ]
    assert upstream["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": {  # $schema and additionalProperties are not in Gemini's Schema: stripped
                        "type": "object",
                        "properties": {
                            "city": {"type": "string", "description": "City name"},
                            "unit": {"type": "string", "nullable": True, "enum": ["c", "f"]},
                            "days": {"type": "array", "items": {"type": "integer", "minimum": 1}, "maxItems": 7},
                        },
                        "required": ["city", "unit", "days"],
                    },
                }
            ]
        }
    ]
    assert upstream["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
    assert upstream["generationConfig"] == {
        "maxOutputTokens": 256,
        "temperature": 0.2,
        "topP": 0.9,
        "seed": 7,
        "candidateCount": 1,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "topK": 40,
    }
    assert upstream["safetySettings"] == safety


@pytest.mark.parametrize(("choice", "mode"), [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")])
async def test_tool_choice_modes(server: Server, fake_gemini: FakeGemini, choice: str, mode: str) -> None:
    fake_gemini.enqueue(json_reply(response("ok")))
    body = gemini_body(server, stream=False, tools=[WEATHER_TOOL], tool_choice=choice, stop=["a", "b"])
    assert (await server.post("/stream/create", body)).status_code == 200
    upstream = only_request(fake_gemini).json()
    assert upstream["toolConfig"] == {"functionCallingConfig": {"mode": mode}}
    assert upstream["generationConfig"]["stopSequences"] == ["a", "b"]


async def test_gemini_3_history_carries_thought_signatures(server: Server, fake_gemini: FakeGemini) -> None:
    """Gemini 3 answers 400 to a replayed function call without a signature: the caller's one (in Google's
    OpenAI-format ``extra_content``) is used, else Google's documented stand-in for foreign history."""
    fake_gemini.enqueue(json_reply(response("ok", model="gemini-3-pro-preview")))
    signed = {
        "id": "c1",
        "type": "function",
        "function": {"name": "now", "arguments": "{}"},
        "extra_content": {"google": {"thought_signature": "Q2lRQjBlMktiM0Zha2U="}},
    }
    unsigned = [{"id": f"c{i}", "type": "function", "function": {"name": "now", "arguments": "{}"}} for i in (2, 3)]
    messages = [
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "content": None, "tool_calls": [signed]},
        {"role": "tool", "tool_call_id": "c1", "content": "12:00"},
        {"role": "assistant", "content": "Checking twice.", "tool_calls": unsigned},
        {"role": "tool", "tool_call_id": "c2", "content": "12:01"},
        {"role": "tool", "tool_call_id": "c3", "content": "12:02"},
    ]
    body = gemini_body(server, stream=False, model="gemini-3-pro-preview", messages=messages)
    assert (await server.post("/stream/create", body)).status_code == 200
    contents = only_request(fake_gemini).json()["contents"]
    assert contents[1]["parts"][0]["thoughtSignature"] == "Q2lRQjBlMktiM0Zha2U="
    second = contents[3]["parts"]
    assert second[0] == {"text": "Checking twice."}
    assert second[1]["thoughtSignature"] == "skip_thought_signature_validator"  # only the first call of a step
    assert "thoughtSignature" not in second[2]


@pytest.mark.parametrize(
    ("part", "field"),
    [
        ({"type": "image_url", "image_url": {"url": "ftp://example.com/cat.png"}}, "image_url.url"),
        ({"type": "image_url", "image_url": {"url": "data:image/svg+xml,%3Csvg%3E"}}, "image_url.url"),
        ({"type": "video_url", "video_url": "https://example.com/a.mp4"}, ""),
    ],
)
async def test_content_gemini_cannot_take_is_refused_before_calling_it(
    server: Server, fake_gemini: FakeGemini, part: dict[str, Any], field: str
) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}]
    answer = await server.post("/stream/create", gemini_body(server, messages=messages))
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "validation_error"
    assert [d["field"] for d in error["details"]] == [f"payload.messages.0.content.1{'.' + field if field else ''}"]
    assert fake_gemini.requests == []


# ---- stream: false ----------------------------------------------------------------------------------------------


async def test_non_stream_is_a_chat_completion(server: Server, fake_gemini: FakeGemini) -> None:
    fake_gemini.enqueue(json_reply(response("Chuck Norris writes code that optimizes itself.", response_id="r-9")))
    answer = await server.post("/stream/create", gemini_body(server, stream=False))
    assert answer.status_code == 200
    completion = answer.json()
    assert isinstance(completion.pop("created"), int)
    assert completion == {
        "id": "chatcmpl-r-9",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Chuck Norris writes code that optimizes itself.",
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 11, "total_tokens": 22},
    }
    sent = only_request(fake_gemini)
    assert sent.path == f"/v1beta/models/{MODEL}:generateContent"
    assert "generationConfig" in sent.json()


async def test_non_stream_function_call(server: Server, fake_gemini: FakeGemini) -> None:
    args = {"city": "Zürich"}
    fake_gemini.enqueue(json_reply(response(calls=[("get_weather", args)])))
    answer = await server.post("/stream/create", gemini_body(server, stream=False, tools=[WEATHER_TOOL]))
    assert answer.status_code == 200
    (choice,) = answer.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] == "call_1" and call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == args


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (json_reply(blocked_prompt("SAFETY")), "SAFETY"),
        (json_reply(response("", finish_reason="RECITATION")), "RECITATION"),
        (invalid_key_reply(), 400),
    ],
)
async def test_non_stream_refusals_are_502(server: Server, fake_gemini: FakeGemini, reply: Any, code: Any) -> None:
    fake_gemini.enqueue(reply)
    answer = await server.post("/stream/create", gemini_body(server, stream=False))
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == code


async def test_quota_error_is_retried_after_googles_retry_delay(server: Server, fake_gemini: FakeGemini) -> None:
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}
    limited = error_reply(429, "You exceeded your current quota.", "RESOURCE_EXHAUSTED", [retry])
    fake_gemini.enqueue(limited, stream_reply([text_stream(["ok"])]))
    events = await stream(server, gemini_body(server))
    assert events[-1]["text"] == "ok"
    assert len(fake_gemini.requests) == 2


async def test_quota_error_asking_for_a_long_wait_is_passed_on(server: Server, fake_gemini: FakeGemini) -> None:
    fake_gemini.enqueue(quota_reply())  # asks for 37 s, more than streams.retry_max_wait
    response = await server.post("/stream/create", gemini_body(server))
    assert response.status_code == 502 and response.json()["error"]["code"] == 429
    assert len(fake_gemini.requests) == 1
