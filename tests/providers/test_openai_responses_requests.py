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
from tests.providers.test_anthropic import run_stream
from tests.providers.test_openai_responses import responses_body

pytestmark = pytest.mark.anyio

TO_LUGANO = '{"to": "LUG"}'
SCHEMA = {"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]}


def answer_text(fake: FakeOpenAI, text: str = "Il fait beau.") -> None:
    stream = ResponseStream()
    stream.message([text])
    fake.enqueue(StreamReply([stream.completed()]))


async def test_a_whole_conversation_as_the_responses_api_receives_it(server: Server, fake_openai: FakeOpenAI) -> None:
    answer_text(fake_openai, "About 180 CHF.")
    messages = [
        {"role": "developer", "content": "You plan trips."},
        {"role": "system", "content": [{"type": "text", "text": "Prices in CHF."}]},
        {
            "role": "user",
            "content": [
                {"type": "file", "file": {"file_id": "file-6F2ksmvXxt4VdoqmHRw6kL"}},
                {"type": "text", "text": "Here is my passport scan and a photo of the place; fly me there?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/lake.jpg", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRg=="}},
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Searching."}],
            "tool_calls": [
                {"id": "call_F", "type": "function", "function": {"name": "search_flights", "arguments": TO_LUGANO}},
                {"id": "call_X", "type": "function", "function": {"name": "exchange_rate", "arguments": None}},
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_X",
            "content": [{"type": "text", "text": "1 EUR = "}, {"type": "text", "text": "0.94 CHF"}],
        },
        {"role": "tool", "tool_call_id": "call_F", "content": "LX 2904, 07:40"},
        {"role": "assistant", "content": "LX 2904 leaves at 07:40.", "refusal": "I cannot book it for you."},
        {"role": "user", "content": "Fine, what does it cost?"},
    ]
    tools = [
        {"type": "function", "function": {"name": "search_flights", "description": "Flights", "parameters": SCHEMA}},
        {"type": "function", "function": {"name": "exchange_rate", "strict": True}},
        {"name": "book_hotel", "description": "Given flat, as the reference does"},
        {"type": "file_search", "vector_store_ids": ["vs_68a1"]},
    ]
    schema = {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}
    body = responses_body(
        server,
        messages=messages,
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "search_flights"}},
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
    assert events[-1]["text"] == "About 180 CHF."

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
        "instructions": "You plan trips.\n\nPrices in CHF.",
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_file", "file_id": "file-6F2ksmvXxt4VdoqmHRw6kL"},
                    {"type": "input_text", "text": "Here is my passport scan and a photo of the place; fly me there?"},
                    {"type": "input_image", "image_url": "https://example.com/lake.jpg", "detail": "low"},
                    {"type": "input_image", "image_url": "data:image/webp;base64,UklGRg==", "detail": "auto"},
                ],
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Searching."}],
            },
            {"type": "function_call", "call_id": "call_F", "name": "search_flights", "arguments": TO_LUGANO},
            {"type": "function_call", "call_id": "call_X", "name": "exchange_rate", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_X", "output": "1 EUR = 0.94 CHF"},
            {"type": "function_call_output", "call_id": "call_F", "output": "LX 2904, 07:40"},
            {
                "type": "message",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "LX 2904 leaves at 07:40."},
                    {"type": "refusal", "refusal": "I cannot book it for you."},
                ],
            },
            {"type": "message", "role": "user", "content": "Fine, what does it cost?"},
        ],
        "tools": [
            {**function, "name": "search_flights", "description": "Flights", "parameters": SCHEMA},
            {**function, "name": "exchange_rate", "strict": True, "parameters": {"type": "object", "properties": {}}},
            {
                **function,
                "name": "book_hotel",
                "description": "Given flat, as the reference does",
                "parameters": {"type": "object", "properties": {}},
            },
            {"type": "file_search", "vector_store_ids": ["vs_68a1"]},
            {
                "type": "web_search",
                "search_context_size": "low",
                "user_location": {"type": "approximate", "country": "CH", "city": "Zürich"},
            },
        ],
        "tool_choice": {"type": "function", "name": "search_flights"},
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
    """BetterForms payloads use the deprecated functions API, whose calls carry no ids: each gets one
    made up, which its result then names."""
    answer_text(fake_openai, "Order 17 ships today; order 18 tomorrow.")
    order = {"type": "object", "properties": {"number": {"type": "integer"}}}
    body = responses_body(
        server,
        functions=[{"name": "find_order", "parameters": order}],
        function_call="auto",
        messages=[
            {"role": "user", "content": "Where are orders 17 and 18?"},
            {"role": "assistant", "function_call": {"name": "find_order", "arguments": '{"number": 17}'}},
            {"role": "function", "name": "find_order", "content": "shipping today"},
            {"role": "assistant", "function_call": {"name": "find_order", "arguments": '{"number": 18}'}},
            {"role": "function", "name": "find_order", "content": "shipping tomorrow"},
        ],
    )
    await run_stream(server, body)
    sent = fake_openai.requests[0].json()
    assert sent["tools"] == [{"type": "function", "name": "find_order", "parameters": order, "strict": False}]
    assert sent["tool_choice"] == "auto" and "functions" not in sent and "function_call" not in sent
    _, first, first_output, second, second_output = sent["input"]
    assert first["call_id"] != second["call_id"]
    for call, output, number, said in ((first, first_output, 17, "today"), (second, second_output, 18, "tomorrow")):
        assert call == {**call, "type": "function_call", "name": "find_order", "arguments": f'{{"number": {number}}}'}
        assert output == {"type": "function_call_output", "call_id": call["call_id"], "output": f"shipping {said}"}


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


