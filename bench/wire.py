"""Raw client-side wire code for the load clients: WebSocket, SSE and chunked HTTP over asyncio protocols.

No websockets/httpx here on purpose: a load client must cost far less per frame than the server it measures
(httpx spends more CPU per request than bfstream does; see bench history in git). Responses are parsed by
httptools (llhttp, C); WebSocket frames by hand (server frames are never masked; ours use the all-zero mask,
which RFC 6455 allows, so masking is a no-op).

A stamp is ``T<perf_counter_ns>|`` in a delta's content, written by bench/provider.py just before the write;
``STAMP`` finds it both in bfstream's delta frames (``"content":"T..|"``) and in OpenAI chunks
(``"delta":{"content":"T..|"}``), and never in ``end`` (its text is ``"text":...``) or ``threadInfo``
(``"content":{...}``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import struct
import time
from collections.abc import Callable

import httptools

STAMP = re.compile(rb'"content":"T(\d+)\|')
END_MARKS = (b'"type":"end"', b"data: [DONE]")
ERROR_MARKS = (b'"type":"error"', b'"op":"error"')

now_ns = time.perf_counter_ns

# (payload bytes, receipt perf_counter_ns) -> None
OnData = Callable[[bytes, int], None]


def _quiet(fut: asyncio.Future) -> None:
    """Mark a future's exception as seen: a connection that fails before anyone awaits it is counted, not logged."""
    if not fut.cancelled():
        fut.exception()


class WebSocket(asyncio.Protocol):
    """One client WebSocket. ``opened`` resolves on the 101 answer; ``on_text`` gets each text frame."""

    def __init__(self, host: str, path: str, on_text: OnData, on_close: Callable[[], None] | None = None) -> None:
        self.host, self.path = host, path
        self.on_text, self.on_close = on_text, on_close
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.opened.add_done_callback(_quiet)
        self.buf = bytearray()
        self.upgraded = False
        self.fragments = bytearray()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        now = now_ns()
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                if not self.opened.done():
                    self.opened.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace")))
                self.transport.close()  # type: ignore[union-attr]
                return
            self.upgraded = True
            if not self.opened.done():
                self.opened.set_result(None)
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if size - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            opcode = b0 & 0x0F
            if opcode in (1, 0):  # text, continuation
                if not b0 & 0x80:
                    self.fragments += payload
                    continue
                if self.fragments:
                    payload, self.fragments = bytes(self.fragments + payload), bytearray()
                self.on_text(payload, now)
            elif opcode == 9:  # ping
                self._frame(0xA, payload)
            elif opcode == 8:  # close: answer it and hang up
                self._frame(0x8, payload[:2])
                self.transport.close()  # type: ignore[union-attr]
        if pos:
            del buf[:pos]

    def _frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(head + b"\0\0\0\0" + payload)

    def send_text(self, payload: bytes) -> None:
        self._frame(0x1, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed before the upgrade"))
        if self.on_close is not None:
            self.on_close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class HTTPStream(asyncio.Protocol):
    """One HTTP/1.1 request whose (chunked or sized) response body is streamed: SSE from bfstream or the
    fake provider's OpenAI stream. ``on_event`` gets each complete SSE event (text up to a blank line);
    ``status`` resolves with the status code once the headers are in, ``done`` at the end of the body."""

    def __init__(self, request: bytes, on_event: OnData | None, keep_body: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.request, self.on_event, self.keep_body = request, on_event, keep_body
        self.status: asyncio.Future[int] = loop.create_future()
        self.done: asyncio.Future[bytes] = loop.create_future()
        self.status.add_done_callback(_quiet)
        self.done.add_done_callback(_quiet)
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.carry = b""
        self.body = bytearray()
        self.now = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.now = now_ns()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(e)

    # httptools callbacks
    def on_headers_complete(self) -> None:
        if not self.status.done():
            self.status.set_result(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        if self.keep_body:
            self.body += body
        if self.on_event is None:
            return
        text = self.carry + body if self.carry else body
        end = text.rfind(b"\n\n")
        if end < 0:
            self.carry = text
            return
        self.carry = text[end + 2 :]
        for event in text[:end].split(b"\n\n"):
            self.on_event(event, self.now)

    def on_message_complete(self) -> None:
        if not self.done.done():
            self.done.set_result(bytes(self.body))
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: BaseException) -> None:
        for fut in (self.status, self.done):
            if not fut.done():
                fut.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection closed before the response ended"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def request_bytes(method: str, host: str, path: str, body: bytes = b"", headers: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}"
    if body or method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def http_call(port: int, method: str, path: str, body: bytes = b"", within: float = 30.0) -> tuple[int, bytes]:
    """One request on its own connection; (status, body)."""
    loop = asyncio.get_running_loop()
    req = request_bytes(method, "127.0.0.1", path, body, "Connection: close\r\n")
    async with asyncio.timeout(within):
        _, proto = await loop.create_connection(lambda: HTTPStream(req, None, keep_body=True), "127.0.0.1", port)
        try:
            status = await proto.status
            return status, await proto.done
        finally:
            proto.close()
