"""Lifecycle events in a fleet (issue 19): a stream whose instance is SIGKILLed mid-answer is ended by
another instance, and that instance tells the app's webhook ``stream.interrupted``, with the request's
metadata, which it read from the stream's record since the dead instance cannot send anything."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from bfstream.store.store import open_store
from tests.fakes.webhook_server import WebhookReceiver
from tests.fleet.conftest import Fleet

pytestmark = pytest.mark.anyio


async def test_the_instance_that_ends_a_killed_owners_stream_sends_stream_interrupted(fleet: Fleet) -> None:
    async with WebhookReceiver() as hook:
        store = await open_store(fleet.env["BFSTREAM_DATABASE_URL"], fleet.root)
        try:
            secret = await store.set_webhook(fleet.app_id, hook.url)
            await store.set_webhook_events(fleet.app_id, ["stream.completed", "stream.interrupted"])
        finally:
            await store.close()
        assert secret is not None
        hook.secret = secret
        local = {"BFSTREAM_TOOLS__ALLOW_PRIVATE_WEBHOOKS": "true"}
        a = await fleet.start(BFSTREAM_SERVICES__ECHO__DELAY_MS="250", **local)
        b = await fleet.start(**local)
        client = await b.ws(fleet.app_id, "room")
        metadata = {"recordId": "FM-7", "table": "Answers"}
        stream_id = await fleet.create(a, metadata=metadata)
        events: list[dict[str, Any]] = []
        while len(events) < 3 or events[-1]["type"] != "delta":
            frame = await client.recv(timeout=12)
            if frame["op"] == "message" and frame["from"] == {"kind": "server"}:
                events.append(frame["message"]["actions"][0]["options"])
        a.proc.send_signal(signal.SIGKILL)
        while events[-1]["type"] != "end":
            frame = await client.recv(timeout=12)
            if frame["op"] == "message" and frame["from"] == {"kind": "server"}:
                events.append(frame["message"]["actions"][0]["options"])
        async with asyncio.timeout(10):
            while not hook.received:
                await asyncio.sleep(0.05)

    [only] = hook.received  # the dead owner sent nothing, and b sent it once
    assert only.verified
    assert only.headers["x-bfstream-event"] == "stream.interrupted"
    assert only.headers["x-bfstream-delivery"] == f"{stream_id}.stream.interrupted"
    event = only.body
    assert event["type"] == "stream.interrupted" and event["streamId"] == stream_id and event["appId"] == fleet.app_id
    assert event["metadata"] == metadata
    assert event["text"] == events[-1]["text"] and event["text"]  # what the channels were told, not empty
    assert event["finishReason"] == "error" and event["error"]["code"] == 503
    record = await fleet.status(b, stream_id)
    assert record["status"] == "interrupted"
