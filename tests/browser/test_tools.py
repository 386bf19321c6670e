"""A page answers the model's ui_* tool call with client.onToolCall, in Chromium against the real server.

The fake OpenAI is scripted with two turns: the first calls ``ui_show_form``, the second answers in
text. The page's handler puts a form in the DOM and returns its result; the test then reads the
fake's second request for the call and the page's result in OpenAI's shape, and the page's own
log for the rest of the stream. Over a WebSocket the answer is a toolResult frame; over SSE it is
POST /llm/tool-response, which the test sees the page make.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.conftest import OpenPage, log_of, start_client, wait_in_page
from tests.conftest import PROVIDER_KEY, Server
from tests.fakes.openai_server import FakeOpenAI, StreamReply, text_stream, tool_call_stream

pytestmark = pytest.mark.anyio

ACTION = "assistantReceiveResultsStream"
CALL_ID = "call_form1"
SHOW_FORM = {
    "type": "function",
    "function": {
        "name": "ui_show_form",
        "description": "Show the user a form",
        "parameters": {"type": "object", "properties": {"title": {"type": "string"}}},
    },
}
RESULT = {"success": True, "message": "form shown", "data": {"shown": True}}

# The page's tool: the handler of the docs' example, rendering into the DOM.
SHOW_FORM_HANDLER = """(name) => {
  window.clients[name].onToolCall("show_form", (args, call) => {
    const form = document.createElement("form");
    form.className = "tool-form";
    form.dataset.toolCallId = call.toolCallId;
    const title = document.createElement("h2");
    title.textContent = args.title;
    form.append(title);
    document.body.append(form);
    return { success: true, message: "form shown", data: { shown: true } };
  });
}"""


async def start_stream(server: Server) -> str:
    body = {
        "apiKey": server.api_key,
        "channels": ["room"],
        "actionName": ACTION,
        "service": "openai",
        "payload": {
            "apiKey": PROVIDER_KEY,
            "stream": True,
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "Help me sign up"}],
            "tools": [SHOW_FORM],
        },
    }
    response = await server.post("/stream/create", body)
    assert response.status_code == 200, response.text
    return response.json()["streamId"]


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_a_page_shows_the_form_the_model_asked_for_and_its_answer_continues_the_stream(
    server: Server, fake_openai: FakeOpenAI, open_page: OpenPage, transport: str
) -> None:
    fake_openai.enqueue(
        StreamReply([tool_call_stream([(CALL_ID, "ui_show_form", '{"title":"Hi"}')])]),
        StreamReply([text_stream(["The form ", "is on ", "your screen."])]),
    )
    page = await open_page(server.url)
    posts: list[dict[str, Any]] = []
    page.on("request", lambda r: r.method == "POST" and posts.append({"url": r.url, "body": r.post_data_json}))
    await start_client(page, server.app_id, ["room"], transport)
    await page.evaluate(SHOW_FORM_HANDLER, "a")
    stream_id = await start_stream(server)

    form = await page.wait_for_selector("form.tool-form h2", timeout=10_000)
    assert await form.text_content() == "Hi"

    follow_up = (await fake_openai.nth_request(2, timeout=10)).json()
    (assistant,) = [m for m in follow_up["messages"] if m.get("tool_calls")]
    assert assistant["role"] == "assistant"
    assert [(c["id"], c["function"]["name"]) for c in assistant["tool_calls"]] == [(CALL_ID, "ui_show_form")]
    (tool,) = [m for m in follow_up["messages"] if m["role"] == "tool"]
    assert tool["tool_call_id"] == CALL_ID
    assert json.loads(tool["content"]) == RESULT

    await wait_in_page(page, "log.events.some((e) => e.type === 'end')")
    log = await log_of(page)
    events = log["events"]
    assert [e["seq"] for e in events] == list(range(len(events))), "seq goes on across the tool round"
    assert {e["streamId"] for e in events} == {stream_id}
    assert [e["type"] for e in events].count("end") == 1 and events[-1]["type"] == "end"
    (call,) = [e for e in events if e["type"] == "tool_call"]
    assert call["action"] == "llmToolCall" and call["toolName"] == "show_form", "on() saw the call too"
    after = events[events.index(call) + 1 :]
    assert "".join(e["content"] for e in after if e["type"] == "delta") == "The form is on your screen."
    assert events[-1]["finish_reason"] == "stop" and events[-1]["text"] == "The form is on your screen."
    assert await page.locator("form.tool-form").count() == 1, "the handler ran once"

    answers = [p for p in posts if p["url"].endswith("/llm/tool-response")]
    if transport == "websocket":
        assert answers == [], "a WebSocket page answers on its socket"
    else:
        assert answers == [{"url": server.url + "/llm/tool-response", "body": {
            "streamId": stream_id, "toolCallId": call["toolCallId"], "result": RESULT}}]  # fmt: skip
    assert log["errors"] == [] and log["gaps"] == [] and page.failures == []
