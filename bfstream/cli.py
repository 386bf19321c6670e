"""``bfstream serve`` and ``bfstream apps ...``."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import re
import signal
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import ValidationError

from bfstream import __version__
from bfstream.config import Settings, load_settings
from bfstream.credentials import CredentialSealer, masked, sealer
from bfstream.errors import BfstreamError, BrokerError, CredentialUnavailable, StoreError
from bfstream.filemaker.target import check_host, check_name, check_password
from bfstream.store.records import App, FileMakerTarget
from bfstream.store.store import FILEMAKER_PASSWORD, Store, is_postgres, open_store, sqlite_path
from bfstream.streams.lifecycle import parse_events
from bfstream.webhooks import check_url


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(args.config, data_dir=args.data_dir, database_url=args.database_url, **overrides)


def _without_password(url: str) -> str:
    """A URL as start-up may print it: the user and host stay, a password (in the authority or the
    query string) goes, since that output ends up in logs. The authority runs to the last ``@``, so
    a password whose ``/`` was not percent-encoded (which ends a URL's authority early) goes too."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        userinfo, _, after = rest.rpartition("@")
        user = userinfo.partition(":")[0]
        url = f"{scheme}://{user}@{after}" if user else f"{scheme}://{after}"
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if "pass" not in k.lower()]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _database(settings: Settings) -> str:
    """The database as a person would look for it: the SQLite file's absolute path, or the URL."""
    if is_postgres(settings.database_url):
        return _without_password(settings.database_url or "")
    return str(sqlite_path(settings.database_url, settings.data_dir).absolute())


def _where(settings: Settings) -> str:
    """The one line every command that opens the database prints, so a wrong directory is seen at once."""
    if settings.database_url:
        return f"bfstream: database {_database(settings)}"
    return f"bfstream: data directory {settings.data_dir.absolute()}"


def _note_old_default(settings: Settings) -> None:
    """The default data directory used to be ``.bfstream`` under the current directory; a
    database left there is no longer found, and a fresh one elsewhere must not go unexplained."""
    old = Path(".bfstream") / "bfstream.sqlite3"
    if "data_dir" in settings.model_fields_set or settings.database_url or not old.is_file():
        return
    if old.absolute() != sqlite_path(None, settings.data_dir).absolute():
        print(
            f"bfstream: note: {old.absolute()} is not used any more (the default data directory is now "
            f"{settings.data_dir.absolute()}); pass --data-dir {old.parent.absolute()} to keep using it",
            file=sys.stderr,
        )


async def _open(settings: Settings, create: bool) -> Store:
    """``open_store``, its failures as one line: a missing SQLite file is not created unless ``create``."""
    _note_old_default(settings)
    try:
        store = await open_store(settings.database_url, settings.data_dir, create=create)
    except StoreError as exc:
        if exc.code == "no_database":
            raise SystemExit(
                f"bfstream: no database at {_database(settings)}, and this command makes none: "
                "bfstream serve or bfstream apps create makes it, or --data-dir names another directory"
            ) from None
        raise SystemExit(f"bfstream: cannot open the database {_database(settings)}: {exc.message}") from None
    print(_where(settings), file=sys.stderr)
    return store


def _app_json(app: App, api_key: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"appId": app.id, "name": app.name}
    if api_key is not None:
        out["apiKey"] = api_key
    return out


def _print_new_key(app: App, key: str, as_json: bool, verb: str) -> None:
    if as_json:
        print(json.dumps(_app_json(app, key)))
    else:
        print(f"{verb} app {app.name!r}\n  appId:  {app.id}\n  apiKey: {key}\nKeep the apiKey: it is shown only once.")


