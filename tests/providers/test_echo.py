"""The built-in echo service: the product working end to end with no provider key."""

from __future__ import annotations

import pytest

from tests.conftest import Server, seed_body

pytestmark = pytest.mark.anyio


def echo_body(server: Server, **payload) -> dict:
    body = seed_body(server, **payload)
    body["service"] = "echo"
    del body["payload"]["apiKey"]
    return body


async def test_echo_streams_the_last_user_message_word_by_word(server: Server) -> None:
    client = await server.ws(channels=("anonymous",))
    response = await server.post("/stream/create", echo_body(server))
    assert response.status_code == 200
    events = await client.stream_events()
    assert events[0]["content"]["model"] == "echo" and events[0]["content"]["service"] == "echo"
    deltas = [e["content"] for e in events if e["type"] == "delta"]
    assert deltas == ["create ", "a ", "joke ", "about ", "software ", "developers"]
    assert events[-1]["text"] == "create a joke about software developers"
    assert events[-1]["finish_reason"] == "stop"
    assert events[-1]["usage"]["completion_tokens"] == 6


async def test_echo_payload_provider_alias_and_content_parts(server: Server) -> None:
    body = echo_body(server, messages=[{"role": "user", "content": [{"type": "text", "text": "hi  there "}]}])
    del body["service"]
    body["payload"]["provider"] = "ECHO"
    client = await server.ws(channels=("anonymous",))
    assert (await server.post("/stream/create", body)).status_code == 200
    events = await client.stream_events()
    assert [e["content"] for e in events if e["type"] == "delta"] == ["hi  ", "there "]


async def test_echo_non_stream_is_a_chat_completion(server: Server) -> None:
    response = await server.post("/stream/create", echo_body(server, stream=False))
    assert response.status_code == 200
    answer = response.json()
    assert answer["object"] == "chat.completion" and answer["model"] == "echo"
    assert answer["choices"][0]["message"] == {
        "role": "assistant",
        "content": "create a joke about software developers",
        "refusal": None,
    }
    assert answer["choices"][0]["finish_reason"] == "stop"


async def test_echo_can_be_disabled(start_server) -> None:
    server = await start_server(services={"echo": {"enabled": False}})
    response = await server.post("/stream/create", echo_body(server))
    assert response.status_code == 400
    assert response.json()["error"]["details"] == ["anthropic", "gemini", "openai", "openai-responses"]


async def test_echo_needs_no_model(server: Server) -> None:
    body = echo_body(server)
    del body["payload"]["model"]
    client = await server.ws(channels=("anonymous",))
    assert (await server.post("/stream/create", body)).status_code == 200
    assert (await client.stream_events())[0]["content"]["model"] == "echo"
