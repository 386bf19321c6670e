"""Fake OpenAI provider process: ``POST .../chat/completions`` answered as a paced stream of stamped chunks.

Raw asyncio protocol on uvloop, httptools for the request, keep-alive, chunked HTTP/1.1: tens of thousands
of chunks a second from one process. Each chunk is one ``data: {chat.completion.chunk}\\n\\n`` event in one
HTTP chunk; its ``delta.content`` is ``T<perf_counter_ns>|`` taken just before the write (CLOCK_MONOTONIC,
comparable across processes on Linux). The last user message says what to send: ``bench rate=20 count=200``
(chunks per second, number of chunks; optional ``ttfb_ms=``, a wait before the headers). The first chunk
goes out with the headers, chunk i at start + i/rate. Then a usage chunk, ``data: [DONE]``, the last chunk.

Run: ``python -m bench.provider --port P [--reuse-port]``; prints ``ready <port>`` once listening.
Several processes may share one port with ``--reuse-port`` (SO_REUSEPORT).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import sys
import time

import httptools
import uvloop

SPEC = re.compile(r"(\w+)=([\d.]+)")
HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
PRE = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"T'
)
POST = b'|"},"finish_reason":null}]}\n\n'
TAIL = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,'
    b'"delta":{},"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"m","choices":[],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Stream:
    """One answer being written: chunk ``i`` is due at ``start + i / rate`` (loop time)."""

    __slots__ = ("count", "handle", "i", "loop", "rate", "start", "transport")

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, rate: float, count: int) -> None:
        self.loop, self.transport, self.rate, self.count = loop, transport, rate, count
        self.i, self.start = 0, loop.time()
        self.handle: asyncio.TimerHandle | asyncio.Handle | None = None

    def tick(self) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        stamp = b"%d" % time.perf_counter_ns()
        transport.write(chunk(PRE + stamp + POST))
        self.i += 1
        if self.i >= self.count:
            transport.write(chunk(TAIL) + b"0\r\n\r\n")
            self.handle = None
            return
        self.handle = self.loop.call_at(self.start + self.i / self.rate, self.tick)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body = bytearray()
        self.stream: Stream | None = None
        self.pending: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()  # type: ignore[union-attr]

    def on_message_begin(self) -> None:
        self.url, self.body = b"", bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        transport = self.transport
        assert transport is not None
        if not self.url.split(b"?")[0].endswith(b"/chat/completions"):
            transport.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            return
        try:
            messages = json.loads(self.body)["messages"]
            spec = {k: float(v) for k, v in SPEC.findall(str(messages[-1]["content"]))}
        except (ValueError, KeyError, IndexError, TypeError):
            spec = {}
        rate, count, ttfb = spec.get("rate", 20.0), max(1, int(spec.get("count", 20))), spec.get("ttfb_ms", 0.0)
        if self.stream is not None:
            self.stream.cancel()
        self.stream = Stream(self.loop, transport, max(rate, 0.001), count)

        def begin() -> None:
            self.pending = None
            if not transport.is_closing():
                transport.write(HEAD)
                self.stream.start = self.loop.time()  # type: ignore[union-attr]
                self.stream.tick()  # type: ignore[union-attr]

        if ttfb > 0:
            self.pending = self.loop.call_later(ttfb / 1000, begin)
        else:
            begin()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stream is not None:
            self.stream.cancel()
        if self.pending is not None:
            self.pending.cancel()


async def serve(port: int, reuse_port: bool) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Connection, "127.0.0.1", port, reuse_port=reuse_port, backlog=4096)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    # Until the parent closes our stdin (or dies): no orphan providers.
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reuse-port", action="store_true")
    args = parser.parse_args()
    from bench.procs import raise_nofile

    raise_nofile()
    uvloop.run(serve(args.port, args.reuse_port))


if __name__ == "__main__":
    main()
