"""``GET /stream/{streamId}/events``: a stream as a resource of its own, readable from any point.

By default the read side of the Durable Streams protocol (its ``PROTOCOL.md``), so that its own
clients read a bfstream stream unchanged: a JSON stream whose messages are the stream's events,
offsets that sort as the stream does (``offset_of``), three ways to read (catch-up, ``live=long-poll``,
``live=sse``), ``Stream-Up-To-Date`` when the reader has all there is, ``Stream-Closed`` once it has
the ``end``. With ``format=ai-sdk``, the AI SDK's UI message stream instead (``ui_messages.py``).

Who may read: whoever knows the stream id, as for ``/stream/stop`` (128 random bits, known to the
app's back end and to the pages in the stream's channels); from a browser, only a page of one of
the app's origins.
``docs/streams.md`` is the user's description; ``streams/reader.py`` reads the events.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import Response
from starlette.types import Send

from bfstream.api.headers import narrow_to_app
from bfstream.api.stream_answer import KEEPALIVE, EventStream, Writer, send_event
from bfstream.api.ui_messages import DONE, HEADER, FoldedPast, UIMessageParts
from bfstream.errors import Forbidden, Gone, NotFound, ValidationFailed
from bfstream.messaging.protocol import dumps
from bfstream.messaging.transports.sse import until_disconnected
from bfstream.streams.reader import Chunk, StreamReader

log = logging.getLogger("bfstream.api")
router = APIRouter()

# Offsets are the number of events before the position, in 16 digits: string order is stream order
# (the protocol's one demand of them), and ``-1`` and ``now`` are the protocol's two sentinels.
OFFSET_PATTERN = r"^(-1|now|[0-9]{16})$"
_OFFSET = re.compile(OFFSET_PATTERN)
LONG_POLL_SECONDS = 20.0  # below the 30 s the Python client gives a request by default
SSE_SECONDS = 60.0  # the protocol asks servers to close SSE about every minute; clients reconnect
# The most event JSON one answer (or one SSE data event) carries; None: twice streams.log_bytes. The
# owner keeps a log within log_bytes, so a whole log goes in one answer: the npm client reads a
# single answer in catch-up mode (live: false), even one that leaves Stream-Up-To-Date out.
CHUNK_BYTES: int | None = None
# The protocol's cursor: 20-second intervals counted from its epoch, 2024-10-09T00:00:00Z.
_CURSOR_EPOCH, _CURSOR_INTERVAL = 1_728_432_000, 20
# What a page on another origin may read of the answer (the CORS default hides every custom header).
_EXPOSED = "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, ETag, x-vercel-ai-ui-message-stream"
_CACHEABLE = "private, max-age=60, stale-while-revalidate=300"  # the protocol's, for user-specific data


def offset_of(position: int) -> str:
    """The offset standing before event ``position`` (after ``position`` events)."""
    return f"{position:016d}"


def next_cursor(given: str | None) -> str:
    """Always ahead of the cursor the client echoes, so a cache never answers a poll with itself."""
    now = int((time.time() - _CURSOR_EPOCH) // _CURSOR_INTERVAL)
    if given is not None and given.isdigit() and len(given) <= 18 and int(given) >= now:
        return str(int(given) + 1 + secrets.randbelow(180))  # 20 s to an hour on, as the protocol says
    return str(now)


_DESCRIPTION = {
    200: "Catch-up and long-poll: a JSON array of the stream's events after the offset (Stream-Next-Offset "
    "says where to read next; Stream-Up-To-Date: there is nothing more yet; Stream-Closed: nor will there "
    "ever be). live=sse and format=ai-sdk: a Server-Sent Events stream.",
    204: "Long-poll: nothing new came in time (Stream-Closed: the stream is over).",
    304: "The events named by If-None-Match's ETag, unchanged.",
}
_HEADERS = {
    name: {"description": text, "schema": {"type": "string"}}
    for name, text in (
        ("Stream-Next-Offset", "The offset to read from next."),
        ("Stream-Up-To-Date", "true: the answer holds every event there is."),
        ("Stream-Closed", "true: the stream has ended and the answer reaches its end."),
        ("Stream-Cursor", "Long-poll: echo it as `cursor` in the next request."),
    )
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": _DESCRIPTION[200],
        "headers": _HEADERS,
        "content": {
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            # Each event: the protocol's ``data`` (a JSON array) and ``control`` events, or the AI
            # SDK's parts (``data:`` lines only, the last one ``[DONE]``).
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"}},
                }
            },
        },
    },
    204: {"description": _DESCRIPTION[204], "headers": _HEADERS},
    304: {"description": _DESCRIPTION[304]},
}


@router.get("/stream/{streamId}/events", response_class=Response, responses=_RESPONSES)
async def stream_events(
    request: Request,
    streamId: Annotated[str, Path(description="The id /stream/create answered.", min_length=1, max_length=200)],
    offset: Annotated[
        str | None,
        Query(
            description="Where to read from: -1 (the default) the start, `now` the end, or a Stream-Next-Offset "
            "given before.",
            pattern=OFFSET_PATTERN,
        ),
    ] = None,
    live: Annotated[
        Literal["long-poll", "sse"] | None,
        Query(description="Wait for events: one long-poll answer, or a Server-Sent Events stream."),
    ] = None,
    cursor: Annotated[str | None, Query(description="The last Stream-Cursor, echoed.", max_length=40)] = None,
    format: Annotated[
        Literal["durable-streams", "ai-sdk"],
        Query(description="ai-sdk: the AI SDK's UI message stream (Server-Sent Events, to the stream's end)."),
    ] = "durable-streams",
    if_none_match: Annotated[str | None, Header(alias="If-None-Match", include_in_schema=False)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", include_in_schema=False)] = None,
) -> Response:
    """Read a stream's events: the Durable Streams protocol's read side, or the AI SDK's UI message
    stream. The stream id is the capability; a page must be of one of the app's origins."""
    reader = await _reader_for(request, streamId)
    given = offset if offset is not None else last_event_id if format == "ai-sdk" else None
    if given is not None and not _OFFSET.fullmatch(given):
        raise ValidationFailed(
            "The offset is invalid", details=[{"field": "Last-Event-ID", "message": f"must match {OFFSET_PATTERN}"}]
        )
    if given == "now":
        first = await reader.read(-1)
        after = first.tail - 1
        first = Chunk([], first.tail, first.closed)
    else:
        after = -1 if given is None or given == "-1" else int(given) - 1
        first = await reader.read(after)
    closing = request.app.state.messaging.closing
    limit = CHUNK_BYTES or 2 * request.app.state.settings.streams.log_bytes
    if format == "ai-sdk":
        if after >= 0 and first.events and first.events[0]["type"] == "snapshot":
            raise Gone(
                "The stream's text up to this offset was folded into a snapshot: read it from the start",
                details=[{"field": "offset", "message": "inside the folded part of the stream"}],
            )
        parts = UIMessageParts(reader.stream_id, from_start=after < 0)
        return await EventStream.open(reader, closing, _ui_writer(reader, after, first, parts), _sse_headers(HEADER))
    if live == "sse":
        return await EventStream.open(reader, closing, _sse_writer(reader, after, first, cursor, limit), _sse_headers())
    if live == "long-poll" and not first.events and not first.closed:
        async with reader.following() as woken:
            waited = await unless_gone(request, closing, reader.wait(after, woken, LONG_POLL_SECONDS))
        first = waited or first
    if live == "long-poll" and not first.events:
        return _no_content(after + 1, first.closed, cursor)
    return _json_answer(reader.stream_id, after, first, given == "now", live is not None, cursor, if_none_match, limit)


