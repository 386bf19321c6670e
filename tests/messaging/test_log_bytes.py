"""Issue 17's acceptance: a stream's log stays within ``streams.log_bytes``, and the answer still comes
back whole from it.

The log is read where it lives, in Redis (``<prefix>:{<app id>/<channel>}:log:<stream id>``, a sorted
set whose members are the events' data), by a client of the test's own, over and over while the
answer runs and once more after its end. The bound is on the data the log holds: the sum of its
members' lengths. The owner folds the log after the event that took it past the bound, so the log
may pass it by that one event until the fold lands.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from tests.conftest import Server
from tests.raw_pages import WSPage, echo_body, echo_words, last_seq
from tests.services import delete_keys, require_redis, unique_prefix

pytestmark = pytest.mark.anyio

LOG_BYTES = 64 * 1024


@pytest.fixture
async def redis_settings() -> AsyncIterator[tuple[Redis, str, dict[str, str]]]:
    url, prefix = require_redis(), unique_prefix()
    redis = Redis.from_url(url)
    try:
        yield redis, prefix, {"broker_url": url, "broker_prefix": prefix}
    finally:
        await redis.aclose()
        await delete_keys(url, prefix)


async def log_size(redis: Redis, key: str) -> tuple[int, int]:
    """The log's data in bytes, and how many entries hold it."""
    members = await redis.zrange(key, 0, -1)
    return sum(len(member) for member in members), len(members)


@pytest.mark.parametrize(
    "count",
    [
        3_000,  # 19 KB of text, 590 KB of events: the log folds a dozen times
        2_900,  # the same, but the end comes when the log is nearly full: folded before the end
    ],
)
async def test_a_long_answers_log_stays_within_log_bytes_and_a_late_page_still_gets_it_whole(
    start_server: Callable[..., Awaitable[Server]], redis_settings: tuple[Redis, str, dict[str, str]], count: int
) -> None:
    redis, prefix, settings = redis_settings
    answer = echo_words(count)
    server = await start_server(
        services={"echo": {"delay_ms": 0.5}},
        streams={"log_bytes": LOG_BYTES},
        messaging={"history_size": 100},
        **settings,
    )
    watcher = WSPage("watcher")
    await watcher.join(server.url, server.app_id, {"offset": 0})
    watching = asyncio.create_task(watcher.read_to_end(1, 60))
    response = await server.post("/stream/create", echo_body(server.api_key, words=answer))
    assert response.status_code == 200, response.text
    stream_id = response.json()["streamId"]
    key = f"{prefix}:{{{server.app_id}/room}}:log:{stream_id}"

    samples: list[tuple[int, int]] = []
    while not watching.done():  # the log as any instance could read it, all along the answer
        samples.append(await log_size(redis, key))
        await asyncio.sleep(0.002)  # a sampling pace, not a wait for anything
    await watching
    after_end = await log_size(redis, key)

    one_event = max(len(e) for e in (await redis.zrange(key, 1, 10)))  # a delta's data
    assert len(samples) > 100, "too few looks at the log while the answer ran"
    biggest = max(size for size, _ in samples)
    assert biggest <= LOG_BYTES + one_event, f"the log held {biggest} bytes while running (bound {LOG_BYTES})"
    assert min(entries for _, entries in samples[len(samples) // 2 :]) >= 1
    assert any(entries < count // 4 for _, entries in samples[len(samples) // 2 :]), "the log never folded"
    assert after_end[0] <= LOG_BYTES, f"the log held {after_end[0]} bytes after the end (bound {LOG_BYTES})"

    late = WSPage("late")
    await late.join(server.url, server.app_id, {"offset": 0})
    await late.read_to_end(1, 30)
    assert late.answers.whole(stream_id) == watcher.answers.whole(stream_id) == answer
    assert late.answers.streams[stream_id].snapshots == 1
    assert last_seq(late.answers, stream_id) == count + 1
