"""The token bucket contract, held to by both backends: in memory, and in Redis for a fleet."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bfstream.config import Rate
from bfstream.fleet.ratelimits import MemoryRateLimits, RateLimits
from tests.services import delete_keys, require_redis, unique_prefix

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis"])
async def limits(request: pytest.FixtureRequest) -> AsyncIterator[list[RateLimits]]:
    """Two handles on the same buckets: for Redis, two instances of a fleet; for memory, one process twice."""
    if request.param == "memory":
        alone = MemoryRateLimits()
        yield [alone, alone]
        return
    from bfstream.fleet.ratelimits_redis import RedisRateLimits
    from bfstream.fleet.redis import redis_client

    url, prefix = require_redis(), unique_prefix()
    clients = [redis_client(url, retries=1), redis_client(url, retries=1)]  # as the fleet makes them
    try:
        yield [RedisRateLimits(client, prefix) for client in clients]
    finally:
        for client in clients:
            await client.aclose()
        await delete_keys(url, prefix)


async def test_a_burst_then_the_rate_and_the_wait_until_the_next_token(limits: list[RateLimits]) -> None:
    first, second = limits
    rate = Rate(rate=10, burst=3)
    taken = [await (first if i % 2 else second).take("app_1:streams", rate) for i in range(3)]
    assert taken == [0, 0, 0]  # the burst, shared by both handles
    wait = await first.take("app_1:streams", rate)
    assert 0.05 < wait <= 0.1  # a token every 0.1 s
    assert await second.take("app_2:streams", rate) == 0  # another bucket is full
    await asyncio.sleep(wait + 0.02)
    assert await second.take("app_1:streams", rate) == 0  # refilled, for either handle
    assert await first.take("app_1:streams", rate) > 0


async def test_a_refused_call_takes_nothing_and_a_bucket_never_holds_more_than_its_burst(
    limits: list[RateLimits],
) -> None:
    bucket, rate = limits[0], Rate(rate=1000, burst=2)
    await asyncio.sleep(0.05)  # idle time beyond the burst's worth is not banked
    assert [await bucket.take("app_3:messages", rate) for _ in range(3)][:2] == [0, 0]
    slow = Rate(rate=0.5, burst=1)
    assert await bucket.take("app_4:publishes", slow) == 0
    waits = [await bucket.take("app_4:publishes", slow) for _ in range(3)]
    assert all(1.9 < w <= 2.0 for w in waits)  # refusals do not dig the bucket deeper
