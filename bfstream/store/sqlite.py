"""Apps and their keys, in one SQLite file.

An app key is shown once, when it is made; only its SHA-256 is stored. The keys carry 256 random
bits, so a fast hash is enough (no password stretching needed) and lets us look a key up by its
hash; the final comparison is still constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

KEY_PREFIX = "BFAPI_"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class App:
    id: str
    name: str
    created_at: float


def _hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def _new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class Store:
    """Calls are synchronous: each is one indexed query on a local file, far cheaper than a thread hop."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def create_app(self, name: str) -> tuple[App, str]:
        app = App(id="app_" + secrets.token_hex(8), name=name, created_at=time.time())
        key = _new_key()
        self._db.execute(
            "INSERT INTO apps (id, name, key_hash, created_at) VALUES (?, ?, ?, ?)",
            (app.id, app.name, _hash_key(key), app.created_at),
        )
        return app, key

    def list_apps(self) -> list[App]:
        rows = self._db.execute("SELECT id, name, created_at FROM apps ORDER BY created_at").fetchall()
        return [App(*row) for row in rows]

    def app_by_id(self, app_id: str) -> App | None:
        row = self._db.execute("SELECT id, name, created_at FROM apps WHERE id = ?", (app_id,)).fetchone()
        return App(*row) if row else None

    def find_app(self, ref: str) -> App | None:
        """An app by id, else by name (the CLI accepts either)."""
        row = self._db.execute(
            "SELECT id, name, created_at FROM apps WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1",
            (ref, ref, ref),
        ).fetchone()
        return App(*row) if row else None

    def app_by_key(self, api_key: str) -> App | None:
        wanted = _hash_key(api_key)
        row = self._db.execute(
            "SELECT id, name, created_at, key_hash FROM apps WHERE key_hash = ?", (wanted,)
        ).fetchone()
        if row is None or not hmac.compare_digest(row[3], wanted):
            return None
        return App(*row[:3])

    def rotate_key(self, app_id: str) -> str:
        key = _new_key()
        self._db.execute("UPDATE apps SET key_hash = ? WHERE id = ?", (_hash_key(key), app_id))
        return key

    def delete_app(self, app_id: str) -> bool:
        return self._db.execute("DELETE FROM apps WHERE id = ?", (app_id,)).rowcount > 0
