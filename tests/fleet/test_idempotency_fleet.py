"""Idempotent creates across a fleet (issue 19): the same ``Idempotency-Key`` sent to two instances,
at once and again 10 s later, makes one provider request and one stream, and every answer names it."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import PROVIDER_KEY, ServeProcess
from tests.fakes.openai_server import FakeOpenAI, JsonReply, StreamReply, completion, text_stream
from tests.fleet.conftest import Fleet

pytestmark = pytest.mark.anyio


def _body(fleet: Fleet, stream: bool = True, question: str = "Tell me once.") -> dict[str, Any]:
    return {
        "apiKey": fleet.api_key,
        "channels": ["room"],
        "actionName": "onStream",
        "service": "openai",
        "payload": {
            "apiKey": PROVIDER_KEY,
            "model": "gpt-4o",
            "stream": stream,
            "messages": [{"role": "user", "content": question}],
        },
    }


async def _create(fleet: Fleet, instance: ServeProcess, key: str, body: dict[str, Any]) -> Any:
    return await fleet.http.post(instance.url + "/stream/create", json=body, headers={"Idempotency-Key": key})


async def test_one_key_at_two_instances_at_once_and_10_s_later_is_one_stream(fleet: Fleet) -> None:
    async with FakeOpenAI() as provider:
        provider.enqueue(StreamReply([text_stream([f"word{i} " for i in range(20)])], delay=0.03))
        a = await fleet.start(OPENAI_BASE_URL=provider.base_url)
        b = await fleet.start(OPENAI_BASE_URL=provider.base_url)
        page = await b.ws(fleet.app_id, "room")
        key, body = str(uuid.uuid4()), _body(fleet)
        sent = time.monotonic()
        at_a, at_b = await asyncio.gather(_create(fleet, a, key, body), _create(fleet, b, key, body))
        assert at_a.status_code == at_b.status_code == 200, (at_a.text, at_b.text)
        stream_id = at_a.json()["streamId"]
        assert at_b.json()["streamId"] == stream_id
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] != "end":
            frame = await page.recv(timeout=10)
            if frame["op"] == "message":
                events.append(frame["message"]["actions"][0]["options"])
        # The scenario is a retry 10 s after the first call (a client's time-out), not a wait for something.
        await asyncio.sleep(max(0.0, sent + 10 - time.monotonic()))
        later = await _create(fleet, a, key, body)
        assert later.status_code == 200 and later.json()["streamId"] == stream_id
        assert later.headers["idempotent-replayed"] == "true"
        other = await _create(fleet, b, key, _body(fleet, question="Something else."))
        assert other.status_code == 422 and other.json()["error"]["type"] == "idempotency_key_reused"

        await page.request({"op": "ping", "id": "flush"})
        everything = [f["message"]["actions"][0]["options"] for f in page.frames if f.get("op") == "message"]
        assert {e["streamId"] for e in everything} == {stream_id}
        assert [e["type"] for e in everything].count("threadInfo") == 1
        assert events[-1]["text"] == "".join(f"word{i} " for i in range(20))
        assert len(provider.requests) == 1


async def test_a_whole_answer_asked_at_two_instances_is_computed_once(fleet: Fleet) -> None:
    async with FakeOpenAI() as provider:
        provider.enqueue(JsonReply(200, completion("Computed once."), delay=0.5))
        a = await fleet.start(OPENAI_BASE_URL=provider.base_url)
        b = await fleet.start(OPENAI_BASE_URL=provider.base_url)
        key, body = str(uuid.uuid4()), _body(fleet, stream=False)
        at_a, at_b = await asyncio.gather(_create(fleet, a, key, body), _create(fleet, b, key, body))
        assert at_a.status_code == at_b.status_code == 200, (at_a.text, at_b.text)
        assert at_a.json() == at_b.json() and at_a.json()["choices"][0]["message"]["content"] == "Computed once."
        assert len(provider.requests) == 1


async def test_a_key_held_by_an_instance_that_died_is_taken_over(fleet: Fleet) -> None:
    """The first request's instance is SIGKILLed while the provider answers: its retry at another
    instance does not wait for the dead one, it asks again (the one case with two provider calls)."""
    async with FakeOpenAI() as provider:
        provider.enqueue(JsonReply(200, completion("Never delivered."), delay=30))
        provider.enqueue(JsonReply(200, completion("Asked again.")))
        a = await fleet.start(OPENAI_BASE_URL=provider.base_url)
        b = await fleet.start(OPENAI_BASE_URL=provider.base_url)
        key, body = str(uuid.uuid4()), _body(fleet, stream=False)
        first = asyncio.create_task(_create(fleet, a, key, body))
        await provider.nth_request(1)
        a.proc.send_signal(signal.SIGKILL)
        await a.proc.wait()
        retry = await _create(fleet, b, key, body)
        assert retry.status_code == 200, retry.text
        assert retry.json()["choices"][0]["message"]["content"] == "Asked again."
        with pytest.raises(httpx.TransportError):  # its connection died with its instance
            await first
        assert len(provider.requests) == 2
