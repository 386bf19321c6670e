"""Apps and their keys, users' channels and stream records: every query, written once.

The queries are in the SQL that SQLite and PostgreSQL share, with ``$1``-style parameters; a
``Database`` (``sqlite.py`` or ``postgres.py``) runs them. ``open_store`` picks it from the
``database_url`` setting and applies the numbered files in ``migrations/`` that the database has
not seen yet.

An app key is shown once, when it is made; only its SHA-256 is stored. The keys carry 256 random
bits, so a fast hash is enough (no password stretching needed) and lets us look a key up by its
hash; the final comparison is still constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from bfstream.errors import StoreError
from bfstream.store.records import App, FileMakerTarget, IdempotentRequest, StreamRecord

KEY_PREFIX = "BFAPI_"
# The service name an app's FileMaker account password is kept under in app_credentials. The
# settings lower-case every service name, so one with capitals can never be a provider's.
FILEMAKER_PASSWORD = "FileMaker"

Row = tuple[Any, ...]


class Database(Protocol):
    """Runs one statement at a time; each is its own transaction."""

    async def execute(self, sql: str, *args: Any) -> int:
        """Returns the number of rows changed."""
        ...

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None: ...
    async def execute_each(self, sql: str, rows: list[tuple[Any, ...]]) -> list[int]:
        """``sql`` once per row, in one transaction; the rows each changed."""
        ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def migrate(self, steps: list[tuple[int, str]]) -> None:
        """Apply the ``(version, script)`` steps not applied yet, in order, each in a transaction,
        holding a lock so that instances starting together apply each step once."""
        ...

    async def close(self) -> None: ...


def migrations() -> list[tuple[int, str]]:
    folder = resources.files("bfstream.store") / "migrations"
    files = sorted(f for f in folder.iterdir() if f.name.endswith(".sql"))
    return [(int(f.name.partition("_")[0]), f.read_text()) for f in files]


def is_postgres(database_url: str | None) -> bool:
    """Whether ``database_url`` names PostgreSQL (else the store is SQLite)."""
    return bool(database_url and database_url.startswith(("postgresql://", "postgres://")))


def sqlite_path(database_url: str | None, data_dir: Path) -> Path:
    """The SQLite file a ``database_url`` of ``sqlite:///...`` (or none: the data directory's) names."""
    return Path(database_url.removeprefix("sqlite:///")) if database_url else data_dir / "bfstream.sqlite3"


async def open_store(database_url: str | None, data_dir: Path, *, create: bool = True) -> Store:
    """SQLite in ``data_dir`` unless ``database_url`` names PostgreSQL; asyncpg is imported only then.

    ``create=False`` is for commands that only work on what exists: a missing SQLite file is then a
    ``StoreError`` with code ``no_database`` rather than a new empty database, since a command run
    against the wrong data directory must say so, not leave a database there that finds nothing.
    Every way of failing to open (no server, no such database, the extra not installed) is a
    ``StoreError`` whose message says why in one line."""
    database: Database
    if is_postgres(database_url):
        try:
            from bfstream.store.postgres import PostgresDatabase
        except ImportError as exc:  # its message names the extra to install
            raise StoreError(str(exc), code="missing_extra") from None

        database = await PostgresDatabase.connect(database_url)
    else:
        from bfstream.store.sqlite import SQLiteDatabase

        path = sqlite_path(database_url, data_dir)
        if not create and not path.is_file():
            raise StoreError(f"there is no database at {path}", code="no_database")
        database = await SQLiteDatabase.connect(path)
    try:
        await database.migrate(migrations())
    except BaseException:
        await database.close()
        raise
    return Store(database)


_APP_COLUMNS = (
    "id, name, created_at, browser_publish, retain_text, origins, webhook_url, webhook_secret, tool_arguments_public, "
    "webhook_events, filemaker_host, filemaker_database, filemaker_layout, filemaker_account, filemaker_events_script"
)
_APP_FIELDS = _APP_COLUMNS.count(",") + 1  # the columns after them in a row are the key's
_STREAM_COLUMNS = (
    "id, app_id, service, model, channels, action_name, status, created_at, ended_at, finish_reason, usage, error, "
    "text, owner, seq, tools, functions, reasoning, sources, metadata"
)


