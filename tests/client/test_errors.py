"""Every failure comes out of the client as one of its errors: the server's error shape for any
non-2xx answer (status, code, type, message, details), a connection error when nothing answers."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from bfstream.client import BfstreamAPIError, BfstreamConnectionError, BfstreamTimeout
from tests.client.conftest import AnyClient, call, close, make_client, read_events
from tests.conftest import PROVIDER_KEY, Server
from tests.fakes.http_server import FakeProvider
from tests.fakes.openai_server import FakeOpenAI, JsonReply, invalid_key_reply

pytestmark = pytest.mark.anyio

PAYLOAD: dict[str, Any] = {"apiKey": PROVIDER_KEY, "model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}


async def test_a_bad_app_key_is_refused_with_the_documented_shape(kind: str, server: Server) -> None:
    client = make_client(kind, server.url, "not-the-app-key")
    try:
        with pytest.raises(BfstreamAPIError) as refused:
            await call(client, "create", channels="room", action_name="a", payload=PAYLOAD)
    finally:
        await close(client)
    error = refused.value
    assert (error.status, error.code, error.type) == (401, 401, "unauthorized")
    assert error.message == "Invalid or missing apiKey" and error.details is None
    assert "not-the-app-key" not in str(error)


async def test_a_bad_body_names_its_fields(client: AnyClient) -> None:
    with pytest.raises(BfstreamAPIError) as refused:
        await call(client, "create", channels="room", action_name="a", payload={**PAYLOAD, "messages": []})
    error = refused.value
    assert (error.status, error.code, error.type) == (400, 400, "validation_error")
    assert error.message == "The request is invalid" and [d["field"] for d in error.details] == ["payload.messages"]
    with pytest.raises(BfstreamAPIError) as unaddressed:
        await call(client, "create", service="openAI", payload=PAYLOAD)
    assert unaddressed.value.message == "The request body is invalid"
    assert [d["field"] for d in unaddressed.value.details] == ["channels", "actionName"]
    with pytest.raises(BfstreamAPIError) as unknown:
        await call(client, "query", channels="room", action_name="a", provider="nobody", payload=PAYLOAD)
    assert (unknown.value.status, unknown.value.type) == (400, "unknown_service")
    with pytest.raises(TypeError, match="takes no colour"):
        await call(client, "create", payload=PAYLOAD, colour="red")


async def test_an_unknown_stream_is_a_404_for_status_and_events(client: AnyClient) -> None:
    for read in ("status", "events"):
        with pytest.raises(BfstreamAPIError) as missing:
            if read == "status":
                await call(client, "status", "no-such-stream")
            else:
                await read_events(client, "no-such-stream")
        assert (missing.value.status, missing.value.code, missing.value.type) == (404, 404, "not_found")


async def test_a_provider_refusal_carries_the_providers_status_as_code(
    client: AnyClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(invalid_key_reply(PROVIDER_KEY))
    with pytest.raises(BfstreamAPIError) as refused:
        await call(client, "query", action_name="a", stream=False, payload=PAYLOAD)
    error = refused.value
    assert (error.status, error.code, error.type) == (502, 401, "provider_error")
    assert PROVIDER_KEY not in str(error.details) and PROVIDER_KEY[:8] not in str(error.details)


async def test_an_answer_that_is_not_bfstreams_keeps_its_status(kind: str) -> None:
    async with FakeProvider() as proxy:
        proxy.enqueue(JsonReply(503, "upstream connect error"), JsonReply(429, "slow down", {"Retry-After": "7"}))
        client = make_client(kind, proxy.base_url, "app-key")
        try:
            with pytest.raises(BfstreamAPIError) as unavailable:
                await call(client, "status", "s1")
            with pytest.raises(BfstreamAPIError) as limited:
                await call(client, "token", "u1")
        finally:
            await close(client)
    assert (unavailable.value.status, unavailable.value.code, unavailable.value.type) == (503, 503, "http_error")
    assert "upstream connect error" in unavailable.value.message
    assert (limited.value.status, limited.value.retry_after) == (429, 7)


async def test_no_server_is_a_connection_error_and_silence_a_timeout(kind: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    client = make_client(kind, f"http://127.0.0.1:{port}", "app-key")
    try:
        with pytest.raises(BfstreamConnectionError, match="could not be reached"):
            await call(client, "stop", "s1")
    finally:
        await close(client)
    async with FakeProvider() as slow:
        slow.enqueue(JsonReply(200, {"status": "stopped", "streamId": "s1"}, delay=2))
        client = make_client(kind, slow.base_url, "app-key", timeout=0.2)
        try:
            with pytest.raises(BfstreamTimeout):
                await call(client, "stop", "s1")
        finally:
            await close(client)
