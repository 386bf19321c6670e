"""Image URLs for every provider: Gemini gets the image's bytes, fetched by bfstream from a real web
server the test runs (``tests/fakes/image_server.py``), bounded and kept off the inside of the
network; Anthropic and OpenAI get the URL itself; Gemini's own ``parts`` pass as they are."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import Server, ServerFactory, WSClient, assert_well_formed, seed_body
from tests.fakes import anthropic_server as claude
from tests.fakes import gemini_server as gemini
from tests.fakes import openai_server as openai
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.image_server import SLOW_PATH, ImageServer
from tests.fakes.openai_server import FakeOpenAI, StreamReply

pytestmark = pytest.mark.anyio

GEMINI_KEY = "AIzaSyD-FakeGeminiKey_0123456789abcdefghi"
PUBLIC_ADDRESS = "93.184.215.14"  # never reached: the test's proxy answers for it
LIMITS = {"max_bytes": 4096, "timeout": 0.5, "max_redirects": 3, "max_count": 3}


@pytest.fixture
async def images() -> AsyncIterator[ImageServer]:
    async with ImageServer(big=64 * 1024) as server:
        yield server


@pytest.fixture
async def trusting(start_server: ServerFactory, fake_gemini: FakeGemini, fake_anthropic: FakeAnthropic) -> Server:
    """A server that may fetch from loopback, where the test's image server is (the fakes first:
    their base URLs are read when the server's settings are built)."""
    return await start_server(images={**LIMITS, "allow_private": True})


def ask(server: Server, *parts: dict[str, Any], service: str = "gemini", **payload: Any) -> dict[str, Any]:
    """A request whose user message is a question and ``parts``."""
    messages = [
        {"role": "system", "content": "Describe images in one line."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, *parts]},
    ]
    body = seed_body(server, **{"model": "gemini-2.0-flash", "apiKey": GEMINI_KEY, "messages": messages, **payload})
    body["service"] = service
    return body


def image(url: str, **more: Any) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, **more}}


async def stream(server: Server, body: dict[str, Any], channel: str = "anonymous") -> list[dict[str, Any]]:
    client = await server.ws(channels=(channel,))
    response = await server.post("/stream/create", body)
    assert response.status_code == 200, response.text
    events = await client.stream_events()
    assert_well_formed(events, response.json()["streamId"])
    return events


def inline(server: ImageServer) -> dict[str, Any]:
    return {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(server.image).decode()}}


async def refused(server: Server, body: dict[str, Any]) -> list[dict[str, str]]:
    """The details of the request's 400, checked for the documented shape."""
    answer = await server.post("/stream/create", body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert answer.json()["success"] is False and error["type"] == "validation_error"
    return error["details"]


# ---- Gemini gets the bytes ---------------------------------------------------------------------------------


async def test_a_served_image_reaches_gemini_as_inline_data(
    trusting: Server, fake_gemini: FakeGemini, images: ImageServer
) -> None:
    fake_gemini.enqueue(gemini.stream_reply([gemini.text_stream(["A red dot."])]))
    url = f"{images.url}/cat.png"
    events = await stream(trusting, ask(trusting, image(url, detail="high"), image(url)))
    assert events[-1]["text"] == "A red dot." and events[-1]["finish_reason"] == "stop"

    (sent,) = fake_gemini.requests
    assert sent.json()["contents"] == [
        {"role": "user", "parts": [{"text": "What is this?"}, inline(images), inline(images)]}
    ]
    (seen,) = images.requests  # the same URL twice is fetched once
    assert seen.path == "/cat.png"
    assert seen.headers["Accept"] == "image/*" and seen.headers["User-Agent"] == "bfstream-images"
    assert GEMINI_KEY not in str(seen.headers)  # the provider's key is for the provider only


async def test_a_redirect_is_followed_and_a_whole_answer_gets_the_image_too(
    trusting: Server, fake_gemini: FakeGemini, images: ImageServer
) -> None:
    fake_gemini.enqueue(gemini.json_reply(gemini.response("A red dot.")))
    answer = await trusting.post("/stream/create", ask(trusting, image(f"{images.url}/hop"), stream=False))
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "A red dot."
    assert images.paths() == ["/hop", "/cat.png"]
    assert fake_gemini.requests[0].json()["contents"][0]["parts"][1] == inline(images)


async def test_images_are_fetched_once_per_stream_not_again_for_each_tool_round(
    trusting: Server, fake_gemini: FakeGemini, images: ImageServer
) -> None:
    tool = {"type": "function", "function": {"name": "ui_zoom", "parameters": {"type": "object", "properties": {}}}}
    fake_gemini.enqueue(
        gemini.stream_reply([gemini.function_call_stream([("ui_zoom", {}, "call_1")])]),
        gemini.stream_reply([gemini.text_stream(["Zoomed: a red dot."])]),
    )
    page: WSClient = await trusting.ws(channels=("room",))
    body = ask(trusting, image(f"{images.url}/cat.png"), tools=[tool])
    body["channels"] = ["room"]
    response = await trusting.post("/stream/create", body)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] != "tool_call":
        frame = await page.recv()
        if frame["op"] == "message":
            events += [action["options"] for action in frame["message"]["actions"]]
    result = {"success": True, "message": "zoomed"}
    reply = await page.request({"op": "toolResult", "toolCallId": events[-1]["toolCallId"], "result": result, "id": 1})
    assert reply["accepted"] is True
    events += await page.stream_events()
    assert events[-1]["text"] == "Zoomed: a red dot."

    first, follow_up = (r.json()["contents"] for r in fake_gemini.requests)
    assert first[0]["parts"][1] == inline(images) and follow_up[0] == first[0]  # the bytes go again...
    assert images.paths() == ["/cat.png"]  # ...fetched once