async def test_store_false_without_reasoning_asks_for_no_encrypted_reasoning(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    """gpt-4o and gpt-4.1 answer 400 "Encrypted content is not supported with this model" to the
    include: a request that configures no reasoning is for such a model, and has no reasoning to keep."""
    answer_text(fake_openai, "Hi.")
    body = {
        "apiKey": server.api_key, "channels": ["anonymous"], "actionName": "a",
        "payload": {"provider": "openai-responses", "apiKey": PROVIDER_KEY, "model": "gpt-4.1",
                    "messages": [{"role": "user", "content": "Hi"}], "providerArgs": {"store": False}},
    }  # fmt: skip
    page = await server.ws(channels=("anonymous",))
    assert (await server.post("/llm/query", body)).status_code == 200
    await page.stream_events()
    sent = fake_openai.requests[0].json()
    assert sent["store"] is False and "include" not in sent and "reasoning" not in sent


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
    assert fake_openai.requests == [] and await page.messages_so_far() == []


# ---- stream: false ------------------------------------------------------------------------------------


async def test_stream_false_answers_a_chat_completion(server: Server, fake_openai: FakeOpenAI) -> None:
    text = "Chuck Norris counted to infinity. Twice. 💪"
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
            {
                "id": "call_W",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                "extra_content": {"openai": {"item_id": "fc_1"}},  # as a streamed call carries it
            }
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


async def test_a_malformed_field_of_the_callers_goes_as_written(server: Server, fake_openai: FakeOpenAI) -> None:
    """bfstream's own asks (a reasoning summary, encrypted reasoning) are merged into what the caller
    wrote, never put in place of it: OpenAI answers a malformed value with its own 400."""
    answer_text(fake_openai, "Hi.")
    body = {
        "apiKey": server.api_key, "channels": ["anonymous"], "actionName": "a", "includeReasoning": True,
        "payload": {"provider": "openai-responses", "apiKey": PROVIDER_KEY, "model": "o4-mini",
                    "messages": [{"role": "user", "content": "Hi"}], "reasoning": "high", "store": False,
                    "include": "reasoning"},
    }  # fmt: skip
    page = await server.ws(channels=("anonymous",))
    assert (await server.post("/llm/query", body)).status_code == 200
    await page.stream_events()
    sent = fake_openai.requests[0].json()
    assert (sent["reasoning"], sent["include"]) == ("high", "reasoning")

    body["payload"] = {**body["payload"], "text": "x", "reasoning": {"effort": "low"}}
    refused = await server.post("/llm/query", body)
    assert refused.status_code == 400 and [d["field"] for d in refused.json()["error"]["details"]] == ["payload.text"]
