"""Lone UTF-16 surrogates: refused at every request edge, repaired in provider text, and never the
cause of a dropped listener (hardening issue: one such string used to break every listener of a
channel, again on each rejoin, and leave its stream's record running for good)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import Server, assert_well_formed, seed_body
from tests.fakes.openai_server import FakeOpenAI, JsonReply, StreamReply, chunk, completion, sse

pytestmark = pytest.mark.anyio

LONE = '{"actions": [{"action": "say", "text": "\\ud800"}]}'  # raw JSON text: the escape itself


async def test_a_message_with_a_lone_surrogate_is_refused_and_the_channel_lives_on(server: Server) -> None:
    listener = await server.ws(channels=("room",))
    body = '{"apiKey": "' + server.api_key + '", "channels": ["room"], "message": ' + LONE + "}"
    refused = await server.http.post(server.url + "/message/sendmessage", content=body)
    assert refused.status_code == 400 and refused.json()["error"]["type"] == "invalid_text"
    paired = '{"apiKey": "%s", "channels": ["room"], "message": {"actions": [{"e": "\\ud83d\\ude00"}]}}'
    accepted = await server.http.post(server.url + "/message/sendmessage", content=paired % server.api_key)
    assert accepted.status_code == 201  # an escaped pair is a valid emoji
    frame = await listener.recv()
    assert frame["op"] == "message" and frame["message"] == {"actions": [{"e": "😀"}]}
    rejoined = await server.ws(channels=("room",))
    await server.send("room", {"actions": [{"n": 2}]})
    assert (await listener.recv())["message"] == (await rejoined.recv())["message"] == {"actions": [{"n": 2}]}


async def test_a_browser_frame_with_a_lone_surrogate_gets_an_error_frame_and_nobody_is_dropped(
    server: Server,
) -> None:
    await server.allow_browser_publish()
    publisher = await server.ws(channels=("room",))
    neighbour = await server.ws(channels=("room",))
    await publisher.send('{"op": "publish", "channel": "room", "id": 7, "message": ' + LONE + "}")
    reply = await publisher.recv()
    assert reply["op"] == "error" and reply["id"] == 7 and reply["error"]["code"] == 400
    await publisher.send({"op": "publish", "channel": "room", "id": 8, "message": {"actions": [{"ok": 1}]}})
    assert (await neighbour.recv())["message"] == {"actions": [{"ok": 1}]}
    assert (await publisher.request({"op": "ping", "id": "alive"}))["op"] == "pong"


def _escaped(delta: dict) -> bytes:
    """An OpenAI chunk written with ASCII escapes, as a server splitting a pair would write it."""
    return sse(json.dumps(chunk(delta)))


async def test_a_provider_that_splits_a_surrogate_pair_across_chunks_streams_the_character_whole(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    pieces = [
        _escaped({"role": "assistant", "content": "Hi "}),
        _escaped({"content": "\ud83d"}),  # the emoji's first half ends one chunk...
        _escaped({"content": "\ude00 and "}),  # ...and its second half opens the next
        _escaped({"content": "a lone \udc00 half"}),
        _escaped({"content": "\ud83d"}),  # a first half that nothing follows
        sse(json.dumps(chunk({}, finish_reason="stop"))),
        sse("[DONE]"),
    ]
    fake_openai.enqueue(StreamReply(pieces))
    client = await server.ws(channels=("anonymous",))
    created = await server.post("/stream/create", seed_body(server))
    assert created.status_code == 200
    events = await client.stream_events()
    assert_well_formed(events, created.json()["streamId"])
    text = "Hi 😀 and a lone \ufffd half\ufffd"
    assert "".join(e["content"] for e in events if e["type"] == "delta") == text
    assert events[-1]["text"] == text and events[-1]["finish_reason"] == "stop"
    status = await server.post("/stream/status", {"apiKey": server.api_key, "streamId": created.json()["streamId"]})
    assert status.json()["status"] == "completed" and status.json()["text"] == text


@pytest.mark.parametrize(
    "raw",
    [
        b'{"channels": ["room"], "message": {"actions": [{"action": "\xed\xa0\x80"}]}, "apiKey": ',  # CESU-8 bytes
        '{"channels": ["room"], "message": {"actions": [{"a": "\\ud800"}]}, "apiKey": '.encode("utf-16-le"),
        b'{"channels": ["room"], "message": {"actions": [{"v": NaN}]}, "apiKey": ',
        b'{"channels": ["room"], "message": {"actions": [{"v": -Infinity}]}, "apiKey": ',
        # Valid JSON, but past the largest double: read as infinity, it would go out as Infinity.
        b'{"channels": ["room"], "message": {"actions": [{"v": 1e400}]}, "apiKey": ',
        b'{"channels": ["room"], "message": {"model": {"v": [-' + b"9" * 400 + b'.5]}, "actions": []}, "apiKey": ',
    ],
    ids=["surrogate as bytes", "utf-16 body", "NaN", "Infinity", "1e400", "400 digits"],
)
async def test_bodies_that_are_not_json_text_are_refused_before_anything_is_published(
    server: Server, raw: bytes
) -> None:
    listener = await server.ws(channels=("room",))
    tail = ('"' + server.api_key + '"}').encode("utf-16-le" if b"\x00" in raw else "utf-8")
    refused = await server.http.post(server.url + "/message/sendmessage", content=raw + tail)
    assert refused.status_code == 400 and refused.json()["error"]["type"] in ("invalid_json", "invalid_text")
    await server.send("room", {"actions": [{"n": "next"}]})
    frame = await listener.recv()
    assert frame["offset"] == 1 and frame["message"] == {"actions": [{"n": "next"}]}  # nothing took an offset


async def test_frames_with_nan_or_a_bad_id_get_an_error_frame_without_the_id(server: Server) -> None:
    client = await server.ws()
    await client.send('{"op": "ping", "id": NaN}')
    assert (await client.recv())["op"] == "error"
    await client.send('{"op": "ping", "id": "\\ud800"}')
    reply = await client.recv()
    assert reply["op"] == "error" and reply["id"] is None
    assert (await client.request({"op": "ping", "id": "after"}))["op"] == "pong"


async def test_numbers_past_a_double_in_frames_are_refused_not_sent_on_as_infinity(server: Server) -> None:
    """1e400 is valid JSON, but Python reads it as infinity and writes that back as ``Infinity``, which
    no browser's JSON.parse takes: a publish holding one broke the frame for every listener."""
    await server.allow_browser_publish()
    publisher = await server.ws(channels=("room",))
    neighbour = await server.ws(channels=("room",))
    await publisher.send('{"op": "ping", "id": 1e400}')
    reply = await publisher.recv()
    assert reply["op"] == "error" and reply["error"]["code"] == 400 and reply["id"] is None
    await publisher.send('{"op": "publish", "channel": "room", "id": 9, "message": {"actions": [{"v": -1E+999}]}}')
    raw = await asyncio.wait_for(publisher.conn.recv(), 5)
    assert "Infinity" not in raw and json.loads(raw)["op"] == "error"
    assert (await publisher.request({"op": "ping", "id": 1e308}))["id"] == 1e308  # a large finite one is fine
    await publisher.send({"op": "publish", "channel": "room", "id": 10, "message": {"actions": [{"v": 1.5e300}]}})
    assert (await neighbour.recv())["message"] == {"actions": [{"v": 1.5e300}]}  # the first thing it got


