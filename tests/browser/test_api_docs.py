"""Every page bfstream serves works with the network cut off from everything but bfstream: the
API reference at ``/docs`` above all, whose viewer used to come from a CDN and left a blank page on
any machine without the internet (issue 21). Chromium runs with every request to another origin
blocked (a Playwright route), as on an air-gapped intranet; a request that tries anyway fails the
test, and so does anything the page's policy refuses."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import Server, ServerFactory

pytestmark = pytest.mark.anyio

ADMIN_TOKEN = "admin-token-for-the-docs-test"


@pytest.fixture
async def full_server(start_server: ServerFactory) -> Server:
    """A server with every page turned on: the demo and the dashboard too."""
    return await start_server(demo={"enabled": True}, admin_token=ADMIN_TOKEN)


async def cut_off(chromium: Any, origin: str) -> list[str]:
    """Block every request that is not for ``origin``; the list fills with what was blocked."""
    blocked: list[str] = []

    async def only_bfstream(route: Any) -> None:
        url = route.request.url
        if (
            url.startswith(("data:", "blob:"))
            or urlsplit(url)._replace(path="", query="", fragment="").geturl() == origin
        ):
            await route.continue_()
        else:
            blocked.append(url)
            await route.abort("blockedbyclient")

    await chromium.route("**/*", only_bfstream)
    return blocked


def watch(page: Any) -> list[str]:
    """Script errors and the policy's refusals, as the page's console reports them."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}")
            if message.type == "error" and "Content Security Policy" in message.text
            else None
        ),
    )
    return problems


async def test_the_api_docs_list_the_operations_with_only_bfstream_reachable(
    full_server: Server, chromium: Any
) -> None:
    blocked = await cut_off(chromium, full_server.url)
    page = await chromium.new_page()
    problems = watch(page)
    await page.goto(full_server.url + "/docs")
    await page.wait_for_selector(".opblock-summary-path", timeout=15_000)
    paths = await page.eval_on_selector_all(
        ".opblock-summary-path", "nodes => nodes.map(node => node.getAttribute('data-path'))"
    )
    document = (await full_server.http.get(full_server.url + "/openapi.json")).json()
    listed = {path for path, operations in document["paths"].items() for _ in operations}
    assert set(paths) == listed and "/stream/create" in paths
    assert len(paths) == sum(len(operations) for operations in document["paths"].values())
    assert await page.title() == "bfstream API"
    assert blocked == [] and problems == []


@pytest.mark.parametrize("path", ["/", "/demo", "/admin"])
async def test_every_other_page_loads_nothing_from_elsewhere(full_server: Server, chromium: Any, path: str) -> None:
    blocked = await cut_off(chromium, full_server.url)
    page = await chromium.new_page()
    problems = watch(page)
    loaded: list[str] = []
    page.on("requestfinished", lambda request: loaded.append(request.url))
    await page.goto(full_server.url + path)
    await page.wait_for_load_state("networkidle")
    assert loaded and all(url.startswith(full_server.url) for url in loaded), loaded
    assert blocked == [] and problems == []
