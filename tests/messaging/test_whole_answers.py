"""Issue 17's acceptance, first bullet, on one instance: an answer of 20,000 deltas reaches whole every
raw page that joins at any moment, over WebSocket and over SSE.

Pages join the channel at the answer's start, in its middle, right after its ``end`` and once its log
has expired ("50 minutes later": ``streams.log_ttl`` is shortened, ``messaging.history_ttl`` is not,
so the stream's record stands in for its log); one page drops mid-answer and comes back from its
position after the history has moved on by more than it holds, one comes with a position of another
epoch (a server restarted). Each must end with exactly ``end.text``, every ``(streamId, seq)`` once
or stood for by a snapshot (``tests/raw_pages.py`` checks that event by event).

Every moment has a WebSocket page and an SSE page. The 20,000-delta answer runs on the memory broker
with the default history (1,000 messages), as a single instance is deployed; three answers
interleaved with a back end's messages make the same point with shorter answers and a history of
200, on the memory broker and on Redis (``tests/fleet/test_whole_answers_fleet.py`` has two instances).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.conftest import Server
from tests.raw_pages import Pages, WSPage, echo_body, echo_words, last_seq
from tests.services import delete_keys, require_redis, unique_prefix, until

pytestmark = pytest.mark.anyio

LOG_TTL = 10.0  # seconds the log outlives the stream's last event: "50 minutes" in the test's time


@dataclass
class Broker:
    """The broker a test's server uses, and how the test sees a stream's log expire."""

    name: str
    settings: dict[str, Any]
    redis: Redis | None = None
    prefix: str = ""

    async def log_gone(self, app_id: str, stream_id: str, last_event_at: float) -> None:
        """Wait until the stream's log has expired. Redis shows it: the key is gone. The memory
        broker's expiry is exact, ``log_ttl`` after the last event (which came before ``last_event_at``)."""
        if self.redis is None:
            await until(lambda: time.monotonic() > last_event_at + LOG_TTL, LOG_TTL + 1, "the log's ttl to pass")
            return
        key = f"{self.prefix}:{{{app_id}/room}}:log:{stream_id}"
        started = time.monotonic()
        while await self.redis.exists(key):
            assert time.monotonic() - started < LOG_TTL + 5, f"{key} outlived its ttl"
            await asyncio.sleep(0.05)


@pytest.fixture
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    if request.param == "memory":
        yield Broker("memory", {})
        return
    url, prefix = require_redis(), unique_prefix()
    redis = Redis.from_url(url)
    try:
        yield Broker("redis", {"broker_url": url, "broker_prefix": prefix}, redis, prefix)
    finally:
        await redis.aclose()
        await delete_keys(url, prefix)


async def start_watched(server: Server, streams: int) -> tuple[WSPage, asyncio.Task[None]]:
    """A page on the channel before anything is published: it sees everything live, and its progress
    says where the answers stand."""
    watcher = WSPage("watcher")
    await watcher.join(server.url, server.app_id, {"offset": 0})
    return watcher, asyncio.create_task(watcher.read_to_end(streams, timeout=120))


async def running(server: Server, *stream_ids: str, every: bool = True) -> bool:
    """Whether the server still runs every one of the streams (or, not ``every``, one of them): a
    page that joined before this said yes joined mid-answer, whatever its reading had caught up with."""
    states = []
    for stream_id in stream_ids:
        response = await server.post("/stream/status", {"apiKey": server.api_key, "streamId": stream_id})
        assert response.status_code == 200, response.text
        states.append(response.json()["status"] == "running")
    return all(states) if every else any(states)


async def create(server: Server, words: str) -> str:
    response = await server.post("/stream/create", echo_body(server.api_key, words=words))
    assert response.status_code == 200, response.text
    return str(response.json()["streamId"])


