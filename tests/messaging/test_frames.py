"""Frames written straight to the connection's transport (transports/websocket.py) are what a real
WebSocket client reads, at every length encoding RFC 6455 has: 7 bits, 16 bits and 64 bits; and
so are those that go through uvicorn's send."""

from __future__ import annotations

import pytest

from bfstream.messaging.transports.websocket import encoded
from tests.conftest import ServerFactory
from tests.messaging.write_paths import WritePath

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("size", [0, 100, 125, 126, 1_000, 65_535, 65_536, 70_000])
def test_the_header_says_the_payload_length(size: int) -> None:
    text = "é" * (size // 2) + "x" * (size % 2)  # two bytes a character in UTF-8: lengths are in bytes
    frame = encoded(text)
    payload = text.encode()
    assert frame[0] == 0x81  # final, text, unmasked: a server never masks
    if len(payload) < 126:
        assert frame[1] == len(payload) and frame[2:] == payload
    elif len(payload) < 65_536:
        assert frame[1] == 126 and int.from_bytes(frame[2:4]) == len(payload) and frame[4:] == payload
    else:
        assert frame[1] == 127 and int.from_bytes(frame[2:10]) == len(payload) and frame[10:] == payload


async def test_messages_of_every_length_reach_a_real_client_whole_and_in_order(
    start_server: ServerFactory, write_path: WritePath
) -> None:
    server = await start_server(messaging=write_path.settings)
    listeners = [await server.ws(channels=("room",)) for _ in range(3)]
    sizes = [1, 90, 200, 30_000, 64_000]  # the last one's frame is past 65,535 bytes
    for size in sizes:
        await server.send("room", {"actions": [{"action": "x", "options": {"text": "ü" * size}}]})
    for client in listeners:
        got = [frame["message"]["actions"][0]["options"]["text"] for frame in await client.messages_so_far()]
        assert got == ["ü" * size for size in sizes]
    write_path.assert_taken()
