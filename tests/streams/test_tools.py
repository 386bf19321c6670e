"""The tool loop with OpenAI's wire format: frontend ui_* tools answered by a page (WebSocket or
POST /llm/tool-response), backend tools by the app's webhook, in one stream whose seq goes on.

The fake OpenAI records every request, so each test reads the follow-up turn's request and checks
the calls and results are there in OpenAI's own shape (assistant ``tool_calls`` + ``tool`` messages).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.conftest import PROVIDER_KEY, Server, ServerFactory, WSClient, assert_well_formed
from tests.fakes.openai_server import FakeOpenAI, JsonReply, StreamReply, completion, text_stream, tool_call_stream
from tests.fakes.webhook_server import WebhookReceiver

pytestmark = pytest.mark.anyio

ACTION = "onLlmMessage"


def function(name: str, **properties: Any) -> dict[str, Any]:
    schema = {"type": "object", "properties": {k: {"type": v} for k, v in properties.items()}}
    return {"type": "function", "function": {"name": name, "description": f"{name} tool", "parameters": schema}}


SHOW_FORM = function("ui_show_form", title="string")
WEATHER = function("get_weather", city="string")


def query(server: Server, tools: list[dict[str, Any]], stream: bool = True, **top: Any) -> dict[str, Any]:
    """An /llm/query body as the reference documents it."""
    return {
        "apiKey": server.api_key,
        "channels": ["room"],
        "actionName": ACTION,
        "payload": {
            "provider": "openai",
            "apiKey": PROVIDER_KEY,
            "stream": stream,
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "Help me sign up"}],
            "tools": tools,
        },
        **top,
    }


async def started(server: Server, body: dict[str, Any]) -> str:
    response = await server.post("/llm/query", body)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["success"] is True and reply["data"]["message"] == "Streaming setup complete", reply
    return reply["data"]["streamId"]


async def events_until(client: WSClient, kind: str, count: int = 1) -> list[dict[str, Any]]:
    """Stream events up to and including the ``count``-th of type ``kind``."""
    events: list[dict[str, Any]] = []
    while sum(e["type"] == kind for e in events) < count:
        frame = await client.recv()
        if frame["op"] == "message":
            events += [action["options"] for action in frame["message"]["actions"]]
    return events


async def answer(client: WSClient, tool_call_id: str, result: dict[str, Any], rid: str) -> bool:
    reply = await client.request({"op": "toolResult", "toolCallId": tool_call_id, "result": result, "id": rid})
    assert reply["op"] == "answered" and reply["toolCallId"] == tool_call_id, reply
    return reply["accepted"]


async def point_webhook(server: Server, hook: WebhookReceiver) -> None:
    """Set the app's webhook, as ``apps update --webhook`` does, and give the receiver the secret shown once."""
    secret: list[str | None] = []

    async def point(store: Any) -> None:
        secret.append(await store.set_webhook(server.app_id, hook.url))

    await server.change_app(point)
    assert secret[0] is not None and secret[0].startswith("whsec_")
    hook.secret = secret[0]


def tool_messages(request_body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in request_body["messages"] if m["role"] == "tool"]


