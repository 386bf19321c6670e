"""Real Chromium (Debian's, at /usr/bin/chromium) driven by Playwright, on pages that use bfstream.js.

Playwright's Python package brings only its driver; the browser is the machine's: the test command
installs Debian's ``chromium`` when it is missing, and nothing here ever downloads one. Without it
the tests skip, saying so, except under CI, where they fail.

The page is the smallest there is, served by a tiny HTTP server of the test's own on another port:
a page of another origin, as an app's pages are, that imports the client from the server
(``/static/bfstream.js``, CORS) and connects to it. Chromium's Local Network Access checks would
block a page Playwright made up (an origin of no address) from reaching 127.0.0.1, so the page
is served for real.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

PAGE = b"""<!doctype html>
<html lang="en"><meta charset="utf-8"><title>bfstream test page</title><h1>bfstream test page</h1></html>"""

# What a test page does with the client: everything it hears goes into window.logs[name].
SETUP = """async ({ name, url, appId, transport, channels, catchUp }) => {
  const log = { events: [], states: [], raw: [], gaps: [], errors: [] };
  (window.logs ??= {})[name] = log;
  const client = bfstream.connect({ url, appId, transport, backoff: { base: 100, max: 400 } });
  (window.clients ??= {})[name] = client;
  client.onState((state) => log.states.push(state));
  client.onGap((gap) => log.gaps.push(gap));
  client.onError((error) => log.errors.push(String(error.message)));
  client.onMessage((message, frame) => log.raw.push({ channel: frame.channel, from: frame.from.kind, message }));
  client.on("assistantReceiveResultsStream", (options) => log.events.push(options));
  for (const channel of channels) await client.join(channel, { catchUp });
  return client.state;
}"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI must run the browser tests")
    pytest.skip(reason)


@pytest.fixture
async def chromium(tmp_path: Path) -> AsyncIterator[Any]:
    """A browser context of a fresh profile."""
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[test]')")
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, args=ARGS, headless=True
        )
        try:
            yield context
        finally:
            await context.close()


async def _serve_page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Any GET: the page. One request per connection, then close."""
    try:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {len(PAGE)}\r\n"
        writer.write(head.encode() + b"Connection: close\r\n\r\n" + PAGE)
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def page_origin() -> AsyncIterator[str]:
    server = await asyncio.start_server(_serve_page, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    await server.wait_closed()


OpenPage = Callable[[str], Awaitable[Any]]


@pytest.fixture
def open_page(chromium: Any, page_origin: str) -> OpenPage:
    """A page (of its own origin) that has imported bfstream.js from ``origin``, the server's."""

    async def open_for(origin: str) -> Any:
        page = await chromium.new_page()
        failures: list[str] = []
        page.on("pageerror", lambda error: failures.append(str(error)))
        await page.goto(page_origin + "/")
        await page.evaluate("async (url) => { window.bfstream = await import(url + '/static/bfstream.js'); }", origin)
        page.failures = failures
        page.bfstream_url = origin
        return page

    return open_for


async def start_client(
    page: Any, app_id: str, channels: list[str], transport: str = "websocket", catch_up: bool = True, name: str = "a"
) -> None:
    setup = {"name": name, "url": page.bfstream_url, "appId": app_id, "transport": transport}
    setup |= {"channels": channels, "catchUp": catch_up}
    assert await page.evaluate(SETUP, setup) == "open"


async def log_of(page: Any, name: str = "a") -> dict[str, Any]:
    return await page.evaluate("(name) => window.logs[name]", name)


async def wait_in_page(page: Any, condition: str, name: str = "a", timeout: float = 10) -> None:
    """Wait for ``condition``, a JavaScript expression over ``log``, the client's log."""
    await page.wait_for_function(f"(name) => {{ const log = window.logs[name]; return {condition}; }}", arg=name,
                                 timeout=timeout * 1000)  # fmt: skip