def _alone(settings: Settings) -> IO[str] | None:
    """A server on the memory broker takes itself for the only one on its database: at start-up,
    and whenever no other instance's lease is to be seen, it ends the streams still running there as
    orphans. A second such server on the same SQLite database would end the first one's live answers,
    so it is refused: the first holds a lock next to the database for as long as it runs. (A fleet
    shares its leases through Redis, and a database through PostgreSQL: docs/deployment.md.)"""
    if not settings.broker_url.startswith("memory://") or is_postgres(settings.database_url):
        return None
    database = sqlite_path(settings.database_url, settings.data_dir)
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        lock = open(f"{database}.lock", "a+")  # held open, and locked, until the process exits
    except OSError as exc:  # a volume owned by another user, say: the container runs as uid 10001
        raise SystemExit(
            f"bfstream: cannot write in the data directory {database.parent.absolute()} ({exc.strerror}); "
            "give this user the directory, or name another with --data-dir"
        ) from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise SystemExit(
            f"bfstream: another bfstream serve ({holder}) is running on the database {database.absolute()}; "
            "give this one its own --data-dir, or run a fleet on Redis and PostgreSQL (docs/deployment.md)"
        ) from None
    lock.truncate(0)
    lock.write(f"pid {os.getpid()}")
    lock.flush()
    return lock


def _serve(args: argparse.Namespace) -> int:
    from bfstream.api.app import DrainingServer, server_config

    settings = _settings(args, host=args.host, port=args.port, log_level=args.log_level, admin_token=args.admin_token)
    if args.demo:
        settings.demo.enabled = True
    _check_broker(settings)
    held = _alone(settings)  # noqa: F841  (the lock lasts while this frame does: the server's whole run)

    async def first_app() -> None:
        store = await _open(settings, create=True)
        try:
            if settings.create_first_app and not await store.list_apps():
                app, key = await store.create_app("default")
                if sys.stdout.isatty():
                    _print_new_key(app, key, False, "Created your first")
                else:  # a supervisor's log, a file, a pipe: somewhere that keeps it, so not the key
                    print(
                        f"Created your first app 'default'\n  appId:  {app.id}\n"
                        "  apiKey: not shown, as this output is not a terminal and may be kept in a log;\n"
                        "          make one with: bfstream apps rotate-key default"
                    )
                origin = f"{'wss' if settings.tls_certfile else 'ws'}://{settings.host}:{settings.port}"
                print(f"Browsers connect to {origin}/message/ws?app={app.id}", flush=True)
        finally:
            await store.close()

    asyncio.run(first_app())
    alone = settings.broker_url.startswith("memory://")
    broker = "memory:// (this process alone)" if alone else _without_password(settings.broker_url)
    print(
        f"bfstream: broker {broker}, key prefix {settings.broker_prefix}, database {_database(settings)}",
        file=sys.stderr,
        flush=True,
    )
    if settings.demo.enabled:
        scheme = "https" if settings.tls_certfile else "http"
        print(f"The demo is at {scheme}://{settings.host}:{settings.port}/demo", flush=True)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the previous handler;
    # make that handler a clean exit, since SIGTERM is how supervisors ask a service to stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    DrainingServer(server_config(settings)).run()
    return 0


def _check_broker(settings: Settings) -> None:
    """The server imports the Redis client while it starts (``open_fleet``), where a missing package
    is a traceback; importing it here first makes that one line. Building the fleet here instead is
    no check: its Redis parts start talking to Redis as soon as they are made. And a Redis that does
    not answer is said before anything is made (the database, the first app), not after; the server
    checks again as it starts, for a Redis gone meanwhile (``api/app.py``)."""
    if settings.broker_url.startswith("memory://"):
        return
    try:
        import redis  # noqa: F401
    except ImportError:
        raise SystemExit("bfstream: broker_url names Redis: install bfstream[redis]") from None
    from bfstream.fleet.redis import redis_client, translated

    async def ping() -> None:
        client = redis_client(settings.broker_url, retries=0)
        try:
            with translated():
                await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except BrokerError as exc:
        where = _without_password(settings.broker_url)
        raise SystemExit(f"bfstream: cannot start: {exc.message}; is Redis running at {where}?") from None


