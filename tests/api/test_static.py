"""``/static/`` as browsers need it: bfstream.js as JavaScript, protocol.json as JSON, revalidated on
each load (no-cache with an ETag: a 304 when unchanged, the new file as soon as it changes),
importable as a module from another origin."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from bfstream.api.headers import SecurityHeaders
from bfstream.api.static import ClientFiles, static_files

pytestmark = pytest.mark.anyio


def client_for(files: ClientFiles) -> httpx.AsyncClient:
    app = SecurityHeaders(Starlette(routes=[Mount("/static", files)]))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bf.test")


async def test_the_client_and_the_schema_come_with_their_types_and_revalidate() -> None:
    async with client_for(static_files()) as http:
        js = await http.get("/static/bfstream.js", headers={"Origin": "https://shop.example"})
        assert js.status_code == 200
        assert js.headers["content-type"] == "text/javascript; charset=utf-8"
        assert js.headers["cache-control"] == "no-cache"
        assert js.headers["access-control-allow-origin"] == "*"
        assert js.headers["x-content-type-options"] == "nosniff"  # so the type above must be right
        assert "content-security-policy" not in js.headers  # a policy is for HTML pages
        assert "export function connect" in js.text
        again = await http.get("/static/bfstream.js", headers={"If-None-Match": js.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["cache-control"] == "no-cache"
        schema = await http.get("/static/protocol.json")
        assert schema.status_code == 200 and schema.headers["content-type"] == "application/json"
        schema.json()
        assert (await http.get("/static/nothing.js")).status_code == 404


async def test_a_changed_file_is_picked_up_at_once(tmp_path: Path) -> None:
    served = tmp_path / "bfstream.js"
    served.write_text("export const version = 1;\n")
    async with client_for(ClientFiles(directory=tmp_path)) as http:
        first = await http.get("/static/bfstream.js")
        served.write_text("export const version = 22;\n")
        second = await http.get("/static/bfstream.js", headers={"If-None-Match": first.headers["etag"]})
        assert second.status_code == 200 and "22" in second.text
        assert second.headers["etag"] != first.headers["etag"]
