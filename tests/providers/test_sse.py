"""The SSE parser against bytes cut at every position, as sockets deliver them."""

from __future__ import annotations

import pytest

from bfstream.errors import ProviderError
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


def test_a_long_line_in_many_pieces_is_read_whole() -> None:
    """Three megabytes in 64 KB reads: the kind of line a base64 image makes."""
    payload = "x" * (3 * 1024 * 1024)
    raw = f"data: {payload}\n\n".encode()
    assert decode([raw[i : i + 65536] for i in range(0, len(raw), 65536)]) == [ServerSentEvent(payload)]


@pytest.mark.parametrize("pieces", [1, 7, 64], ids=["one chunk", "7 chunks", "64 chunks"])
def test_a_line_past_the_limit_fails_the_stream(pieces: int) -> None:
    raw = b"data: " + b"y" * 1000 + b"\n\n"
    decoder = SSEDecoder(max_line=500)
    size = -(-len(raw) // pieces)
    with pytest.raises(ProviderError, match="longer than 500"):
        for i in range(0, len(raw), size):
            decoder.feed(raw[i : i + size])


def test_a_cr_ending_one_chunk_and_its_lf_opening_the_next_are_one_line_end() -> None:
    assert decode([b"data: a\r", b"\ndata: b\r", b"", b"\n\r\n"]) == [ServerSentEvent("a\nb")]
