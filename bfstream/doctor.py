"""``bfstream doctor``: what the settings name, checked before a server is started on them.

A server that cannot start says why in one line, but only the first thing wrong, and only once it
is started. The doctor looks at everything at once, the way an operator walks through a new
install: the settings themselves, the database (reachable, and migrated as far as this version
needs), the broker, the providers' hosts, the TLS files. Each finding is one line: ``ok`` lines
say what was found, ``fix`` lines what to change. Any ``fix`` line makes the exit status 2, the
one every other command uses for "cannot be done as configured", so a deployment script can stop
on it. Nothing is changed: no database made, no migration run, nothing written to Redis.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import ValidationError

from bfstream.cli import _without_password as without_password  # the URL as start-up prints it
from bfstream.config import Settings
from bfstream.errors import BrokerError
from bfstream.store.store import is_postgres, migrations, sqlite_path

TIMEOUT = 5.0  # seconds for each network check: a service that takes longer is as good as down here


@dataclass(frozen=True)
class Finding:
    ok: bool
    line: str


def examine(load: Callable[[], Settings]) -> int:
    """Load the settings with ``load``, check them, print one line a finding; 2 if any needs fixing."""
    try:
        settings = load()
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(map(str, error["loc"])) or "settings"
            variable = "BFSTREAM_" + "__".join(map(str, error["loc"])).upper()
            print(f"fix  {where}: {error['msg']} (the config file's {where}, or {variable})")
        return 2
    findings = asyncio.run(_everything(settings))
    for finding in findings:
        print(("ok   " if finding.ok else "fix  ") + finding.line)
    return 0 if all(f.ok for f in findings) else 2


async def _everything(settings: Settings) -> list[Finding]:
    checks = [_database(settings), _broker(settings), *_providers(settings), *_tls(settings)]
    return list(await asyncio.gather(*checks))


def _known_versions() -> set[int]:
    return {version for version, _ in migrations()}


def _migrated(applied: set[int], where: str) -> Finding:
    missing = sorted(_known_versions() - applied)
    unknown = sorted(applied - _known_versions())
    if unknown:
        return Finding(
            False,
            f"database {where}: it has migrations this version does not know ({unknown[0]}...): a newer bfstream "
            "ran on it; upgrade this one",
        )
    if missing:
        return Finding(
            True,
            f"database {where}: reachable; {len(missing)} migrations to apply, which the next bfstream serve does "
            "as it starts",
        )
    return Finding(True, f"database {where}: reachable and migrated")


async def _database(settings: Settings) -> Finding:
    if is_postgres(settings.database_url):
        return await _postgres(settings.database_url or "")
    return await asyncio.to_thread(_sqlite, settings)


async def _postgres(url: str) -> Finding:
    shown = without_password(url)
    try:
        import asyncpg
    except ImportError:
        return Finding(False, f"database {shown}: PostgreSQL needs its driver: pip install 'bfstream[postgres]'")
    try:
        connection = await asyncpg.connect(url, timeout=TIMEOUT)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return Finding(
            False,
            f"database {shown}: cannot connect ({reason}): check database_url (BFSTREAM_DATABASE_URL), that "
            "PostgreSQL runs there, and that the database and role exist (docs/deployment.md)",
        )
    try:
        exists = await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        rows = await connection.fetch("SELECT version FROM schema_migrations") if exists else []
    finally:
        await connection.close()
    return _migrated({row[0] for row in rows}, shown)


def _sqlite(settings: Settings) -> Finding:
    path = sqlite_path(settings.database_url, settings.data_dir).absolute()
    folder = path.parent
    if not path.is_file():
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is None or not os.access(existing, os.W_OK):
            return Finding(
                False,
                f"database {path}: there is none, and {existing} is not writable: give this user the data "
                "directory, or name another with --data-dir (BFSTREAM_DATA_DIR)",
            )
        return Finding(True, f"database {path}: none yet; bfstream serve makes it")
    if not os.access(folder, os.W_OK):
        return Finding(False, f"database {path}: the data directory {folder} is not writable by this user")
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=TIMEOUT)
        try:
            rows = connection.execute("SELECT version FROM schema_migrations").fetchall()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        return Finding(False, f"database {path}: cannot be read ({exc}): is it a bfstream database?")
    return _migrated({row[0] for row in rows}, str(path))


async def _broker(settings: Settings) -> Finding:
    url = settings.broker_url
    if url.startswith("memory://"):
        return Finding(True, "broker memory://: this process alone (a fleet needs Redis: docs/deployment.md)")
    shown = without_password(url)
    try:
        from bfstream.fleet.redis import redis_client, translated
    except ImportError:
        return Finding(False, f"broker {shown}: Redis needs its client: pip install 'bfstream[redis]'")
    client = redis_client(url, retries=0)
    try:
        async with asyncio.timeout(TIMEOUT):
            with translated():
                await client.ping()
    except (BrokerError, TimeoutError) as exc:
        reason = exc.message if isinstance(exc, BrokerError) else f"no answer within {TIMEOUT:g} s"
        return Finding(
            False, f"broker {shown}: {reason}: check broker_url (BFSTREAM_BROKER_URL) and that Redis runs there"
        )
    finally:
        await client.aclose()
    return Finding(True, f"broker {shown}: reachable, key prefix {settings.broker_prefix}")


def _providers(settings: Settings) -> list[asyncio.Future[Finding] | asyncio.Task[Finding]]:
    """One check per provider host the enabled services name: resolvable from here, or every
    stream sent to that service fails. Resolving is enough: a connection would need a key."""
    by_host: dict[str, list[str]] = {}
    for name, service in settings.enabled_services().items():
        if service.base_url:
            host = urlsplit(service.base_url).hostname or service.base_url
            by_host.setdefault(host, []).append(name)
    return [asyncio.ensure_future(_resolve(host, names)) for host, names in sorted(by_host.items())]


async def _resolve(host: str, names: list[str]) -> Finding:
    services = ", ".join(names)
    try:
        async with asyncio.timeout(TIMEOUT):
            await asyncio.get_running_loop().getaddrinfo(host, None)
    except (OSError, TimeoutError):
        return Finding(
            False,
            f"services {services}: cannot resolve {host}: set their base_url (a reachable server or proxy), "
            "or enabled = false for those not used",
        )
    return Finding(True, f"services {services}: {host} resolves")


def _tls(settings: Settings) -> list[asyncio.Task[Finding]]:
    if settings.tls_certfile is None or settings.tls_keyfile is None:
        return []
    return [asyncio.ensure_future(asyncio.to_thread(_tls_files, settings.tls_certfile, settings.tls_keyfile))]


def _tls_files(certfile: Path, keyfile: Path) -> Finding:
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        return Finding(
            False,
            f"tls: {certfile} with {keyfile}: {exc.strerror or exc}: both must be readable PEM files that match",
        )
    return Finding(True, f"tls: {certfile} and {keyfile} load")