async def test_a_page_answers_ui_show_form_over_its_websocket_and_the_answer_continues_the_stream(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(
        StreamReply([tool_call_stream([("call_form1", "ui_show_form", '{"title": "Sign up"}')])]),
        StreamReply([text_stream(["The form ", "is on your screen."])]),
    )
    page = await server.ws(channels=("room",))
    stream_id = await started(server, query(server, [SHOW_FORM]))

    before = await events_until(page, "tool_call")
    call = before[-1]
    assert call["action"] == "llmToolCall" and call["toolName"] == "show_form"
    assert call["arguments"] == {"title": "Sign up"}
    assert call["functions"] == [{"name": "show_form", "arguments": {"title": "Sign up"}}]
    assert call["timeoutMs"] == 90_000 and call["toolCallId"].startswith(f"tc_{stream_id}_")
    result = {"success": True, "message": "The form is shown", "data": {"fields": 3}}
    assert await answer(page, call["toolCallId"], result, "a1") is True

    events = before + await page.stream_events()
    assert_well_formed(events, stream_id)
    assert [e["type"] for e in events] == ["threadInfo", "function_call", "tool_call", "delta", "delta", "end"]
    end = events[-1]
    assert end["finish_reason"] == "stop" and end["text"] == "The form is on your screen."
    # Usage is the sum of both turns: the fake counts 12 prompt tokens a turn.
    assert end["usage"]["prompt_tokens"] == 24

    follow_up = (await fake_openai.nth_request(2)).json()
    assert follow_up["messages"][0] == {"role": "user", "content": "Help me sign up"}
    assert follow_up["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_form1",
                "type": "function",
                "function": {"name": "ui_show_form", "arguments": '{"title": "Sign up"}'},
            }
        ],
    }
    (tool,) = tool_messages(follow_up)
    assert tool["tool_call_id"] == "call_form1" and json.loads(tool["content"]) == result
    assert follow_up["tools"] == [SHOW_FORM]

    # The stream is over: an answer now is late, and changes nothing.
    assert await answer(page, call["toolCallId"], result, "a2") is False
    status = (await server.post("/stream/status", {"apiKey": server.api_key, "streamId": stream_id})).json()
    (made,) = status["tools"]
    assert made["name"] == "ui_show_form" and made["kind"] == "frontend" and made["outcome"] == "ok"
    assert made["round"] == 1 and made["arguments"] == {"title": "Sign up"} and made["durationMs"] >= 0