Command = Callable[[argparse.Namespace, Store], Awaitable[int]]


def _with_store(*, create: bool = False) -> Callable[[Command], Callable[[argparse.Namespace], int]]:
    """Run a store command on the database the settings name, the one every instance uses. Only a
    command that makes something ``create``s a database: any other, pointed at a directory with
    none, says so instead of leaving an empty one there."""

    def wrap(command: Command) -> Callable[[argparse.Namespace], int]:
        def run(args: argparse.Namespace) -> int:
            async def with_store() -> int:
                store = await _open(_settings(args), create)
                try:
                    return await command(args, store)
                finally:
                    await store.close()

            return asyncio.run(with_store())

        return run

    return wrap


@_with_store(create=True)
async def _apps_create(args: argparse.Namespace, store: Store) -> int:
    name = args.name.strip()
    if not name:
        raise SystemExit("bfstream: an app needs a name")
    if await store.find_app(name) is not None:
        raise SystemExit(f"bfstream: an app named {name!r} exists already; names pick apps in these commands")
    app, key = await store.create_app(name, browser_publish=args.browser_publish == "on")
    _print_new_key(app, key, args.json, "Created")
    return 0


@_with_store()
async def _apps_list(args: argparse.Namespace, store: Store) -> int:
    apps = await store.list_apps()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        **_app_json(a),
                        "createdAt": a.created_at,
                        "browserPublish": a.browser_publish,
                        "webhookEvents": list(a.webhook_events),
                    }
                    for a in apps
                ]
            )
        )
    else:
        for a in apps:
            print(f"{a.id}  {a.name}  created {time.strftime('%Y-%m-%d %H:%M', time.localtime(a.created_at))}")
    return 0


async def _find(store: Store, ref: str) -> App:
    app = await store.find_app(ref)
    if app is None:
        raise SystemExit(f"bfstream: no app with id or name {ref!r}")
    return app


@_with_store()
async def _apps_rotate(args: argparse.Namespace, store: Store) -> int:
    app = await _find(store, args.app)
    _print_new_key(app, await store.rotate_key(app.id, args.grace), args.json, "New key for")
    if args.grace > 0 and not args.json:
        until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + args.grace))
        print(f"The old key keeps working until {until} ({args.grace:g} s).")
    return 0


_ORIGIN = re.compile(r"https?://[^/\s?#]+")


def _origins(value: str) -> list[str] | None:
    """``any``, or origins separated by commas, as a browser sends them: scheme://host[:port]."""
    if value.strip().lower() == "any":
        return None
    origins = [o.strip() for o in value.split(",") if o.strip()]
    wrong = [o for o in origins if not _ORIGIN.fullmatch(o.rstrip("/"))]
    if wrong or not origins:
        raise SystemExit(f"bfstream: origins look like https://shop.example or http://localhost:3000, not {wrong}")
    return origins


@_with_store()
async def _apps_update(args: argparse.Namespace, store: Store) -> int:
    app = await _find(store, args.app)
    if args.browser_publish is not None:
        await store.set_browser_publish(app.id, args.browser_publish == "on")
    if args.retain_text is not None:
        await store.set_retain_text(app.id, args.retain_text == "on")
    if args.tool_arguments is not None:
        await store.set_tool_arguments_public(app.id, args.tool_arguments == "public")
    if args.origins is not None:
        await store.set_origins(app.id, _origins(args.origins))
    secret = None
    if args.webhook is not None:
        off = args.webhook.strip().lower() in ("off", "none", "")
        allow_private = _settings(args).tools.allow_private_webhooks
        try:
            url = None if off else await check_url(args.webhook, allow_private)
        except BfstreamError as exc:
            raise SystemExit(f"bfstream: {exc.message}") from None
        secret = await store.set_webhook(app.id, url)
    if args.rotate_webhook_secret:
        if (await _find(store, app.id)).webhook_url is None:
            raise SystemExit("bfstream: the app has no webhook; set one with --webhook URL")
        secret = await store.rotate_webhook_secret(app.id)
    await _update_filemaker(args, store, app)
    if args.webhook_events is not None:
        await _set_webhook_events(store, app.id, args.webhook_events)
    app = await _find(store, app.id)
    shown = {
        **_app_json(app),
        "browserPublish": app.browser_publish,
        "retainText": app.retain_text,
        "toolArguments": "public" if app.tool_arguments_public else "private",
        "origins": list(app.origins) if app.origins is not None else None,
        "webhook": app.webhook_url,
        "webhookEvents": list(app.webhook_events),
        "filemaker": app.filemaker.to_json() if app.filemaker is not None else None,  # never its password
    }
    if secret is not None:
        shown["webhookSecret"] = secret  # shown this once; receivers check signatures with it
    print(json.dumps(shown))
    if secret is not None and sys.stderr.isatty():
        print(
            "Keep the webhookSecret: it is shown only once (rotate it with --rotate-webhook-secret).", file=sys.stderr
        )
    return 0