@pytest.mark.parametrize("broker", ["memory"], indirect=True)
async def test_an_answer_of_20000_deltas_is_whole_on_every_page_whenever_it_joins(
    start_server: Callable[..., Awaitable[Server]], broker: Broker
) -> None:
    count = 20_000
    answer = echo_words(count)
    # Any delay at all paces the answer at about a millisecond a word (the event loop's clock), so
    # the pages read it as it comes; without one, the answer is over before a page joins mid-way.
    settings = {"services": {"echo": {"delay_ms": 0.2}}, "streams": {"log_ttl": LOG_TTL}}
    server = await start_server(**settings, **broker.settings)
    watcher, watching = await start_watched(server, 1)
    pages = Pages(server, watcher.joined[0]["epoch"])
    stream_id = await create(server, answer)

    def past(seq: int) -> Callable[[], bool]:
        return lambda: last_seq(watcher.answers, stream_id) >= seq

    await until(past(0), 10, "the answer's start")
    await pages.open("at the start", 1)

    async def back_once_the_history_moved_on() -> None:
        await until(past(14_000), 60, "14,000 events")  # the page left near 5,000; the history holds 1,000
        assert await running(server, stream_id), "the answer ended before the page came back"

    await pages.open_reloading("reloaded", 1, past(5_000), back_once_the_history_moved_on)
    await until(past(count // 2), 60, "the answer's middle")
    late = await pages.open("in the middle", 1)
    late += await pages.open("of another epoch", 1, offset=7, epoch="restarted")
    assert await running(server, stream_id), "the answer ended before the middle pages joined"
    await watching
    ended_at = time.monotonic()
    late += await pages.open("just after the end", 1)
    await pages.finish()
    await broker.log_gone(server.app_id, stream_id, ended_at)
    late += await pages.open("50 minutes later", 1)
    await pages.finish()

    assert watcher.answers.whole(stream_id) == answer
    assert watcher.answers.streams[stream_id].end["finish_reason"] == "stop"
    for page in pages.answers:
        assert page.whole(stream_id) == answer, page.name
    # The late pages could only have been made whole by a snapshot: the history had lost the start.
    for page in late:
        assert page.streams[stream_id].snapshots == 1 and page.log_frames >= 1, page.name


@pytest.mark.parametrize("broker", ["memory", "redis"], indirect=True)
async def test_three_interleaved_answers_and_a_back_ends_messages_are_whole_on_every_page(
    start_server: Callable[..., Awaitable[Server]], broker: Broker
) -> None:
    count, notes = 3_000, 150
    answers = [echo_words(count, tag) for tag in ("a", "b", "c")]
    # Some 10 s an answer, about 900 events a second in all: a page reading on a busy machine keeps
    # up, so the watcher's progress says where the answers stand (at a millisecond a word it fell
    # seconds behind under load, and the answers had ended when it reported 4,000 events).
    settings = {"services": {"echo": {"delay_ms": 3}}, "streams": {"log_ttl": LOG_TTL}}
    server = await start_server(**settings, messaging={"history_size": 200}, **broker.settings)
    watcher, watching = await start_watched(server, 3)
    pages = Pages(server, watcher.joined[0]["epoch"])
    stream_ids = [await create(server, words) for words in answers]

    async def back_end_messages() -> None:
        """A back end's own traffic on the channel while the answers run."""
        for i in range(notes):
            await server.send("room", {"actions": [{"action": "note", "i": i}]})
            await asyncio.sleep(0.005)  # spread over the answers, not a wait for anything

    sending = asyncio.create_task(back_end_messages())

    def progress() -> int:
        return sum(last_seq(watcher.answers, s) + 1 for s in stream_ids)

    await until(lambda: progress() >= 3, 10, "the answers' start")
    await pages.open("at the start", 3)

    async def back_once_the_history_moved_on() -> None:
        await until(lambda: progress() >= 4_000, 60, "4,000 events")  # 2,000 past the page: 10 histories
        # Three answers on a busy machine need not keep pace with each other: one still running is
        # enough for the page to come back mid-answer (to the others it comes back after their end).
        assert await running(server, *stream_ids, every=False), "the answers ended before the page came back"

    await pages.open_reloading("reloaded", 3, lambda: progress() >= 2_000, back_once_the_history_moved_on)
    await until(lambda: progress() >= 3 * count // 2, 60, "the answers' middle")
    late = await pages.open("in the middle", 3)
    late += await pages.open("of another epoch", 3, offset=7, epoch="restarted")
    assert await running(server, *stream_ids, every=False), "the answers ended before the middle pages joined"
    await watching
    await sending
    ended_at = time.monotonic()
    late += await pages.open("just after the end", 3)
    await pages.finish()
    for stream_id in stream_ids:
        await broker.log_gone(server.app_id, stream_id, ended_at)
    late += await pages.open("50 minutes later", 3)
    await pages.finish()

    for page in [watcher.answers, *pages.answers]:
        assert [page.whole(s) for s in stream_ids] == answers, page.name
        seen = [message["actions"][0]["i"] for message in page.messages]
        assert seen == sorted(set(seen)), f"{page.name}: a message twice or out of order"
    assert len(watcher.answers.messages) == notes
    for page in late:
        assert all(page.streams[s].snapshots == 1 for s in stream_ids), page.name


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
async def test_pages_coming_back_from_another_epoch_mid_answer_get_each_event_once(
    start_server: Callable[..., Awaitable[Server]], broker: Broker
) -> None:
    """A join whose position is of another epoch replays nothing; the page, as documented, joins the
    new epoch from its start, and is made whole from the logs read before the history it replays, so
    an event published between the two reads is in the replay, never also in a snapshot. Many joins
    in a row, while the answer streams, give that window many chances."""
    server = await start_server(services={"echo": {"delay_ms": 0}}, **broker.settings)
    watcher, watching = await start_watched(server, 1)
    stream_id = await create(server, echo_words(4_000))
    await until(lambda: last_seq(watcher.answers, stream_id) >= 50, 10, "the answer's start")
    pages = Pages(server, watcher.joined[0]["epoch"], transports=("websocket",))
    for i in range(30):  # each join has a small chance to fall in the window
        await pages.open(f"p{i}", 1, offset=3, epoch="restarted")
    await watching
    await pages.finish()
    for page in pages.answers:
        page.whole(stream_id)
