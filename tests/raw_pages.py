"""Pages that speak bfstream's wire protocol by hand, with no ``bfstream.js``: what issue 17 promises a
raw protocol user, checked event by event.

A page keeps, for each stream, its text and the last seq it has handled or that a snapshot stood for.
It applies the wire contract and nothing more: a ``snapshot`` replaces the text (it must extend what
the page already shows) and stands for every seq up to its own; any other event must come next in
seq order. So a lost event, one handled twice, or one out of order fails at once, naming the stream
and the seqs; at the end the page's text must be ``end.text``.

Pages join with ``since`` (WebSocket) or a ``Last-Event-ID`` (SSE), as a page catching up from the
channel's start or coming back after a drop does. Validating a frame against the wire schema takes
almost a millisecond, too long for 20,000-event answers read by several pages at once: every frame
that is not an ordinary message is checked, every log frame, and one message in ``CHECK_EVERY``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from tests.wire import check_server_frame

CHECK_EVERY = 500


@dataclass
class StreamView:
    """One stream as a page shows it."""

    text: str = ""
    reasoning: str = ""
    sources: list[dict[str, Any]] = field(default_factory=list)
    last: int = -1  # the last seq handled, or stood for by a snapshot
    snapshots: int = 0
    end: dict[str, Any] | None = None


@dataclass
class Answers:
    """Everything a page made of what it received, over however many connections."""

    name: str
    streams: dict[str, StreamView] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)  # the messages that are no stream's events
    log_frames: int = 0
    frames: int = 0

    def take(self, frame: dict[str, Any]) -> None:
        self.frames += 1
        if frame.get("log") is True:
            self.log_frames += 1
        if frame.get("log") is True or self.frames % CHECK_EVERY == 1:
            check_server_frame(frame)
        if frame["from"]["kind"] != "server":
            self.messages.append(frame["message"])
            return
        (action,) = frame["message"]["actions"]
        event = action["options"]
        stream, seq, kind = event["streamId"], event["seq"], event["type"]
        view = self.streams.setdefault(stream, StreamView())
        where = f"page {self.name}, stream {stream}: {kind} seq {seq} after seq {view.last}"
        assert view.end is None, f"{where}, after its end"
        if kind == "snapshot":
            assert seq > view.last, f"{where}: stands for what the page had already"
            assert event["text"].startswith(view.text), f"{where}: does not extend the text shown"
            assert event.get("reasoning", "").startswith(view.reasoning), f"{where}: does not extend the reasoning"
            assert event.get("sources", [])[: len(view.sources)] == view.sources, f"{where}: other sources"
            view.text, view.reasoning = event["text"], event.get("reasoning", "")
            view.sources = list(event.get("sources", []))
            view.snapshots += 1
        else:
            assert seq == view.last + 1, f"{where}: lost, twice or out of order"
            if kind == "delta":
                view.text += event["content"]
            elif kind == "reasoning":
                view.reasoning += event["content"]
            elif kind == "sources":
                view.sources += event["sources"]
            elif kind == "end":
                view.end = event
        view.last = seq

    def ended(self, count: int) -> bool:
        return sum(view.end is not None for view in self.streams.values()) >= count

    def whole(self, stream: str) -> str:
        """The stream's text, once the page has all of it: every seq up to its end, the text its end says."""
        view = self.streams.get(stream)
        assert view is not None, f"page {self.name} never heard of stream {stream}"
        assert view.end is not None, f"page {self.name}: stream {stream} has not ended (last seq {view.last})"
        assert view.last == view.end["seq"]
        assert view.text == view.end["text"], f"page {self.name}: stream {stream} shows other text than its end"
        assert view.reasoning == view.end.get("reasoning", ""), f"page {self.name}: other reasoning than its end"
        assert view.sources == view.end.get("sources", []), f"page {self.name}: other sources than its end"
        return view.text


def positions_of(event_id: str) -> dict[str, tuple[int, str]]:
    """The positions an SSE event id (or a WebSocket ``since``) encodes."""
    raw = json.loads(base64.urlsafe_b64decode(event_id + "=" * (-len(event_id) % 4)))
    return {name: (offset, epoch) for name, (offset, epoch) in raw.items()}