async def _set_webhook_events(store: Store, app_id: str, value: str) -> None:
    try:
        events = parse_events(value)
    except ValueError as exc:
        raise SystemExit(f"bfstream: {exc}") from None
    app = await _find(store, app_id)
    to_filemaker = app.filemaker is not None and app.filemaker.events_script is not None
    if events and app.webhook_url is None and not to_filemaker:
        raise SystemExit(
            "bfstream: the app has no webhook; set one with --webhook URL, or a FileMaker events script with "
            "--filemaker-events-script NAME"
        )
    await store.set_webhook_events(app_id, events)


def _off(value: str) -> bool:
    return value.strip().lower() in ("none", "off", "")


async def _update_filemaker(args: argparse.Namespace, store: Store, app: App) -> None:
    """``--filemaker URL --database DB --layout L --account A`` (the password from standard input),
    ``--filemaker none``, ``--filemaker-events-script NAME|none``. Everything is checked before
    anything is stored, so a refused option changes nothing."""
    named = {"database": args.database, "layout": args.layout, "account": args.account}
    given = args.filemaker is not None and not _off(args.filemaker)
    if not given and any(value is not None for value in named.values()):
        raise SystemExit("bfstream: --database, --layout and --account go with --filemaker https://HOST")
    if given and (missing := [f"--{name}" for name, value in named.items() if value is None]):
        raise SystemExit(f"bfstream: --filemaker needs --database, --layout and --account too ({', '.join(missing)})")
    script = args.filemaker_events_script
    removed = args.filemaker is not None and not given
    if script is not None and not _off(script) and (removed or (app.filemaker is None and not given)):
        raise SystemExit("bfstream: the app has no FileMaker Server; set one with --filemaker https://HOST")
    try:
        if script is not None and not _off(script):
            script = check_name("events script", script)
        if given:
            settings = _settings(args)
            host = await check_host(args.filemaker, settings.tools.allow_private_webhooks)
            names = {field: check_name(field, value) for field, value in named.items()}
            box = _credential_sealer(settings, create=True)
            password = check_password(_read_secret("FileMaker password: "))
    except BfstreamError as exc:
        raise SystemExit(f"bfstream: {exc.message}") from None
    if removed:
        await store.set_filemaker(app.id, None, None)
    elif given:
        target = FileMakerTarget(host, names["database"], names["layout"], names["account"])
        await store.set_filemaker(app.id, target, box.seal(app.id, FILEMAKER_PASSWORD, password))
    if script is not None and (await _find(store, app.id)).filemaker is not None:
        await store.set_filemaker_events_script(app.id, None if _off(script) else script)


def _read_secret(prompt: str) -> str:
    """A secret from standard input, never from an argument (arguments show in ``ps`` and shell
    history); on a terminal it is asked for without echo."""
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(prompt)
    return sys.stdin.read()


