"""Pages for the <bf-chat> tests, served for real from an origin of their own, as an app's pages are.

``PageServer`` answers each path it was given with that HTML (one request per connection); a page
Playwright made up would have no origin Chromium lets reach 127.0.0.1 (tests/browser/conftest.py).
``chat_page`` is the page the issue asks for: the element, its script tag, nothing else.
"""

from __future__ import annotations

import asyncio
import html
from typing import Any


def chat_page(script_origin: str, attributes: dict[str, str], title: str = "bf-chat") -> str:
    """A page with only ``<bf-chat ...>`` and the classic script tag that defines it."""
    attrs = "".join(f' {name}="{html.escape(value)}"' for name, value in attributes.items())
    return (
        f'<!doctype html>\n<html lang="en"><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
        f"<bf-chat{attrs}></bf-chat>\n"
        f'<script src="{script_origin}/static/bf-chat.js"></script>\n</html>\n'
    )


class PageServer:
    """An HTTP server on 127.0.0.1 of a few fixed pages (or scripts: ``.js``), by path; anything else is a 404."""

    def __init__(self, pages: dict[str, str]) -> None:
        self.pages = {"/favicon.ico": "", **pages}  # the browser asks for it: no 404 in the console
        self.origin = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> PageServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.origin = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            path = head.split(" ", 2)[1].split("?", 1)[0]
            page = self.pages.get(path)
            body = (page if page is not None else "not here").encode()
            status = "200 OK" if page is not None else "404 Not Found"
            kind = "text/javascript" if path.endswith(".js") else "text/html"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()


def watch_page(page: Any) -> list[str]:
    """Every uncaught error and console error of the page (and its frames), as they come."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
    page.on("console", lambda message: message.type == "error" and problems.append(f"console: {message.text}"))
    return problems


# The element's parts, read from its shadow root in the page.
TURNS = """(selector) => [...document.querySelector(selector ?? "bf-chat").shadowRoot.querySelectorAll(".turn")]
  .map((turn) => ({ status: turn.dataset.status, streamId: turn.dataset.streamId,
                    text: turn.querySelector(".answer").textContent }))"""