def _app(row: Row) -> App:
    (app_id, name, created_at, browser_publish, retain_text, origins, webhook_url, webhook_secret, public,
     events, fm_host, fm_database, fm_layout, fm_account, fm_script) = row[:_APP_FIELDS]  # fmt: skip
    allowed = tuple(json.loads(origins)) if origins is not None else None
    filemaker = FileMakerTarget(fm_host, fm_database, fm_layout, fm_account, fm_script) if fm_host else None
    return App(
        str(app_id), str(name), float(created_at), bool(browser_publish), bool(retain_text), allowed,
        webhook_url, webhook_secret, bool(public), tuple(json.loads(events)) if events else (), filemaker,
    )  # fmt: skip


def _stream(row: Row) -> StreamRecord:
    (stream_id, app_id, service, model, channels, action, status, created, ended, reason, usage, error, text, owner,
     seq, tools, functions, reasoning, sources, metadata) = row  # fmt: skip
    return StreamRecord(
        stream_id, app_id, service, model, json.loads(channels), action, status, created, ended, reason,
        json.loads(usage) if usage else None, json.loads(error) if error else None, text, owner, seq,
        json.loads(tools) if tools else [], json.loads(functions) if functions else [], reasoning,
        json.loads(sources) if sources else [], json.loads(metadata) if metadata else None,
    )  # fmt: skip


