"""bfstream.js in Chromium on answers longer than the channel's history: what the history lost comes
from the stream's log as a snapshot (log frames right after ``joined``), and the page's handler,
appending deltas, ends with the whole answer, each word once.

The history is cut to 20 messages, so a 100-word echo answer outgrows it; the page either comes back
after a real connection cut (tests/services.py ``Proxy``) or joins mid-answer with catch-up.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.browser.conftest import OpenPage, log_of, start_client, wait_in_page
from tests.browser.test_client import start_stream, watch, words
from tests.conftest import ServerFactory
from tests.services import Proxy, until

pytestmark = pytest.mark.anyio

SHORT_HISTORY = {"services": {"echo": {"delay_ms": 40}}, "messaging": {"history_size": 20}}


def assert_whole_once(events: list[dict[str, Any]], stream_id: str, text: str) -> None:
    """threadInfo first, end last, seqs rising (a snapshot's events share one), every word once."""
    assert {e["streamId"] for e in events} == {stream_id}
    assert events[0]["type"] == "threadInfo" and events[-1]["type"] == "end"
    assert [e["type"] for e in events].count("end") == 1
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs), seqs
    own = [e["seq"] for e in events if not e.get("snapshot")]
    assert len(own) == len(set(own)), own
    assert "".join(e["content"] for e in events if e["type"] == "delta") == text
    assert events[-1]["text"] == text


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_a_page_cut_off_longer_than_the_history_gets_the_answer_whole_from_the_log(
    start_server: ServerFactory, open_page: OpenPage, transport: str
) -> None:
    server = await start_server(**SHORT_HISTORY)
    proxy = Proxy(server.url)
    await proxy.start()
    try:
        page = await open_page(f"http://127.0.0.1:{proxy.port}")
        await start_client(page, server.app_id, ["room"], transport)
        watched, watcher = watch(await server.ws(channels=("room",)))
        text = words(100)
        stream_id = await start_stream(server, ["room"], text)

        await wait_in_page(page, "log.events.length >= 10")
        await proxy.stop()
        await wait_in_page(page, "log.states.at(-1) === 'reconnecting'")
        seen_at_cut = len((await log_of(page))["events"])
        await until(lambda: len(watched) >= seen_at_cut + 40, timeout=10)  # twice what the history holds
        await proxy.start()

        await wait_in_page(page, "log.events.some((e) => e.type === 'end')")
        log = await log_of(page)
        assert_whole_once(log["events"], stream_id, text)
        assert [e["type"] for e in log["events"] if e.get("snapshot")] == ["delta"], "the missed part, in one delta"
        assert await page.evaluate("(id) => window.clients.a.text(id)", stream_id) == text
        assert [g["reason"] for g in log["gaps"]] == ["history"], "the channel's gap is reported; no stream gap"
        assert log["errors"] == [] and page.failures == []
        watcher.cancel()
    finally:
        await proxy.stop()


async def test_catch_up_mid_answer_past_the_history_shows_it_from_its_first_word(
    start_server: ServerFactory, open_page: OpenPage
) -> None:
    server = await start_server(**SHORT_HISTORY)
    watched, watcher = watch(await server.ws(channels=("room",)))
    text = words(100)
    stream_id = await start_stream(server, ["room"], text)
    await until(lambda: len(watched) >= 50)
    page = await open_page(server.url)
    started = time.monotonic()
    await start_client(page, server.app_id, ["room"])  # catch-up: the answer's first 30 words are gone from the history
    await wait_in_page(page, "log.events.some((e) => e.type === 'end')")
    log = await log_of(page)
    assert_whole_once(log["events"], stream_id, text)
    assert [e["type"] for e in log["events"][:2]] == ["threadInfo", "delta"] and log["events"][0].get("snapshot")
    assert await page.evaluate("(id) => window.clients.a.text(id)", stream_id) == text
    assert [g["reason"] for g in log["gaps"]] == ["history"]
    assert time.monotonic() - started < 8, "no gap wait: the snapshot filled it"
    watcher.cancel()