@router.api_route("/stream/{streamId}/events", methods=["HEAD"], include_in_schema=False)
async def stream_metadata(
    request: Request,
    streamId: Annotated[str, Path(min_length=1, max_length=200)],  # as GET: a 400 past it, not a 404
) -> Response:
    """The protocol's HEAD: where the stream ends now, and whether it is closed, without its events."""
    chunk = await (await _reader_for(request, streamId)).read(-1)
    headers = {**_common_headers(), "Stream-Next-Offset": offset_of(chunk.tail), "Cache-Control": "no-store"}
    if chunk.closed:
        headers["Stream-Closed"] = "true"
    return Response(status_code=200, media_type="application/json", headers=headers)


async def _reader_for(request: Request, stream_id: str) -> StreamReader:
    state = request.app.state
    record = await state.store.stream_by_id(stream_id)
    if record is None:
        raise NotFound(f"No stream {stream_id[:80]!r}")
    app = await state.store.app_by_id(record.app_id)
    if app is not None:
        narrow_to_app(request.scope, app.origins)
        if not app.allows_origin(request.headers.get("origin")):
            raise Forbidden("This page's origin may not read this app's streams")
    address = request.client.host if request.client else None
    return StreamReader(state.hub, state.store, record, state.messaging.connections, address)


def _common_headers() -> dict[str, str]:
    return {"Access-Control-Expose-Headers": _EXPOSED, "Cross-Origin-Resource-Policy": "cross-origin"}


