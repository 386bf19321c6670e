"""What instances share, picked by the ``broker_url`` setting: the broker, presence, leases and
rate limits. Each shared concern has a module here holding its contract and its in-memory engine
(``leases``, ``presence``, ``ratelimits``), with its Redis engine beside it (``*_redis``); the
connection limits and the requests between instances (``control``, ``owners``) are built on them.

``memory://`` (the default) is one process alone: nothing to run, nothing shared. ``redis://``
makes every instance with the same URL and ``broker_prefix`` one fleet. The Redis modules, and
the ``redis`` package itself, are imported only then, so one process needs no Redis installed.
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from typing import Any

from bfstream.config import Settings
from bfstream.fleet.leases import Leases, MemoryLeases
from bfstream.fleet.presence import MemoryPresence, Presence
from bfstream.fleet.ratelimits import MemoryRateLimits, RateLimits
from bfstream.messaging.broker import Broker


@dataclass(frozen=True, slots=True)
class Fleet:
    instance_id: str
    broker: Broker
    presence: Presence
    leases: Leases
    rates: RateLimits
    shared: bool  # False: this process is alone (memory), so whatever it did not start is orphaned
    client: Any = None  # the Redis client of presence and leases, closed last

    async def close(self) -> None:
        """After the streams ended: take this instance out of the listings and give up its lease."""
        await self.presence.close()
        with contextlib.suppress(Exception):  # an unreachable broker lets the lease lapse instead
            await self.leases.resign()
        if self.client is not None:
            await self.client.aclose()


def open_fleet(settings: Settings) -> Fleet:
    """Built, not yet connected: the broker connects when the hub starts."""
    instance_id = secrets.token_hex(6)
    limits = settings.messaging
    if settings.broker_url.startswith("memory://"):
        from bfstream.messaging.brokers.memory import MemoryBroker

        broker = MemoryBroker(
            limits.history_size, limits.history_ttl, instance_id, limits.history_bytes, settings.streams.log_ttl
        )
        leases = MemoryLeases(instance_id)
        return Fleet(instance_id, broker, MemoryPresence(), leases, MemoryRateLimits(), shared=False)
    try:
        import redis  # noqa: F401
    except ImportError:
        raise SystemExit("bfstream: broker_url names Redis: install bfstream[redis]") from None
    from bfstream.fleet.leases_redis import RedisLeases
    from bfstream.fleet.presence_redis import RedisPresence
    from bfstream.fleet.ratelimits_redis import RedisRateLimits
    from bfstream.fleet.redis import redis_client
    from bfstream.messaging.brokers.redis import RedisBroker

    prefix = settings.broker_prefix
    broker = RedisBroker(
        settings.broker_url,
        instance_id=instance_id,
        prefix=prefix,
        history_size=limits.history_size,
        history_ttl=limits.history_ttl,
        history_bytes=limits.history_bytes,
        log_ttl=settings.streams.log_ttl,
    )
    # Presence and leases only ever write idempotently, so one retry on a fresh connection is safe,
    # and it spares the first call after an outage the pooled connection Redis already closed.
    client = redis_client(settings.broker_url, retries=1)
    presence = RedisPresence(client, prefix, limits.presence_ttl)
    leases = RedisLeases(client, prefix, instance_id)
    rates = RedisRateLimits(client, prefix)
    return Fleet(instance_id, broker, presence, leases, rates, shared=True, client=client)
