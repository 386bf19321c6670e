"""Write the docs' screenshots: ``python -m tests.browser.screenshots [--out docs/screenshots] [--only NAME]``.

Each shot starts a real server of its own (in a throwaway data directory, with the fake providers of
``tests/fakes`` where a model is needed), drives the page in the machine's Chromium as the browser
tests do, and writes its PNG(s) into the output directory. The test suite takes none: a test run
leaves the checkout as it was, and the docs change only when someone runs this and commits them.

``SHOTS`` names every shot function as ``module:function``, imported only when it runs; a shot is
``shot(out_dir: Path)``, a coroutine function or a plain one. Adding one is one line here.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bfstream.api.app import DrainingServer, server_config
from bfstream.config import load_settings
from bfstream.store.store import open_store
from tests.browser.conftest import ARGS, CHROMIUM

ROOT = Path(__file__).resolve().parents[2]
SHOTS = [
    "tests.browser.admin_shots:shoot_dashboard",  # dashboard.png
    "tests.browser.admin_shots:shoot_dashboard_stream",  # dashboard-stream.png
    "tests.browser.demo_shots:shoot_demo",  # demo.png
    "tests.browser.demo_shots:shoot_demo_reasoning",  # demo-reasoning.png
    "tests.browser.chat_shots:shoot_chat",  # bf-chat-light.png, bf-chat-dark.png
]
VIEWPORT = {"width": 1280, "height": 720}


@dataclass
class Served:
    """A running server: its URL, the app made for the shot and that app's key, and an HTTP client."""

    url: str
    app_id: str
    api_key: str
    http: httpx.AsyncClient

    async def post(self, path: str, body: Any) -> httpx.Response:
        return await self.http.post(self.url + path, json=body)


@asynccontextmanager
async def serving(app_name: str = "shop", **overrides: Any) -> AsyncIterator[Served]:
    """bfstream on a free port with ``overrides`` as settings, on a data directory thrown away after."""
    with tempfile.TemporaryDirectory(prefix="bfstream-shots-") as data:
        settings = load_settings(data_dir=Path(data), **overrides)
        store = await open_store(settings.database_url, settings.data_dir)
        app, key = await store.create_app(app_name)
        await store.close()
        server = DrainingServer(server_config(settings, host="127.0.0.1", port=0, log_level="warning"))
        task = asyncio.create_task(server.serve())
        async with asyncio.timeout(15):
            while not server.started:
                if task.done():
                    task.result()  # it could not start: say why
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            async with httpx.AsyncClient(timeout=15) as http:
                yield Served(f"http://127.0.0.1:{port}", app.id, key, http)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 15)


@asynccontextmanager
async def browser_page(color_scheme: str = "light") -> AsyncIterator[Any]:
    """A page of a fresh Chromium context at the docs' size; a page error stops the shot."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            context = await browser.new_context(viewport=VIEWPORT, color_scheme=color_scheme)
            page = await context.new_page()
            failures: list[str] = []
            page.on("pageerror", lambda error: failures.append(str(error)))
            yield page
            if failures:
                raise RuntimeError(f"the page failed: {failures}")
        finally:
            await browser.close()


def _resolve(name: str) -> Callable[[Path], Any]:
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def _pngs(out_dir: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in out_dir.glob("*.png")}


def take(names: list[str], out_dir: Path) -> None:
    """Run the shots one after the other, each in an event loop of its own when it is a coroutine."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        before = _pngs(out_dir)
        made = _resolve(name)(out_dir)
        if inspect.isawaitable(made):
            asyncio.run(_awaited(made))
        written = sorted(path.name for path, mtime in _pngs(out_dir).items() if before.get(path) != mtime)
        print(f"{name}: {', '.join(written) or 'nothing written'}")


async def _awaited(made: Awaitable[Any]) -> None:
    await made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.browser.screenshots", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="where the PNGs go")
    parser.add_argument("--only", action="append", metavar="NAME", help="shots whose name contains NAME")
    args = parser.parse_args(argv)
    names = [name for name in SHOTS if not args.only or any(part in name for part in args.only)]
    if not names:
        parser.error(f"no shot matches {args.only}; the shots: {', '.join(SHOTS)}")
    take(names, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
