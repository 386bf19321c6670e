"""GET /metrics: real streams through a real server, then the scrape parsed as Prometheus would."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from bfstream.errors import BrokerError, StoreError
from bfstream.messaging.brokers.memory import MemoryBroker
from bfstream.messaging.hub import Hub
from bfstream.store.store import Row, Store
from tests.conftest import PROVIDER_KEY, Server, ServerFactory, seed_body, sse_connect
from tests.fakes.openai_server import (
    FakeOpenAI,
    StreamReply,
    chunk,
    invalid_key_reply,
    sse,
    stream_error,
)

pytestmark = pytest.mark.anyio

TOKEN = "metrics-token-0123456789abcdef"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(server: Server, token: str = TOKEN) -> tuple[str, Samples]:
    response = await server.http.get(server.url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    return response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def scrape_until(server: Server, done: Any, timeout: float = 5.0) -> tuple[str, Samples]:
    """Scrape until ``done(samples)``: a stream's record is written just after its end goes out."""
    deadline = time.monotonic() + timeout
    while True:
        text, samples = await scrape(server)
        if done(samples) or time.monotonic() > deadline:
            return text, samples
        await asyncio.sleep(0.01)


async def test_without_a_token_the_route_does_not_exist(server: Server) -> None:
    response = await server.http.get(server.url + "/metrics")
    unknown = await server.http.get(server.url + "/no-such-path")
    assert response.status_code == 404
    assert response.json() == unknown.json()
    assert response.json()["error"]["type"] == "not_found"
    openapi = (await server.http.get(server.url + "/openapi.json")).json()
    assert "/metrics" not in openapi["paths"]


async def test_a_wrong_or_missing_token_is_refused(start_server: ServerFactory) -> None:
    server = await start_server(metrics_token=TOKEN)
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-0123456789abcdef"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer Olé-ünïcode".encode()},  # bytes past ASCII must not break the comparison
    ):
        response = await server.http.get(server.url + "/metrics", headers=headers)
        assert response.status_code == 401, headers
        body = response.json()
        assert body["success"] is False and body["error"]["type"] == "unauthorized"
        assert TOKEN not in response.text
    _, samples = await scrape(server)
    assert value(samples, "bfstream_streams_running") == 0


