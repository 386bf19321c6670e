"""The provider key passes through memory only: never in a log line, a response or a channel message."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.conftest import PROVIDER_KEY, ServeProcess, Server, seed_body
from tests.fakes.openai_server import (
    FakeOpenAI,
    JsonReply,
    StreamReply,
    completion,
    invalid_key_reply,
    stream_error,
    text_stream,
)

pytestmark = pytest.mark.anyio


async def test_provider_key_appears_nowhere(
    server: Server, fake_openai, caplog: pytest.LogCaptureFixture, tmp_path
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await server.ws(channels=("anonymous",))
    responses = []
    # A good stream, a refusal quoting the (masked) key, a stream that breaks, a non-stream call, a bad body.
    fake_openai.enqueue(StreamReply([text_stream(["fine"])]))
    responses.append(await server.post("/stream/create", seed_body(server)))
    await client.stream_events()
    fake_openai.enqueue(invalid_key_reply(PROVIDER_KEY))
    responses.append(await server.post("/stream/create", seed_body(server)))
    fake_openai.enqueue(
        StreamReply([text_stream(["half"], done=False, usage=None), stream_error(f"bad key {PROVIDER_KEY}")])
    )
    responses.append(await server.post("/stream/create", seed_body(server)))
    await client.stream_events()
    fake_openai.enqueue(invalid_key_reply(PROVIDER_KEY))
    responses.append(await server.post("/stream/create", seed_body(server, stream=False)))
    responses.append(await server.post("/stream/create", seed_body(server, messages=PROVIDER_KEY)))
    await client.messages_so_far()

    assert [r.status_code for r in responses] == [200, 502, 200, 502, 400]
    assert len(fake_openai.requests) == 4  # the key did reach the provider, where it belongs
    masked = PROVIDER_KEY[:8]  # OpenAI's 401 text keeps the first characters and the last four
    captured = {
        "logs": caplog.text,
        "responses": "".join(r.text for r in responses),
        "channel": "".join(str(f) for f in client.frames),
        "database": b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()).decode("latin-1"),
    }
    for where, text in captured.items():
        assert PROVIDER_KEY not in text, where
        assert masked not in text, where
    assert "Incorrect API key provided" in captured["responses"]  # the error itself does get through
    assert "bad key ***" in captured["channel"] and "bad key ***" in captured["logs"]


async def test_connection_tokens_stay_out_of_the_server_log(tmp_path) -> None:
    server = await ServeProcess.start(tmp_path)
    async with httpx.AsyncClient() as http:
        body = {"apiKey": server.api_key, "userId": "u1"}
        token = (await http.post(server.url + "/message/token", json=body)).json()["token"]
        async with connect(f"ws://127.0.0.1:{server.port}/message/ws?app={server.app_id}&token={token}") as ws:
            assert json.loads(await ws.recv())["op"] == "hello"
        params = {"app": server.app_id, "channel": "x", "token": token}
        async with http.stream("GET", server.url + "/message/sse", params=params) as sse:
            assert sse.status_code == 200
    assert await server.stop() == 0
    log = server.output
    assert "token=***" in log  # the connections were logged...
    assert token not in log and token.split(".")[1] not in log  # ...without their token


@pytest.mark.parametrize(
    "bad_key", ["sk-test-Trailing-Newline-1234\n", "sk-test-Ünicode-1234", "sk test with spaces", "sk-" + "a" * 5000]
)
async def test_a_provider_key_that_cannot_be_a_header_is_a_400_that_does_not_quote_it(
    server: Server, fake_openai: FakeOpenAI, bad_key: str
) -> None:
    answer = await server.post("/stream/create", seed_body(server, apiKey=bad_key))
    assert answer.status_code == 400
    assert answer.json()["error"]["details"] == [
        {
            "field": "payload.apiKey",
            "message": "a key is up to 1024 characters of printable ASCII, without spaces or line breaks",
        }
    ]
    assert bad_key.strip()[:60] not in answer.text and "Unicode" not in answer.text
    assert fake_openai.requests == []  # refused before any provider call


async def test_a_200_quoting_the_key_and_a_dotted_masked_copy_do_not_come_back(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    """Found by a black-box review: a provider answering 200 with an error body that quotes the key was
    passed through verbatim, and a copy masked with '...' was not recognised."""
    fake_openai.enqueue(JsonReply(200, {"error": {"message": f"oops {PROVIDER_KEY}"}}))
    whole = await server.post("/stream/create", seed_body(server, stream=False))
    assert whole.status_code == 200 and whole.json() == {"error": {"message": "oops ***"}}
    dotted = f"{PROVIDER_KEY[:12]}...{PROVIDER_KEY[-4:]}"
    fake_openai.enqueue(JsonReply(401, {"error": {"message": f"bad key {dotted}"}}))
    refused = await server.post("/stream/create", seed_body(server))
    assert refused.status_code == 502 and refused.json()["error"]["details"] == "bad key ***"


@pytest.mark.parametrize("key", ["ollama", "x", "EMPTY", PROVIDER_KEY])
async def test_an_answer_quoting_the_key_comes_back_byte_for_byte(
    server: Server, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture, key: str
) -> None:
    """Issue 16, finding 2: with ``apiKey: "ollama"`` the answer to "run ollama locally" came back as
    "run *** locally", and with ``"x"`` every x of the JSON (``"inde***": 0``). An answer is content:
    whatever it quotes, the caller's key included, comes back untouched; and a short placeholder key
    rewrites no log line either."""
    caplog.set_level(logging.INFO)
    answer = completion(f"run {key} locally: {key}x{key}, index and box")
    answer["choices"][0]["message"]["refusal"] = None
    for path in ("/stream/create", "/llm/query"):
        fake_openai.enqueue(JsonReply(200, answer))
        body = seed_body(server, stream=False, apiKey=key)
        if path == "/llm/query":
            body["payload"]["provider"] = body.pop("service")
        response = await server.post(path, body)
        assert response.status_code == 200, response.text
        got = response.json() if path == "/stream/create" else response.json()["data"]
        assert got == answer
        content = answer["choices"][0]["message"]["content"]
        assert json.dumps(content)[1:-1] in response.text  # the text itself, not merely an equal value
    if len(key) < 16:
        assert "***" not in caplog.text  # nothing in the log was taken for the placeholder key
