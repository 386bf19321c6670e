"""Lifecycle events (issue 19): an app's webhook hears how each of its streams ended, signed as the
tool calls are, with the request's metadata, once per delivery id however often it is retried."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bfstream.store.store import open_store
from tests.conftest import ServeProcess, Server, seed_body
from tests.fakes.openai_server import FakeOpenAI, StreamReply, chunk, sse, text_stream
from tests.fakes.webhook_server import WebhookReceiver
from tests.streams.test_lifecycle import finished, slow_stream
from tests.streams.test_tools import point_webhook

pytestmark = pytest.mark.anyio

METADATA = {"recordId": "FM-10442", "layout": "Answers", "nested": {"ok": True, "n": [1, 2]}}


async def subscribe(server: Server, hook: WebhookReceiver, events: list[str]) -> None:
    """``apps update --webhook URL --webhook-events ...``, as the CLI does it."""
    await point_webhook(server, hook)

    async def set_events(store: Any) -> None:
        await store.set_webhook_events(server.app_id, events)

    await server.change_app(set_events)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_completed_stream_sends_its_text_usage_and_metadata_once_per_delivery_id_through_a_500(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    handled: dict[str, dict[str, Any]] = {}
    answers: list[int] = []

    async def flaky(body: dict[str, Any]) -> tuple[int, Any]:
        """Fails the first time, as a back end restarting would; handles each delivery id once."""
        if not answers:
            answers.append(500)
            return 500, {"error": "restarting"}
        handled.setdefault(body["deliveryId"], body)
        answers.append(200)
        return 200, {}

    async with WebhookReceiver(answer=flaky) as hook:
        await subscribe(server, hook, ["stream.completed"])
        fake_openai.enqueue(StreamReply([text_stream(["Why do ", "programmers ", "prefer dark mode?"])]))
        created = await server.post("/stream/create", {**seed_body(server), "metadata": METADATA})
        assert created.status_code == 200, created.text
        stream_id = created.json()["streamId"]
        await until(lambda: answers == [500, 200])

    first, second = hook.received
    assert first.verified and second.verified  # signed as the tool calls are, with the app's secret
    delivery = f"{stream_id}.stream.completed"
    assert first.headers["x-bfstream-delivery"] == second.headers["x-bfstream-delivery"] == delivery
    assert first.headers["x-bfstream-event"] == "stream.completed"
    assert first.body == second.body
    assert list(handled) == [delivery]
    event = handled[delivery]
    record = await finished(server, stream_id)
    assert event["type"] == "stream.completed" and event["streamId"] == stream_id
    assert event["appId"] == server.app_id and event["metadata"] == METADATA
    assert event["text"] == "Why do programmers prefer dark mode?" == record["text"]
    assert event["usage"] == record["usage"] and event["usage"]["prompt_tokens"] > 0
    assert event["finishReason"] == "stop" and event["toolCalls"] == [] and event["error"] is None
    assert "reasoning" not in event  # not asked for


async def test_a_failed_stream_sends_stream_failed_and_an_unsubscribed_kind_sends_nothing(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    async with WebhookReceiver() as hook:
        await subscribe(server, hook, ["stream.failed"])
        fake_openai.enqueue(StreamReply([text_stream(["fine"])]))
        completed = (await server.post("/stream/create", seed_body(server))).json()["streamId"]
        await finished(server, completed)
        # The provider drops the connection after the first words: no retry, the stream fails.
        fake_openai.enqueue(StreamReply([sse(chunk({"content": "Half"}))], disconnect=True))
        body = {**seed_body(server), "metadata": {"job": 7}}
        failed = (await server.post("/stream/create", body)).json()["streamId"]
        await until(lambda: len(hook.received) >= 1)
        assert (await finished(server, failed))["status"] == "failed"

    [only] = hook.received
    assert only.verified and only.body["type"] == "stream.failed" and only.body["streamId"] == failed
    assert only.body["metadata"] == {"job": 7} and only.body["text"] == "Half"
    assert only.body["finishReason"] == "error" and only.body["error"]["code"] >= 500


async def test_a_stopped_stream_sends_stream_stopped(server: Server, fake_openai: FakeOpenAI) -> None:
    async with WebhookReceiver() as hook:
        await subscribe(server, hook, ["stream.completed", "stream.failed", "stream.stopped", "stream.interrupted"])
        fake_openai.enqueue(slow_stream())
        client = await server.ws(channels=("anonymous",))
        stream_id = (await server.post("/llm/query", _query(server))).json()["data"]["streamId"]
        while True:  # stopped once the answer is on its way
            frame = await client.recv()
            if frame["op"] == "message" and frame["message"]["actions"][0]["options"]["type"] == "delta":
                break
        assert (await server.post("/stream/stop", {"streamId": stream_id})).json()["status"] == "stopped"
        await until(lambda: len(hook.received) >= 1)

    [only] = hook.received
    assert only.body["type"] == "stream.stopped" and only.body["finishReason"] == "stopped"
    assert only.body["metadata"] == {"from": "llm/query"} and only.body["text"].startswith("part0 ")


def _query(server: Server) -> dict[str, Any]:
    body = seed_body(server)
    payload = {**body["payload"], "provider": "openai"}
    return {
        "apiKey": server.api_key, "channels": body["channels"], "actionName": body["actionName"],
        "payload": payload, "metadata": {"from": "llm/query"},
    }  # fmt: skip


async def test_an_app_not_subscribed_gets_no_event(server: Server, fake_openai: FakeOpenAI) -> None:
    async with WebhookReceiver() as hook:
        await point_webhook(server, hook)  # a webhook for tools, no events asked for
        fake_openai.enqueue(StreamReply([text_stream(["quiet"])]))
        stream_id = (await server.post("/stream/create", seed_body(server))).json()["streamId"]
        await finished(server, stream_id)
        # Another app's subscribed stream, sent after: once it has arrived, the first would have too.
        async with WebhookReceiver() as other:

            async def point(store: Any) -> None:
                other.secret = await store.set_webhook(server.other_app_id, other.url) or ""
                await store.set_webhook_events(server.other_app_id, ["stream.completed"])

            await server.change_app(point)
            body = {**seed_body(server), "apiKey": server.other_api_key}
            fake_openai.enqueue(StreamReply([text_stream(["loud"])]))
            assert (await server.post("/stream/create", body)).status_code == 200
            await until(lambda: len(other.received) == 1)
    assert hook.received == [] and other.received[0].body["text"] == "loud"


@pytest.mark.parametrize("path", ["/stream/create", "/llm/query"])
async def test_metadata_is_an_object_of_at_most_4_kib(server: Server, fake_openai: FakeOpenAI, path: str) -> None:
    body = seed_body(server) if path == "/stream/create" else _query(server)
    big = {"blob": "x" * 4096}
    refused = await server.post(path, {**body, "metadata": big})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["details"][0]["field"] == "metadata" and "4096 bytes" in error["details"][0]["message"]
    for wrong in (["a list"], "text", 3):
        answer = await server.post(path, {**body, "metadata": wrong})
        assert answer.status_code == 400 and "metadata" in json.dumps(answer.json()["error"]["details"])
    assert fake_openai.requests == []  # refused before the provider is called
    fits = {"blob": "x" * 4000}
    fake_openai.enqueue(StreamReply([text_stream(["ok"])]))
    assert (await server.post(path, {**body, "metadata": fits})).status_code == 200


async def test_a_stream_cut_short_by_a_drain_sends_stream_interrupted_before_the_server_exits(
    tmp_path: Path,
) -> None:
    """A drain that outlasts its time ends streams with an error; the back end hears ``stream.interrupted``
    (the request was fine, the server went away), sent before the process exits: retried too, when
    the back end's first answer is a 500."""
    answers: list[int] = []

    async def flaky(body: dict[str, Any]) -> tuple[int, Any]:
        answers.append(500 if not answers else 200)
        return answers[-1], {}

    async with WebhookReceiver(answer=flaky) as hook:
        server = await ServeProcess.start(
            tmp_path, BFSTREAM_SERVICES__ECHO__DELAY_MS="200", BFSTREAM_STREAMS__DRAIN_SECONDS="0.3",
            BFSTREAM_TOOLS__ALLOW_PRIVATE_WEBHOOKS="true",
        )  # fmt: skip
        store = await open_store(None, tmp_path)
        try:
            hook.secret = await store.set_webhook(str(server.app_id), hook.url) or ""
            await store.set_webhook_events(str(server.app_id), ["stream.interrupted"])
        finally:
            await store.close()
        client = await server.ws(server.app_id, "anonymous")
        body = {
            "apiKey": server.api_key, "channels": ["anonymous"], "actionName": "onStream", "service": "echo",
            "metadata": {"ticket": 12},
            "payload": {"model": "echo", "messages": [{"role": "user", "content": "one two three four five six"}]},
        }  # fmt: skip
        async with httpx.AsyncClient() as http:
            stream_id = (await http.post(server.url + "/stream/create", json=body)).json()["streamId"]
        while True:
            frame = await client.recv()
            if frame["op"] == "message" and frame["message"]["actions"][0]["options"]["type"] == "delta":
                break
        server.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.proc.wait(), 15) == 0
    assert answers == [500, 200]  # the retry went out before the server had exited
    first, only = hook.received
    assert first.headers["x-bfstream-delivery"] == only.headers["x-bfstream-delivery"]
    assert only.verified and only.body["type"] == "stream.interrupted" and only.body["streamId"] == stream_id
    assert only.body["metadata"] == {"ticket": 12} and only.body["error"]["code"] == 503
    assert "one two three four five six".startswith(only.body["text"]) and only.body["text"]


