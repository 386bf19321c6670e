"""The tool loop against the fake Anthropic and Gemini APIs: the follow-up turn carries the calls and
the page's results in each provider's own format (``tool_use``/``tool_result`` blocks with the signed
thinking kept; ``functionCall``/``functionResponse`` parts with the thought signature kept), and
``providerArgs`` land where each provider reads them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import Server, ServerFactory, WSClient, assert_well_formed
from tests.fakes import anthropic_server as claude
from tests.fakes import gemini_server as gemini
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.openai_server import StreamReply

pytestmark = pytest.mark.anyio

FORM_TOOL = {
    "type": "function",
    "function": {
        "name": "ui_show_form",
        "description": "Show a sign-up form",
        "parameters": {"type": "object", "properties": {"title": {"type": "string"}}},
    },
}
RESULT = {"success": True, "message": "The form is shown", "data": {"fields": 3}}


@pytest.fixture
async def fakes(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeAnthropic, FakeGemini]]:
    async with FakeAnthropic() as anthropic, FakeGemini() as google:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic.base_url)
        monkeypatch.setenv("GEMINI_BASE_URL", google.base_url)
        yield anthropic, google


@pytest.fixture
async def server(start_server: ServerFactory, fakes: tuple[FakeAnthropic, FakeGemini]) -> Server:
    return await start_server()


def query(server: Server, provider: str, model: str, **payload: Any) -> dict[str, Any]:
    return {
        "apiKey": server.api_key,
        "channels": ["room"],
        "actionName": "onLlmMessage",
        "payload": {
            "provider": provider,
            "apiKey": "sk-ant-api03-FakeKeyForToolLoop0123456789"
            if provider == "anthropic"
            else "AIzaSyFakeKey01234567890123456789",
            "stream": True,
            "model": model,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sign me up"}],
            "tools": [FORM_TOOL],
            **payload,
        },
    }


async def answer_the_call(server: Server, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Start the stream, answer its one ui_show_form call from a page, and return every event."""
    page: WSClient = await server.ws(channels=("room",))
    response = await server.post("/llm/query", body)
    assert response.status_code == 200, response.text
    stream_id = response.json()["data"]["streamId"]
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] != "tool_call":
        frame = await page.recv()
        if frame["op"] == "message":
            events += [a["options"] for a in frame["message"]["actions"]]
    call = events[-1]
    assert call["toolName"] == "show_form" and call["arguments"] == {"title": "Welcome"}
    reply = await page.request({"op": "toolResult", "toolCallId": call["toolCallId"], "result": RESULT, "id": 1})
    assert reply["accepted"] is True
    events += await page.stream_events()
    assert_well_formed(events, stream_id)
    return events


async def test_anthropic_gets_tool_use_and_tool_result_blocks_with_its_thinking_kept(
    server: Server, fakes: tuple[FakeAnthropic, FakeGemini]
) -> None:
    fake = fakes[0]
    thinking_then_call = b"".join(
        [
            claude.message_start(),
            claude.block_start(0, {"type": "thinking", "thinking": ""}),
            claude.block_delta(0, {"type": "thinking_delta", "thinking": "The user wants a form."}),
            claude.block_delta(0, {"type": "signature_delta", "signature": "EqQBCkYIBRgCKkBsig=="}),
            claude.block_stop(0),
            claude.block_start(1, {"type": "tool_use", "id": "toolu_01A", "name": "ui_show_form", "input": {}}),
            claude.block_delta(1, {"type": "input_json_delta", "partial_json": '{"title": '}),
            claude.block_delta(1, {"type": "input_json_delta", "partial_json": '"Welcome"}'}),
            claude.block_stop(1),
            claude.message_delta("tool_use", 40),
            claude.message_stop(),
        ]
    )
    fake.enqueue(StreamReply([thinking_then_call]), StreamReply([claude.text_stream(["Your form ", "is open."])]))
    body = query(server, "anthropic", "claude-sonnet-4-5", providerArgs={"top_k": 5, "stop": "END"})
    events = await answer_the_call(server, body)
    assert events[-1]["text"] == "Your form is open." and events[-1]["finish_reason"] == "stop"

    first, follow_up = fake.requests[0].json(), (await fake.nth_request(2)).json()
    assert first["top_k"] == 5 and first["stop_sequences"] == ["END"]  # providerArgs, after translation
    assert first["tools"] == [
        {
            "name": "ui_show_form",
            "description": "Show a sign-up form",
            "input_schema": FORM_TOOL["function"]["parameters"],
        }
    ]
    assert follow_up["system"] == "Be brief."
    user, assistant, results = follow_up["messages"]
    assert user == {"role": "user", "content": "Sign me up"}
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "The user wants a form.", "signature": "EqQBCkYIBRgCKkBsig=="},
            {"type": "tool_use", "id": "toolu_01A", "name": "ui_show_form", "input": {"title": "Welcome"}},
        ],
    }
    (block,) = results["content"]
    assert results["role"] == "user" and block["type"] == "tool_result" and block["tool_use_id"] == "toolu_01A"
    assert json.loads(block["content"]) == RESULT


async def test_gemini_gets_function_call_and_response_parts_with_the_thought_signature_kept(
    server: Server, fakes: tuple[FakeAnthropic, FakeGemini]
) -> None:
    fake = fakes[1]
    fake.enqueue(
        gemini.stream_reply([gemini.function_call_stream([("ui_show_form", {"title": "Welcome"})])]),
        gemini.stream_reply([gemini.text_stream(["Your form ", "is open."])]),
    )
    body = query(server, "gemini", "gemini-2.5-flash", providerArgs={"temperature": 0.1, "top_k": 4})
    events = await answer_the_call(server, body)
    assert events[-1]["text"] == "Your form is open."

    first, follow_up = fake.requests[0].json(), (await fake.nth_request(2)).json()
    assert first["generationConfig"]["temperature"] == 0.1 and first["generationConfig"]["topK"] == 4
    user, model, response = follow_up["contents"]
    assert user == {"role": "user", "parts": [{"text": "Sign me up"}]}
    (call,) = model["parts"]
    assert model["role"] == "model" and call["functionCall"]["name"] == "ui_show_form"
    assert call["functionCall"]["args"] == {"title": "Welcome"}
    assert call["thoughtSignature"] == "CiQB0e2Kb3FakeSignature+Zm9vYmFy"  # sent back as Gemini gave it
    (part,) = response["parts"]
    assert response["role"] == "user" and part["functionResponse"]["name"] == "ui_show_form"
    assert part["functionResponse"]["response"] == RESULT