async def test_the_same_answered_through_post_llm_tool_response(server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(
        StreamReply([tool_call_stream([("call_1", "ui_show_form", '{"title": "x"}')])]),
        StreamReply([text_stream(["Done."])]),
    )
    watcher = await server.ws(channels=("room",))
    stream_id = await started(server, query(server, [SHOW_FORM]))
    call = (await events_until(watcher, "tool_call"))[-1]

    other = "0" * 32  # a stream id that is not this call's
    forged = {"streamId": other, "toolCallId": call["toolCallId"], "result": {"success": True, "message": "x"}}
    refused = await server.post("/llm/tool-response", forged)
    assert refused.status_code == 404 and refused.json()["error"]["type"] == "not_found"

    # The reference's llmToolCallResponse sends the result's fields flat; both shapes are taken.
    body = {"streamId": stream_id, "toolCallId": call["toolCallId"], "success": False, "message": "User closed it"}
    taken = await server.post("/llm/tool-response", body)
    assert taken.status_code == 200 and taken.json() == {
        "success": True,
        "toolCallId": call["toolCallId"],
        "accepted": True,
    }
    second = await server.post("/llm/tool-response", {**body, "message": "second"})
    assert second.status_code == 404

    events = await watcher.stream_events()
    assert events[-1]["text"] == "Done."
    assert events[0]["seq"] == call["seq"] + 1  # seq goes on across the turns
    follow_up = (await fake_openai.nth_request(2)).json()
    (tool,) = tool_messages(follow_up)
    assert json.loads(tool["content"]) == {"success": False, "message": "User closed it"}


async def test_two_parallel_calls_wait_together_and_only_the_first_answer_to_each_counts(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    calls = [("call_a", "ui_show_form", '{"title": "A"}'), ("call_b", "ui_pick_date", "{}")]
    fake_openai.enqueue(StreamReply([tool_call_stream(calls)]), StreamReply([text_stream(["Both done."])]))
    page = await server.ws(channels=("room",))
    elsewhere = await server.ws(channels=("lobby",))  # same app, not in the stream's channels
    other_app = await server.ws(app_id=server.other_app_id, channels=("room",))  # another app's "room"
    await started(server, query(server, [SHOW_FORM, function("ui_pick_date")]))

    first, second = [e for e in await events_until(page, "tool_call", 2) if e["type"] == "tool_call"]
    assert (first["toolName"], second["toolName"]) == ("show_form", "pick_date")
    ok = {"success": True, "message": "ok"}
    assert await answer(elsewhere, first["toolCallId"], {**ok, "message": "forged"}, "f1") is False
    assert await answer(other_app, first["toolCallId"], {**ok, "message": "forged"}, "f2") is False
    # Answered in the other order; the second answer to B is ignored.
    assert await answer(page, second["toolCallId"], {**ok, "message": "date picked"}, "b1") is True
    assert await answer(page, second["toolCallId"], {**ok, "message": "again"}, "b2") is False
    assert await answer(page, first["toolCallId"], {**ok, "message": "form shown"}, "a1") is True

    assert (await page.stream_events())[-1]["text"] == "Both done."
    follow_up = (await fake_openai.nth_request(2)).json()
    assert [c["id"] for c in follow_up["messages"][1]["tool_calls"]] == ["call_a", "call_b"]
    results = [(m["tool_call_id"], json.loads(m["content"])["message"]) for m in tool_messages(follow_up)]
    assert results == [("call_a", "form shown"), ("call_b", "date picked")]


async def test_a_tool_that_never_answers_gives_the_model_the_timeout_result(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(
        StreamReply([tool_call_stream([("call_1", "ui_show_form", "{}")])]),
        StreamReply([text_stream(["Sorry, the form did not open."])]),
    )
    page = await server.ws(channels=("room",))
    stream_id = await started(server, query(server, [SHOW_FORM], toolTimeout=1))
    call = (await events_until(page, "tool_call"))[-1]
    assert call["timeoutMs"] == 1000
    waited = time.monotonic()
    events = await page.stream_events()
    assert time.monotonic() - waited >= 0.9
    assert events[-1]["finish_reason"] == "stop"
    (tool,) = tool_messages((await fake_openai.nth_request(2)).json())
    assert json.loads(tool["content"]) == {
        "success": False,
        "message": "The tool ui_show_form did not respond within 1 s",
    }
    assert await answer(page, call["toolCallId"], {"success": True, "message": "late"}, "late") is False
    status = (await server.post("/stream/status", {"apiKey": server.api_key, "streamId": stream_id})).json()
    assert [t["outcome"] for t in status["tools"]] == ["timeout"]


async def test_a_tool_timeout_outside_its_bounds_is_refused(server: Server) -> None:
    for seconds in (0, 0.5, 601):
        response = await server.post("/llm/query", query(server, [SHOW_FORM], toolTimeout=seconds))
        assert response.status_code == 400, response.text
        assert response.json()["error"]["details"][0]["field"] == "toolTimeout"


async def test_stop_while_waiting_for_a_tool_ends_the_stream_stopped(server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(StreamReply([tool_call_stream([("call_1", "ui_show_form", "{}")])]))
    page = await server.ws(channels=("room",))
    stream_id = await started(server, query(server, [SHOW_FORM]))
    call = (await events_until(page, "tool_call"))[-1]
    stopped = await server.post("/llm/query/stop", {"streamId": stream_id})
    assert stopped.json() == {"status": "stopped", "streamId": stream_id}
    (end,) = await page.stream_events()
    assert end["type"] == "end" and end["finish_reason"] == "stopped" and end["seq"] == call["seq"] + 1
    assert await answer(page, call["toolCallId"], {"success": True, "message": "too late"}, "x") is False
    assert len(fake_openai.requests) == 1  # no second turn


async def test_a_backend_tool_is_answered_by_the_signed_webhook(server: Server, fake_openai: FakeOpenAI) -> None:
    async def weather(body: dict[str, Any]) -> tuple[int, Any]:
        return 200, {"city": body["arguments"]["city"], "celsius": 21}

    async with WebhookReceiver(answer=weather) as hook:
        await point_webhook(server, hook)
        fake_openai.enqueue(
            StreamReply([tool_call_stream([("call_w", "get_weather", '{"city": "Oslo"}')])]),
            StreamReply([text_stream(["It is 21 °C in Oslo."])]),
        )
        page = await server.ws(channels=("room",))
        stream_id = await started(server, query(server, [WEATHER]))
        events = await page.stream_events()

    assert [e["type"] for e in events] == ["threadInfo", "function_call", "delta", "end"]
    assert events[-1]["text"] == "It is 21 °C in Oslo."
    (got,) = hook.received
    assert got.verified, "the signature must check out with the app's secret"
    assert got.headers["x-bfstream-event"] == "tool_call"
    assert got.body["toolName"] == "get_weather" and got.body["arguments"] == {"city": "Oslo"}
    assert got.body["streamId"] == stream_id and got.body["appId"] == server.app_id
    (tool,) = tool_messages((await fake_openai.nth_request(2)).json())
    assert tool["tool_call_id"] == "call_w" and json.loads(tool["content"]) == {"city": "Oslo", "celsius": 21}


async def test_parallel_backend_calls_run_concurrently_and_a_failing_webhook_is_a_result_not_a_crash(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    async def slow(body: dict[str, Any]) -> tuple[int, Any]:
        await asyncio.sleep(0.4)  # the back end's own work
        if body["arguments"].get("city") == "Nowhere":
            return 500, {"error": "no such city"}
        return 200, {"celsius": 5}

    async with WebhookReceiver(answer=slow) as hook:
        await point_webhook(server, hook)
        calls = [("c1", "get_weather", '{"city": "Oslo"}'), ("c2", "get_weather", '{"city": "Nowhere"}')]
        fake_openai.enqueue(StreamReply([tool_call_stream(calls)]), StreamReply([text_stream(["Partly."])]))
        page = await server.ws(channels=("room",))
        await started(server, query(server, [WEATHER]))
        assert (await page.stream_events())[-1]["text"] == "Partly."

    first, second = hook.received
    assert abs(first.at - second.at) < 0.3, "both calls reached the back end at once"
    oslo, nowhere = tool_messages((await fake_openai.nth_request(2)).json())
    assert json.loads(oslo["content"]) == {"celsius": 5}
    failed = json.loads(nowhere["content"])
    assert failed["success"] is False and "HTTP 500" in failed["message"]


async def test_without_a_webhook_a_backend_call_ends_the_stream_as_before(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(StreamReply([tool_call_stream([("call_w", "get_weather", '{"city": "Oslo"}')])]))
    page = await server.ws(channels=("room",))
    await started(server, query(server, [WEATHER, SHOW_FORM]))
    events = await page.stream_events()
    assert [e["type"] for e in events] == ["threadInfo", "function_call", "end"]
    assert events[-1]["finish_reason"] == "tool_calls"
    assert events[1]["content"]["functions"][0]["name"] == "get_weather"
    assert len(fake_openai.requests) == 1


async def test_max_rounds_ends_a_model_that_keeps_calling_tools(
    start_server: ServerFactory, fake_openai: FakeOpenAI
) -> None:
    server = await start_server(tools={"max_rounds": 2, "allow_private_webhooks": True})
    for i in range(3):
        fake_openai.enqueue(StreamReply([tool_call_stream([(f"call_{i}", "ui_show_form", "{}")])]))
    page = await server.ws(channels=("room",))
    await started(server, query(server, [SHOW_FORM]))
    for round_number in range(2):
        call = [e for e in await events_until(page, "tool_call") if e["type"] == "tool_call"][-1]
        assert await answer(page, call["toolCallId"], {"success": True, "message": "ok"}, f"r{round_number}")
    events = await page.stream_events()
    assert [e["type"] for e in events] == ["function_call", "end"]  # the third round's calls go unanswered
    assert events[-1]["finish_reason"] == "tool_calls" and len(fake_openai.requests) == 3


async def test_stream_create_gains_the_same_loop(server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(
        StreamReply([tool_call_stream([("call_1", "ui_show_form", "{}")])]), StreamReply([text_stream(["Shown."])])
    )
    page = await server.ws(channels=("room",))
    body = {
        "apiKey": server.api_key,
        "channels": ["room"],
        "actionName": ACTION,
        "service": "openAI",
        "payload": {"apiKey": PROVIDER_KEY, "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
    }
    body["payload"]["tools"] = [SHOW_FORM]
    response = await server.post("/stream/create", body)
    assert response.status_code == 200 and response.json()["message"] == "Streaming setup complete"
    call = (await events_until(page, "tool_call"))[-1]
    assert await answer(page, call["toolCallId"], {"success": True, "message": "shown"}, "a")
    assert (await page.stream_events())[-1]["text"] == "Shown."


# --- /llm/query answers, field by field ----------------------------------------------------------------


async def test_llm_query_without_streaming_runs_backend_tools_and_answers_in_the_reference_shape(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    calling = completion("")
    calling["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_w", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}
        ],
    }
    calling["choices"][0]["finish_reason"] = "tool_calls"
    fake_openai.enqueue(JsonReply(200, calling), JsonReply(200, completion("Rome is sunny.")))

    async def sunny(body: dict[str, Any]) -> tuple[int, Any]:
        return 200, {"sky": "clear"}

    async with WebhookReceiver(answer=sunny) as hook:
        await point_webhook(server, hook)
        response = await server.post("/llm/query", query(server, [WEATHER], stream=False))

    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["success"] is True and reply["actionName"] == ACTION
    (choice,) = reply["data"]["choices"]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"] == "Rome is sunny."
    assert choice["finish_reason"] == "stop"
    usage = reply["data"]["usage"]
    assert set(usage) == {"prompt_tokens", "completion_tokens", "total_tokens"} and usage["prompt_tokens"] == 24
    assert hook.received[0].body["streamId"] is None
    (tool,) = tool_messages((await fake_openai.nth_request(2)).json())
    assert json.loads(tool["content"]) == {"sky": "clear"}


async def test_llm_query_without_action_name_and_streaming_off_omits_it(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(JsonReply(200, completion("Hi.")))
    body = query(server, [], stream=False)
    del body["actionName"], body["channels"]
    response = await server.post("/llm/query", body)
    assert response.status_code == 200 and set(response.json()) == {"success", "data"}


async def test_llm_query_failures_say_success_false_with_the_action_name(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    bad_key = await server.post("/llm/query", {**query(server, []), "apiKey": "BFAPI_wrong-key-entirely"})
    assert bad_key.status_code == 401
    assert bad_key.json() == {
        "success": False,
        "actionName": ACTION,
        "error": {"message": "Invalid or missing apiKey", "code": 401, "type": "unauthorized", "details": None},
    }
    no_messages = query(server, [])
    del no_messages["payload"]["messages"]
    invalid = await server.post("/llm/query", no_messages)
    assert invalid.status_code == 400 and invalid.json()["actionName"] == ACTION
    assert invalid.json()["error"]["details"][0]["field"] == "payload.messages"

    ui_without_stream = await server.post("/llm/query", query(server, [SHOW_FORM], stream=False))
    assert ui_without_stream.status_code == 400
    assert "stream: true" in ui_without_stream.json()["error"]["message"]

    no_channels = query(server, [])
    no_channels["channels"] = []
    assert (await server.post("/llm/query", no_channels)).status_code == 400

    fake_openai.enqueue(JsonReply(401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}))
    refused = await server.post("/llm/query", query(server, [], stream=False))
    assert refused.status_code == 502
    error = refused.json()["error"]
    assert refused.json()["success"] is False and error["code"] == 401
    assert "Incorrect API key" in error["details"]


async def test_provider_args_and_tool_choice_variants_reach_openai(server: Server, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(JsonReply(200, completion("ok")))
    body = query(server, [{"name": "get_weather", "description": "flat, as the reference shows it"}], stream=False)
    body["payload"]["toolChoice"] = {"type": "function", "name": "get_weather"}
    body["payload"]["providerArgs"] = {"temperature": 0.2, "response_format": {"type": "text"}}
    assert (await server.post("/llm/query", body)).status_code == 200
    sent = (await fake_openai.nth_request(1)).json()
    assert sent["temperature"] == 0.2 and sent["response_format"] == {"type": "text"}
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": body["payload"]["tools"][0]["description"]},
        }
    ]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert "toolChoice" not in sent and "providerArgs" not in sent and "provider" not in sent


async def test_an_app_that_keeps_no_text_keeps_no_tool_arguments_either(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    await server.change_app(lambda store: store.set_retain_text(server.app_id, False))
    fake_openai.enqueue(
        StreamReply([tool_call_stream([("call_1", "ui_show_form", '{"title": "private"}')])]),
        StreamReply([text_stream(["Done."])]),
    )
    page = await server.ws(channels=("room",))
    stream_id = await started(server, query(server, [SHOW_FORM]))
    call = (await events_until(page, "tool_call"))[-1]
    assert await answer(page, call["toolCallId"], {"success": True, "message": "ok"}, "a")
    await page.stream_events()
    status = (await server.post("/stream/status", {"apiKey": server.api_key, "streamId": stream_id})).json()
    assert status["text"] is None
    (made,) = status["tools"]
    assert made["outcome"] == "ok" and "arguments" not in made


async def test_provider_args_cannot_take_the_stream_or_the_conversation_over(server: Server) -> None:
    body = query(server, [])
    body["payload"]["providerArgs"] = {"stream": False, "messages": [], "temperature": 1}
    response = await server.post("/llm/query", body)
    assert response.status_code == 400, response.text
    fields = [d["field"] for d in response.json()["error"]["details"]]
    assert fields == ["payload.providerArgs.messages", "payload.providerArgs.stream"]


async def test_a_webhook_address_is_checked_again_at_each_call(
    start_server: ServerFactory, fake_openai: FakeOpenAI
) -> None:
    """Set to loopback behind the CLI's back (or a name that now resolves there): refused at call time."""
    server = await start_server(tools={"allow_private_webhooks": False})
    async with WebhookReceiver() as hook:
        await server.change_app(lambda store: store.set_webhook(server.app_id, hook.url))
        fake_openai.enqueue(
            StreamReply([tool_call_stream([("call_w", "get_weather", '{"city": "Oslo"}')])]),
            StreamReply([text_stream(["No weather today."])]),
        )
        page = await server.ws(channels=("room",))
        await started(server, query(server, [WEATHER]))
        assert (await page.stream_events())[-1]["text"] == "No weather today."
        assert hook.received == []
    (tool,) = tool_messages((await fake_openai.nth_request(2)).json())
    result = json.loads(tool["content"])
    assert result["success"] is False and "loopback, private or link-local" in result["message"]


async def test_a_tool_the_request_did_not_offer_is_never_run(server: Server, fake_openai: FakeOpenAI) -> None:
    """A model (or a prompt injection talking it into it) cannot reach a page's other named actions,
    nor the back end's other tools: the model reads that there is no such tool."""
    calls = [("c1", "ui_delete_everything", "{}"), ("c2", "delete_account", '{"user": "42"}')]
    fake_openai.enqueue(StreamReply([tool_call_stream(calls)]), StreamReply([text_stream(["I cannot."])]))
    async with WebhookReceiver() as hook:
        await server.change_app(lambda store: store.set_webhook(server.app_id, hook.url))
        page = await server.ws(channels=("room",))
        stream_id = await started(server, query(server, [SHOW_FORM]))
        events = await page.stream_events()
        assert hook.received == []
    assert "tool_call" not in [e["type"] for e in events] and events[-1]["text"] == "I cannot."
    results = [json.loads(m["content"]) for m in tool_messages((await fake_openai.nth_request(2)).json())]
    assert results == [
        {"success": False, "message": "The tool ui_delete_everything was not offered: there is no such tool"},
        {"success": False, "message": "The tool delete_account was not offered: there is no such tool"},
    ]
    status = (await server.post("/stream/status", {"apiKey": server.api_key, "streamId": stream_id})).json()
    assert [t["outcome"] for t in status["tools"]] == ["not_offered", "not_offered"]


async def test_ui_tools_in_provider_args_count_and_a_bare_ui_prefix_is_refused(server: Server) -> None:
    body = query(server, [], stream=False)
    body["payload"]["providerArgs"] = {"tools": [SHOW_FORM]}
    refused = await server.post("/llm/query", body)
    assert refused.status_code == 400 and "stream: true" in refused.json()["error"]["message"]
    bare = await server.post("/llm/query", query(server, [function("ui_")]))
    assert bare.status_code == 400 and "ui_<action>" in bare.json()["error"]["details"][0]["message"]
    blank = query(server, [])
    blank["actionName"] = "   "
    assert (await server.post("/llm/query", blank)).status_code == 400
