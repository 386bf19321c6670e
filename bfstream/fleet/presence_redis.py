"""Presence shared by a fleet, in Redis.

Per app, two keys (``<prefix>`` is the ``broker_prefix`` setting):

- ``<prefix>:presence:<app>``, a hash: field ``<channel>\\n<connection id>`` (channel names cannot
  hold control characters), value the user as JSON (``{"id", "email"}``) or ``""`` if anonymous;
- ``<prefix>:presence-expiry:<app>``, a sorted set: the same fields, scored by when they expire.

An entry lives ``ttl`` seconds unless its instance renews it: each instance keeps its own
entries in memory and writes them all again every ``ttl / 3``, so a dead instance's entries
vanish within ``ttl``. Listing drops expired entries first. Both keys also expire ``ttl`` after
the last write, so an app whose connections are all gone leaves nothing behind.

Writes that fail (Redis unreachable) are only logged: the next renewal puts them right.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import redis.asyncio as redis
from redis.exceptions import RedisError

from bfstream.fleet.presence import Listing
from bfstream.fleet.redis import translated
from bfstream.messaging.tokens import User

log = logging.getLogger("bfstream.presence")


class RedisPresence:
    def __init__(self, client: redis.Redis, prefix: str, ttl: float) -> None:
        self._redis = client
        self._prefix = prefix
        self._ttl = ttl
        self._mine: dict[str, dict[str, str]] = {}  # app -> field -> value: what this instance renews
        self._renewer = asyncio.create_task(self._renew_forever(), name="bfstream-presence")

    def _keys(self, app_id: str) -> tuple[str, str]:
        return f"{self._prefix}:presence:{app_id}", f"{self._prefix}:presence-expiry:{app_id}"

    async def _write(self, app_id: str, fields: dict[str, str]) -> None:
        entries, expiry = self._keys(app_id)
        until = time.time() + self._ttl
        ttl_ms = int(self._ttl * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(entries, mapping=fields)
            pipe.zadd(expiry, dict.fromkeys(fields, until))
            pipe.pexpire(entries, ttl_ms)
            pipe.pexpire(expiry, ttl_ms)
            await pipe.execute()

    async def add(self, app_id: str, channel: str, connection_id: str, user: User | None) -> None:
        field = f"{channel}\n{connection_id}"
        value = json.dumps({"id": user.id, "email": user.email}) if user is not None else ""
        self._mine.setdefault(app_id, {})[field] = value
        try:
            await self._write(app_id, {field: value})
        except RedisError as exc:
            log.debug("presence add deferred to the next renewal: %s", exc)

    async def remove(self, app_id: str, channel: str, connection_id: str) -> None:
        field = f"{channel}\n{connection_id}"
        mine = self._mine.get(app_id, {})
        mine.pop(field, None)
        if not mine:
            self._mine.pop(app_id, None)
        entries, expiry = self._keys(app_id)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hdel(entries, field)
                pipe.zrem(expiry, field)
                await pipe.execute()
        except RedisError as exc:  # the entry expires by itself
            log.debug("presence remove left to expiry: %s", exc)

    async def list(self, app_id: str) -> Listing:
        entries, expiry = self._keys(app_id)
        with translated():
            expired = await self._redis.zrangebyscore(expiry, "-inf", time.time())
            if expired:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.hdel(entries, *expired)
                    pipe.zrem(expiry, *expired)
                    await pipe.execute()
            raw = await self._redis.hgetall(entries)
        listing: Listing = {}
        for field, value in raw.items():
            channel, _, connection_id = _text(field).partition("\n")
            user = json.loads(value) if value else None
            listing.setdefault(channel, {})[connection_id] = User(user["id"], user.get("email")) if user else None
        return listing

    async def close(self) -> None:
        self._renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._renewer
        for app_id, fields in list(self._mine.items()):  # a clean stop takes its entries along
            entries, expiry = self._keys(app_id)
            with contextlib.suppress(RedisError):
                await self._redis.hdel(entries, *fields)
                await self._redis.zrem(expiry, *fields)
        self._mine.clear()

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            for app_id, fields in list(self._mine.items()):
                try:
                    await self._write(app_id, dict(fields))
                except RedisError as exc:
                    log.debug("presence renewal failed, retrying later: %s", exc)
                    break


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
