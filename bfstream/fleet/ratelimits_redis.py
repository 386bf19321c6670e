"""Rate limits shared by a fleet, in Redis (the contract is in ``ratelimits.py``).

One key per bucket: ``<prefix>:rate:<app id>:<purpose>``, a hash ``{t: tokens, at: ms}``, expiring
once the bucket would be full again, so idle apps leave nothing behind. One Lua script refills,
takes and saves, on Redis's own clock: instances taking from one bucket at once cannot both take
its last token, and their clocks need not agree.
"""

from __future__ import annotations

import redis.asyncio as redis

from bfstream.config import Rate
from bfstream.fleet.redis import translated

# ARGV[1] tokens per millisecond, ARGV[2] burst. Returns the wait in ms as a string ("0": taken),
# since Lua numbers come back from Redis truncated to integers.
_TAKE = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + tonumber(now[2]) / 1000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local saved = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens, at = tonumber(saved[1]) or burst, tonumber(saved[2]) or ms
tokens = math.min(burst, tokens + math.max(0, ms - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'at', tostring(ms))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate) + 1000)
return tostring(wait)
"""


class RedisRateLimits:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._prefix = prefix
        self._take = client.register_script(_TAKE)

    async def take(self, key: str, rate: Rate) -> float:
        with translated():
            wait_ms = await self._take(keys=[f"{self._prefix}:rate:{key}"], args=[rate.rate / 1000, rate.burst])
        return float(wait_ms) / 1000