def _sse_headers(*extra: tuple[bytes, bytes]) -> tuple[tuple[bytes, bytes], ...]:
    return (*((k.lower().encode(), v.encode()) for k, v in _common_headers().items()), *extra)


def _pieces(events: list[dict[str, Any]], limit: int) -> Iterator[tuple[list[str], int]]:
    """The events as JSON texts, in runs of at most ``limit`` bytes (at least one event each), with
    the position after each run."""
    run: list[str] = []
    size = 0
    for event in events:
        text = dumps(event)
        if run and size + len(text) > limit:
            yield run, event["seq"]
            run, size = [], 0
        run.append(text)
        size += len(text) + 1
    if run:
        yield run, events[-1]["seq"] + 1


def _json_answer(
    stream_id: str, after: int, chunk: Chunk, now: bool, live: bool, cursor: str | None, if_none_match: str | None,
    limit: int,
) -> Response:  # fmt: skip
    """A catch-up or long-poll answer: the first run of events after ``after``."""
    run, position = next(_pieces(chunk.events, limit), ([], after + 1))
    at_end = position == chunk.tail
    headers = {**_common_headers(), "Stream-Next-Offset": offset_of(position)}
    if at_end:
        headers["Stream-Up-To-Date"] = "true"
        if chunk.closed:
            headers["Stream-Closed"] = "true"
    if live and not (at_end and chunk.closed):
        headers["Stream-Cursor"] = next_cursor(cursor)
    # Events never change at a position, and a stream once closed stays so: such an answer may be
    # kept. An empty one of a running stream may not: the next event would hide behind it.
    if now or (not run and not chunk.closed):
        headers["Cache-Control"] = "no-store"
    else:
        headers["Cache-Control"] = _CACHEABLE
        closed_mark = ":c" if "Stream-Closed" in headers else ""
        etag = f'"{stream_id}:{offset_of(after + 1)}:{offset_of(position)}{closed_mark}"'
        headers["ETag"] = etag
        if if_none_match is not None and _matches(if_none_match, etag):
            return Response(status_code=304, headers=headers)
    return Response("[" + ",".join(run) + "]", media_type="application/json", headers=headers)


