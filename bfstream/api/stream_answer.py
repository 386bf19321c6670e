"""A Server-Sent Events answer of ``GET /stream/{streamId}/events``, whichever encoding it writes
(``stream_events.py`` has the writers): it joins the stream's home channel before it starts, so a
broker that is down is still an ordinary 503, and it lasts while its writer writes, the client
listens and the server is not shutting down, as ``messaging/transports/sse.py`` does for channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from bfstream.errors import BfstreamError
from bfstream.messaging.transports.sse import answer
from bfstream.streams.reader import StreamReader

log = logging.getLogger("bfstream.api")

KEEPALIVE = b": keep-alive\n\n"

# Writes the answer's events with ``send``; woken (the event ``StreamReader.following`` yields) when
# the stream has new events.
Writer = Callable[[Send, asyncio.Event], Awaitable[None]]


class EventStream(Response):
    """Made by ``open``, which joins the home channel; the answer leaves it when it ends."""

    def __init__(self, stack: contextlib.AsyncExitStack, woken: asyncio.Event, closing: asyncio.Event,
                 writer: Writer, extra: tuple[tuple[bytes, bytes], ...]) -> None:  # fmt: skip
        super().__init__(media_type="text/event-stream")
        self._stack, self._woken, self._closing, self._writer, self._extra = stack, woken, closing, writer, extra

    @classmethod
    async def open(
        cls, reader: StreamReader, closing: asyncio.Event, writer: Writer, extra: tuple[tuple[bytes, bytes], ...] = ()
    ) -> EventStream:
        stack = contextlib.AsyncExitStack()
        woken = await stack.enter_async_context(reader.following())
        return cls(stack, woken, closing, writer, extra)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await answer(
            scope, receive, send, self._extra, [lambda: self._write(send), self._closing.wait], self._stack.aclose
        )

    async def _write(self, send: Send) -> None:
        try:
            await self._writer(send, self._woken)
        except BfstreamError as exc:  # the broker or the database went away: the client reads on later
            log.warning("a stream's events stopped short: %s", exc.message)


async def send_event(send: Send, text: str) -> None:
    await send({"type": "http.response.body", "body": text.encode("utf-8", "replace"), "more_body": True})
