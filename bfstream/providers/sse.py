"""Incremental Server-Sent Events parser, shared by every provider that streams SSE.

Bytes come off the socket cut anywhere: inside a line, inside a UTF-8 character, between the CR
and LF of one line ending. The parser keeps what it cannot finish yet and only splits on CR, LF
and CRLF (never on U+2028 and friends, which JSON strings may carry raw).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: str
    event: str = "message"
    id: str | None = None


class SSEDecoder:
    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        text = self._pending + self._utf8.decode(chunk)
        events: list[ServerSentEvent] = []
        start = 0
        for match in _LINE_END.finditer(text):
            if match.group() == "\r" and match.end() == len(text):
                break  # maybe the first half of a CRLF; wait for the next chunk
            self._line(text[start : match.start()], events)
            start = match.end()
        self._pending = text[start:]
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of stream: finish a last line and event even without their terminators (some servers omit them)."""
        text = self._pending + self._utf8.decode(b"", final=True)
        self._pending = ""
        events: list[ServerSentEvent] = []
        for line in _LINE_END.split(text):
            self._line(line, events)
        self._line("", events)
        return events

    def _line(self, line: str, events: list[ServerSentEvent]) -> None:
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
