"""Tool answers in a fleet: the page that answers is connected to the instance that does not run the
stream, and its answer still reaches the owner and continues the stream."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakes.openai_server import FakeOpenAI, StreamReply, text_stream, tool_call_stream
from tests.fleet.conftest import Fleet

pytestmark = pytest.mark.anyio


async def test_answers_sent_to_the_instance_that_does_not_own_the_stream_continue_it(fleet: Fleet) -> None:
    async with FakeOpenAI() as fake:
        env = {"OPENAI_BASE_URL": fake.base_url}
        a, b = await fleet.start(**env), await fleet.start(**env)
        fake.enqueue(
            StreamReply([tool_call_stream([("call_1", "ui_show_form", '{"title": "A"}')])]),
            StreamReply([tool_call_stream([("call_2", "ui_confirm", "{}")])]),
            StreamReply([text_stream(["All ", "set."])]),
        )
        page = await b.ws(fleet.app_id, "room")
        body = {
            "apiKey": fleet.api_key,
            "channels": ["room"],
            "actionName": "onLlmMessage",
            "payload": {
                "provider": "openai",
                "apiKey": "sk-test-FleetToolKey0123456789",
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": "sign me up"}],
                "tools": [{"name": "ui_show_form"}, {"name": "ui_confirm"}],
            },
        }
        created = await fleet.post(a, "/llm/query", body)  # a owns the stream
        assert created.status_code == 200, created.text
        stream_id = created.json()["data"]["streamId"]

        events: list[dict[str, Any]] = []

        async def next_call() -> dict[str, Any]:
            while True:
                frame = await page.recv(timeout=10)
                if frame["op"] == "message":
                    events.extend(action["options"] for action in frame["message"]["actions"])
                    if events[-1]["type"] == "tool_call":
                        return events[-1]

        first = await next_call()
        frame = {"op": "toolResult", "toolCallId": first["toolCallId"], "result": {"success": True, "message": "shown"}}
        reply = await page.request({**frame, "id": "over-b"})
        assert reply["accepted"] is True  # taken by b, forwarded to a

        second = await next_call()
        answer = {"streamId": stream_id, "toolCallId": second["toolCallId"], "success": True, "message": "confirmed"}
        over_rest = await fleet.post(b, "/llm/tool-response", answer)
        assert over_rest.status_code == 200 and over_rest.json()["accepted"] is True
        again = await fleet.post(b, "/llm/tool-response", answer)
        assert again.status_code == 404  # the first answer won, wherever it arrived

        events += await page.stream_events(timeout=10)
        assert [e["seq"] for e in events] == list(range(len(events)))
        assert events[-1]["text"] == "All set." and events[-1]["finish_reason"] == "stop"
        final = (await fake.nth_request(3)).json()
        results = [json.loads(m["content"])["message"] for m in final["messages"] if m["role"] == "tool"]
        assert results == ["shown", "confirmed"]
