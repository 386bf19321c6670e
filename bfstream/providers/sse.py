"""Incremental Server-Sent Events parser, shared by every provider that streams SSE.

Bytes come off the socket cut anywhere: inside a line, inside a UTF-8 character, between the CR
and LF of one line ending. The parser keeps what it cannot finish yet and only splits on CR, LF
and CRLF (never on U+2028 and friends, which JSON strings may carry raw).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from bfstream.errors import ProviderError

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: str
    event: str = "message"
    id: str | None = None


MAX_LINE = 4 * 1024 * 1024  # characters; one line past this fails the stream


class SSEDecoder:
    """Linear in its input: each chunk is scanned once, and an unfinished line is kept as pieces,
    joined once when it ends (joining at every chunk made one long line quadratic, holding the
    event loop for seconds). A line longer than ``max_line`` characters fails with ``ProviderError``."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._max_line = max_line
        self._pieces: list[str] = []  # the unfinished line
        self._pending = 0  # its length
        self._after_cr = False  # the last chunk ended with CR: a LF that opens the next one is the same line end
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self.lines = 0  # complete lines so far, blank ones and comments too: the stream's progress

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        text = self._utf8.decode(chunk)
        if not text:
            return []
        if self._after_cr and text[0] == "\n":
            text = text[1:]
        self._after_cr = text[-1:] == "\r"
        events: list[ServerSentEvent] = []
        start = 0
        for match in _LINE_END.finditer(text):
            line = text[start : match.start()]
            self._line(self._finish(line) if self._pieces or len(line) > self._max_line else line, events)
            start = match.end()
        if start < len(text):
            self._pieces.append(text[start:])
            self._pending += len(text) - start
            self._check(self._pending)
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of stream: finish a last line and event even without their terminators (some servers omit them)."""
        text = self._finish(self._utf8.decode(b"", final=True))
        events: list[ServerSentEvent] = []
        for line in _LINE_END.split(text):
            self._line(line, events)
        self._line("", events)
        return events

    def _finish(self, tail: str) -> str:
        """The unfinished line with its last piece, and a fresh start."""
        if not self._pieces:
            self._check(len(tail))
            return tail
        self._pieces.append(tail)
        line = "".join(self._pieces)
        self._pieces, self._pending = [], 0
        self._check(len(line))
        return line

    def _check(self, length: int) -> None:
        if length > self._max_line:
            raise ProviderError(f"The provider sent a line longer than {self._max_line} characters")

    def _line(self, line: str, events: list[ServerSentEvent]) -> None:
        self.lines += 1
        if not line:
            if self._data:
                events.append(ServerSentEvent("\n".join(self._data), self._event or "message", self._id))
            self._data = []
            self._event = ""
            return
        if line[0] == ":":
            return  # comment / keep-alive
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
