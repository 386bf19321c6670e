"""A web server with an image on it, for bfstream's image fetch (``bfstream/providers/images.py``).

A real HTTP server (aiohttp) on a free port that serves a PNG and each way an image URL can go
wrong, and records every request. It doubles as a plain HTTP proxy: a proxy is asked for an
absolute URL (``GET http://93.184.215.14/inside``), which aiohttp's server routes by its path like
any other, so a test that points ``http_proxy`` here can have bfstream call a public address
that lands on this server, and see what it does with the redirect it gets back.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import zlib
from dataclasses import dataclass

from aiohttp import web

SLOW_PATH = "/slow.png"


def png() -> bytes:
    """A valid 1x1 PNG (one opaque red pixel): signature, IHDR, IDAT, IEND, each with its CRC."""

    def block(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # width, height, 8-bit depth, RGB, no interlace
    pixels = zlib.compress(b"\x00\xff\x00\x00")  # filter byte 0, then R G B
    return b"\x89PNG\r\n\x1a\n" + block(b"IHDR", header) + block(b"IDAT", pixels) + block(b"IEND", b"")


@dataclass
class Seen:
    path: str
    host: str
    headers: dict[str, str]


class ImageServer:
    """``big`` is the size of the two oversized images: one says it in Content-Length, the other
    streams it in chunks without a length."""

    def __init__(self, big: int = 64 * 1024) -> None:
        self.big = big
        self.image = png()
        self.requests: list[Seen] = []
        self.url = ""
        self._release = asyncio.Event()  # the slow image answers only at the end of the test
        self._runner: web.AppRunner | None = None

    def paths(self) -> list[str]:
        return [seen.path for seen in self.requests]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Seen(request.path_qs, request.host, dict(request.headers)))
        path = request.path
        if path in ("/cat.png", "/again.png"):
            return web.Response(body=self.image, content_type="image/png")
        if path == "/page.html":
            return web.Response(text="<!doctype html><title>Not a picture</title>", content_type="text/html")
        if path == "/hop":
            raise web.HTTPFound("/cat.png")  # relative, as most servers send it
        if path == "/loop":
            raise web.HTTPFound("/loop")
        if path == "/inside":
            raise web.HTTPFound(f"{self.url}/cat.png")  # a public address sending bfstream inside
        if path == "/declared.png":
            return web.Response(body=b"\0" * self.big, content_type="image/png")
        if path == "/streamed.png":
            response = web.StreamResponse(headers={"Content-Type": "image/png"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(self.big // 1024):
                await response.write(b"\0" * 1024)
            await response.write_eof()
            return response
        if path == SLOW_PATH:
            await self._release.wait()
            return web.Response(body=self.image, content_type="image/png")
        raise web.HTTPNotFound()

    async def __aenter__(self) -> ImageServer:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        assert self._runner is not None
        await self._runner.cleanup()
