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
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    key_hash        TEXT NOT NULL UNIQUE,
    created_at      REAL NOT NULL,
    browser_publish INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS user_channels (
    app_id  TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    mode    TEXT NOT NULL,
    PRIMARY KEY (app_id, user_id, channel)
);
CREATE INDEX IF NOT EXISTS user_channels_by_channel ON user_channels (app_id, channel);
-- A channel stays authenticated after its last user is removed: emptying it must not open it to all.
CREATE TABLE IF NOT EXISTS authenticated_channels (
    app_id  TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    channel TEXT NOT NULL,
    PRIMARY KEY (app_id, channel)
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
_APP_COLUMNS = "id, name, created_at, browser_publish"


@dataclass(frozen=True, slots=True)
class App:
    id: str
    name: str
    created_at: float
    browser_publish: bool = True


def _app(row: tuple[object, ...]) -> App:
    app_id, name, created_at, browser_publish = row
    return App(str(app_id), str(name), float(created_at), bool(browser_publish))  # type: ignore[arg-type]


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
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(apps)")}
        if "browser_publish" not in columns:  # a database made before the column existed
            self._db.execute("ALTER TABLE apps ADD COLUMN browser_publish INTEGER NOT NULL DEFAULT 1")

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
        rows = self._db.execute(f"SELECT {_APP_COLUMNS} FROM apps ORDER BY created_at").fetchall()
        return [_app(row) for row in rows]

    def app_by_id(self, app_id: str) -> App | None:
        row = self._db.execute(f"SELECT {_APP_COLUMNS} FROM apps WHERE id = ?", (app_id,)).fetchone()
        return _app(row) if row else None

    def find_app(self, ref: str) -> App | None:
        """An app by id, else by name (the CLI accepts either)."""
        row = self._db.execute(
            f"SELECT {_APP_COLUMNS} FROM apps WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1",
            (ref, ref, ref),
        ).fetchone()
        return _app(row) if row else None

    def app_by_key(self, api_key: str) -> App | None:
        wanted = _hash_key(api_key)
        row = self._db.execute(f"SELECT {_APP_COLUMNS}, key_hash FROM apps WHERE key_hash = ?", (wanted,)).fetchone()
        if row is None or not hmac.compare_digest(row[4], wanted):
            return None
        return _app(row[:4])

    def rotate_key(self, app_id: str) -> str:
        key = _new_key()
        self._db.execute("UPDATE apps SET key_hash = ? WHERE id = ?", (_hash_key(key), app_id))
        return key

    def delete_app(self, app_id: str) -> bool:
        return self._db.execute("DELETE FROM apps WHERE id = ?", (app_id,)).rowcount > 0

    def set_browser_publish(self, app_id: str, allowed: bool) -> None:
        self._db.execute("UPDATE apps SET browser_publish = ? WHERE id = ?", (int(allowed), app_id))

    def signing_key(self) -> bytes:
        """The secret that signs connection tokens, made on first use and kept with the apps."""
        self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('token_key', ?)", (secrets.token_hex(32),))
        (value,) = self._db.execute("SELECT value FROM meta WHERE key = 'token_key'").fetchone()
        return bytes.fromhex(value)

    # Users in authenticated channels. A channel becomes authenticated when a first user is added.

    def add_user_channels(self, app_id: str, user_id: str, channels: list[tuple[str, str]]) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO authenticated_channels (app_id, channel) VALUES (?, ?)",
            [(app_id, name) for name, _ in channels],
        )
        self._db.executemany(
            "INSERT INTO user_channels (app_id, user_id, channel, mode) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (app_id, user_id, channel) DO UPDATE SET mode = excluded.mode",
            [(app_id, user_id, name, mode) for name, mode in channels],
        )

    def remove_user_channels(self, app_id: str, user_id: str, channels: list[str]) -> None:
        self._db.executemany(
            "DELETE FROM user_channels WHERE app_id = ? AND user_id = ? AND channel = ?",
            [(app_id, user_id, name) for name in channels],
        )

    def user_channels(self, app_id: str, user_id: str) -> list[tuple[str, str]]:
        rows = self._db.execute(
            "SELECT channel, mode FROM user_channels WHERE app_id = ? AND user_id = ? ORDER BY channel",
            (app_id, user_id),
        ).fetchall()
        return [(str(channel), str(mode)) for channel, mode in rows]

    def channel_members(self, app_id: str, channel: str) -> set[str] | None:
        """The users of an authenticated ``channel``, or None when it is anonymous (nobody was ever added)."""
        known = self._db.execute(
            "SELECT 1 FROM authenticated_channels WHERE app_id = ? AND channel = ?", (app_id, channel)
        ).fetchone()
        if known is None:
            return None
        rows = self._db.execute(
            "SELECT user_id FROM user_channels WHERE app_id = ? AND channel = ?", (app_id, channel)
        ).fetchall()
        return {str(user_id) for (user_id,) in rows}

    def authenticated_channels(self, app_id: str) -> set[str]:
        rows = self._db.execute("SELECT channel FROM authenticated_channels WHERE app_id = ?", (app_id,))
        return {str(channel) for (channel,) in rows}
