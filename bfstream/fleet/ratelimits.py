"""Rate limits: token buckets, one per app and purpose (streams, messages, browser publishes).

A bucket holds up to ``burst`` tokens and gains ``rate`` a second; each call takes one, and a call
that finds none is refused with the wait until the next (429 with Retry-After). Alone, a process
keeps its buckets in memory; a fleet keeps them in Redis (``ratelimits_redis.py``), so an app's
limit is the fleet's, whichever instance the load balancer picks.
"""

from __future__ import annotations

import time
from typing import Protocol

from bfstream.config import Rate
from bfstream.errors import TooManyRequests


class TokenBucket:
    """One bucket, in this process: a connection's own publish limit, or a memory fleet's."""

    __slots__ = ("_at", "_burst", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate, self._burst = rate, float(burst)
        self._tokens, self._at = float(burst), time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now

    def take(self, cost: float = 1.0) -> float:
        """0 when ``cost`` tokens were taken, else the seconds until they will be there (nothing taken)."""
        self._refill()
        if self._tokens < cost:
            return (cost - self._tokens) / self._rate
        self._tokens -= cost
        return 0.0

    @property
    def full(self) -> bool:
        self._refill()
        return self._tokens >= self._burst

    def spend(self, cost: float) -> float:
        """Take ``cost`` tokens even into debt; the seconds until the debt is paid off (0 if none).
        For pacing rather than refusing: the caller waits that long before its next spend."""
        self._refill()
        self._tokens -= cost
        return -self._tokens / self._rate if self._tokens < 0 else 0.0


class RateLimits(Protocol):
    async def take(self, key: str, rate: Rate) -> float:
        """Take a token from bucket ``key`` (made full on first use): 0, or seconds to wait."""
        ...


class MemoryRateLimits:
    """One process. Buckets are per app and purpose, so their number is bounded by the apps."""

    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}

    async def take(self, key: str, rate: Rate) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate.rate, rate.burst)
        return bucket.take()


async def enforce(limits: RateLimits, app_id: str, purpose: str, rate: Rate) -> None:
    """Raise 429 when the app's ``purpose`` bucket is empty, saying when to come back."""
    wait = await limits.take(f"{app_id}:{purpose}", rate)
    if wait > 0:
        raise TooManyRequests(
            f"Rate limit: at most {rate.rate:g} {purpose} per second for this app (bursts of {rate.burst})",
            retry_after=wait,
        )
