"""Issue 17's acceptance on a fleet: an answer is whole on every raw page that joins the instance that
does not own its stream, at any moment, and when its owner dies mid-answer.

Two ``bfstream serve`` processes share the machine's Redis and a PostgreSQL database. A streams, B
serves the pages (WebSocket and SSE, raw clients: ``tests/raw_pages.py``). The history holds 300
messages and the answers run to 5,000 deltas, so every late page depends on the stream's log in
Redis, or, once that expired (``streams.log_ttl`` shortened, the key watched until it is gone), on
the stream's record in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.fleet.conftest import Fleet
from tests.raw_pages import Pages, WSPage, echo_body, echo_words, last_seq
from tests.services import until

pytestmark = pytest.mark.anyio

LOG_TTL = 10.0
SHORT = {"BFSTREAM_MESSAGING__HISTORY_SIZE": "300", "BFSTREAM_STREAMS__LOG_TTL": str(LOG_TTL)}


class Instance:
    """An instance as pages see it (``raw_pages.Target``)."""

    def __init__(self, url: str, app_id: str, fleet: Fleet) -> None:
        self.url, self.app_id, self.http = url, app_id, fleet.http


async def create(fleet: Fleet, owner: Any, words: str) -> str:
    response = await fleet.post(owner, "/stream/create", echo_body(fleet.api_key, words=words))
    assert response.status_code == 200, response.text
    return str(response.json()["streamId"])


async def watch(target: Instance, streams: int) -> tuple[WSPage, asyncio.Task[None]]:
    watcher = WSPage("watcher")
    await watcher.join(target.url, target.app_id, {"offset": 0})
    return watcher, asyncio.create_task(watcher.read_to_end(streams, timeout=120))


@dataclass
class Answering:
    """A streams, B serves the pages; a watcher on B reads the answer from its start."""

    a: Any
    b: Any
    watcher: WSPage
    watching: asyncio.Task[None]
    pages: Pages
    stream_id: str

    def past(self, seq: int) -> Any:
        return lambda: last_seq(self.watcher.answers, self.stream_id) >= seq


async def answering(fleet: Fleet, count: int, delay_ms: str, settings: dict[str, str]) -> Answering:
    a = await fleet.start(BFSTREAM_SERVICES__ECHO__DELAY_MS=delay_ms, **settings)
    b = await fleet.start(**settings)
    on_b = Instance(b.url, fleet.app_id, fleet)
    watcher, watching = await watch(on_b, 1)
    pages = Pages(on_b, watcher.joined[0]["epoch"])
    return Answering(a, b, watcher, watching, pages, await create(fleet, a, echo_words(count)))


async def log_gone(fleet: Fleet, stream_id: str) -> None:
    """The stream's log key in Redis has expired."""
    key = f"{fleet.env['BFSTREAM_BROKER_PREFIX']}:{{{fleet.app_id}/room}}:log:{stream_id}"
    redis = Redis.from_url(fleet.env["BFSTREAM_BROKER_URL"])
    try:
        started = time.monotonic()
        while await redis.exists(key):
            assert time.monotonic() - started < LOG_TTL + 5, f"{key} outlived its ttl"
            await asyncio.sleep(0.05)
    finally:
        await redis.aclose()


async def test_pages_on_the_instance_that_does_not_own_the_stream_get_it_whole(fleet: Fleet) -> None:
    count = 5_000
    answer = echo_words(count)
    run = await answering(fleet, count, "1", SHORT)
    watcher, watching, pages, stream_id, past = run.watcher, run.watching, run.pages, run.stream_id, run.past

    async def running() -> bool:
        return (await fleet.status(run.b, stream_id))["status"] == "running"

    await until(past(0), 10, "the answer's start")
    await pages.open("at the start", 1)

    async def back_once_the_history_moved_on() -> None:
        await until(past(2_500), 60, "2,500 events")
        assert await running(), "the answer ended before the page came back"

    await pages.open_reloading("reloaded", 1, past(1_000), back_once_the_history_moved_on)
    await until(past(count // 2), 60, "the answer's middle")
    late = await pages.open("in the middle", 1)
    late += await pages.open("of another epoch", 1, offset=7, epoch="restarted")
    assert await running(), "the answer ended before the middle pages joined"
    await watching
    late += await pages.open("just after the end", 1)
    await pages.finish()
    await log_gone(fleet, stream_id)
    late += await pages.open("50 minutes later", 1)
    await pages.finish()

    assert watcher.answers.whole(stream_id) == answer
    for page in pages.answers:
        assert page.whole(stream_id) == answer, page.name
    for page in late:
        assert page.streams[stream_id].snapshots == 1, page.name


@pytest.mark.parametrize(
    "log_ttl",
    [
        "3600",
        str(LOG_TTL),  # the log outlives the owner's death being noticed (log_ttl is at least that)
    ],
)
async def test_pages_get_an_answer_whole_when_its_owner_is_killed_mid_answer(fleet: Fleet, log_ttl: str) -> None:
    count = 5_000
    answer = echo_words(count)
    settings = {"BFSTREAM_MESSAGING__HISTORY_SIZE": "300", "BFSTREAM_STREAMS__LOG_TTL": log_ttl}
    run = await answering(fleet, count, "2", settings)
    watcher, watching, pages, stream_id, past = run.watcher, run.watching, run.pages, run.stream_id, run.past
    a, b = run.a, run.b

    await until(past(0), 10, "the answer's start")
    await pages.open("at the start", 1)
    ended = asyncio.Event()

    async def back_after_the_end() -> None:
        await ended.wait()

    await pages.open_reloading("reloaded", 1, past(500), back_after_the_end)
    await until(past(1_200), 60, "1,200 events")
    await pages.open("in the middle", 1)
    a.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    await asyncio.wait_for(watching, 30)
    ended.set()
    assert time.monotonic() - killed_at < 12, "B did not end the dead owner's stream within seconds"
    await pages.open("just after the end", 1)
    await pages.finish()

    shown = watcher.answers.whole(stream_id)  # end.text is the text the page shows
    assert 1_200 < len(shown.split()) < count and answer.startswith(shown)
    end = watcher.answers.streams[stream_id].end
    assert end is not None and end["finish_reason"] == "error"
    for page in pages.answers:
        assert page.whole(stream_id) == shown, page.name
    record = await fleet.status(b, stream_id)
    assert record["status"] == "interrupted" and record["text"] == shown