@_with_store()
async def _apps_delete(args: argparse.Namespace, store: Store) -> int:
    app = await _find(store, args.app)
    await store.delete_app(app.id)
    print(f"Deleted app {app.name!r} ({app.id})")
    return 0


@_with_store()
async def _streams_list(args: argparse.Namespace, store: Store) -> int:
    app_id = (await _find(store, args.app)).id if args.app else None
    records = await store.recent_streams(args.limit, app_id)
    if args.json:
        print(json.dumps([{**r.to_json(), "appId": r.app_id} for r in records]))
        return 0
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at))
        took = f"{r.ended_at - r.created_at:6.1f}s" if r.ended_at else "      -"
        print(f"{when}  {r.id}  {r.status:<11} {took}  {r.service}/{r.model}  {r.finish_reason or '-'}")
    return 0


def _read_provider_key() -> str:
    """The key from standard input, never from an argument (arguments show in ``ps`` and shell
    history); on a terminal it is asked for without echo."""
    key = _read_secret("Provider key: ").strip()
    if not key:
        raise SystemExit(
            "bfstream: no key on standard input: pipe it in, e.g. bfstream apps credentials set APP openai < key.txt"
        )
    from bfstream.api.openapi import PROVIDER_KEY_MAX, PROVIDER_KEY_PATTERN

    if len(key) > PROVIDER_KEY_MAX or not re.fullmatch(PROVIDER_KEY_PATTERN, key):
        raise SystemExit(
            f"bfstream: a key is one line of up to {PROVIDER_KEY_MAX} characters of printable ASCII, without spaces"
        )
    return key


def _credential_service(settings: Settings, service: str) -> str:
    name = service.strip().lower()
    if name not in settings.services:
        raise SystemExit(
            f"bfstream: unknown service {service!r}; the settings name {', '.join(sorted(settings.services))}"
        )
    return name


def _credential_sealer(settings: Settings, *, create: bool) -> CredentialSealer:
    box = sealer(settings, create=create)
    if box is None:
        if is_postgres(settings.database_url):
            raise SystemExit(
                "bfstream: credentials_key is not set (BFSTREAM_CREDENTIALS_KEY): on PostgreSQL every instance "
                "needs the same one, 32 characters or more (docs/security.md)"
            )
        raise SystemExit(f"bfstream: no credentials key in {settings.data_dir.absolute()} nor credentials_key set")
    return box


@_with_store()
async def _credentials_set(args: argparse.Namespace, store: Store) -> int:
    settings = _settings(args)
    service = _credential_service(settings, args.service)
    box = _credential_sealer(settings, create=True)
    app = await _find(store, args.app)
    key = _read_provider_key()
    await store.set_credential(app.id, service, box.seal(app.id, service, key))
    print(f"Stored the {service} key of app {app.name!r} ({masked(key)}); requests without payload.apiKey use it")
    return 0


@_with_store()
async def _credentials_list(args: argparse.Namespace, store: Store) -> int:
    app = await _find(store, args.app)
    stored = await store.credentials(app.id)
    box = sealer(_settings(args), create=False) if stored else None
    listing = []
    for service, sealed, created in stored:
        if service == FILEMAKER_PASSWORD:  # not a provider key: apps update shows its FileMaker target
            continue
        try:
            shown = masked(box.open(app.id, service, sealed)) if box else "(no credentials key to read it)"
        except CredentialUnavailable:
            shown = "(unreadable with this credentials_key)"
        listing.append({"service": service, "key": shown, "createdAt": created})
    if args.json:
        print(json.dumps(listing))
    else:
        for item in listing:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(item["createdAt"]))
            print(f"{item['service']}  {item['key']}  stored {when}")
    return 0


@_with_store()
async def _credentials_delete(args: argparse.Namespace, store: Store) -> int:
    app = await _find(store, args.app)
    service = args.service.strip().lower()
    if not await store.delete_credential(app.id, service):
        raise SystemExit(f"bfstream: app {app.name!r} keeps no key for {service!r}")
    print(f"Deleted the {service} key of app {app.name!r}")
    return 0


