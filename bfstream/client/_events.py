"""Reading ``GET /stream/{streamId}/events`` (``docs/streams.md``, "The stream's URL"), without I/O.

The client reads it with ``live=sse``: ``data`` events, each a JSON array of stream events, each
batch followed by a ``control`` event ``{streamNextOffset, upToDate?, streamClosed?}``. The server
ends a connection after about a minute, or when it shuts down; the reader then connects again
from where it was. It is done at the stream's ``end`` (or a control saying the stream is closed).

An offset is the number of events before a position, in 16 digits: after the event of ``seq`` n
it is n + 1, a ``snapshot`` included (it stands for every event up to its ``seq``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from bfstream.client._errors import BfstreamAPIError
from bfstream.client._types import StreamEvent

START = "-1"


class EventCursor:
    """Where a reader of one stream is, fed the SSE lines of each connection in turn.

    ``offset`` stands after the last event handed out: a reader that stops early resumes there, with
    ``events(stream_id, offset=...)``, and gets what came next. ``done`` once the stream ended."""

    def __init__(self, offset: str = START) -> None:
        self.offset = offset
        self.done = False
        self._name = ""
        self._data: list[str] = []

    def params(self) -> dict[str, str]:
        """The query of the next connection; a new connection starts a new SSE parse."""
        self._name, self._data = "", []
        return {"offset": self.offset, "live": "sse"}

    def feed(self, line: str) -> Iterator[StreamEvent]:
        """The events a line completes, handed out one by one; each moves ``offset`` past it as it
        is taken, so stopping half-way through a batch loses nothing."""
        if line == "":
            name, lines = self._name or "message", self._data
            self._name, self._data = "", []
            if lines:
                yield from self._dispatch(name, "\n".join(lines))
            return
        if line.startswith(":"):  # a comment: the server's keep-alive
            return
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            self._name = value
        elif key == "data":
            self._data.append(value)

    def _dispatch(self, name: str, data: str) -> Iterator[StreamEvent]:
        try:
            parsed: Any = json.loads(data)
        except ValueError:
            raise BfstreamAPIError(200, f"Not an event of bfstream: {data[:200]!r}", type="invalid_response") from None
        if name == "control":
            control: dict[str, Any] = parsed
            self.offset = control.get("streamNextOffset", self.offset)
            self.done = self.done or bool(control.get("streamClosed"))
        elif name == "data":
            for event in parsed:
                if self.done:
                    return
                self.offset = f"{event['seq'] + 1:016d}"
                self.done = event.get("type") == "end"
                yield event