def _json_or_null(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def _new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class _Counted:
    """A database that counts its failed statements, for /metrics: one place for every backend
    and every caller (requests, streams, the orphan sweep)."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self.errors = 0

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            return await self._db.execute(sql, *args)
        except StoreError:
            self.errors += 1
            raise

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        try:
            await self._db.executemany(sql, rows)
        except StoreError:
            self.errors += 1
            raise

    async def execute_each(self, sql: str, rows: list[tuple[Any, ...]]) -> list[int]:
        try:
            return await self._db.execute_each(sql, rows)
        except StoreError:
            self.errors += 1
            raise

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            return await self._db.fetch(sql, *args)
        except StoreError:
            self.errors += 1
            raise

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        try:
            return await self._db.fetchrow(sql, *args)
        except StoreError:
            self.errors += 1
            raise

    async def migrate(self, steps: list[tuple[int, str]]) -> None:
        await self._db.migrate(steps)

    async def close(self) -> None:
        await self._db.close()


class Store:
    def __init__(self, database: Database) -> None:
        self._db = _Counted(database)

    @property
    def errors(self) -> int:
        """Statements that failed because the database could not be reached or used."""
        return self._db.errors

    async def close(self) -> None:
        await self._db.close()

    # Apps and keys

    async def create_app(self, name: str, browser_publish: bool = False) -> tuple[App, str]:
        """Browsers may not publish unless asked for: with only the public app id, anyone could."""
        app = App(id="app_" + secrets.token_hex(8), name=name, created_at=time.time(), browser_publish=browser_publish)
        key = _new_key()
        await self._db.execute(
            "INSERT INTO apps (id, name, key_hash, created_at, browser_publish) VALUES ($1, $2, $3, $4, $5)",
            app.id, app.name, _hash_key(key), app.created_at, int(browser_publish),
        )  # fmt: skip
        return app, key

    async def list_apps(self) -> list[App]:
        return [_app(row) for row in await self._db.fetch(f"SELECT {_APP_COLUMNS} FROM apps ORDER BY created_at")]

    async def app_by_id(self, app_id: str) -> App | None:
        row = await self._db.fetchrow(f"SELECT {_APP_COLUMNS} FROM apps WHERE id = $1", app_id)
        return _app(row) if row else None

    async def find_app(self, ref: str) -> App | None:
        """An app by id, else by name (the CLI accepts either)."""
        row = await self._db.fetchrow(
            f"SELECT {_APP_COLUMNS} FROM apps WHERE id = $1 OR name = $1 ORDER BY (id = $1) DESC LIMIT 1", ref
        )
        return _app(row) if row else None

    async def app_by_key(self, api_key: str) -> App | None:
        """The app whose current key this is, or whose previous key it is while its grace lasts."""
        wanted, now = _hash_key(api_key), time.time()
        row = await self._db.fetchrow(
            f"SELECT {_APP_COLUMNS}, key_hash, old_key_hash, old_key_until FROM apps"
            " WHERE key_hash = $1 OR (old_key_hash = $1 AND old_key_until > $2)",
            wanted,
            now,
        )
        if row is None:
            return None
        key_hash, old_hash, old_until = row[_APP_FIELDS:]
        current = hmac.compare_digest(key_hash, wanted)
        previous = old_hash is not None and hmac.compare_digest(old_hash, wanted) and float(old_until) > now
        return _app(row) if current or previous else None

    async def rotate_key(self, app_id: str, grace: float = 0) -> str:
        """A new key; with ``grace`` seconds, the key it replaces keeps working until then (only the
        one it replaces: a second rotation within the grace ends the first key's at once)."""
        key = _new_key()
        until = time.time() + grace if grace > 0 else None
        await self._db.execute(
            "UPDATE apps SET old_key_hash = CASE WHEN $3 THEN key_hash ELSE NULL END, old_key_until = $4,"
            " key_hash = $1 WHERE id = $2",
            _hash_key(key),
            app_id,
            until is not None,
            until,
        )
        return key

    async def delete_app(self, app_id: str) -> bool:
        return await self._db.execute("DELETE FROM apps WHERE id = $1", app_id) > 0

    async def set_tool_arguments_public(self, app_id: str, public: bool) -> None:
        await self._db.execute("UPDATE apps SET tool_arguments_public = $1 WHERE id = $2", int(public), app_id)

    async def set_browser_publish(self, app_id: str, allowed: bool) -> None:
        await self._db.execute("UPDATE apps SET browser_publish = $1 WHERE id = $2", int(allowed), app_id)

    async def set_origins(self, app_id: str, origins: list[str] | None) -> None:
        """Origins as browsers send them (``scheme://host[:port]``, lower case); None allows any."""
        value = json.dumps(sorted({o.lower().rstrip("/") for o in origins})) if origins is not None else None
        await self._db.execute("UPDATE apps SET origins = $1 WHERE id = $2", value, app_id)

    async def set_webhook(self, app_id: str, url: str | None) -> str | None:
        """Point the app's webhook at ``url`` (None: none). Returns a new signing secret when the app
        had none (it is shown once), else None: changing the URL keeps the secret receivers check."""
        if url is None:
            await self._db.execute("UPDATE apps SET webhook_url = NULL, webhook_secret = NULL WHERE id = $1", app_id)
            return None
        secret = "whsec_" + secrets.token_urlsafe(32)
        await self._db.execute(
            "UPDATE apps SET webhook_url = $1, webhook_secret = COALESCE(webhook_secret, $2) WHERE id = $3",
            url, secret, app_id,
        )  # fmt: skip
        row = await self._db.fetchrow("SELECT webhook_secret FROM apps WHERE id = $1", app_id)
        return secret if row is not None and row[0] == secret else None

    async def rotate_webhook_secret(self, app_id: str) -> str:
        secret = "whsec_" + secrets.token_urlsafe(32)
        await self._db.execute("UPDATE apps SET webhook_secret = $1 WHERE id = $2", secret, app_id)
        return secret

    async def set_retain_text(self, app_id: str, retain: bool) -> None:
        await self._db.execute("UPDATE apps SET retain_text = $1 WHERE id = $2", int(retain), app_id)

    async def signing_key(self) -> bytes:
        """The secret that signs connection tokens, made on first use and kept with the apps, so
        every instance sharing the database signs alike."""
        await self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('token_key', $1) ON CONFLICT DO NOTHING", secrets.token_hex(32)
        )
        row = await self._db.fetchrow("SELECT value FROM meta WHERE key = 'token_key'")
        assert row is not None
        return bytes.fromhex(row[0])

    # Users in authenticated channels. A channel becomes authenticated when a first user is added.

    async def add_user_channels(self, app_id: str, user_id: str, channels: list[tuple[str, str]]) -> None:
        await self._db.executemany(
            "INSERT INTO authenticated_channels (app_id, channel) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(app_id, name) for name, _ in channels],
        )
        await self._db.executemany(
            "INSERT INTO user_channels (app_id, user_id, channel, mode) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (app_id, user_id, channel) DO UPDATE SET mode = excluded.mode",
            [(app_id, user_id, name, mode) for name, mode in channels],
        )

    async def remove_user_channels(self, app_id: str, user_id: str, channels: list[str]) -> None:
        await self._db.executemany(
            "DELETE FROM user_channels WHERE app_id = $1 AND user_id = $2 AND channel = $3",
            [(app_id, user_id, name) for name in channels],
        )

    async def user_channels(self, app_id: str, user_id: str) -> list[tuple[str, str]]:
        rows = await self._db.fetch(
            "SELECT channel, mode FROM user_channels WHERE app_id = $1 AND user_id = $2 ORDER BY channel",
            app_id, user_id,
        )  # fmt: skip
        return [(str(channel), str(mode)) for channel, mode in rows]

    async def user_channel_mode(self, app_id: str, user_id: str, channel: str) -> str | None:
        """``ignore``, ``listen`` or ``receive`` for a user added to ``channel``; None when not added."""
        row = await self._db.fetchrow(
            "SELECT mode FROM user_channels WHERE app_id = $1 AND user_id = $2 AND channel = $3",
            app_id, user_id, channel,
        )  # fmt: skip
        return str(row[0]) if row is not None else None

    async def channel_members(self, app_id: str, channel: str) -> set[str] | None:
        """The users of an authenticated ``channel``, or None when it is anonymous (nobody was ever added)."""
        rows = await self._db.fetch(
            "SELECT u.user_id FROM authenticated_channels a"
            " LEFT JOIN user_channels u ON u.app_id = a.app_id AND u.channel = a.channel"
            " WHERE a.app_id = $1 AND a.channel = $2",
            app_id, channel,
        )  # fmt: skip
        if not rows:
            return None
        return {str(user_id) for (user_id,) in rows if user_id is not None}

    async def authenticated_channels(self, app_id: str) -> set[str]:
        rows = await self._db.fetch("SELECT channel FROM authenticated_channels WHERE app_id = $1", app_id)
        return {str(channel) for (channel,) in rows}

    # Stream records: written when a stream starts and when it ends, and its text about once a second
    # while it runs; never per chunk.

    async def record_stream_start(self, record: StreamRecord) -> None:
        await self._db.execute(
            "INSERT INTO streams (id, app_id, service, model, channels, action_name, status, created_at, owner,"
            " metadata) VALUES ($1, $2, $3, $4, $5, $6, 'running', $7, $8, $9)",
            record.id, record.app_id, record.service, record.model, json.dumps(record.channels),
            record.action_name, record.created_at, record.owner, _json_or_null(record.metadata),
        )  # fmt: skip

    async def record_stream_end(self, record: StreamRecord) -> bool:
        """Only a running record ends: one that another instance already marked interrupted stays so
        (False then: that instance tells the app's webhook how it ended, not this one)."""
        changed = await self._db.execute(
            "UPDATE streams SET status = $1, ended_at = $2, finish_reason = $3, usage = $4, error = $5, text = $6,"
            " seq = $7, tools = $8, functions = $9, reasoning = $10, sources = $11"
            " WHERE id = $12 AND status = 'running'",
            record.status, record.ended_at, record.finish_reason, _json_or_null(record.usage),
            _json_or_null(record.error), record.text, record.seq, _json_or_null(record.tools or None),
            _json_or_null(record.functions or None), record.reasoning, _json_or_null(record.sources or None),
            record.id,
        )  # fmt: skip
        return changed > 0

    async def record_stream_text(self, stream_id: str, text: str | None, seq: int, status: str = "running") -> bool:
        """Save the text so far of a record in ``status``; False when it is in another (a running
        stream's owner learns this way that another instance ended the stream for it)."""
        return (
            await self._db.execute(
                "UPDATE streams SET text = $1, seq = $2 WHERE id = $3 AND status = $4", text, seq, stream_id, status
            )
            > 0
        )

    async def record_streams_text(self, saves: list[tuple[str, str | None, int]]) -> set[str]:
        """Save the text so far and next ``seq`` of many running streams at once (``(id, text, seq)``);
        the ids whose record is no longer running (another instance ended the stream meanwhile)."""
        counts = await self._db.execute_each(
            "UPDATE streams SET text = $2, seq = $3 WHERE id = $1 AND status = 'running'", saves
        )
        return {stream_id for (stream_id, _, _), changed in zip(saves, counts, strict=True) if not changed}

    async def stream_record(self, app_id: str, stream_id: str) -> StreamRecord | None:
        row = await self._db.fetchrow(
            f"SELECT {_STREAM_COLUMNS} FROM streams WHERE id = $1 AND app_id = $2", stream_id, app_id
        )
        return _stream(row) if row else None

    async def stream_by_id(self, stream_id: str) -> StreamRecord | None:
        row = await self._db.fetchrow(f"SELECT {_STREAM_COLUMNS} FROM streams WHERE id = $1", stream_id)
        return _stream(row) if row else None

    async def recent_streams(self, limit: int = 20, app_id: str | None = None) -> list[StreamRecord]:
        # $2 IS NULL: one query for both, the app filter applying only when an app is named.
        rows = await self._db.fetch(
            f"SELECT {_STREAM_COLUMNS} FROM streams WHERE (app_id = $2 OR $2 IS NULL)"
            " ORDER BY created_at DESC LIMIT $1",
            limit, app_id,
        )  # fmt: skip
        return [_stream(row) for row in rows]

    async def recent_failures(self, limit: int, app_id: str) -> list[StreamRecord]:
        """The app's last streams that ended in an error (``failed``, or ``interrupted`` with their
        instance), newest first: the dashboard lists them apart, as busy apps push them out of the
        recent streams fast."""
        rows = await self._db.fetch(
            f"SELECT {_STREAM_COLUMNS} FROM streams WHERE app_id = $2 AND status IN ('failed', 'interrupted')"
            " ORDER BY created_at DESC LIMIT $1",
            limit, app_id,
        )  # fmt: skip
        return [_stream(row) for row in rows]

    async def running_owners(self) -> set[str | None]:
        rows = await self._db.fetch("SELECT DISTINCT owner FROM streams WHERE status = 'running'")
        return {owner for (owner,) in rows}

    async def claim_orphans(self, owner: str | None, error: dict[str, Any]) -> list[StreamRecord]:
        """Mark the running streams of ``owner`` (an instance found dead) interrupted, and return them.
        One statement, so that when several instances notice at once each stream is claimed once."""
        rows = await self._db.fetch(
            "UPDATE streams SET status = 'interrupted', ended_at = $1, finish_reason = 'error', error = $2"
            f" WHERE status = 'running' AND owner IS NOT DISTINCT FROM $3 RETURNING {_STREAM_COLUMNS}",
            time.time(), json.dumps(error), owner,
        )  # fmt: skip
        return [_stream(row) for row in rows]

    async def set_webhook_events(self, app_id: str, events: list[str]) -> None:
        """The stream lifecycle events the app's webhook gets (empty: none)."""
        value = json.dumps(sorted(set(events))) if events else None
        await self._db.execute("UPDATE apps SET webhook_events = $1 WHERE id = $2", value, app_id)

    async def set_filemaker(self, app_id: str, target: FileMakerTarget | None, sealed_password: str | None) -> None:
        """Point the app's backend tools at a FileMaker Server, its account's password sealed by
        ``CredentialSealer`` for ``FILEMAKER_PASSWORD``; None removes the target and forgets the
        password. The password is written first and forgotten last, so no target is ever without one.
        An events script already set stays unless ``target`` names another."""
        if target is None:
            await self._db.execute(
                "UPDATE apps SET filemaker_host = NULL, filemaker_database = NULL, filemaker_layout = NULL,"
                " filemaker_account = NULL, filemaker_events_script = NULL WHERE id = $1",
                app_id,
            )
            await self.delete_credential(app_id, FILEMAKER_PASSWORD)
            return
        assert sealed_password is not None
        await self.set_credential(app_id, FILEMAKER_PASSWORD, sealed_password)
        await self._db.execute(
            "UPDATE apps SET filemaker_host = $1, filemaker_database = $2, filemaker_layout = $3,"
            " filemaker_account = $4, filemaker_events_script = COALESCE($5, filemaker_events_script) WHERE id = $6",
            target.host, target.database, target.layout, target.account, target.events_script, app_id,
        )  # fmt: skip

    async def set_filemaker_events_script(self, app_id: str, script: str | None) -> None:
        """The script the app's lifecycle events run on its FileMaker target (None: they go to the webhook)."""
        await self._db.execute("UPDATE apps SET filemaker_events_script = $1 WHERE id = $2", script, app_id)

    # Provider keys an app keeps on the server, as sealed by bfstream/credentials.py: the store
    # never sees one in clear.

    async def set_credential(self, app_id: str, service: str, sealed: str) -> None:
        await self._db.execute(
            "INSERT INTO app_credentials (app_id, service, sealed, created_at) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (app_id, service) DO UPDATE SET sealed = excluded.sealed, created_at = excluded.created_at",
            app_id, service, sealed, time.time(),
        )  # fmt: skip

    async def credential(self, app_id: str, service: str) -> str | None:
        """The sealed key of one service: one lookup by primary key."""
        row = await self._db.fetchrow(
            "SELECT sealed FROM app_credentials WHERE app_id = $1 AND service = $2", app_id, service
        )
        return str(row[0]) if row is not None else None

    async def credentials(self, app_id: str) -> list[tuple[str, str, float]]:
        """``(service, sealed, created_at)`` of each key the app keeps, by service name."""
        rows = await self._db.fetch(
            "SELECT service, sealed, created_at FROM app_credentials WHERE app_id = $1 ORDER BY service", app_id
        )
        return [(str(service), str(sealed), float(created)) for service, sealed, created in rows]

    async def delete_credential(self, app_id: str, service: str) -> bool:
        return (
            await self._db.execute("DELETE FROM app_credentials WHERE app_id = $1 AND service = $2", app_id, service)
            > 0
        )

    async def all_credentials(self) -> list[tuple[str, str, str]]:
        """``(app_id, service, sealed)`` of every kept key, for re-encrypting them under a new key."""
        rows = await self._db.fetch("SELECT app_id, service, sealed FROM app_credentials ORDER BY app_id, service")
        return [(str(app_id), str(service), str(sealed)) for app_id, service, sealed in rows]

    async def reseal_credentials(self, rows: list[tuple[str, str, str]]) -> None:
        """Replace the sealed values of ``(app_id, service, sealed)`` rows, all in one transaction."""
        await self._db.execute_each("UPDATE app_credentials SET sealed = $3 WHERE app_id = $1 AND service = $2", rows)

    # Idempotency keys (api/idempotency.py): each statement stands alone, so that two instances
    # claiming one key at once meet at the primary key, and only one of them inserts.

    async def claim_idempotency(
        self, app_id: str, key: str, fingerprint: str, owner: str, expired_before: float
    ) -> IdempotentRequest | None:
        """None when ``owner`` now holds the key (no request used it since ``expired_before``);
        else the request that holds it."""
        await self._db.execute(
            "DELETE FROM idempotency_keys WHERE app_id = $1 AND key = $2 AND created_at < $3",
            app_id, key, expired_before,
        )  # fmt: skip
        claimed = await self._db.execute(
            "INSERT INTO idempotency_keys (app_id, key, fingerprint, created_at, owner) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (app_id, key) DO NOTHING",
            app_id, key, fingerprint, time.time(), owner,
        )  # fmt: skip
        if claimed:
            return None
        row = await self._db.fetchrow(
            "SELECT fingerprint, owner, answer FROM idempotency_keys WHERE app_id = $1 AND key = $2", app_id, key
        )
        if row is None:  # released between the two statements: try again
            return await self.claim_idempotency(app_id, key, fingerprint, owner, expired_before)
        fingerprint_held, holder, answer = row
        return IdempotentRequest(str(fingerprint_held), holder, json.loads(answer) if answer is not None else None)

    async def take_over_idempotency(self, app_id: str, key: str, dead: str | None, owner: str) -> bool:
        """Hold a key whose holder ``dead`` died before answering; False when another instance took it first."""
        changed = await self._db.execute(
            "UPDATE idempotency_keys SET owner = $4 WHERE app_id = $1 AND key = $2 AND answer IS NULL"
            " AND owner IS NOT DISTINCT FROM $3",
            app_id, key, dead, owner,
        )  # fmt: skip
        return changed > 0

    async def answer_idempotency(self, app_id: str, key: str, owner: str, answer: Any) -> None:
        await self._db.execute(
            "UPDATE idempotency_keys SET answer = $4, owner = NULL WHERE app_id = $1 AND key = $2 AND owner = $3",
            app_id, key, owner, json.dumps(answer, separators=(",", ":")),  # ASCII: any database takes it
        )  # fmt: skip

    async def release_idempotency(self, app_id: str, key: str, owner: str) -> None:
        """The request failed: the key is free for a retry to run it again."""
        await self._db.execute(
            "DELETE FROM idempotency_keys WHERE app_id = $1 AND key = $2 AND owner = $3 AND answer IS NULL",
            app_id, key, owner,
        )  # fmt: skip

    async def forget_idempotency(self, expired_before: float) -> int:
        return await self._db.execute("DELETE FROM idempotency_keys WHERE created_at < $1", expired_before)

    # Lifecycle events on their way (streams/lifecycle.py), so that one outlives its sender.

    async def add_delivery(self, delivery: str, app_id: str, event: str, body: Any, owner: str) -> None:
        await self._db.execute(
            "INSERT INTO lifecycle_deliveries (id, app_id, event, body, owner, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
            delivery, app_id, event, json.dumps(body, separators=(",", ":")), owner, time.time(),
        )  # fmt: skip

    async def settle_delivery(self, delivery: str) -> None:
        await self._db.execute("DELETE FROM lifecycle_deliveries WHERE id = $1", delivery)

    async def delivery_owners(self) -> set[str]:
        return {str(owner) for (owner,) in await self._db.fetch("SELECT DISTINCT owner FROM lifecycle_deliveries")}

    async def claim_deliveries(self, dead: str, owner: str) -> list[tuple[str, str, str, Any]]:
        """Take the deliveries of ``dead`` (an instance found dead): ``(id, app_id, event, body)``.
        One statement, so when several instances notice at once each delivery is taken once."""
        rows = await self._db.fetch(
            "UPDATE lifecycle_deliveries SET owner = $2 WHERE owner = $1 RETURNING id, app_id, event, body",
            dead, owner,
        )  # fmt: skip
        return [(str(delivery), str(app_id), str(event), json.loads(body)) for delivery, app_id, event, body in rows]
