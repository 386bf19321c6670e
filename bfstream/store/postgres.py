"""The fleet's database: PostgreSQL through an asyncpg pool, shared by every instance."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("database_url names PostgreSQL: install bfstream[postgres] (asyncpg)") from exc

from bfstream.errors import StoreError
from bfstream.store.store import Row

log = logging.getLogger("bfstream.store")

# What an unreachable or restarting server looks like from here. Other errors are bugs, not outages.
_UNREACHABLE = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """asyncpg's errors stop here; above this edge only ``StoreError`` is seen."""
    try:
        yield
    except _UNREACHABLE as exc:
        log.warning("the database is unreachable: %s", exc)
        raise StoreError("The database is unreachable") from exc


# Any constant both sides agree on: instances starting together take turns migrating.
_MIGRATION_LOCK = 0x62667374


class PostgresDatabase:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str) -> PostgresDatabase:
        # timeout: a connection attempt to a server that does not answer gives up (asyncpg waits 60 s).
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=10, timeout=5, command_timeout=10)
        except (*_UNREACHABLE, asyncpg.PostgresError, ValueError) as exc:  # no server, no such database or role
            raise StoreError(str(exc) or type(exc).__name__) from exc
        return cls(pool)

    async def execute(self, sql: str, *args: Any) -> int:
        with _translated():
            status = await self._pool.execute(sql, *args)
        # "UPDATE 3", "INSERT 0 1", "DELETE 0": the count is the last word.
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            with _translated():
                await self._pool.executemany(sql, rows)

    async def execute_each(self, sql: str, rows: list[tuple[Any, ...]]) -> list[int]:
        if not rows:
            return []
        with _translated():
            async with self._pool.acquire() as conn, conn.transaction():
                statement = await conn.prepare(sql)
                counts = []
                for row in rows:
                    await statement.fetch(*row)
                    last = (statement.get_statusmsg() or "").rsplit(" ", 1)[-1]
                    counts.append(int(last) if last.isdigit() else 0)
        return counts

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        with _translated():
            return [tuple(record) for record in await self._pool.fetch(sql, *args)]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        with _translated():
            record = await self._pool.fetchrow(sql, *args)
        return tuple(record) if record is not None else None

    async def migrate(self, steps: list[tuple[int, str]]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)"
            )
            applied = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, script in steps:
                if version not in applied:
                    await conn.execute(script)  # a script of several statements, in this transaction
                    await conn.execute("INSERT INTO schema_migrations VALUES ($1, now())", version)

    async def close(self) -> None:
        await self._pool.close()
