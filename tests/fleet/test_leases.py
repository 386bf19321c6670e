"""Leases in Redis, held to what the fleet relies on when Redis comes back after an outage."""

from __future__ import annotations

import pytest

from bfstream.fleet.leases_redis import RedisLeases
from bfstream.fleet.redis import redis_client
from tests.services import delete_keys, require_redis, unique_prefix

pytestmark = pytest.mark.anyio


async def test_slots_that_lapsed_during_an_outage_count_again_at_the_next_renewal() -> None:
    """An outage longer than a lease lets every slot lapse, and the next admission sweeps them out,
    while the streams and connections holding them live on. Their owner's next renewal must put
    them back, or the app could run past its limit for as long as they last."""
    url, prefix = require_redis(), unique_prefix()
    client = redis_client(url, retries=1)
    try:
        leases = RedisLeases(client, prefix, "instance-a")
        assert await leases.acquire("app_1", "s1", 2) and await leases.acquire("app_1", "s2", 2)
        await client.zrem(f"{prefix}:slots:app_1", "s1", "s2")  # what a sweep of lapsed slots leaves
        await leases.renew([("app_1", "s1"), ("app_1", "s2")])
        assert not await leases.acquire("app_1", "s3", 2)  # both held again: the pool is full
        await leases.release("app_1", "s1")
        assert await leases.acquire("app_1", "s3", 2)
    finally:
        await client.aclose()
        await delete_keys(url, prefix)
