"""A scriptable HTTP/1.1 server on raw asyncio sockets, the base of every fake LLM provider.

Tests script each reply down to how its bytes are cut into HTTP chunks, so bfstream's SSE parsing, UTF-8
reassembly, error handling and cancellation meet a provider's real wire format rather than a framework's.
Each provider's fake (``openai_server``, ``anthropic_server``, ...) adds its headers and reply builders.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

_PHRASES = {s.value: s.phrase for s in HTTPStatus}


@asynccontextmanager
async def _pieces(pieces: list[bytes] | AsyncIterable[bytes]) -> AsyncIterator[AsyncIterator[bytes]]:
    """A reply's pieces as one async iterator, closed at the end (an async generator stopped half-way
    by a client that hung up runs its ``finally`` now, not whenever it is collected)."""
    if isinstance(pieces, list):

        async def listed() -> AsyncIterator[bytes]:
            for piece in pieces:
                yield piece

        iterator: AsyncIterator[bytes] = listed()
    else:
        iterator = aiter(pieces)
    try:
        yield iterator
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()


@dataclass
class RecordedRequest:
    """One request as received, so tests can assert on what bfstream sent upstream."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class StreamReply:
    """200 text/event-stream reply sent as HTTP/1.1 chunked encoding, one HTTP chunk per item of `pieces`.

    `pieces` may be an async iterable, for a reply that is made up as it goes (paced by its own
    awaits, or lasting until the test says so); it is closed when the client hangs up."""

    pieces: list[bytes] | AsyncIterable[bytes]
    delay: float = 0.002
    disconnect: bool = False
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    head_delay: float = 0.0  # wait before the response headers, as a provider queueing the request does


@dataclass
class JsonReply:
    """A whole JSON answer (non-stream completion or API error) with a Content-Length body."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class _Conn:
    """One accepted socket; a single pump task owns the reader so a client close is seen even mid-response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buf = bytearray()
        self.eof = False
        self.changed = asyncio.Event()
        self.closed = asyncio.Event()  # set only when the *client* went away
        self.closed_at = 0.0
        self.server_closing = False

    def mark_closed(self) -> None:
        if not self.closed.is_set() and not self.server_closing:
            self.closed_at = time.perf_counter()
            self.closed.set()

    async def pump(self) -> None:
        try:
            while data := await self.reader.read(65536):
                self.buf += data
                self.changed.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self.eof = True
            self.mark_closed()
            self.changed.set()

    async def take(self, sep: bytes = b"", n: int = 0) -> bytes | None:
        """Bytes up to `sep` (which is dropped) or exactly `n` bytes; None if the client hung up first."""
        while (end := self.buf.find(sep) if sep else (n if len(self.buf) >= n else -1)) < 0:
            if self.eof:
                return None
            self.changed.clear()
            await self.changed.wait()
        data = bytes(self.buf[:end])
        del self.buf[: end + len(sep)]
        return data


class FakeProvider:
    """HTTP/1.1 keep-alive server that answers each request with the next scripted reply (FIFO).

    Subclasses set ``base_path`` (appended to ``base_url``), the provider's own response headers and
    the error body for an unscripted request."""

    base_path = ""

    def response_headers(self) -> dict[str, str]:
        return {}

    def unscripted(self, method: str, path: str) -> JsonReply:
        return JsonReply(500, {"error": {"message": f"Fake server: no reply was scripted for {method} {path}."}})

    def __init__(self) -> None:
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self.first_byte_at: list[float] = []
        self._replies: deque[StreamReply | JsonReply] = deque()
        self._last_request_conn: _Conn | None = None  # pooled connections are reused: track the one asked last
        self._requested = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}{self.base_path}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeProvider:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def enqueue(self, *replies: StreamReply | JsonReply) -> None:
        self._replies.extend(replies)

    async def nth_request(self, number: int, timeout: float = 5.0) -> RecordedRequest:
        """The ``number``-th request (from 1), once it has arrived: a tool loop asks for its next turn
        when the tools have answered, on no schedule a test knows."""
        async with asyncio.timeout(timeout):
            while len(self.requests) < number:
                await asyncio.sleep(0.005)
        return self.requests[number - 1]

    async def wait_closed(self, timeout: float = 5.0) -> float:
        """perf_counter() at which the client closed the connection that carried the latest request
        (raises TimeoutError)."""
        async with asyncio.timeout(timeout):
            await self._requested.wait()
            conn = self._last_request_conn
            assert conn is not None
            await conn.closed.wait()
        return conn.closed_at

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(reader, writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        pump = asyncio.create_task(conn.pump())
        try:
            while (head := await conn.take(b"\r\n\r\n")) is not None:
                started = time.perf_counter()
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, path, _version = request_line.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
                body = await conn.take(n=int(headers.get("content-length", "0")))  # httpx never chunks JSON
                if body is None:
                    break
                self.requests.append(RecordedRequest(method, path, headers, body))
                self._last_request_conn = conn
                self._requested.set()
                reply = self._replies.popleft() if self._replies else self.unscripted(method, path)
                if isinstance(reply, StreamReply):
                    keep = await self._send_stream(conn, reply, started)
                else:
                    keep = await self._send_json(conn, reply, started)
                if not keep or headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, OSError):
            conn.mark_closed()  # a failed write means the client is gone
        except (ValueError, asyncio.CancelledError):
            pass  # malformed request, or stop(): drop the connection; a raising handler would only be logged
        finally:
            conn.server_closing = True
            writer.close()
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            self._tasks.discard(task)

    def _head(self, status: int, started: float, headers: dict[str, str]) -> bytes:
        fields = {
            "date": formatdate(usegmt=True),
            "connection": "keep-alive",
            "x-processing-ms": str(round((time.perf_counter() - started) * 1000)),
            **self.response_headers(),
            **headers,
        }
        lines = [
            f"HTTP/1.1 {status} {_PHRASES.get(status, 'Unknown')}",
            *(f"{k}: {v}" for k, v in fields.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send_json(self, conn: _Conn, reply: JsonReply, started: float) -> bool:
        await asyncio.sleep(reply.delay)
        if conn.closed.is_set():
            return False
        body = json.dumps(reply.body, indent=2, ensure_ascii=False).encode()  # providers pretty-print these
        ctype = {"content-type": "application/json", "content-length": str(len(body))}
        conn.writer.write(self._head(reply.status, started, {**ctype, **reply.headers}) + body)
        await conn.writer.drain()
        return True

    async def _send_stream(self, conn: _Conn, reply: StreamReply, started: float) -> bool:
        ctype = {"content-type": "text/event-stream; charset=utf-8", "transfer-encoding": "chunked"}
        writer = conn.writer
        await asyncio.sleep(reply.head_delay)
        writer.write(self._head(reply.status, started, {**ctype, **reply.headers}))
        await writer.drain()
        first = True
        async with _pieces(reply.pieces) as pieces:
            async for piece in pieces:
                if conn.closed.is_set() or writer.is_closing():
                    return False
                if not piece:
                    continue  # a zero-length HTTP chunk would end the body
                if first:
                    self.first_byte_at.append(time.perf_counter())
                    first = False
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(reply.delay)
        if reply.disconnect:
            conn.server_closing = True
            writer.transport.abort()
            return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True
