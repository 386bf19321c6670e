"""What ``openai-responses`` sends and what ``stream: false`` answers: a Chat Completions payload as the
Responses API receives it (``instructions``, ``input`` items, flat tools, ``max_output_tokens``,
``text.format``, its own fields passed through), the 400 for what cannot be translated, and a Response
reshaped as a ``chat.completion``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import PROVIDER_KEY, Server
from tests.fakes.openai_server import FakeOpenAI, JsonReply, StreamReply
from tests.fakes.responses_events import (
    MODEL,
    ResponseStream,
    function_call_item,
    message_item,
    reasoning_item,
    response_object,
    url_citation,
    usage,
)
from tests.providers.test_openai_responses import responses_body, run_stream

pytestmark = pytest.mark.anyio

ZURICH = '{"city": "Zürich"}'
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def answer_text(fake: FakeOpenAI, text: str = "Il fait beau.") -> None:
    stream = ResponseStream()
    stream.message([text])
    fake.enqueue(StreamReply([stream.completed()]))


async def test_a_whole_conversation_as_the_responses_api_receives_it(server: Server, fake_openai: FakeOpenAI) -> None:
    answer_text(fake_openai)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these pictures, and the weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                {"type": "file", "file": {"file_id": "file-6F2ksmvXxt4VdoqmHRw6kL"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_A",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'},
                },
                {"id": "call_B", "type": "function", "function": {"name": "get_time", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_A", "content": "18°C, sunny"},
        {"role": "tool", "tool_call_id": "call_B", "content": [{"type": "text", "text": "14:02"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "It is sunny."}], "refusal": None},
        {"role": "user", "content": "Thanks! Summarise."},
    ]
    tools = [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Weather", "parameters": SCHEMA},
        },
        {"type": "function", "function": {"name": "get_time", "strict": True}},
        {"name": "get_news", "description": "News, given flat as the reference does"},
        {"type": "file_search", "vector_store_ids": ["vs_68a1"]},
    ]
    schema = {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}
    body = responses_body(
        server,
        messages=messages,
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        max_completion_tokens=900,
        top_p=0.9,
        user="user-42",
        response_format={"type": "json_schema", "json_schema": {"name": "summary", "schema": schema, "strict": True}},
        verbosity="low",
        reasoning_effort="minimal",
        stream_options={"include_usage": True, "include_obfuscation": False},
        web_search_options={
            "search_context_size": "low",
            "user_location": {"type": "approximate", "approximate": {"country": "CH", "city": "Zürich"}},
        },
        # The Responses API's own fields, which Chat Completions lacks: passed as they are.
        store=False,
        include=["file_search_call.results"],
        previous_response_id="resp_68af3f1c8f0c81a2",
        truncation="auto",
        metadata={"ticket": "T-1"},
        background=False,
        # Chat Completions' own, meaningless here: dropped.
        frequency_penalty=0.5,
        presence_penalty=0.1,
        logit_bias={"50256": -100},
        logprobs=True,
        prediction={"type": "content", "content": "Il fait"},
        n=1,
        provider="openai-responses",
    )

    _, events = await run_stream(server, body)
    assert events[-1]["text"] == "Il fait beau."

    (sent,) = fake_openai.requests
    assert sent.path == "/v1/responses" and sent.headers["content-type"] == "application/json"
    assert PROVIDER_KEY.encode() not in sent.body
    function = {"type": "function", "strict": False}
    assert sent.json() == {
        "model": "gpt-5-mini",
        "temperature": 0,
        "top_p": 0.9,
        "user": "user-42",
        "parallel_tool_calls": False,
        "store": False,
        "include": ["file_search_call.results", "reasoning.encrypted_content"],  # store: false keeps no reasoning
        "previous_response_id": "resp_68af3f1c8f0c81a2",
        "truncation": "auto",
        "metadata": {"ticket": "T-1"},
        "background": False,
        "instructions": "Be brief.\n\nAnswer in French.",
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in these pictures, and the weather?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"},
                    {"type": "input_image", "image_url": "https://example.com/cat.jpg", "detail": "auto"},
                    {"type": "input_file", "file_id": "file-6F2ksmvXxt4VdoqmHRw6kL"},
                ],
            },
            {"type": "message", "role": "assistant", "content": "Let me check."},
            {"type": "function_call", "call_id": "call_A", "name": "get_weather", "arguments": ZURICH},
            {"type": "function_call", "call_id": "call_B", "name": "get_time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_A", "output": "18°C, sunny"},
            {"type": "function_call_output", "call_id": "call_B", "output": "14:02"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It is sunny."}]},
            {"type": "message", "role": "user", "content": "Thanks! Summarise."},
        ],
        "tools": [
            {**function, "name": "get_weather", "description": "Weather", "parameters": SCHEMA},
            {**function, "name": "get_time", "strict": True, "parameters": {"type": "object", "properties": {}}},
            {
                **function,
                "name": "get_news",
                "description": "News, given flat as the reference does",
                "parameters": {"type": "object", "properties": {}},
            },
            {"type": "file_search", "vector_store_ids": ["vs_68a1"]},
            {
                "type": "web_search",
                "search_context_size": "low",
                "user_location": {"type": "approximate", "country": "CH", "city": "Zürich"},
            },
        ],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "max_output_tokens": 900,
        "text": {
            "format": {"type": "json_schema", "name": "summary", "schema": schema, "strict": True},
            "verbosity": "low",
        },
        "reasoning": {"effort": "minimal"},  # and no summary: the request did not ask for reasoning
        "stream_options": {"include_obfuscation": False},
        "stream": True,
    }


async def test_the_legacy_functions_api_is_translated(server: Server, fake_openai: FakeOpenAI) -> None:
    """BetterForms payloads use the deprecated functions API, whose calls carry no ids."""
    answer_text(fake_openai, "Found 3 jokes.")
    functions = [{"name": "search", "description": "Search jokes", "parameters": {"type": "object"}}]
    messages = [
        {"role": "user", "content": "Find jokes"},
        {"role": "assistant", "content": None, "function_call": {"name": "search", "arguments": '{"q": "jokes"}'}},
        {"role": "function", "name": "search", "content": "3 results"},
    ]
    body = responses_body(server, functions=functions, function_call={"name": "search"}, messages=messages)
    await run_stream(server, body)
    sent = fake_openai.requests[0].json()
    search = {"type": "function", "name": "search", "description": "Search jokes", "parameters": {"type": "object"}}
    assert sent["tools"] == [{**search, "strict": False}]
    assert sent["tool_choice"] == {"type": "function", "name": "search"}
    _, call, output = sent["input"]
    assert call == {
        "type": "function_call",
        "call_id": call["call_id"],
        "name": "search",
        "arguments": '{"q": "jokes"}',
    }
    assert output == {"type": "function_call_output", "call_id": call["call_id"], "output": "3 results"}
    assert "functions" not in sent and "function_call" not in sent


async def test_provider_args_name_the_responses_fields_after_translation(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    answer_text(fake_openai)
    body = {
        "apiKey": server.api_key,
        "channels": ["anonymous"],
        "actionName": "onLlmMessage",
        "includeReasoning": True,
        "payload": {
            "provider": "openai-responses",
            "apiKey": PROVIDER_KEY,
            "model": "o4-mini",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 100,
            "providerArgs": {"max_completion_tokens": 300, "store": False, "reasoning": {"effort": "low"}},
        },
    }
    page = await server.ws(channels=("anonymous",))
    assert (await server.post("/llm/query", body)).status_code == 200
    await page.stream_events()
    sent = fake_openai.requests[0].json()
    assert sent["max_output_tokens"] == 300  # providerArgs may use Chat Completions' word for it
    assert sent["reasoning"] == {"effort": "low", "summary": "auto"}
    assert sent["store"] is False and sent["include"] == ["reasoning.encrypted_content"]


async def test_what_cannot_be_translated_is_refused_before_calling_openai(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    messages = [
        {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "ftp://example.com/cat.png"}},
                {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}},
                {"type": "file", "file": {}},
            ],
        },
        {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "orphan"},
        {"role": "narrator", "content": "Meanwhile..."},
    ]
    page = await server.ws(channels=("anonymous",))
    body = responses_body(
        server, messages=messages, n=2, stop=["\n"], audio={"voice": "alloy", "format": "wav"}, input="Hello"
    )
    response = await server.post("/stream/create", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "validation_error"
    assert error["message"] == "The payload cannot be translated for the OpenAI Responses API"
    assert {d["field"] for d in error["details"]} == {
        "payload.messages.0.content.0",
        "payload.messages.1.content.0.image_url",
        "payload.messages.1.content.1",
        "payload.messages.1.content.2.file",
        "payload.messages.2.tool_calls.0.id",
        "payload.messages.3.tool_call_id",
        "payload.messages.4.role",
        "payload.n",
        "payload.stop",
        "payload.audio",
        "payload.input",
    }
    assert fake_openai.requests == []
    assert await page.messages_so_far() == []


# ---- stream: false ------------------------------------------------------------------------------------


async def test_stream_false_answers_a_chat_completion(server: Server, fake_openai: FakeOpenAI) -> None:
    text = "Chuck Norris writes code that optimizes itself. 💪"
    cited = url_citation("https://example.com/chuck", "Chuck facts", 0, 12)
    output = [
        reasoning_item(["**Choosing** a classic."], id="rs_1"),
        message_item(text, id="msg_1", annotations=[cited]),
    ]
    answer = response_object("completed", output, id="resp_1", created_at=1756300000, usage=usage(25, 12, 4))
    fake_openai.enqueue(JsonReply(200, answer))
    response = await server.post("/stream/create", responses_body(server, stream=False))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": "resp_1",
        "object": "chat.completion",
        "created": 1756300000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": None,
                    "annotations": [
                        {
                            "type": "url_citation",
                            "url_citation": {
                                "start_index": 0,
                                "end_index": 12,
                                "title": "Chuck facts",
                                "url": "https://example.com/chuck",
                            },
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 25, "completion_tokens": 12, "total_tokens": 37},
    }  # no reasoning_content: the request did not ask
    sent = fake_openai.requests[0].json()
    assert sent["stream"] is False and "stream_options" not in sent and "reasoning" not in sent
    assert fake_openai.requests[0].headers["accept"] == "application/json"


async def test_stream_false_with_reasoning_and_calls(server: Server, fake_openai: FakeOpenAI) -> None:
    output = [
        reasoning_item(["First I look it up.", "Then I answer."], id="rs_1"),
        function_call_item("call_W", "get_weather", '{"city":"Oslo"}', id="fc_1"),
    ]
    fake_openai.enqueue(JsonReply(200, response_object("completed", output, usage=usage(40, 30))))
    body = responses_body(server, True, stream=False)
    response = await server.post("/stream/create", body)
    assert response.status_code == 200, response.text
    (choice,) = response.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {"id": "call_W", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
        ],
        "reasoning_content": "First I look it up.\n\nThen I answer.",
    }
    assert fake_openai.requests[0].json()["reasoning"] == {"summary": "auto"}


@pytest.mark.parametrize(
    ("status", "extra", "finish"),
    [
        ("incomplete", {"incomplete_details": {"reason": "max_output_tokens"}}, "length"),
        ("completed", {}, "content_filter"),
    ],
)
async def test_stream_false_finish_reasons(
    server: Server, fake_openai: FakeOpenAI, status: str, extra: dict[str, Any], finish: str
) -> None:
    if finish == "content_filter":
        refusal = {"type": "refusal", "refusal": "I can't help with that."}
        output = [{"id": "msg_1", "type": "message", "status": "completed", "content": [refusal], "role": "assistant"}]
    else:
        output = [message_item("Once upon", status="incomplete")]
    fake_openai.enqueue(JsonReply(200, response_object(status, output, usage=usage(), **extra)))
    response = await server.post("/stream/create", responses_body(server, stream=False))
    (choice,) = response.json()["choices"]
    assert choice["finish_reason"] == finish
    if finish == "content_filter":
        assert choice["message"]["content"] is None and choice["message"]["refusal"] == "I can't help with that."


async def test_stream_false_failed_response_is_502(server: Server, fake_openai: FakeOpenAI) -> None:
    failure = {"code": "server_error", "message": f"Something broke near {PROVIDER_KEY}"}
    fake_openai.enqueue(JsonReply(200, response_object("failed", [], error=failure)))
    response = await server.post("/stream/create", responses_body(server, stream=False))
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "server_error" and error["message"] == "Something broke near ***"
    assert PROVIDER_KEY not in json.dumps(response.json())