def positions_id(positions: dict[str, tuple[int, str]]) -> str:
    """An SSE event id as the server makes it (``protocol.encode_positions``), written here again so
    the page depends on the documented format, not on the server's code."""
    raw = json.dumps({name: list(pos) for name, pos in positions.items()}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


class WSPage:
    """A page on the WebSocket: joins one channel with ``since``, remembers its position, and can drop
    and come back from it on a new connection (to the same instance or another)."""

    def __init__(self, name: str, channel: str = "room") -> None:
        self.answers = Answers(name)
        self.channel = channel
        self.position: tuple[int, str] | None = None
        self.joined: list[dict[str, Any]] = []
        self._conn: ClientConnection | None = None

    async def connect(self, base_url: str, app_id: str) -> None:
        url = base_url.replace("http://", "ws://") + f"/message/ws?app={app_id}"
        self._conn = await connect(url, max_size=None)
        hello = json.loads(await asyncio.wait_for(self._conn.recv(), 5))
        check_server_frame(hello)

    async def join(self, base_url: str, app_id: str, since: dict[str, Any] | None = None) -> dict[str, Any]:
        """Connect (unless connected) and join; ``since`` defaults to the page's own position (a
        rejoin) or offset 0."""
        if since is None:
            since = {"offset": 0} if self.position is None else {"offset": self.position[0], "epoch": self.position[1]}
        if self._conn is None:
            await self.connect(base_url, app_id)
        assert self._conn is not None
        await self._conn.send(json.dumps({"op": "join", "channel": self.channel, "since": since, "id": "j"}))
        rejoining = self.position is not None
        while True:
            frame = await self._next(5)
            if rejoining and frame["op"] == "message":
                continue  # of the join this one starts over: the frames after its reply bring them again
            if frame["op"] == "joined":
                check_server_frame(frame)
                self.joined.append(frame)
                self.position = (frame["offset"], frame["epoch"])
                if since.get("epoch") not in (None, frame["epoch"]):
                    # The channel started over since the page's position: as documented, it takes
                    # the new epoch from its start.
                    return await self.join(base_url, app_id, {"offset": 0, "epoch": frame["epoch"]})
                return frame
            assert frame["op"] not in ("error", "message"), frame

    async def read(self, done: Callable[[], bool], timeout: float = 60) -> None:
        """Handle frames until ``done()``."""
        async with asyncio.timeout(timeout):
            while not done():
                frame = await self._next(timeout)
                if frame["op"] == "message" and frame["channel"] == self.channel:
                    self.answers.take(frame)
                    self.position = (frame["offset"], frame["epoch"])
                elif frame["op"] not in ("message", "pong"):
                    check_server_frame(frame)
                    raise AssertionError(f"page {self.answers.name}: unexpected frame {frame}")

    async def read_to_end(self, streams: int = 1, timeout: float = 60) -> None:
        await self.read(lambda: self.answers.ended(streams), timeout)

    async def drop(self) -> None:
        """The connection goes, as a reload or a tunnel takes it; the page keeps what it showed."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _next(self, timeout: float) -> dict[str, Any]:
        assert self._conn is not None
        return orjson.loads(await asyncio.wait_for(self._conn.recv(), timeout))


class SSEPage:
    """A page on Server-Sent Events: an ``EventSource`` stand-in that keeps the last event id and
    sends it back as ``Last-Event-ID`` when it connects again."""

    def __init__(self, name: str, http: httpx.AsyncClient, channel: str = "room") -> None:
        self.answers = Answers(name)
        self.channel = channel
        self.http = http
        self.last_event_id: str | None = None
        self.joined: list[dict[str, Any]] = []

    async def read(
        self, base_url: str, app_id: str, done: Callable[[], bool], timeout: float = 60, on_joined: Any = None
    ) -> None:
        """One connection, from the page's last event id, read until ``done()``, then closed. A
        ``joined`` of another epoch than the page asked for (the channel started over) sends it back
        for the new epoch from its start, as documented."""
        while await self._read_once(base_url, app_id, done, timeout, on_joined):
            pass

    async def _read_once(
        self, base_url: str, app_id: str, done: Callable[[], bool], timeout: float, on_joined: Any
    ) -> bool:
        """True when the page must connect again from the start of a new epoch."""
        asked = self.last_event_id
        headers = {"Last-Event-ID": asked} if asked else {}
        params = {"app": app_id, "channel": self.channel}
        async with asyncio.timeout(timeout):
            async with self.http.stream("GET", base_url + "/message/sse", params=params, headers=headers) as response:
                assert response.status_code == 200, await response.aread()
                event_id, name, data = None, "message", []
                async for line in response.aiter_lines():
                    if line:
                        key, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if key == "id":
                            event_id = value
                        elif key == "event":
                            name = value
                        elif key == "data":
                            data.append(value)
                        continue
                    if data:
                        frame = orjson.loads("\n".join(data))
                        if event_id is not None:
                            self.last_event_id = event_id
                        if name == "message":
                            self.answers.take(frame)
                        else:
                            check_server_frame(frame)
                            if name == "joined":
                                self.joined.append(frame)
                                wanted = positions_of(asked).get(self.channel) if asked else None
                                if wanted is not None and wanted[1] != frame["epoch"]:
                                    self.start_at(0, frame["epoch"])
                                    return True
                                if on_joined is not None:
                                    on_joined.set()
                    event_id, name, data = None, "message", []
                    if done():
                        return False
        return False

    def start_at(self, offset: int, epoch: str) -> None:
        """Catch up from ``offset`` of the channel's ``epoch`` on the next connection."""
        self.last_event_id = positions_id({self.channel: (offset, epoch)})


class Target(Protocol):
    """Where pages connect: a test server, or one instance of a fleet."""

    url: str
    app_id: str
    http: httpx.AsyncClient


class Pages:
    """Raw pages on one server, each joining over every transport and reading in a task of its own."""

    def __init__(self, server: Target, epoch: str, transports: tuple[str, ...] = ("websocket", "sse")) -> None:
        self.server, self.epoch, self.transports = server, epoch, transports
        self.tasks: list[asyncio.Task[None]] = []
        self.answers: list[Answers] = []

    async def open(self, name: str, streams: int, offset: int = 0, epoch: str | None = None) -> list[Answers]:
        """Pages that join now, from ``offset`` of ``epoch`` (the channel's own by default), and read
        until ``streams`` streams have ended."""
        epoch = self.epoch if epoch is None else epoch
        server, opened = self.server, []
        for transport in self.transports:
            if transport == "websocket":
                ws = WSPage(f"{name} (websocket)")
                await ws.join(server.url, server.app_id, {"offset": offset, "epoch": epoch})
                self.tasks.append(asyncio.create_task(ws.read_to_end(streams, timeout=120)))
                opened.append(ws.answers)
                continue
            sse = SSEPage(f"{name} (sse)", server.http)
            sse.start_at(offset, epoch)
            joined = asyncio.Event()
            done = functools.partial(sse.answers.ended, streams)
            self.tasks.append(asyncio.create_task(sse.read(server.url, server.app_id, done, 120, joined)))
            await asyncio.wait_for(joined.wait(), 10)
            opened.append(sse.answers)
        self.answers += opened
        return opened

    async def open_reloading(
        self, name: str, streams: int, leave_at: Callable[[], bool], come_back: Callable[[], Awaitable[None]]
    ) -> list[Answers]:
        """Pages that join now, drop (wherever their reading got to) once ``leave_at()`` holds, and
        come back from their last position once ``come_back`` returns."""
        server, opened = self.server, []
        for transport in self.transports:
            if transport == "websocket":
                ws = WSPage(f"{name} (websocket)")
                await ws.join(server.url, server.app_id, {"offset": 0, "epoch": self.epoch})

                async def ws_life(ws: WSPage = ws) -> None:
                    await ws.read(leave_at, 120)
                    await ws.drop()
                    await come_back()
                    joined = await ws.join(server.url, server.app_id)
                    assert joined["recovered"] is False, "the history should have moved on past the page's position"
                    await ws.read_to_end(streams, 120)

                self.tasks.append(asyncio.create_task(ws_life()))
                opened.append(ws.answers)
                continue
            sse = SSEPage(f"{name} (sse)", server.http)
            sse.start_at(0, self.epoch)
            joined = asyncio.Event()

            async def sse_life(sse: SSEPage = sse, joined: asyncio.Event = joined) -> None:
                await sse.read(server.url, server.app_id, leave_at, 120, joined)
                await come_back()
                await sse.read(server.url, server.app_id, functools.partial(sse.answers.ended, streams), 120)
                assert sse.joined[-1]["recovered"] is False, "the history should have moved on past the page's position"

            self.tasks.append(asyncio.create_task(sse_life()))
            await asyncio.wait_for(joined.wait(), 10)
            opened.append(sse.answers)
        self.answers += opened
        return opened

    async def finish(self, timeout: float = 120) -> None:
        """Every page has read to its end (a page's failed check fails the test here)."""
        async with asyncio.timeout(timeout):
            for task in self.tasks:
                await task


def last_seq(answers: Answers, stream_id: str) -> int:
    view = answers.streams.get(stream_id)
    return -1 if view is None else view.last


def echo_words(count: int, tag: str = "w") -> str:
    """An answer of ``count`` deltas: the echo provider streams the last user message back word by word."""
    return "".join(f"{tag}{i} " for i in range(count))


WORDS = " ".join(f"w{i}" for i in range(40))  # a short answer


def echo_body(api_key: str, channel: str = "room", words: str = WORDS) -> dict[str, Any]:
    """A stream of the echo provider to ``channel``, answering ``words``."""
    return {
        "apiKey": api_key,
        "channels": [channel],
        "actionName": "onStream",
        "service": "echo",
        "payload": {"model": "echo", "messages": [{"role": "user", "content": words}]},
    }
