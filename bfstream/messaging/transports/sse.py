"""The Server-Sent Events transport: the same frames as the WebSocket, one event each.

Every ``message``, ``joined`` and ``left`` event carries an ``id`` that encodes the connection's
position in each of its channels (base64url of ``{"channel": [offset, epoch], ...}``). A browser
``EventSource`` sends the last one back as ``Last-Event-ID`` when it reconnects, and the new
connection resumes every channel from there. Comment lines keep idle proxies from closing the
stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bfstream.messaging.protocol import encode_positions
from bfstream.messaging.session import Context, Session, Since
from bfstream.messaging.tokens import User
from bfstream.store.records import App

_KEEPALIVE = b": keep-alive\n\n"


class EventStream(Response):
    """A response that lives as long as the browser's connection. Made by ``open``, which joins the
    channels first, so a refusal (the broker down, say) is still an ordinary HTTP error."""

    def __init__(self, context: Context, session: Session, resume: dict[str, Since], stop: asyncio.Event) -> None:
        super().__init__(media_type="text/event-stream")
        self._context = context
        self._session = session
        self._resume = resume
        self._stop = stop

    @classmethod
    async def open(
        cls,
        context: Context,
        app: App,
        user: User | None,
        channels: list[str],
        resume: dict[str, Since],
        address: str | None = None,
    ) -> EventStream:
        stop = asyncio.Event()
        session = Session(context, app, user, stop.set, address)
        try:
            await session.open(resume)
            for channel in channels:
                await session.join(channel, resume.get(channel))
        except BaseException:
            await session.close()
            raise
        return cls(context, session, resume, stop)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = self._session
        work = [lambda: self._write_forever(session, send), self._stop.wait, self._context.closing.wait]
        await answer(scope, receive, send, (), work, session.close)

    async def _write_forever(self, session: Session, send: Send) -> None:
        # Start from where the client resumes: until a channel's own joined event is written, the ids
        # must still carry its old position, or a second drop during a long replay of another channel
        # would forget it.
        positions = {name: (since.offset, since.epoch or "") for name, since in self._resume.items()}
        keepalive = self._context.limits.sse_keepalive
        while True:
            try:
                async with asyncio.timeout(keepalive):
                    op, frame, channel, offset, epoch, _ = await session.next_outgoing()
            except TimeoutError:
                await send({"type": "http.response.body", "body": _KEEPALIVE, "more_body": True})
                continue
            lines = []
            if channel is not None and channel != session.private_channel:
                if op == "left":
                    positions.pop(channel, None)
                else:
                    positions[channel] = (offset, epoch)
                lines.append(f"id: {encode_positions(positions)}\n")
            if op != "message":
                lines.append(f"event: {op}\n")
            lines.append(f"data: {frame}\n\n")
            try:
                body = "".join(lines).encode()
            except UnicodeEncodeError:  # cannot happen with the edges checked; must not cost the connection
                continue
            await send({"type": "http.response.body", "body": body, "more_body": True})


async def answer(
    scope: Scope,
    receive: Receive,
    send: Send,
    extra: tuple[tuple[bytes, bytes], ...],
    work: list[Callable[[], Awaitable[Any]]],
    cleanup: Callable[[], Awaitable[None]],
) -> None:
    """An event stream's life, for channels (here) and for a stream's own URL
    (``api/stream_answer.py``): the headers, then ``work`` until the first of it ends or the client
    hangs up, then ``cleanup``, then the end of the response, or the connection cut when the client
    is too slow to take even that."""
    headers = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),  # nginx: pass events through at once
        *extra,
    ]
    tasks: list[asyncio.Task[Any]] = []
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        tasks = [asyncio.create_task(until_disconnected(receive)), *(asyncio.create_task(w()) for w in work)]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await cleanup()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
    await cut_connection(scope)  # a client too slow to take even the end of the response


async def until_disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def cut_connection(scope: Scope) -> None:
    """Drop the connection of a reader that does not take the response's last bytes (it stopped
    reading, so the server's writes stay paused). Returning with the response unfinished would
    have uvicorn report an application error; a connection it sees lost first is the client's
    doing. The server's own ``send`` (``api/realtime.py``) is uvicorn's request cycle, whose
    ``transport`` and ``disconnected`` the WebSocket's direct path relies on as well."""
    cycle = getattr(scope.get("bfstream.server_send"), "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:  # another server than uvicorn: it reports the unfinished response as it will
        return
    transport.abort()
    for _ in range(10):  # connection_lost runs at the loop's next turn
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0)