@_with_store()
async def _credentials_reseal(args: argparse.Namespace, store: Store) -> int:
    """Every kept key decrypted (with ``credentials_key`` or a previous key) and encrypted again with
    ``credentials_key``, in one transaction: all of them, or none when one cannot be decrypted."""
    box = _credential_sealer(_settings(args), create=False)
    resealed, unreadable = [], []
    for app_id, service, sealed in await store.all_credentials():
        try:
            resealed.append((app_id, service, box.seal(app_id, service, box.open(app_id, service, sealed))))
        except CredentialUnavailable:
            unreadable.append(f"{app_id}/{service}")
    if unreadable:
        raise SystemExit(
            f"bfstream: nothing changed: {len(unreadable)} kept keys cannot be decrypted with credentials_key or"
            f" credentials_previous_keys ({', '.join(unreadable[:5])}{', ...' if len(unreadable) > 5 else ''})"
        )
    await store.reseal_credentials(resealed)
    print(f"Encrypted {len(resealed)} kept keys again with the current credentials_key")
    return 0


def _add_credentials_commands(apps: Any, common: argparse.ArgumentParser) -> None:
    credentials = apps.add_parser(
        "credentials", help="provider keys kept on the server, used by requests that bring none"
    ).add_subparsers(dest="credentials_command", required=True)
    put = credentials.add_parser(
        "set", parents=[common], help="store the service's key for the app, read from standard input"
    )
    put.add_argument("app", help="app id or name")
    put.add_argument("service", help="a service of the settings: openai, anthropic, gemini, ...")
    put.set_defaults(run=_credentials_set)
    shown = credentials.add_parser("list", parents=[common], help="the services the app keeps a key for, masked")
    shown.add_argument("app", help="app id or name")
    shown.add_argument("--json", action="store_true")
    shown.set_defaults(run=_credentials_list)
    gone = credentials.add_parser("delete", parents=[common], help="forget the app's key for a service")
    gone.add_argument("app", help="app id or name")
    gone.add_argument("service")
    gone.set_defaults(run=_credentials_delete)
    reseal = credentials.add_parser(
        "reseal", parents=[common], help="encrypt every app's kept keys again with the current credentials_key"
    )
    reseal.set_defaults(run=_credentials_reseal)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        help="where the SQLite file lives (default: $XDG_DATA_HOME/bfstream, or ~/.local/share/bfstream)",
    )
    common.add_argument("--config", type=Path, help="a TOML settings file")
    common.add_argument("--database-url", help="postgresql://... to share one database across instances")

    parser = argparse.ArgumentParser(prog="bfstream", description="Stream LLM output into live web pages.")
    parser.add_argument("--version", action="version", version=f"bfstream {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", parents=[common], help="run the service")
    serve.add_argument("--host", help="default 127.0.0.1")
    serve.add_argument("--port", type=int, help="default 8000")
    serve.add_argument("--demo", action="store_true", help="serve the demo chat page at /demo")
    serve.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"], help="default info")
    serve.add_argument(
        "--admin-token",
        help="turns on /admin for those who bring it, 16 characters or more (BFSTREAM_ADMIN_TOKEN keeps it out of ps)",
    )
    serve.set_defaults(run=_serve)

    doctor = commands.add_parser(
        "doctor", parents=[common], help="check what the settings name, and say what to fix, one line each"
    )
    doctor.set_defaults(run=_doctor)

    apps = commands.add_parser("apps", help="manage apps and their API keys").add_subparsers(
        dest="apps_command", required=True
    )
    create = apps.add_parser("create", parents=[common], help="create an app and print its key once")
    create.add_argument("name")
    create.add_argument("--json", action="store_true", help="print one JSON object")
    create.add_argument(
        "--browser-publish", choices=["on", "off"], default="off", help="may browsers publish to their channels (off)"
    )
    create.set_defaults(run=_apps_create)
    listing = apps.add_parser("list", parents=[common], help="list apps")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_apps_list)
    rotate = apps.add_parser("rotate-key", parents=[common], help="replace an app's key")
    rotate.add_argument("app", help="app id or name")
    rotate.add_argument(
        "--grace",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep the old key working this long, while back ends switch (default 0: it stops at once)",
    )
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(run=_apps_rotate)
    update = apps.add_parser("update", parents=[common], help="change an app's settings")
    update.add_argument("app", help="app id or name")
    update.add_argument(
        "--browser-publish", choices=["on", "off"], help="may browsers publish to the channels they are in"
    )
    update.add_argument("--retain-text", choices=["on", "off"], help="keep each answer's text in stream records")
    update.add_argument(
        "--tool-arguments",
        choices=["private", "public"],
        help="do backend tools' arguments go to the channels in function_call events (default private: "
        "only id, name and userMessage; ui_* tools' always do)",
    )
    update.add_argument(
        "--origins",
        metavar="ORIGINS",
        help="page origins allowed to connect and stop streams from a browser, comma-separated "
        "(https://shop.example,http://localhost:3000), or 'any' (the default)",
    )
    update.add_argument(
        "--webhook",
        metavar="URL",
        help="where backend tool calls and listen/receive publishes are POSTed, signed; 'off' removes it. "
        "A first URL prints the signing secret once",
    )
    update.add_argument(
        "--rotate-webhook-secret", action="store_true", help="replace the webhook's signing secret and print it once"
    )
    update.add_argument(
        "--webhook-events",
        metavar="EVENTS",
        help="stream lifecycle events POSTed to the webhook: 'all', 'none', or some of stream.completed,"
        " stream.failed, stream.stopped, stream.interrupted, comma-separated",
    )
    filemaker = update.add_argument_group(
        "FileMaker Server", "backend tools run as scripts named after the tool, via the Data API (docs/filemaker.md)"
    )
    filemaker.add_argument(
        "--filemaker",
        metavar="URL",
        help="https://HOST of the FileMaker Server backend tools run on instead of the webhook, with --database,"
        " --layout and --account; the account's password is read from standard input. 'none' removes it",
    )
    filemaker.add_argument("--database", help="the hosted database (file) the scripts are in")
    filemaker.add_argument("--layout", help="the layout the scripts run in the context of")
    filemaker.add_argument("--account", help="the account to log in with (fmrest extended privilege)")
    filemaker.add_argument(
        "--filemaker-events-script",
        metavar="NAME",
        help="the script the lifecycle events of --webhook-events run, instead of a POST to the webhook; 'none'"
        " sends them to the webhook again",
    )
    update.set_defaults(run=_apps_update)
    delete = apps.add_parser("delete", parents=[common], help="delete an app")
    delete.add_argument("app", help="app id or name")
    delete.set_defaults(run=_apps_delete)
    _add_credentials_commands(apps, common)

    streams = commands.add_parser("streams", help="look at stream records").add_subparsers(
        dest="streams_command", required=True
    )
    recent = streams.add_parser("list", parents=[common], help="the most recent streams, newest first")
    recent.add_argument("--app", help="only this app (id or name)")
    recent.add_argument("--limit", type=int, default=20)
    recent.add_argument("--json", action="store_true")
    recent.set_defaults(run=_streams_list)
    return parser


def _doctor(args: argparse.Namespace) -> int:
    from bfstream.doctor import examine

    return examine(lambda: _settings(args))


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_help()  # a first try with no arguments gets the commands, not an error
        return 0
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise
        # A "bfstream: ..." message: what was asked cannot be done as configured, the usage-error code, as argparse's.
        print(exc.code, file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"bfstream: {exc}", file=sys.stderr)
        return 2
    except tomllib.TOMLDecodeError as exc:
        print(f"bfstream: the config file is not valid TOML: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"bfstream: invalid settings: {problems}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
