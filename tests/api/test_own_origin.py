"""No answer of bfstream's makes a browser load anything from another origin (issue 21): every
``src``, every stylesheet or icon ``href``, every CSS ``url()`` in the pages and styles it serves
is its own or a ``data:`` URL. Links a person may follow (``<a href>``) are not loads."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from bfstream.api.static import STATIC_DIR
from tests.conftest import Server, ServerFactory

pytestmark = pytest.mark.anyio

# The attribute each element loads from; <a> and <form> only navigate, when a person acts.
LOADS = {"script": "src", "img": "src", "iframe": "src", "source": "src", "video": "src", "audio": "src",
         "embed": "src", "track": "src", "link": "href", "object": "data", "input": "src"}  # fmt: skip
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)""")


class Loads(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in LOADS and values.get(LOADS[tag]):
            self.urls.append(values[LOADS[tag]] or "")
        if values.get("srcset"):
            self.urls += [part.split()[0] for part in (values["srcset"] or "").split(",") if part.strip()]
        if values.get("style"):
            self.urls += CSS_URL.findall(values["style"] or "")

    def handle_data(self, data: str) -> None:
        if self.lasttag == "style":
            self.urls += CSS_URL.findall(data)


def foreign(urls: list[str], origin: str) -> list[str]:
    """The URLs that leave ``origin``: absolute (or scheme-relative) ones elsewhere."""
    return [u for u in urls if re.match(r"^([a-z][a-z0-9+.-]*:)?//", u, re.I) and not u.startswith(origin + "/")]


def loads_of(body: str, content_type: str) -> list[str]:
    if content_type.startswith("text/css"):
        return CSS_URL.findall(re.sub(r"/\*.*?\*/", "", body, flags=re.S))  # comments load nothing
    parser = Loads()
    parser.feed(body)
    return parser.urls


@pytest.fixture
async def full_server(start_server: ServerFactory) -> Server:
    return await start_server(demo={"enabled": True}, admin_token="admin-token-for-the-origin-test")


async def test_no_page_or_style_loads_from_another_origin(full_server: Server) -> None:
    served = [p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*") if p.suffix in (".html", ".css")]
    paths = ["/", "/docs", "/demo", "/admin", *(f"/static/{name}" for name in served)]
    checked = 0
    for path in paths:
        answer = await full_server.http.get(full_server.url + path)
        assert answer.status_code == 200, path
        content_type = answer.headers["content-type"]
        urls = loads_of(answer.text, content_type)
        assert foreign(urls, full_server.url) == [], path
        if content_type.startswith("text/html"):
            assert "default-src 'self'" in answer.headers["content-security-policy"], path
            assert "http" not in answer.headers["content-security-policy"], path
        checked += len(urls)
    assert checked > 5  # the pages do load things: the parser saw them


async def test_redoc_is_not_served(full_server: Server) -> None:
    assert (await full_server.http.get(full_server.url + "/redoc")).status_code == 404


def test_the_checker_sees_a_foreign_load() -> None:
    page = '<link rel="stylesheet" href="https://cdn.example/x.css"><script src="//cdn.example/x.js"></script>'
    page += '<a href="https://example.org/">a link</a><div style="background: url(https://img.example/a.png)"></div>'
    assert foreign(loads_of(page, "text/html"), "http://127.0.0.1:1") == [
        "https://cdn.example/x.css", "//cdn.example/x.js", "https://img.example/a.png"
    ]  # fmt: skip
