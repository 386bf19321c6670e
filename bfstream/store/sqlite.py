"""The embedded database: one SQLite file in the data directory, no server to run.

sqlite3 blocks, so every call runs on one thread of its own, off the event loop: a slow disk
never stalls the streams. One thread also means one connection, used in order.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from bfstream.errors import StoreError
from bfstream.store.store import Row

log = logging.getLogger("bfstream.store")

T = TypeVar("T")

_PARAMETER = re.compile(r"\$(\d+)")


class SQLiteDatabase:
    def __init__(self, db: sqlite3.Connection, thread: ThreadPoolExecutor) -> None:
        self._db = db
        self._thread = thread
        self._sql: dict[str, str] = {}

    @classmethod
    async def connect(cls, path: Path) -> SQLiteDatabase:
        thread = ThreadPoolExecutor(1, thread_name_prefix="bfstream-sqlite")

        def open_file() -> sqlite3.Connection:
            path.parent.mkdir(parents=True, exist_ok=True)
            # timeout: wait up to 5 s for another process's write lock (a CLI command, a second instance).
            db = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
            _use_wal(db)
            # In WAL mode NORMAL is still crash-safe (only a power cut can lose the last commits).
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            return db

        try:
            return cls(await asyncio.get_running_loop().run_in_executor(thread, open_file), thread)
        except (OSError, sqlite3.Error) as exc:  # a directory it may not write, a file that is no database
            thread.shutdown(wait=False)
            raise StoreError(str(exc)) from exc

    async def _run(self, work: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, work)
        except sqlite3.OperationalError as exc:  # disk full or failing, locked for too long
            log.warning("the database is unusable: %s", exc)
            raise StoreError("The database is unavailable") from exc

    def _translate(self, sql: str) -> str:
        """``$1`` (PostgreSQL's style, the one the queries are written in) is ``?1`` to SQLite."""
        translated = self._sql.get(sql)
        if translated is None:
            translated = self._sql[sql] = _PARAMETER.sub(r"?\1", sql)
        return translated

    async def execute(self, sql: str, *args: Any) -> int:
        query = self._translate(sql)
        return await self._run(lambda: self._db.execute(query, args).rowcount)

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        query = self._translate(sql)
        await self._run(lambda: self._db.executemany(query, rows))

    async def execute_each(self, sql: str, rows: list[tuple[Any, ...]]) -> list[int]:
        """One trip to the database thread and one commit for all the rows, not one of each per row."""
        query = self._translate(sql)

        def each() -> list[int]:
            self._db.execute("BEGIN")
            try:
                counts = [self._db.execute(query, row).rowcount for row in rows]
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return counts

        return await self._run(each) if rows else []

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        query = self._translate(sql)
        return await self._run(lambda: self._db.execute(query, args).fetchall())

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        query = self._translate(sql)
        return await self._run(lambda: self._db.execute(query, args).fetchone())

    async def migrate(self, steps: list[tuple[int, str]]) -> None:
        await self._run(lambda: self._migrate(steps))

    def _migrate(self, steps: list[tuple[int, str]]) -> None:
        db = self._db
        db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)")
        db.execute("BEGIN IMMEDIATE")  # the write lock: a second process waits, then sees what was applied
        try:
            applied = {version for (version,) in db.execute("SELECT version FROM schema_migrations")}
            for version, script in steps:
                if version in applied:
                    continue
                for statement in _statements(script):
                    db.execute(statement)
                db.execute("INSERT INTO schema_migrations VALUES (?, strftime('%s', 'now'))", (version,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        await self._run(self._db.close)
        self._thread.shutdown()


def _use_wal(db: sqlite3.Connection) -> None:
    """Switching a new file to WAL needs it to itself, and SQLite answers "locked" at once, without
    waiting, while another process opens the same file: wait a little and try again."""
    deadline = time.monotonic() + 5
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)  # on the store's own thread, not the event loop


def _statements(script: str) -> list[str]:
    """A script's statements one by one: ``executescript`` would commit the migration's transaction."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():  # a last statement without its semicolon, or a closing comment (harmless)
        statements.append(pending.strip())
    return statements