async def test_streams_errors_connections_and_messages_are_counted(
    start_server: ServerFactory, fake_openai: FakeOpenAI
) -> None:
    server = await start_server(metrics_token=TOKEN)
    bystander = await start_server(metrics_token=TOKEN)  # same process, counts of its own
    client = await server.ws(channels=("anonymous",))
    async with sse_connect(server, ["room-7f3a"]) as browser:
        assert (await browser.next()).event == "hello"
        assert (await browser.next()).event == "joined"

        # An echo stream that completes.
        echo = seed_body(server)
        echo["service"] = "echo"
        assert (await server.post("/stream/create", echo)).status_code == 200
        echo_events = await client.stream_events()
        # An OpenAI stream that breaks off with an error after two deltas.
        head = b"".join(sse(chunk(d)) for d in ({"role": "assistant", "content": ""}, {"content": "Partial "}))
        fake_openai.enqueue(StreamReply([head + sse(chunk({"content": "answer"})), stream_error("overloaded")]))
        assert (await server.post("/stream/create", seed_body(server))).status_code == 200
        failed_events = await client.stream_events()
        # Refused by the provider before streaming, and a stream: false call refused too.
        fake_openai.enqueue(invalid_key_reply(PROVIDER_KEY))
        assert (await server.post("/stream/create", seed_body(server))).status_code == 502
        fake_openai.enqueue(invalid_key_reply(PROVIDER_KEY))
        assert (await server.post("/stream/create", seed_body(server, stream=False))).status_code == 502

        text, samples = await scrape_until(server, lambda s: value(s, "bfstream_streams_running") == 0)

    assert value(samples, "bfstream_streams_running") == 0
    assert value(samples, "bfstream_streams_started_total", service="echo") == 1
    assert value(samples, "bfstream_streams_started_total", service="openai") == 1
    assert value(samples, "bfstream_streams_started_total", service="anthropic") == 0  # there before any stream
    assert value(samples, "bfstream_streams_finished_total", service="echo", outcome="completed") == 1
    assert value(samples, "bfstream_streams_finished_total", service="echo", outcome="failed") == 0
    assert value(samples, "bfstream_streams_finished_total", service="openai", outcome="failed") == 1
    assert value(samples, "bfstream_streams_finished_total", service="openai", outcome="completed") == 0

    echo_deltas = [e for e in echo_events if e["type"] == "delta"]
    assert len(echo_deltas) == len("create a joke about software developers".split())
    assert value(samples, "bfstream_stream_deltas_total", service="echo") == len(echo_deltas)
    assert [e["type"] for e in failed_events] == ["threadInfo", "delta", "delta", "error", "end"]
    assert value(samples, "bfstream_stream_deltas_total", service="openai") == 2

    assert value(samples, "bfstream_time_to_first_token_seconds_count", service="echo") == 1
    assert value(samples, "bfstream_time_to_first_token_seconds_count", service="openai") == 1
    assert 0 < value(samples, "bfstream_time_to_first_token_seconds_sum", service="echo") < 5

    # The mid-stream error's code is OpenAI's own word ("server_error"): not a status, so "other".
    errors = {
        (dict(labels)["service"], dict(labels)["type"], dict(labels)["code"]): count
        for (name, labels), count in samples.items()
        if name == "bfstream_provider_errors_total"
    }
    assert errors == {("openai", "provider_error", "401"): 2, ("openai", "provider_error", "other"): 1}

    events = len(echo_events) + len(failed_events)  # each to one channel, which one listener has joined
    assert value(samples, "bfstream_messages_published_total") == events
    assert value(samples, "bfstream_deliveries_total") == events
    assert value(samples, "bfstream_connections", transport="websocket") == 1
    assert value(samples, "bfstream_connections", transport="sse") == 1
    assert value(samples, "bfstream_channels") == 2  # anonymous and room-7f3a; the tab| channels are not counted
    assert value(samples, "bfstream_channel_members") == 2
    assert value(samples, "bfstream_broker_errors_total") == 0
    assert value(samples, "bfstream_store_errors_total") == 0
    assert value(samples, "bfstream_broker_up") == 1
    assert any(name.startswith("process_") for name, _ in samples)

    for secret_or_private in (
        PROVIDER_KEY,
        server.api_key,
        server.app_id,
        "Chuck Norris",
        "software developers",
        "anonymous",
        "room-7f3a",
        "Partial",
        echo_events[0]["streamId"],
        "assistantReceiveResultsStream",
    ):
        assert secret_or_private not in text

    _, others = await scrape(bystander)
    assert value(others, "bfstream_streams_started_total", service="echo") == 0
    assert value(others, "bfstream_messages_published_total") == 0
    assert value(others, "bfstream_connections", transport="websocket") == 0

    await client.conn.close()
    _, samples = await scrape_until(server, lambda s: value(s, "bfstream_connections", transport="websocket") == 0)
    assert value(samples, "bfstream_connections", transport="websocket") == 0
    assert value(samples, "bfstream_connections", transport="sse") == 0
    assert value(samples, "bfstream_channels") == 0


async def test_a_stopped_stream_is_counted_as_stopped(start_server: ServerFactory) -> None:
    server = await start_server(metrics_token=TOKEN, services={"echo": {"delay_ms": 50}})
    client = await server.ws(channels=("anonymous",))
    body = seed_body(server)
    body["service"] = "echo"
    stream_id = (await server.post("/stream/create", body)).json()["streamId"]
    assert (await server.post("/stream/stop", {"streamId": stream_id})).json()["status"] == "stopped"
    assert (await client.stream_events())[-1]["finish_reason"] == "stopped"
    _, samples = await scrape_until(server, lambda s: value(s, "bfstream_streams_running") == 0)
    assert value(samples, "bfstream_streams_finished_total", service="echo", outcome="stopped") == 1
    assert value(samples, "bfstream_streams_finished_total", service="echo", outcome="completed") == 0


class _FailingBroker(MemoryBroker):
    async def publish(self, channel: str, message_json: str, fence: str | None = None, seq: int | None = None) -> Any:
        raise BrokerError("down")


async def test_the_hub_counts_failed_publishes() -> None:
    hub = Hub(_FailingBroker())
    with pytest.raises(BrokerError):
        await hub.publish("app/room", "{}")
    assert (hub.broker_errors, hub.published) == (1, 0)


class _FailingDatabase:
    async def execute(self, sql: str, *args: Any) -> int:
        raise StoreError("down")

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        raise StoreError("down")


async def test_the_store_counts_failed_statements() -> None:
    store = Store(_FailingDatabase())  # type: ignore[arg-type]
    for attempt in (store.app_by_id("app_x"), store.create_app("shop")):
        with pytest.raises(StoreError):
            await attempt
    assert store.errors == 2