async def test_an_event_on_its_way_outlives_the_process_that_was_sending_it(tmp_path: Path) -> None:
    """Found by a black-box review: deliveries waited only in memory, so a sender killed while its
    back end was down lost the event. It is kept in the database until it goes through, and the next
    run (alone; in a fleet, another instance once the lease lapses) sends it, same delivery id."""
    down = True

    async def until_up(body: dict[str, Any]) -> tuple[int, Any]:
        return (503, {}) if down else (200, {})

    async with WebhookReceiver(answer=until_up) as hook:
        allow = {"BFSTREAM_TOOLS__ALLOW_PRIVATE_WEBHOOKS": "true"}
        server = await ServeProcess.start(tmp_path, **allow)
        store = await open_store(None, tmp_path)
        try:
            hook.secret = await store.set_webhook(str(server.app_id), hook.url) or ""
            await store.set_webhook_events(str(server.app_id), ["stream.completed"])
        finally:
            await store.close()
        body = {
            "apiKey": server.api_key, "channels": ["anonymous"], "actionName": "onStream", "service": "echo",
            "metadata": {"ticket": 7}, "payload": {"model": "echo", "messages": [{"role": "user", "content": "kept"}]},
        }  # fmt: skip
        async with httpx.AsyncClient() as http:
            stream_id = (await http.post(server.url + "/stream/create", json=body)).json()["streamId"]
        await until(lambda: len(hook.received) >= 1)  # its first try met a back end that is down
        server.proc.send_signal(signal.SIGKILL)
        await server.proc.wait()
        tried = len(hook.received)
        down = False
        await ServeProcess.start(tmp_path, **allow)  # the next run finds it at start-up
        await until(lambda: len(hook.received) > tried)

    resent = hook.received[-1]
    assert resent.verified and resent.headers["x-bfstream-delivery"] == f"{stream_id}.stream.completed"
    assert hook.received[0].headers["x-bfstream-delivery"] == resent.headers["x-bfstream-delivery"]
    assert resent.body["type"] == "stream.completed" and resent.body["text"] == "kept"
    assert resent.body["metadata"] == {"ticket": 7}
    store = await open_store(None, tmp_path)
    try:  # delivered: nothing is left on its way
        async with asyncio.timeout(10):
            while await store.delivery_owners():
                await asyncio.sleep(0.05)
    finally:
        await store.close()
