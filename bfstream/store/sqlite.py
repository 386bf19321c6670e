"""Apps and their keys, users' channels and stream records, in one SQLite file.

An app key is shown once, when it is made; only its SHA-256 is stored. The keys carry 256 random
bits, so a fast hash is enough (no password stretching needed) and lets us look a key up by its
hash; the final comparison is still constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEY_PREFIX = "BFAPI_"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    key_hash        TEXT NOT NULL UNIQUE,
    created_at      REAL NOT NULL,
    browser_publish INTEGER NOT NULL DEFAULT 1,
    retain_text     INTEGER NOT NULL DEFAULT 1
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
CREATE TABLE IF NOT EXISTS streams (
    id            TEXT PRIMARY KEY,
    app_id        TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    service       TEXT NOT NULL,
    model         TEXT NOT NULL,
    channels      TEXT NOT NULL,
    action_name   TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    REAL NOT NULL,
    ended_at      REAL,
    finish_reason TEXT,
    usage         TEXT,
    error         TEXT,
    text          TEXT
);
CREATE INDEX IF NOT EXISTS streams_by_app ON streams (app_id, created_at);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
_APP_COLUMNS = "id, name, created_at, browser_publish, retain_text"


@dataclass(frozen=True, slots=True)
class App:
    id: str
    name: str
    created_at: float
    browser_publish: bool = True
    retain_text: bool = True  # keep the answer's text in stream records


def _app(row: tuple[object, ...]) -> App:
    app_id, name, created_at, browser_publish, retain_text = row
    return App(str(app_id), str(name), float(created_at), bool(browser_publish), bool(retain_text))  # type: ignore[arg-type]


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
        # In WAL mode NORMAL is still crash-safe (only a power cut can lose the last commits), and it
        # keeps an fsync off the event loop each time a stream starts or ends.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(apps)")}
        for column in ("browser_publish", "retain_text"):  # databases made before the column existed
            if column not in columns:
                self._db.execute(f"ALTER TABLE apps ADD COLUMN {column} INTEGER NOT NULL DEFAULT 1")

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
        if row is None or not hmac.compare_digest(row[5], wanted):
            return None
        return _app(row[:5])

    def rotate_key(self, app_id: str) -> str:
        key = _new_key()
        self._db.execute("UPDATE apps SET key_hash = ? WHERE id = ?", (_hash_key(key), app_id))
        return key

    def delete_app(self, app_id: str) -> bool:
        return self._db.execute("DELETE FROM apps WHERE id = ?", (app_id,)).rowcount > 0

    def set_browser_publish(self, app_id: str, allowed: bool) -> None:
        self._db.execute("UPDATE apps SET browser_publish = ? WHERE id = ?", (int(allowed), app_id))

    def set_retain_text(self, app_id: str, retain: bool) -> None:
        self._db.execute("UPDATE apps SET retain_text = ? WHERE id = ?", (int(retain), app_id))

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

    # Stream records: written when a stream starts and when it ends, and its text about once a second
    # while it runs; never per chunk.

    def record_stream_start(self, record: StreamRecord) -> None:
        self._db.execute(
            "INSERT INTO streams (id, app_id, service, model, channels, action_name, status, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, 'running', ?)",
            (record.id, record.app_id, record.service, record.model, json.dumps(record.channels),
             record.action_name, record.created_at),
        )  # fmt: skip

    def record_stream_end(self, record: StreamRecord) -> None:
        self._db.execute(
            "UPDATE streams SET status = ?, ended_at = ?, finish_reason = ?, usage = ?, error = ?, text = ?"
            " WHERE id = ?",
            (record.status, record.ended_at, record.finish_reason, _json_or_null(record.usage),
             _json_or_null(record.error), record.text, record.id),
        )  # fmt: skip

    def record_stream_text(self, stream_id: str, text: str) -> None:
        self._db.execute("UPDATE streams SET text = ? WHERE id = ?", (text, stream_id))

    def stream_record(self, app_id: str, stream_id: str) -> StreamRecord | None:
        row = self._db.execute(
            f"SELECT {_STREAM_COLUMNS} FROM streams WHERE id = ? AND app_id = ?", (stream_id, app_id)
        )
        found = row.fetchone()
        return _stream(found) if found else None

    def recent_streams(self, limit: int = 20, app_id: str | None = None) -> list[StreamRecord]:
        where, args = ("WHERE app_id = ?", (app_id, limit)) if app_id else ("", (limit,))
        rows = self._db.execute(
            f"SELECT {_STREAM_COLUMNS} FROM streams {where} ORDER BY created_at DESC LIMIT ?", args
        ).fetchall()
        return [_stream(row) for row in rows]

    def mark_interrupted(self) -> int:
        """At start-up: a stream still 'running' was cut short by a crash of the process that ran it."""
        return self._db.execute(
            "UPDATE streams SET status = 'interrupted', ended_at = ? WHERE status = 'running'", (time.time(),)
        ).rowcount


_STREAM_COLUMNS = (
    "id, app_id, service, model, channels, action_name, status, created_at, ended_at, finish_reason, usage, error, text"
)


@dataclass(slots=True)
class StreamRecord:
    """What happened to one stream. The prompt and the provider key are never part of it."""

    id: str
    app_id: str
    service: str
    model: str
    channels: list[str]
    action_name: str
    status: str = "running"  # running | completed | stopped | failed | interrupted
    created_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    text: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "streamId": self.id,
            "service": self.service,
            "model": self.model,
            "channels": self.channels,
            "actionName": self.action_name,
            "status": self.status,
            "createdAt": self.created_at,
            "endedAt": self.ended_at,
            "finishReason": self.finish_reason,
            "usage": self.usage,
            "error": self.error,
            "text": self.text,
        }


def _json_or_null(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _stream(row: tuple[Any, ...]) -> StreamRecord:
    (stream_id, app_id, service, model, channels, action, status, created, ended, reason, usage, error, text) = row
    return StreamRecord(
        stream_id, app_id, service, model, json.loads(channels), action, status, created, ended, reason,
        json.loads(usage) if usage else None, json.loads(error) if error else None, text,
    )  # fmt: skip
