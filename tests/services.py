"""The machine's Redis and PostgreSQL, for the tests that need them.

``REDIS_URL`` and ``DATABASE_URL`` name them (defaults: the usual local ports). Without them a
test skips with the reason, except under CI, where a missing service is a failure: CI must never
pass by skipping what it was meant to check.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


def _require(name: str, url: str, default_port: int) -> str:
    if not _reachable(url, default_port):
        reason = f"{name} is not reachable at {url} (set {'REDIS_URL' if name == 'Redis' else 'DATABASE_URL'})"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must run these tests")
        pytest.skip(reason)
    return url


def require_redis() -> str:
    return _require("Redis", REDIS_URL, 6379)


def require_postgres() -> str:
    return _require("PostgreSQL", DATABASE_URL, 5432)


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
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
