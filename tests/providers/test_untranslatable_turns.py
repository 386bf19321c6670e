"""A conversation is sent whole or refused: a turn a translator cannot read (a user message with
nothing in it, a message in Gemini's own ``parts`` shape sent to another provider) is a 400 naming
it, never left out, which would have the model answer another conversation than the one sent."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import PROVIDER_KEY, ServerFactory
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.anyio

EARLIER = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]
UNREADABLE = [
    ({"role": "user", "parts": [{"text": "And the capital of France?"}]}, "payload.messages.2.parts"),
    ({"role": "user"}, "payload.messages.2.content"),
    ({"role": "user", "content": None}, "payload.messages.2.content"),
    ({"role": "user", "content": []}, "payload.messages.2.content"),
    ({"role": "user", "content": ""}, "payload.messages.2.content"),
]


def body(server: Any, service: str, model: str, last: dict[str, Any], **payload: Any) -> dict[str, Any]:
    return {
        "apiKey": server.api_key, "channels": ["room"], "actionName": "a", "service": service,
        "payload": {"apiKey": PROVIDER_KEY, "model": model, "messages": [*EARLIER, last], **payload},
    }  # fmt: skip


@pytest.mark.parametrize(("last", "field"), UNREADABLE)
@pytest.mark.parametrize(("service", "model"), [("anthropic", "claude-sonnet-4-5"), ("openai-responses", "gpt-5")])
async def test_an_unreadable_turn_is_refused(
    start_server: ServerFactory,
    fake_anthropic: FakeAnthropic,
    fake_openai: FakeOpenAI,
    service: str,
    model: str,
    last: dict[str, Any],
    field: str,
) -> None:
    server = await start_server()
    response = await server.post("/stream/create", body(server, service, model, last))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "validation_error" and [d["field"] for d in error["details"]] == [field]
    assert fake_anthropic.requests == [] and fake_openai.requests == []


async def test_gemini_refuses_a_data_uri_that_is_not_base64(
    start_server: ServerFactory, fake_gemini: FakeGemini
) -> None:
    server = await start_server()
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!notb64"}}
    last = {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}
    response = await server.post("/stream/create", body(server, "gemini", "gemini-2.5-flash", last))
    assert response.status_code == 400, response.text
    (detail,) = response.json()["error"]["details"]
    assert detail["field"].startswith("payload.messages.2.content.1") and "base64" in detail["message"]
    assert fake_gemini.requests == []