def strict_json(value: object) -> str:
    """As a browser's JSON.parse would need it: no NaN, no Infinity."""
    return json.dumps(value, allow_nan=False)


async def test_a_providers_nan_and_infinity_become_null_instead_of_breaking_frames_or_answers(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    odd_error = '{"error": {"message": "odd", "type": "server_error", "param": NaN, "code": 1e400, "t": -Infinity}}'
    fake_openai.enqueue(StreamReply([sse(json.dumps(chunk({"role": "assistant", "content": "hi"}))), sse(odd_error)]))
    client = await server.ws(channels=("anonymous",))
    created = await server.post("/stream/create", seed_body(server))
    events = await client.stream_events()
    assert_well_formed(events, created.json()["streamId"])
    error = next(e for e in events if e["type"] == "error")["error"]
    assert error["details"]["param"] is None and error["details"]["code"] is None and error["details"]["t"] is None
    strict_json(events)  # every frame is one a browser can parse

    answer = completion("fine")
    answer["choices"][0]["logprobs"] = {"content": [{"token": "fine", "logprob": float("-inf")}]}
    answer["usage"]["odd"] = float("nan")
    fake_openai.enqueue(JsonReply(200, answer))  # written as -Infinity and NaN
    whole = await server.post("/stream/create", seed_body(server, stream=False))
    assert whole.status_code == 200, whole.text
    assert whole.json()["choices"][0]["logprobs"]["content"][0]["logprob"] is None
    assert whole.json()["usage"]["odd"] is None and whole.json()["choices"][0]["message"]["content"] == "fine"