# ---- what is refused, before Gemini is called ----------------------------------------------------------------


@pytest.mark.parametrize("streaming", [True, False])
async def test_an_image_on_a_private_address_is_refused(
    start_server: ServerFactory, fake_gemini: FakeGemini, images: ImageServer, streaming: bool
) -> None:
    server = await start_server()  # as deployed: images.allow_private off
    details = await refused(server, ask(server, image(f"{images.url}/cat.png"), stream=streaming))
    assert details == [
        {
            "field": "payload.messages.1.content.1.image_url.url",
            "message": "it points at a loopback, private or link-local address (set images.allow_private to allow it)",
        }
    ]
    assert images.requests == [] and fake_gemini.requests == []


async def test_a_redirect_to_a_private_address_is_refused(
    start_server: ServerFactory, fake_gemini: FakeGemini, images: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first hop is a public address (reached through the test's proxy, as bfstream honours
    http_proxy); its redirect into loopback is checked like the URL itself, and refused."""
    for name in ("HTTP_PROXY", "NO_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", images.url)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")  # the fakes and the test's own clients
    server = await start_server()
    details = await refused(server, ask(server, image(f"http://{PUBLIC_ADDRESS}/inside")))
    assert [d["field"] for d in details] == ["payload.messages.1.content.1.image_url.url"]
    assert details[0]["message"].startswith("it redirects to a URL that cannot be used: it points at a loopback")
    (seen,) = images.requests  # the public hop, through the proxy; never the private one
    assert (seen.host, seen.path) == (PUBLIC_ADDRESS, "/inside")
    assert fake_gemini.requests == []


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/declared.png", "it is larger than 4096 bytes (images.max_bytes)"),
        ("/streamed.png", "it is larger than 4096 bytes (images.max_bytes)"),
        (SLOW_PATH, "the image did not arrive within 0.5 s (images.timeout)"),
        ("/page.html", "it is text/html, not an image"),
        ("/missing.png", "its server answered HTTP 404"),
        ("/loop", "more than 3 redirects (images.max_redirects)"),
    ],
)
async def test_an_image_that_cannot_be_used_is_a_400_and_gemini_is_not_called(
    trusting: Server, fake_gemini: FakeGemini, images: ImageServer, path: str, why: str
) -> None:
    details = await refused(trusting, ask(trusting, image(images.url + path)))
    assert details == [{"field": "payload.messages.1.content.1.image_url.url", "message": why}]
    assert fake_gemini.requests == []
    assert images.paths()[0] == path


async def test_every_image_that_fails_is_named_in_one_answer(
    trusting: Server, fake_gemini: FakeGemini, images: ImageServer
) -> None:
    body = ask(trusting, image(f"{images.url}/missing.png"), image(f"{images.url}/cat.png"), image("ftp://x/y.png"))
    body["payload"]["messages"].append({"role": "user", "content": [image(f"{images.url}/page.html")]})
    details = await refused(trusting, body)
    assert [d["field"] for d in details] == [
        "payload.messages.1.content.1.image_url.url",
        "payload.messages.2.content.0.image_url.url",
    ]  # a URL that is not http(s) is the translation's to refuse, once the fetched ones are fine
    assert sorted(images.paths()) == ["/cat.png", "/missing.png", "/page.html"]  # at once
    assert fake_gemini.requests == []


async def test_more_images_than_allowed_are_refused_before_any_is_fetched(
    trusting: Server, fake_gemini: FakeGemini, images: ImageServer
) -> None:
    many = [image(f"{images.url}/cat.png?{n}") for n in range(LIMITS["max_count"] + 1)]
    details = await refused(trusting, ask(trusting, *many))
    assert details == [
        {"field": "payload.messages", "message": "at most 3 image URLs in one request, not 4 (images.max_count)"}
    ]
    assert images.requests == [] and fake_gemini.requests == []


# ---- Gemini's own parts ----------------------------------------------------------------------------------------


async def test_gemini_native_parts_pass_as_they_are(trusting: Server, fake_gemini: FakeGemini) -> None:
    fake_gemini.enqueue(gemini.stream_reply([gemini.text_stream(["Two cats."])]))
    photo = {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQSkZJRgABAQ=="}}
    upload = {
        "fileData": {"mimeType": "image/png", "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc"}
    }
    messages = [
        {"role": "system", "parts": [{"text": "Count animals."}]},
        {"role": "user", "parts": [{"text": "How many cats?"}, photo, upload]},
        {"role": "model", "parts": [{"text": "Two."}]},
        {"role": "user", "content": [{"type": "text", "text": "And here?"}, photo]},  # a Part among OpenAI parts
    ]
    body = seed_body(trusting, model="gemini-2.0-flash", apiKey=GEMINI_KEY, messages=messages)
    body["service"] = "gemini"
    await stream(trusting, body)
    sent = fake_gemini.requests[0].json()
    assert sent["system_instruction"] == {"parts": [{"text": "Count animals."}]}
    assert sent["contents"] == [
        {"role": "user", "parts": [{"text": "How many cats?"}, photo, upload]},
        {"role": "model", "parts": [{"text": "Two."}]},
        {"role": "user", "parts": [{"text": "And here?"}, photo]},
    ]


@pytest.mark.parametrize(
    ("message", "field", "why"),
    [
        ({"role": "user", "content": "hi", "parts": [{"text": "hi"}]}, "", "give content or parts, not both"),
        ({"role": "user", "parts": "hi"}, ".parts", "must be a non-empty list of Gemini Part objects"),
        ({"role": "user", "parts": []}, ".parts", "must be a non-empty list of Gemini Part objects"),
        ({"role": "tool", "parts": [{"text": "hi"}]}, ".role", "role 'tool' cannot be sent to Gemini"),
    ],
)
async def test_native_parts_gemini_cannot_take_are_refused(
    trusting: Server, fake_gemini: FakeGemini, message: dict[str, Any], field: str, why: str
) -> None:
    messages = [{"role": "user", "content": "Hello"}, message]
    body = seed_body(trusting, model="gemini-2.0-flash", apiKey=GEMINI_KEY, messages=messages)
    body["service"] = "gemini"
    assert await refused(trusting, body) == [{"field": f"payload.messages.1{field}", "message": why}]
    assert fake_gemini.requests == []


# ---- the others read the URL themselves --------------------------------------------------------------------------


async def test_anthropic_gets_a_url_source_and_openai_the_url_untouched(
    trusting: Server, images: ImageServer, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    server = trusting  # it may fetch from loopback, and still does not: these providers fetch themselves
    url = f"{images.url}/cat.png"
    fake_anthropic.enqueue(StreamReply([claude.text_stream(["A dot."])]))
    body = ask(server, image(url), service="anthropic", model="claude-sonnet-4-5", apiKey="sk-ant-fake-0123456789")
    await stream(server, body)
    user = fake_anthropic.requests[0].json()["messages"][0]
    assert user["content"][1] == {"type": "image", "source": {"type": "url", "url": url}}

    fake_openai.enqueue(StreamReply([openai.text_stream(["A dot."])]))
    await stream(server, ask(server, image(url, detail="low"), service="openai", model="gpt-4o"))
    user = fake_openai.requests[0].json()["messages"][1]
    assert user["content"][1] == image(url, detail="low")
    assert images.requests == []  # both providers fetch it themselves
