"""Leases shared by a fleet, in Redis (the contract is in ``leases.py``).

Keys (``<prefix>`` is the ``broker_prefix`` setting):

- ``<prefix>:lease:<instance id>``, a string that expires ``LEASE_TTL`` after its last renewal;
- ``<prefix>:slots:<pool>``, a sorted set of a pool's slots (the pool is an app id for its streams,
  ``conn:<app id>`` and ``addr:<address>`` for connections), each scored by the time (Redis's own
  clock, so instances' clocks need not agree) at which it lapses unless renewed. It holds at most
  the pool's limit of live members and expires with its last slot.

``acquire`` is one Lua script, so the count and the add cannot interleave with another
instance's: drop lapsed slots, count, add if below the limit.
"""

from __future__ import annotations

import redis.asyncio as redis

from bfstream.fleet.leases import LEASE_TTL
from bfstream.fleet.redis import translated

_ACQUIRE = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# Renewal adds a slot that is missing: after an outage longer than a lease, the slots of streams and
# connections that lived through it have lapsed and been swept, and must count again. A slot
# released while a renewal that listed it was on its way comes back too, for one lease at most.
_RENEW = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], ms + tonumber(ARGV[1]), ARGV[i + 1])
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
return #KEYS
"""


class RedisLeases:
    def __init__(self, client: redis.Redis, prefix: str, instance_id: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._lease = f"{prefix}:lease:{instance_id}"
        self._ttl_ms = int(LEASE_TTL * 1000)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)

    def _slots(self, pool: str) -> str:
        return f"{self._prefix}:slots:{pool}"

    async def acquire(self, pool: str, slot: str, limit: int) -> bool:
        with translated():
            return bool(await self._acquire(keys=[self._slots(pool)], args=[slot, limit, self._ttl_ms]))

    async def release(self, pool: str, slot: str) -> None:
        with translated():
            await self._redis.zrem(self._slots(pool), slot)

    async def renew(self, slots: list[tuple[str, str]]) -> None:
        with translated():
            await self._redis.set(self._lease, "1", px=self._ttl_ms)
            if slots:
                await self._renew(keys=[self._slots(a) for a, _ in slots], args=[self._ttl_ms, *(s for _, s in slots)])

    async def alive(self, instance_ids: set[str]) -> set[str]:
        ordered = sorted(instance_ids)
        if not ordered:
            return set()
        with translated():
            found = await self._redis.mget([f"{self._prefix}:lease:{i}" for i in ordered])
        return {instance for instance, value in zip(ordered, found, strict=True) if value is not None}

    async def resign(self) -> None:
        with translated():
            await self._redis.delete(self._lease)
