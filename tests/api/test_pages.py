"""The pages a person opening bfstream in a browser gets: the landing page, and the demo when on."""

from __future__ import annotations

import pytest

from tests.conftest import Server, ServerFactory

pytestmark = pytest.mark.anyio


async def test_the_landing_page_says_what_this_is_and_where_to_go(server: Server) -> None:
    page = await server.http.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "streams LLM output into live web pages" in page.text
    for link in ('href="/docs"', 'href="/static/bfstream.js"', 'href="/static/protocol.json"'):
        assert link in page.text
    assert 'href="/demo"' not in page.text  # the demo is off unless asked for
    assert (await server.http.get(server.url + "/demo")).status_code == 404
    assert (await server.post("/demo/ask", {"channel": "demo-" + "a" * 24, "prompt": "hi"})).status_code == 404
    assert "'self'" in page.headers["Content-Security-Policy"]


async def test_the_demo_streams_an_answer_to_its_own_channel_without_an_app_key(
    start_server: ServerFactory,
) -> None:
    server = await start_server(demo={"enabled": True})
    assert 'href="/demo"' in (await server.http.get(server.url + "/")).text
    config = (await server.http.get(server.url + "/demo/config")).json()
    assert set(config) == {"appId", "service", "action"} and config["service"] == "echo"
    listener = await server.ws(app_id=config["appId"], channels=("demo-" + "x" * 24,))
    asked = await server.post("/demo/ask", {"channel": "demo-" + "x" * 24, "prompt": "Hello there"})
    assert asked.status_code == 200, asked.text
    events = await listener.stream_events()
    assert events[-1]["type"] == "end" and events[-1]["text"].startswith("You wrote: Hello there ")
    assert len([e for e in events if e["type"] == "delta"]) > 20  # several sentences, word by word
    for refused in ({"channel": "room", "prompt": "hi"}, {"channel": "demo-" + "x" * 24, "prompt": ""}):
        assert (await server.post("/demo/ask", refused)).status_code == 400
