"""The fleet's database: PostgreSQL through an asyncpg pool, shared by every instance.

Every call, waiting for a connection and handing it back included, ends within ``CALL_TIMEOUT``,
also when the server stops answering without refusing anything (a dead network, a frozen host):
asyncpg's own timeouts cover a statement, but not the wait for a free connection behind stuck
ones, nor the cancel request and reset it sends to a server that no longer answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

try:
    import asyncpg
    from asyncpg import exceptions as pg
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("database_url names PostgreSQL: install bfstream[postgres] (asyncpg)") from exc

from bfstream.errors import StoreError
from bfstream.scrub import scrub
from bfstream.store.store import Row

log = logging.getLogger("bfstream.store")

T = TypeVar("T")

# docs/deployment.md states these: a new connection gives up after 5 s, a whole call after 10 s.
CONNECT_TIMEOUT = 5.0
CALL_TIMEOUT = 10.0
# A goodbye to a server that does not answer is not worth waiting for: the socket is aborted after.
_CLOSE_TIMEOUT = 1.0

# What an unreachable, restarting or saturated server looks like from here. Other errors are bugs, not outages.
_UNREACHABLE = (
    OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    pg.AdminShutdownError, pg.CrashShutdownError, pg.CannotConnectNowError, pg.TooManyConnectionsError,
)  # fmt: skip


def _describe(exc: BaseException) -> str:
    """The cause, in a log line: a driver's message can quote what it was given, a URL or a password."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    return scrub(f"{type(exc).__name__}: {exc}") if str(exc) else type(exc).__name__


def _one_line(record: logging.LogRecord) -> bool:
    """asyncpg's pool logs each failed attempt to reconnect with its traceback, every few seconds
    while the database is away; the cause on the same line says as much."""
    if record.exc_info and record.exc_info[1] is not None:
        record.msg, record.args = f"{record.getMessage()}: {_describe(record.exc_info[1])}", None
        record.exc_info, record.exc_text = None, None
    return True


logging.getLogger("asyncpg.pool").addFilter(_one_line)


class _Connection(asyncpg.Connection):
    """The pool closes a connection it replaces in a task nobody awaits. Closing politely waits
    for the server's goodbye, for ever from one that stopped answering, and a failure there would
    be logged with a traceback when the task is collected: wait briefly, and either way it is gone."""

    async def close(self, *, timeout: float | None = None) -> None:  # noqa: ASYNC109 - asyncpg's signature
        with contextlib.suppress(*_UNREACHABLE, asyncpg.PostgresError):  # asyncpg aborted it on failure
            await super().close(timeout=min(timeout or _CLOSE_TIMEOUT, _CLOSE_TIMEOUT))


# Any constant both sides agree on: instances starting together take turns migrating.
_MIGRATION_LOCK = 0x62667374


class PostgresDatabase:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str) -> PostgresDatabase:
        # timeout: a connection attempt to a server that does not answer gives up (asyncpg waits 60 s).
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=10, timeout=CONNECT_TIMEOUT, command_timeout=CALL_TIMEOUT,
                connection_class=_Connection,
            )  # fmt: skip
        except ValueError:  # its text may quote a piece of the password, as a port that is not a number
            raise StoreError(
                "its URL cannot be read: a password with /, :, @, # or + must be percent-encoded"
            ) from None
        except (*_UNREACHABLE, asyncpg.PostgresError) as exc:  # no server, no such database or role
            raise StoreError(str(exc) or type(exc).__name__) from exc
        return cls(pool)

    async def _call(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``work`` on a connection of the pool, within ``CALL_TIMEOUT`` from the moment it asks
        for one; asyncpg's errors stop here, above this edge only ``StoreError`` is seen."""
        loop = asyncio.get_running_loop()
        connection = None
        try:
            async with asyncio.timeout(CALL_TIMEOUT) as deadline:
                connection = await self._pool.acquire()
                try:
                    result = await work(connection)
                except asyncpg.PostgresError as exc:
                    if isinstance(exc, _UNREACHABLE):
                        _drop(connection)
                    else:  # the server answered, refusing the statement: the connection is sound
                        await self._pool.release(connection, timeout=max(deadline.when() - loop.time(), 0.01))
                    raise
                except BaseException:
                    # Timed out, cut off or cancelled mid-statement: what the connection is in is
                    # unknown, and a late answer would be taken for the next call's.
                    _drop(connection)
                    raise
                # Within what is left: handing it back runs a reset, which waits on the server too.
                await self._pool.release(connection, timeout=max(deadline.when() - loop.time(), 0.01))
                return result
        except _UNREACHABLE as exc:
            # The pool's other connections went the same way: replace each when next used, rather
            # than let one call after another find one dead and wait out its bound.
            await self._pool.expire_connections()
            if deadline.expired():
                why = f"no answer within {CALL_TIMEOUT:g} s"
            elif isinstance(exc, TimeoutError) and connection is None:
                why = f"a new connection got no answer within {CONNECT_TIMEOUT:g} s"
            else:
                why = _describe(exc)
            log.warning("the database is unreachable: %s", why)
            raise StoreError("The database is unreachable") from exc

    async def execute(self, sql: str, *args: Any) -> int:
        status = await self._call(lambda connection: connection.execute(sql, *args))
        # "UPDATE 3", "INSERT 0 1", "DELETE 0": the count is the last word.
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            await self._call(lambda connection: connection.executemany(sql, rows))

    async def execute_each(self, sql: str, rows: list[tuple[Any, ...]]) -> list[int]:
        if not rows:
            return []

        async def each(connection: asyncpg.Connection) -> list[int]:
            async with connection.transaction():
                statement = await connection.prepare(sql)
                counts = []
                for row in rows:
                    await statement.fetch(*row)
                    last = (statement.get_statusmsg() or "").rsplit(" ", 1)[-1]
                    counts.append(int(last) if last.isdigit() else 0)
            return counts

        return await self._call(each)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        records = await self._call(lambda connection: connection.fetch(sql, *args))
        return [tuple(record) for record in records]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        record = await self._call(lambda connection: connection.fetchrow(sql, *args))
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


def _drop(connection: asyncpg.Connection) -> None:
    """End a connection at once, without the goodbye or reset a dead one would wait for; its place
    in the pool is free again, and the next call there opens a new one."""
    with contextlib.suppress(asyncpg.InterfaceError):  # already handed back when its socket closed
        connection.terminate()