def _matches(if_none_match: str, etag: str) -> bool:
    """HTTP's weak comparison, as If-None-Match asks: ``*``, or any listed tag, ``W/`` or not (a
    proxy that compresses, nginx's gzip for one, marks the tags it passes on weak)."""
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def _no_content(position: int, closed: bool, cursor: str | None) -> Response:
    headers = {
        **_common_headers(),
        "Stream-Next-Offset": offset_of(position),
        "Stream-Up-To-Date": "true",
        "Cache-Control": "no-store",
    }
    if closed:
        headers["Stream-Closed"] = "true"
    else:
        headers["Stream-Cursor"] = next_cursor(cursor)
    return Response(status_code=204, headers=headers)


async def unless_gone(request: Request, closing: asyncio.Event, work: Awaitable[Chunk]) -> Chunk | None:
    """``work``'s result, or None if the client hung up or the server began shutting down first."""
    task = asyncio.ensure_future(work)
    others = [asyncio.ensure_future(until_disconnected(request.receive)), asyncio.ensure_future(closing.wait())]
    try:
        await asyncio.wait([task, *others], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for other in (*others, task):
            other.cancel()
        await asyncio.gather(*others, return_exceptions=True)
    return task.result() if task.done() and not task.cancelled() else None


def _sse_writer(reader: StreamReader, after: int, first: Chunk, cursor: str | None, limit: int) -> Writer:
    """The protocol's SSE mode: each run of events is a ``data`` event (a JSON array) followed by a
    ``control`` event with the next offset; the last control of a closed stream says so, and the
    connection ends there (or after ``SSE_SECONDS``, when the client reconnects from the offset)."""

    async def write(send: Send, woken: asyncio.Event) -> None:
        nonlocal after
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SSE_SECONDS
        keepalive = SSE_SECONDS / 4
        chunk, announced = first, False
        while True:
            for run, position in _pieces(chunk.events, limit):
                await send_event(send, "event: data\ndata: [" + ",".join(run) + "]\n\n")
                after = position - 1
                await send_event(send, _control(position, position == chunk.tail, chunk.closed, cursor))
                announced = True
            if not announced or (chunk.closed and not chunk.events):
                await send_event(send, _control(after + 1, True, chunk.closed, cursor))
                announced = True
            if chunk.closed:
                return
            left = deadline - loop.time()
            if left <= 0:
                return
            chunk = await reader.wait(after, woken, min(left, keepalive))
            if not chunk.events and not chunk.closed:
                await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})

    return write


def _control(position: int, at_end: bool, closed: bool, cursor: str | None) -> str:
    control: dict[str, Any] = {"streamNextOffset": offset_of(position)}
    if at_end:
        control["upToDate"] = True
        if closed:
            control["streamClosed"] = True
    if not (at_end and closed):
        control["streamCursor"] = next_cursor(cursor)
    return "event: control\ndata: " + dumps(control) + "\n\n"


def _ui_writer(reader: StreamReader, after: int, first: Chunk, parts: UIMessageParts) -> Writer:
    """The AI SDK's parts, to the stream's end: ``data: [DONE]`` after its ``end``. Each part an
    event makes carries the offset after that event as its SSE id, to resume from."""

    async def write(send: Send, woken: asyncio.Event) -> None:
        nonlocal after
        for part in parts.opening():
            await send_event(send, "data: " + dumps(part) + "\n\n")
        chunk = first
        while True:
            for event in chunk.events:
                try:
                    made = parts.of(event)
                except FoldedPast:  # folded while this answer was being written
                    made = [{"type": "error", "errorText": "The stream was folded past this point: read it again"}]
                    chunk = Chunk([], chunk.tail, True)
                    await send_event(send, "data: " + dumps(made[0]) + "\n\n")
                    break
                after = event["seq"]
                for part in made:
                    await send_event(send, f"id: {offset_of(after + 1)}\ndata: {dumps(part)}\n\n")
            if chunk.closed:
                await send_event(send, f"data: {DONE}\n\n")
                return
            chunk = await reader.wait(after, woken, SSE_SECONDS / 4)
            if not chunk.events and not chunk.closed:
                await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})

    return write
