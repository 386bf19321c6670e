"""``verify_webhook`` against a real signed delivery: a stream started by the client ends, the app's
webhook receives its ``stream.completed`` event, and the receiver's raw request passes the check;
a tampered body, another secret, or a stale timestamp does not."""

from __future__ import annotations

import time

import pytest

from bfstream.client import verify_webhook
from tests.client.conftest import AnyClient, call, read_events
from tests.client.test_streams import PARTS, PAYLOAD
from tests.conftest import Server
from tests.fakes.openai_server import FakeOpenAI, StreamReply, text_stream
from tests.fakes.webhook_server import WebhookReceiver
from tests.streams.test_lifecycle_events import subscribe, until

pytestmark = pytest.mark.anyio


async def test_a_signed_delivery_passes_and_a_tampered_one_does_not(
    client: AnyClient, server: Server, fake_openai: FakeOpenAI
) -> None:
    async with WebhookReceiver() as hook:
        await subscribe(server, hook, ["stream.completed"])
        fake_openai.enqueue(StreamReply([text_stream(PARTS)]))
        started = await call(
            client, "create", channels="room", action_name="a", payload=PAYLOAD, metadata={"recordId": "FM-7"}
        )
        await read_events(client, started.stream_id)
        await until(lambda: len(hook.received) == 1)
    delivery = hook.received[0]
    headers, raw = delivery.headers, delivery.raw
    assert delivery.body["streamId"] == started.stream_id and delivery.body["metadata"] == {"recordId": "FM-7"}

    assert client.verify_webhook(hook.secret, headers, raw)
    assert verify_webhook(hook.secret, {k.title(): v for k, v in headers.items()}, raw)  # names in any case
    assert verify_webhook(["whsec_the-old-one", hook.secret], headers, raw)  # while a secret is rotated

    tampered = raw.replace(b"FM-7", b"FM-8")
    assert tampered != raw and not verify_webhook(hook.secret, headers, tampered)
    assert not verify_webhook("whsec_another", headers, raw)
    assert not verify_webhook(hook.secret, {**headers, "x-bfstream-signature": "v1=" + "0" * 64}, raw)
    assert not verify_webhook(hook.secret, {k: v for k, v in headers.items() if k != "x-bfstream-timestamp"}, raw)
    signed_at = int(headers["x-bfstream-timestamp"])
    assert abs(signed_at - time.time()) < 60
    assert not verify_webhook(hook.secret, headers, raw, now=signed_at + 301)  # replayed too late
    assert verify_webhook(hook.secret, headers, raw, now=signed_at + 299)
