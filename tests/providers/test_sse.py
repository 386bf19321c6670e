"""The SSE parser against bytes cut at every position, as sockets deliver them."""

from __future__ import annotations

import pytest

from bfstream.providers.sse import ServerSentEvent, SSEDecoder

STREAM = (
    ": keep-alive\r\n\r\n"
    'event: update\r\nid: 7\r\ndata: {"text": "naïve 🙂"}\r\n\r\n'
    "data: line one\ndata: line two\n\n"
    "data:no-space\r\r"
    'data: {"sep": "\u2028 is not a line end"}\n\n'
    "data: [DONE]\n\n"
).encode()

EXPECTED = [
    ServerSentEvent('{"text": "naïve 🙂"}', "update", "7"),
    ServerSentEvent("line one\nline two", "message", "7"),
    ServerSentEvent("no-space", "message", "7"),
    ServerSentEvent('{"sep": "\u2028 is not a line end"}', "message", "7"),
    ServerSentEvent("[DONE]", "message", "7"),
]


def decode(pieces: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events + decoder.close()


def test_whole_stream() -> None:
    assert decode([STREAM]) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_cut_in_two_anywhere(cut: int) -> None:
    """Every cut: inside a line, inside a UTF-8 character, between a CR and its LF."""
    assert decode([STREAM[:cut], STREAM[cut:]]) == EXPECTED


def test_one_byte_at_a_time() -> None:
    assert decode([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


def test_last_event_without_blank_line_is_kept() -> None:
    assert decode([b"data: a\n\ndata: [DONE]"]) == [ServerSentEvent("a"), ServerSentEvent("[DONE]")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert decode([b"data: \xff\xfe ok\n\n"]) == [ServerSentEvent("\ufffd\ufffd ok")]
