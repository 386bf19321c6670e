"""The tool loop on ``openai-responses``: a ``ui_*`` call answered by a page and a backend call answered by
the app's webhook, in one stream. Each follow-up request carries the calls as ``function_call`` items,
their results as ``function_call_output`` items, and the reasoning items that came with them, whole and
before them (with ``store: false`` OpenAI keeps nothing: without them a reasoning model loses its place,
and OpenAI refuses a call item whose reasoning item is missing)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import PROVIDER_KEY, Server, assert_well_formed
from tests.fakes.openai_server import FakeOpenAI, StreamReply, split_randomly
from tests.fakes.responses_events import ResponseStream, usage
from tests.fakes.webhook_server import WebhookReceiver
from tests.streams.test_tools import answer, events_until, point_webhook

pytestmark = pytest.mark.anyio

FORM = {"type": "function", "function": {"name": "ui_show_form", "parameters": {"type": "object"}}}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
FORM_CALL = ("call_form", "fc_form1", "ui_show_form", '{"title": "City"}')
WEATHER_CALL = ("call_wx", "fc_wx2", "get_weather", '{"city": "Oslo"}')
FORM_RESULT = {"success": True, "message": "The form is shown", "data": {"city": "Oslo"}}


def turn(
    seed: int, summary: list[str], call: tuple[str, str, str, str] | None, text: list[str] = ()
) -> tuple[StreamReply, dict[str, Any]]:
    """One model turn: its reasoning, then a call (call_id, item id, name, arguments) or text; and the
    reasoning item as ``response.output_item.done`` gave it, which is what must come back."""
    stream = ResponseStream(seed=seed, store=False)
    reasoning = stream.reasoning([summary], encrypted=f"gAAAAABo{seed}Encrypted+Reasoning/Blob==")
    if call is not None:
        call_id, item_id, name, arguments = call
        stream.function_call(call_id, name, arguments, size=4, id=item_id)
    if text:
        stream.message(list(text))
    body = stream.completed(usage(100 * seed, 10 * seed, 5))
    return StreamReply(split_randomly(body, seed, largest=48)), reasoning


async def test_a_page_and_the_webhook_answer_and_each_turn_sends_back_the_calls_and_their_reasoning(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    async def weather(body: dict[str, Any]) -> tuple[int, Any]:
        return 200, {"city": body["arguments"]["city"], "celsius": 21}

    first, first_reasoning = turn(1, ["The user wants ", "a form first."], FORM_CALL)
    second, second_reasoning = turn(2, ["Now the weather ", "for Oslo."], WEATHER_CALL)
    third, _ = turn(3, ["Answer briefly."], None, ["It is 21 °C ", "in Oslo."])
    fake_openai.enqueue(first, second, third)
    async with WebhookReceiver(answer=weather) as hook:
        await point_webhook(server, hook)
        page = await server.ws(channels=("room",))
        body = {
            "apiKey": server.api_key,
            "channels": ["room"],
            "actionName": "onLlmMessage",
            "includeReasoning": True,
            "payload": {
                "provider": "openai-responses",
                "apiKey": PROVIDER_KEY,
                "model": "gpt-5-mini",
                "store": False,
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}],
                "tools": [FORM, WEATHER],
            },
        }
        response = await server.post("/llm/query", body)
        assert response.status_code == 200, response.text
        stream_id = response.json()["data"]["streamId"]
        events = await events_until(page, "tool_call")
        call = events[-1]
        assert call["toolName"] == "show_form" and call["arguments"] == {"title": "City"}
        assert await answer(page, call["toolCallId"], FORM_RESULT, "form") is True
        events += await page.stream_events()

    assert_well_formed(events, stream_id)
    kinds = [e["type"] for e in events if e["type"] not in ("reasoning", "delta")]
    assert kinds == ["threadInfo", "function_call", "tool_call", "function_call", "end"]
    end = events[-1]
    assert end["text"] == "It is 21 °C in Oslo." and end["finish_reason"] == "stop"
    assert end["usage"] == {"prompt_tokens": 600, "completion_tokens": 60, "total_tokens": 660}  # three turns
    thoughts = "".join(e["content"] for e in events if e["type"] == "reasoning")
    assert thoughts == end["reasoning"]
    # Each turn's thinking is a paragraph of its own: the blank line travels in its first event.
    assert thoughts == "The user wants a form first.\n\nNow the weather for Oslo.\n\nAnswer briefly.", thoughts
    (got,) = hook.received
    assert got.verified and got.body["toolName"] == "get_weather" and got.body["arguments"] == {"city": "Oslo"}

    requests = [(await fake_openai.nth_request(n)).json() for n in (1, 2, 3)]
    asked = {"type": "message", "role": "user", "content": "Weather?"}
    form_call = {
        "type": "function_call",
        "call_id": "call_form",
        "name": "ui_show_form",
        "arguments": '{"title": "City"}',
    }
    wx_call = {"type": "function_call", "call_id": "call_wx", "name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert requests[0]["input"] == [asked]
    assert requests[1]["input"][:3] == [asked, first_reasoning, {**form_call, "id": "fc_form1"}]
    (form_output,) = requests[1]["input"][3:]
    assert form_output["type"] == "function_call_output" and form_output["call_id"] == "call_form"
    assert json.loads(form_output["output"]) == FORM_RESULT
    assert requests[2]["input"][:6] == [*requests[1]["input"], second_reasoning, {**wx_call, "id": "fc_wx2"}]
    (wx_output,) = requests[2]["input"][6:]
    assert wx_output["call_id"] == "call_wx" and json.loads(wx_output["output"]) == {"city": "Oslo", "celsius": 21}
    for sent in requests:
        assert sent["instructions"] == "Be brief." and sent["store"] is False
        assert sent["include"] == ["reasoning.encrypted_content"] and sent["reasoning"] == {"summary": "auto"}
        assert [tool["name"] for tool in sent["tools"]] == ["ui_show_form", "get_weather"]
