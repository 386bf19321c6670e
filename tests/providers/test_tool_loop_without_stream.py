"""The ``stream: false`` tool loop gives back what a provider needs, as the streamed loop does: the
Responses API's reasoning items before the calls (with their ``fc_`` item ids) and Anthropic's signed
thinking blocks first in the assistant turn. Neither ever shows in the answer the caller gets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import PROVIDER_KEY, Server, ServerFactory
from tests.fakes import anthropic_server as claude
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI, JsonReply
from tests.fakes.responses_events import function_call_item, message_item, reasoning_item, response_object, usage
from tests.fakes.webhook_server import WebhookReceiver
from tests.streams.test_tools import point_webhook

pytestmark = pytest.mark.anyio

WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
ASKED = [{"role": "user", "content": "Weather in Oslo?"}]


async def weather(body: dict[str, Any]) -> tuple[int, Any]:
    return 200, {"city": body["arguments"]["city"], "celsius": 21}


def query(server: Server, provider: str, model: str) -> dict[str, Any]:
    payload = {"provider": provider, "apiKey": PROVIDER_KEY, "model": model, "stream": False, "messages": ASKED,
               "tools": [WEATHER]}  # fmt: skip
    return {"apiKey": server.api_key, "includeReasoning": True, "payload": payload}


async def test_responses_reasoning_items_go_back_before_the_calls(server: Server, fake_openai: FakeOpenAI) -> None:
    reasoning = reasoning_item(["The user wants Oslo's weather."], id="rs_1", encrypted="gAAAAABoEncrypted==")
    call = function_call_item("call_9", "get_weather", '{"city": "Oslo"}', id="fc_1")
    first = response_object("completed", [reasoning, call], id="resp_1", usage=usage(30, 10))
    last = response_object("completed", [message_item("21 °C in Oslo.", id="msg_2")], id="resp_2", usage=usage(50, 5))
    fake_openai.enqueue(JsonReply(200, first), JsonReply(200, last))
    async with WebhookReceiver(answer=weather) as hook:
        await point_webhook(server, hook)
        response = await server.post("/llm/query", query(server, "openai-responses", "o4-mini"))
    assert response.status_code == 200, response.text
    message = response.json()["data"]["choices"][0]["message"]
    assert message["content"] == "21 °C in Oslo." and "bfstream_thinking" not in message

    follow_up = (await fake_openai.nth_request(2)).json()
    (result,) = [item for item in follow_up["input"] if item.get("type") == "function_call_output"]
    assert follow_up["input"] == [
        {"type": "message", "role": "user", "content": "Weather in Oslo?"},
        reasoning,  # unchanged, and first
        {"type": "function_call", "call_id": "call_9", "name": "get_weather", "arguments": '{"city": "Oslo"}',
         "id": "fc_1"},
        result,
    ]  # fmt: skip
    assert result["call_id"] == "call_9" and json.loads(result["output"])["celsius"] == 21


async def test_a_call_the_caller_must_answer_comes_back_without_bfstreams_own_fields(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    """No webhook: the calls end the loop and reach the caller, as a chat.completion's tool_calls."""
    reasoning = reasoning_item(["Oslo."], id="rs_1")
    call = function_call_item("call_9", "get_weather", '{"city": "Oslo"}', id="fc_1")
    fake_openai.enqueue(JsonReply(200, response_object("completed", [reasoning, call], usage=usage(30, 10))))
    response = await server.post("/llm/query", query(server, "openai-responses", "o4-mini"))
    choice = response.json()["data"]["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and "bfstream_thinking" not in choice["message"]
    assert [c["function"]["name"] for c in choice["message"]["tool_calls"]] == ["get_weather"]


async def test_anthropic_thinking_blocks_go_back_first(
    start_server: ServerFactory, fake_anthropic: FakeAnthropic
) -> None:
    server = await start_server()  # once the fake's address is set
    thinking = {"type": "thinking", "thinking": "Oslo's weather, then.", "signature": "EqQBCkYIBRgCKkBsig=="}
    redacted = {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"}
    use = claude.tool_use_block("toolu_01A", "get_weather", {"city": "Oslo"})
    fake_anthropic.enqueue(
        JsonReply(200, claude.message([thinking, redacted, use], stop_reason="tool_use")),
        JsonReply(200, claude.message([claude.text_block("21 °C in Oslo.")])),
    )
    async with WebhookReceiver(answer=weather) as hook:
        await point_webhook(server, hook)
        response = await server.post("/llm/query", query(server, "anthropic", "claude-sonnet-4-5"))
    assert response.status_code == 200, response.text
    message = response.json()["data"]["choices"][0]["message"]
    assert message["content"] == "21 °C in Oslo." and "bfstream_thinking" not in message

    follow_up = (await fake_anthropic.nth_request(2)).json()
    _, assistant, results = follow_up["messages"]
    assert assistant == {"role": "assistant", "content": [thinking, redacted, use]}
    assert results["content"][0]["tool_use_id"] == "toolu_01A"
