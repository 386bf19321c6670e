"""The machine's Redis and PostgreSQL, for the tests that need them.

``REDIS_URL`` and ``DATABASE_URL`` name them (defaults: the usual local ports). Without them a
test skips with the reason, except under CI, where a missing service is a failure: CI must never
pass by skipping what it was meant to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def unavailable(reason: str) -> NoReturn:
    """What a test does without something it needs: skip, saying why; under CI, fail."""
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI must run these tests")
    pytest.skip(reason)


def _require(name: str, url: str, default_port: int) -> str:
    if not _reachable(url, default_port):
        unavailable(f"{name} is not reachable at {url} (set {'REDIS_URL' if name == 'Redis' else 'DATABASE_URL'})")
    return url


def require_redis() -> str:
    return _require("Redis", REDIS_URL, 6379)


def require_postgres() -> str:
    return _require("PostgreSQL", DATABASE_URL, 5432)


async def delete_keys(redis_url: str, prefix: str) -> None:
    """A test's clean-up: every Redis key under its prefix."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def unique_prefix() -> str:
    """A key prefix of a test's own, so runs never see each other's keys."""
    return f"bfstest-{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def throwaway_database() -> AsyncIterator[str]:
    """A PostgreSQL database of its own for one test or run, dropped afterwards; yields its URL."""
    import asyncpg

    admin_url = require_postgres()
    name = "bfstest_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(admin_url)
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        with contextlib.suppress(Exception):  # a database the test broke on purpose has nothing to scan
            await _scan_database(urlunsplit(urlsplit(admin_url)._replace(path="/" + name)))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _scan_database(url: str) -> None:
    """Every row of every table, as text, for the secret scan (``tests/secret_scan.py``)."""
    import asyncpg

    from tests import secret_scan

    connection = await asyncpg.connect(url, timeout=5)
    try:
        tables = await connection.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        for (table,) in tables:
            rows = await connection.fetch(f'SELECT t::text FROM "{table}" t')
            secret_scan.record(f"database table {table}", "\n".join(row[0] for row in rows))
    finally:
        await connection.close()


async def until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> float:
    """Poll ``condition`` until it holds; fail the test if it does not within ``timeout`` seconds.
    How long it took."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"{what}: not met within {timeout} s")
    return time.monotonic() - started


class Proxy:
    """A TCP relay on 127.0.0.1 between a broker and the real Redis, so a test can cut Redis off."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.url = target_url
        self.port = 0
        self.links: list[asyncio.Event] = []  # per connection, in the order opened; cleared: bytes are held
        self.holding = False  # new connections start held too
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def proxied_url(self) -> str:
        parts = urlsplit(self.url)
        auth = parts.netloc.rpartition("@")[0]
        return urlunsplit(parts._replace(netloc=f"{auth + '@' if auth else ''}127.0.0.1:{self.port}"))

    def hold(self, link: int | None = None) -> None:
        """Stop relaying bytes, without a reset, as a dead network does: one connection, or all from now on."""
        for flowing in self.links if link is None else [self.links[link]]:
            flowing.clear()
        self.holding = self.holding or link is None

    def release(self) -> None:
        """Relay again what was held, as a healed network delivers what it buffered."""
        self.holding = False
        for flowing in self.links:
            flowing.set()

    async def start(self) -> None:
        """Listen, on the same port as before when restarted, relaying freely."""
        self.holding = False
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Redis is gone: refuse connections and cut every open one."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        self.links.clear()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, upstream_writer}
        flowing = asyncio.Event()
        if not self.holding:
            flowing.set()
        self.links.append(flowing)
        pipes = self._pipe(reader, upstream_writer, flowing), self._pipe(upstream_reader, writer, flowing)
        try:
            await asyncio.gather(*pipes)
        except asyncio.CancelledError:
            # A link still open when the test's loop closes is cancelled; nobody awaits this task, and
            # Python 3.11's start_server logs a cancelled handler as "Exception in callback" with a traceback.
            writer.transport.abort()
            upstream_writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event) -> None:
        try:
            while data := await reader.read(65536):
                await flowing.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()  # one side gone: the other goes too
            self._writers.discard(writer)
