"""The command line, run as users run it: the installed ``bfstream`` script in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import socket
import sqlite3
import subprocess
import sys
import tty
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.secret_scan import STORED_KEY
from tests.services import delete_keys, require_postgres, require_redis, throwaway_database, unique_prefix

BFSTREAM = [sys.executable, "-m", "bfstream.cli"]


def run(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BFSTREAM, *args, "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60, check=False
    )


def test_apps_create_list_rotate_delete(tmp_path: Path) -> None:
    created = run("apps", "create", "shop", "--json", data_dir=tmp_path)
    assert created.returncode == 0, created.stderr
    app = json.loads(created.stdout)  # exactly one JSON object on stdout
    assert set(app) == {"appId", "apiKey", "name"} and app["name"] == "shop"
    assert re.fullmatch(r"BFAPI_[A-Za-z0-9_-]{43}", app["apiKey"])  # 256 random bits

    listed = json.loads(run("apps", "list", "--json", data_dir=tmp_path).stdout)
    assert [(a["appId"], a["name"], a["browserPublish"]) for a in listed] == [(app["appId"], "shop", False)]
    assert "apiKey" not in listed[0]

    rotated = json.loads(run("apps", "rotate-key", "shop", "--json", data_dir=tmp_path).stdout)
    assert rotated["appId"] == app["appId"] and rotated["apiKey"] != app["apiKey"]
    graced = run("apps", "rotate-key", "shop", "--grace", "90", data_dir=tmp_path)
    assert graced.returncode == 0 and "The old key keeps working until" in graced.stdout and "(90 s)" in graced.stdout
    rotated = json.loads(run("apps", "rotate-key", "shop", "--json", data_dir=tmp_path).stdout)

    db = sqlite3.connect(tmp_path / "bfstream.sqlite3")
    stored = " ".join(str(v) for row in db.execute("SELECT * FROM apps") for v in row)
    db.close()
    assert app["apiKey"] not in stored and rotated["apiKey"] not in stored  # only hashes are kept

    updated = run("apps", "update", "shop", "--browser-publish", "on", data_dir=tmp_path)
    assert json.loads(updated.stdout)["browserPublish"] is True
    assert json.loads(updated.stdout)["origins"] is None  # any origin, until the app lists some
    assert json.loads(updated.stdout)["toolArguments"] == "private"  # a backend tool's arguments stay here
    shown = run("apps", "update", "shop", "--tool-arguments", "public", data_dir=tmp_path)
    assert json.loads(shown.stdout)["toolArguments"] == "public"
    limited = run(
        "apps", "update", "shop", "--origins", "https://Shop.example/,http://localhost:3000", data_dir=tmp_path
    )
    assert json.loads(limited.stdout)["origins"] == ["http://localhost:3000", "https://shop.example"]
    wrong = run("apps", "update", "shop", "--origins", "https://shop.example/page", data_dir=tmp_path)
    assert wrong.returncode != 0 and "origins look like" in wrong.stderr
    anyone = run("apps", "update", "shop", "--origins", "any", data_dir=tmp_path)
    assert json.loads(anyone.stdout)["origins"] is None
    assert json.loads(run("apps", "list", "--json", data_dir=tmp_path).stdout)[0]["browserPublish"] is True
    made_open = json.loads(run("apps", "create", "chat", "--browser-publish", "on", "--json", data_dir=tmp_path).stdout)
    assert [a["browserPublish"] for a in json.loads(run("apps", "list", "--json", data_dir=tmp_path).stdout)] == [
        True, True]  # fmt: skip
    run("apps", "delete", made_open["appId"], data_dir=tmp_path)

    deleted = run("apps", "delete", app["appId"], data_dir=tmp_path)
    assert deleted.returncode == 0
    assert json.loads(run("apps", "list", "--json", data_dir=tmp_path).stdout) == []
    missing = run("apps", "delete", "shop", data_dir=tmp_path)
    assert missing.returncode != 0 and "no app" in missing.stderr


def test_config_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "bfstream.toml"
    config.write_text('data_dir = "from-toml"\n[services.echo]\ndelay_ms = 5\n')
    from bfstream.config import load_settings

    settings = load_settings(config)
    assert settings.data_dir == Path("from-toml")
    assert settings.services["echo"].delay_ms == 5 and settings.services["echo"].kind == "echo"
    assert settings.services["openai"].kind == "openai"  # built-ins stay when the file names another
    missing = subprocess.run(
        [*BFSTREAM, "apps", "list", "--config", str(tmp_path / "nope.toml")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "config file not found" in missing.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.anyio
async def test_serve_creates_a_first_app_and_streams_echo(tmp_path: Path) -> None:
    """The README's first run: start, take the printed key, stream with echo, watch it on a WebSocket."""
    port = free_port()
    env = {**os.environ, "BFSTREAM_SERVICES__ECHO__DELAY_MS": "1"}
    terminal, terminal_side = pty.openpty()  # a user runs it in a terminal: the key is shown there
    tty.setraw(terminal_side)
    proc = await asyncio.create_subprocess_exec(
        *BFSTREAM, "serve", "--port", str(port), "--data-dir", str(tmp_path),
        stdout=terminal_side, stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True,
    )  # fmt: skip
    os.close(terminal_side)
    log = ""
    try:
        shown = ""
        async with asyncio.timeout(20):
            while "Browsers connect to" not in shown:
                shown += (await asyncio.to_thread(os.read, terminal, 4096)).decode()
            while "Uvicorn running on" not in log:  # uvicorn's log goes to stderr
                line = await proc.stderr.readline()
                assert line, log
                log += line.decode()
        app_id = re.search(r"appId:\s+(\S+)", shown).group(1)
        api_key = re.search(r"apiKey:\s+(\S+)", shown).group(1)
        assert api_key.startswith("BFAPI_") and api_key not in log
        async with connect(f"ws://127.0.0.1:{port}/message/ws?app={app_id}") as ws, httpx.AsyncClient() as http:
            assert json.loads(await ws.recv())["op"] == "hello"
            await ws.send(json.dumps({"op": "join", "channel": "anonymous"}))
            assert json.loads(await ws.recv())["op"] == "joined"
            body = {
                "apiKey": api_key,
                "channels": ["anonymous"],
                "actionName": "assistantReceiveResultsStream",
                "service": "echo",
                "payload": {"stream": True, "model": "echo", "messages": [{"role": "user", "content": "hello there"}]},
            }
            assert (await http.post(f"http://127.0.0.1:{port}/stream/create", json=body)).status_code == 200
            text = None
            async with asyncio.timeout(10):
                while text is None:
                    options = json.loads(await ws.recv())["message"]["actions"][0]["options"]
                    text = options["text"] if options["type"] == "end" else None
            assert text == "hello there"
    finally:
        proc.terminate()
        log += (await proc.stderr.read()).decode()
        await proc.wait()
        os.close(terminal)
    assert proc.returncode == 0
    assert api_key not in log


@pytest.mark.anyio
async def test_serve_does_not_print_the_first_key_where_it_could_be_kept(tmp_path: Path) -> None:
    """Under a supervisor, or with its output sent to a file, the first app is made without showing its key."""
    printed = await serve_until_running("--data-dir", str(tmp_path))
    assert "BFAPI_" not in printed
    assert "apiKey: not shown" in printed and "bfstream apps rotate-key default" in printed
    rotated = run("apps", "rotate-key", "default", "--json", data_dir=tmp_path)
    assert json.loads(rotated.stdout)["apiKey"].startswith("BFAPI_")  # the way out that it names works


def test_app_names_are_unique_and_not_empty(tmp_path: Path) -> None:
    assert run("apps", "create", "shop", data_dir=tmp_path).returncode == 0
    again = run("apps", "create", "shop", data_dir=tmp_path)
    assert again.returncode != 0 and "exists already" in again.stderr
    blank = run("apps", "create", "  ", data_dir=tmp_path)
    assert blank.returncode != 0 and "needs a name" in blank.stderr


@pytest.mark.parametrize(
    ("toml", "env", "says"),
    [
        ("port = [1, 2\n", {}, "not valid TOML"),
        ("colour = 'blue'\n", {}, "invalid settings: colour"),
        ("", {"BFSTREAM_MESSAGING__PING_INTERVAL": "abc"}, "invalid settings: messaging.ping_interval"),
    ],
)
def test_bad_settings_are_one_clear_line(tmp_path: Path, toml: str, env: dict[str, str], says: str) -> None:
    config = tmp_path / "bfstream.toml"
    config.write_text(toml)
    result = subprocess.run(
        [*BFSTREAM, "apps", "list", "--config", str(config)],
        capture_output=True, text=True, env={**os.environ, **env}, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and says in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_readme_config_example_loads(tmp_path: Path) -> None:
    """The README's TOML example is what users copy first; it must be valid settings as written."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "bfstream.toml"
    config.write_text(example)
    from bfstream.config import load_settings

    settings = load_settings(config)
    assert settings.services["ollama"].kind == "openai" and settings.streams.drain_seconds == 20


def test_apps_update_webhook_checks_the_url_and_shows_the_secret_once(tmp_path: Path) -> None:
    assert run("apps", "create", "shop", "--json", data_dir=tmp_path).returncode == 0
    for url, says in [
        ("ftp://hooks.example/x", "http:// or https://"),
        ("https://user:pw@hooks.example/x", "credentials in the URL"),
        ("http://127.0.0.1:9000/hook", "loopback, private or link-local"),
        ("http://10.1.2.3/hook", "loopback, private or link-local"),
        ("http://[::ffff:169.254.169.254]/latest", "loopback, private or link-local"),  # cloud metadata, mapped
    ]:
        refused = run("apps", "update", "shop", "--webhook", url, data_dir=tmp_path)
        assert refused.returncode != 0 and says in refused.stderr, (url, refused.stderr)

    local = {**os.environ, "BFSTREAM_TOOLS__ALLOW_PRIVATE_WEBHOOKS": "true"}

    def update(*args: str) -> dict[str, object]:
        done = subprocess.run(
            [*BFSTREAM, "apps", "update", "shop", *args, "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=60, check=False, env=local,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    first = update("--webhook", "http://127.0.0.1:9000/hook")
    assert first["webhook"] == "http://127.0.0.1:9000/hook"
    secret = first["webhookSecret"]
    assert isinstance(secret, str) and re.fullmatch(r"whsec_[A-Za-z0-9_-]{43}", secret)
    moved = update("--webhook", "http://127.0.0.1:9001/hook")
    assert moved["webhook"].endswith(":9001/hook") and "webhookSecret" not in moved  # receivers keep theirs
    rotated = update("--rotate-webhook-secret")
    assert rotated["webhookSecret"] != secret
    assert "webhookSecret" not in json.loads(run("apps", "list", "--json", data_dir=tmp_path).stdout)[0]
    off = update("--webhook", "off")
    assert off["webhook"] is None and "webhookSecret" not in off
    again = run("apps", "update", "shop", "--rotate-webhook-secret", data_dir=tmp_path)
    assert again.returncode != 0 and "no webhook" in again.stderr


def test_apps_update_webhook_events_subscribes_lists_and_unsubscribes(tmp_path: Path) -> None:
    assert run("apps", "create", "shop", "--json", data_dir=tmp_path).returncode == 0
    refused = run("apps", "update", "shop", "--webhook-events", "all", data_dir=tmp_path)
    assert refused.returncode != 0 and "no webhook" in refused.stderr  # nowhere to send them yet
    local = {**os.environ, "BFSTREAM_TOOLS__ALLOW_PRIVATE_WEBHOOKS": "true"}

    def update(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*BFSTREAM, "apps", "update", "shop", *args, "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=60, check=False, env=local,
        )  # fmt: skip

    every = json.loads(update("--webhook", "http://127.0.0.1:9000/hook", "--webhook-events", "all").stdout)
    assert every["webhookEvents"] == ["stream.completed", "stream.failed", "stream.interrupted", "stream.stopped"]
    some = json.loads(update("--webhook-events", "stream.completed, stream.failed").stdout)
    assert some["webhookEvents"] == ["stream.completed", "stream.failed"]
    listed = json.loads(run("apps", "list", "--json", data_dir=tmp_path).stdout)[0]
    assert listed["webhookEvents"] == ["stream.completed", "stream.failed"]
    typo = update("--webhook-events", "stream.complete")
    assert typo.returncode != 0 and "unknown events stream.complete" in typo.stderr
    assert json.loads(update("--webhook-events", "none").stdout)["webhookEvents"] == []


# Start-up and where the data is (issue 16). The commands run as a user would run them from anywhere:
# HOME and XDG_DATA_HOME point into the test's directory so nothing touches the real home, and
# PYTHONPATH names this checkout so a command run from "/" still runs this bfstream.
ROOT = Path(__file__).resolve().parent.parent
FILESYSTEM_ROOT = Path("/")  # where the outside test ran `bfstream apps list` from


def user_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFSTREAM_") and k != "XDG_DATA_HOME"}
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**env, "HOME": str(home), "PYTHONPATH": pythonpath, **extra}


def command(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BFSTREAM, *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd, env=env)


async def serve_until_running(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """``bfstream serve`` until uvicorn says it runs, then stopped; what it printed, both streams."""
    proc = await asyncio.create_subprocess_exec(
        *BFSTREAM, "serve", "--port", str(free_port()), *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    printed = ""
    try:
        async with asyncio.timeout(20):
            while "Uvicorn running on" not in printed:
                line = await proc.stdout.readline()
                assert line, printed
                printed += line.decode()
    finally:
        proc.terminate()
        printed += (await proc.stdout.read()).decode()
        await proc.wait()
    return printed


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """A refusal as the CLI must give it: exit 2, one line on stderr, no traceback anywhere."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.anyio
async def test_every_directory_finds_the_data_directory_serve_used(tmp_path: Path) -> None:
    home, somewhere, elsewhere = tmp_path / "home", tmp_path / "somewhere", tmp_path / "elsewhere"
    for folder in (home, somewhere, elsewhere):
        folder.mkdir()
    data = tmp_path / "xdg" / "bfstream"
    env = user_env(home, XDG_DATA_HOME=str(tmp_path / "xdg"))
    root_had_one = (FILESYSTEM_ROOT / ".bfstream").exists()

    printed = await serve_until_running(cwd=somewhere, env=env)
    app_id = re.search(r"appId:\s+(\S+)", printed).group(1)
    assert f"bfstream: data directory {data}\n" in printed
    # Where a second instance or a support question needs to look: broker, prefix, database, in one line.
    assert (
        f"bfstream: broker memory:// (this process alone), key prefix bfstream, database {data}/bfstream.sqlite3\n"
        in (printed)
    )

    for cwd in (FILESYSTEM_ROOT, elsewhere):
        listed = command("apps", "list", "--json", cwd=cwd, env=env)
        assert listed.returncode == 0, listed.stderr
        assert [a["appId"] for a in json.loads(listed.stdout)] == [app_id]
        assert listed.stderr == f"bfstream: data directory {data}\n"
    assert (data / "bfstream.sqlite3").is_file()
    assert not (somewhere / ".bfstream").exists() and not (elsewhere / ".bfstream").exists()
    assert (FILESYSTEM_ROOT / ".bfstream").exists() == root_had_one
    assert list(home.iterdir()) == []  # XDG_DATA_HOME wins over HOME


def test_commands_that_need_a_database_create_none(tmp_path: Path) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = user_env(home)  # no XDG_DATA_HOME: ~/.local/share/bfstream
    expected = home / ".local" / "share" / "bfstream" / "bfstream.sqlite3"
    for args in [
        ("apps", "list"),
        ("apps", "list", "--json"),
        ("streams", "list"),
        ("apps", "rotate-key", "shop"),
        ("apps", "update", "shop", "--retain-text", "on"),
        ("apps", "delete", "shop"),
    ]:
        result = command(*args, cwd=cwd, env=env)
        line = one_line(result)
        assert line.startswith(f"bfstream: no database at {expected}, and this command makes none"), (args, line)
        assert result.stdout == ""  # no empty listing that a script could take for "no apps"
        assert list(home.iterdir()) == [] and list(cwd.iterdir()) == [], args
    named = tmp_path / "named"
    assert one_line(command("apps", "list", "--data-dir", str(named), cwd=cwd, env=env)).startswith(
        f"bfstream: no database at {named}/bfstream.sqlite3"
    )
    assert not named.exists()

    # The one command that makes something makes the database, where the others then find it.
    assert command("apps", "create", "shop", cwd=cwd, env=env).returncode == 0
    assert expected.is_file() and list(cwd.iterdir()) == []
    listed = command("apps", "list", "--json", cwd=tmp_path, env=env)
    assert [a["name"] for a in json.loads(listed.stdout)] == ["shop"]


def test_a_database_left_at_the_old_default_is_pointed_out(tmp_path: Path) -> None:
    home, cwd = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    cwd.mkdir()
    env = user_env(home)
    assert command("apps", "create", "old", "--data-dir", ".bfstream", cwd=cwd, env=env).returncode == 0
    result = command("apps", "list", cwd=cwd, env=env)
    assert result.returncode == 2
    assert f"pass --data-dir {cwd}/.bfstream to keep using it" in result.stderr
    assert command("apps", "list", "--data-dir", ".bfstream", cwd=cwd, env=env).stdout.split()[1] == "old"


def _missing_database_url(password: str) -> tuple[str, str]:
    """A PostgreSQL URL naming a database that does not exist, with a password to keep out of output."""
    parts = urlsplit(require_postgres())
    name = "bfstest_missing_" + uuid.uuid4().hex[:12]
    netloc = f"{parts.username or 'postgres'}:{password}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc, path="/" + name)), name


@pytest.mark.parametrize(
    "args",
    [("serve", "--port", "0"), ("apps", "list"), ("apps", "create", "shop"), ("streams", "list")],
    ids=["serve", "apps-list", "apps-create", "streams-list"],
)
def test_a_postgresql_database_that_does_not_exist_is_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    url, name = _missing_database_url("hunter2-not-shown")
    home = tmp_path / "home"
    home.mkdir()
    line = one_line(command(*args, "--database-url", url, cwd=tmp_path, env=user_env(home)))
    assert line.startswith("bfstream: cannot open the database postgresql://") and "hunter2" not in line
    assert f'database "{name}" does not exist' in line
    assert list(home.iterdir()) == []  # no SQLite fallback either


@pytest.mark.parametrize(
    ("args", "hidden", "setting", "says"),
    [
        (("serve", "--port", "0"), "asyncpg", "BFSTREAM_DATABASE_URL", "install bfstream[postgres]"),
        (("apps", "list"), "asyncpg", "BFSTREAM_DATABASE_URL", "install bfstream[postgres]"),
        (("serve", "--port", "0"), "redis", "BFSTREAM_BROKER_URL", "install bfstream[redis]"),
    ],
    ids=["serve-postgres", "apps-list-postgres", "serve-redis"],
)
def test_a_missing_extra_is_one_line(
    tmp_path: Path, args: tuple[str, ...], hidden: str, setting: str, says: str
) -> None:
    """The package of an extra not installed: a module of that name on the path that fails to import,
    as the real one does when it is absent."""
    (tmp_path / "uninstalled" / hidden).mkdir(parents=True)
    (tmp_path / "uninstalled" / hidden / "__init__.py").write_text(
        f"raise ModuleNotFoundError({'No module named ' + repr(hidden)!r}, name={hidden!r})\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    env = user_env(home)
    env["PYTHONPATH"] += os.pathsep + str(tmp_path / "uninstalled")  # after this checkout, before site-packages
    env[setting] = (
        "postgresql://postgres@127.0.0.1:5432/postgres" if "DATABASE" in setting else "redis://127.0.0.1:6379/0"
    )
    line = one_line(command(*args, cwd=tmp_path, env=env))
    assert says in line, line


@pytest.mark.anyio
async def test_serve_names_its_broker_database_and_prefix_without_passwords(tmp_path: Path) -> None:
    redis_url, prefix = require_redis(), unique_prefix()
    home = tmp_path / "home"
    home.mkdir()
    async with throwaway_database() as database_url:
        parts = urlsplit(database_url)
        secret = "hunter2-not-shown"  # the server trusts local connections; the password only has to stay unshown
        with_password = urlunsplit(
            parts._replace(netloc=f"{parts.username}:{secret}@{parts.hostname}:{parts.port or 5432}")
        )
        env = user_env(home, BFSTREAM_BROKER_URL=redis_url, BFSTREAM_BROKER_PREFIX=prefix)
        try:
            printed = await serve_until_running("--database-url", with_password, cwd=tmp_path, env=env)
        finally:
            await delete_keys(redis_url, prefix)
    shown = urlunsplit(parts._replace(netloc=f"{parts.username}@{parts.hostname}:{parts.port or 5432}"))
    assert f"bfstream: broker {redis_url}, key prefix {prefix}, database {shown}\n" in printed
    assert f"bfstream: database {shown}\n" in printed
    assert secret not in printed
    assert list(home.iterdir()) == []


def test_serve_with_an_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    """Redis not running when serve starts (nothing listens on port 1): a refusal like the others,
    not uvicorn's lifespan traceback and its start-up failure code 3."""
    home = tmp_path / "home"
    home.mkdir()
    env = user_env(home, XDG_DATA_HOME=str(tmp_path / "xdg"), BFSTREAM_BROKER_URL="redis://127.0.0.1:1/0")
    result = command("serve", "--port", str(free_port()), cwd=tmp_path, env=env)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    # Said before anything is made: the one line, naming where Redis was looked for.
    assert result.stderr.strip().splitlines() == [
        "bfstream: cannot start: The message broker (Redis) is unreachable; is Redis running at redis://127.0.0.1:1/0?"
    ], result.stderr
    assert not (tmp_path / "xdg").exists() and "first app" not in result.stdout


@pytest.mark.anyio
async def test_a_second_server_on_the_same_database_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    """On the memory broker a server takes itself for the only one on its database and ends the
    streams it finds running there: a second one on the same data directory would end the first's
    live answers, so it is refused in one line, and starts once the first has stopped."""
    home = tmp_path / "home"
    home.mkdir()
    env = user_env(home)
    data = ["--data-dir", str(tmp_path / "data")]
    first = await asyncio.create_subprocess_exec(
        *BFSTREAM, "serve", "--port", str(free_port()), *data, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        printed = ""
        async with asyncio.timeout(20):
            while "Uvicorn running on" not in printed:
                line = await first.stdout.readline()
                assert line, printed
                printed += line.decode()
        second = await asyncio.to_thread(command, "serve", "--port", str(free_port()), *data, cwd=tmp_path, env=env)
        refusal = one_line(second)
        assert refusal.startswith(f"bfstream: another bfstream serve (pid {first.pid}) is running on the database ")
        assert "Created your first app" not in second.stdout
    finally:
        first.terminate()
        await first.wait()
    assert "Uvicorn running on" in await serve_until_running(*data, cwd=tmp_path, env=env)  # free again


def credentials(*args: str, data_dir: Path, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BFSTREAM, "apps", "credentials", *args, "--data-dir", str(data_dir)],
        input=stdin, capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **env},
    )  # fmt: skip


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 2 and, after the line naming the database, one line saying why; no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_apps_credentials_keep_a_provider_key_sealed_from_standard_input(tmp_path: Path) -> None:
    run("apps", "create", "shop", data_dir=tmp_path)
    assert "no key on standard input" in refusal(credentials("set", "shop", "openai", data_dir=tmp_path, stdin="\n"))
    unknown = refusal(credentials("set", "shop", "opnai", data_dir=tmp_path, stdin=STORED_KEY))
    assert "unknown service 'opnai'" in unknown and "openai" in unknown
    two_lines = refusal(credentials("set", "shop", "openai", data_dir=tmp_path, stdin="sk-one\nsk-two\n"))
    assert "one line" in two_lines and "sk-one" not in two_lines
    assert "no app" in refusal(credentials("set", "nope", "openai", data_dir=tmp_path, stdin=STORED_KEY))

    stored = credentials("set", "shop", "OpenAI", data_dir=tmp_path, stdin=STORED_KEY + "\n")
    assert stored.returncode == 0, stored.stderr
    assert STORED_KEY not in stored.stdout + stored.stderr
    key_file = tmp_path / "credentials.key"
    assert key_file.stat().st_mode & 0o777 == 0o600  # made on first use, for its owner alone
    listed = json.loads(credentials("list", "shop", "--json", data_dir=tmp_path).stdout)
    assert [(c["service"], c["key"]) for c in listed] == [("openai", "sk-…5678")]
    human = credentials("list", "shop", data_dir=tmp_path).stdout
    assert human.startswith("openai  sk-…5678  stored ") and STORED_KEY not in human

    for path in tmp_path.iterdir():  # the database and its write-ahead log hold no key in clear
        if path.name.startswith("bfstream.sqlite3"):
            assert STORED_KEY.encode() not in path.read_bytes()
    db = sqlite3.connect(tmp_path / "bfstream.sqlite3")
    (sealed,) = db.execute("SELECT sealed FROM app_credentials").fetchone()
    db.close()
    assert sealed.startswith("v1.") and STORED_KEY not in sealed

    other_key = credentials("list", "shop", data_dir=tmp_path, BFSTREAM_CREDENTIALS_KEY="x" * 32)
    assert other_key.returncode == 0 and "unreadable with this credentials_key" in other_key.stdout
    # Rotation from the key file to a set credentials_key: re-encrypted only with the old key at hand.
    new_key = {"BFSTREAM_CREDENTIALS_KEY": "a-new-credentials-key-0123456789ab"}
    refused = refusal(credentials("reseal", data_dir=tmp_path, **new_key))
    assert "nothing changed: 1 kept keys cannot be decrypted" in refused
    previous = json.dumps([key_file.read_text().strip()])
    resealed = credentials("reseal", data_dir=tmp_path, **new_key, BFSTREAM_CREDENTIALS_PREVIOUS_KEYS=previous)
    assert resealed.returncode == 0 and "Encrypted 1 kept keys again" in resealed.stdout, resealed.stderr
    now = json.loads(credentials("list", "shop", "--json", data_dir=tmp_path, **new_key).stdout)
    assert [c["key"] for c in now] == ["sk-…5678"]  # the new key alone reads it now
    assert credentials("delete", "shop", "openai", data_dir=tmp_path).returncode == 0
    assert json.loads(credentials("list", "shop", "--json", data_dir=tmp_path).stdout) == []
    assert "keeps no key" in refusal(credentials("delete", "shop", "openai", data_dir=tmp_path))

    credentials("set", "shop", "anthropic", data_dir=tmp_path, stdin=STORED_KEY)
    run("apps", "delete", "shop", data_dir=tmp_path)
    db = sqlite3.connect(tmp_path / "bfstream.sqlite3")
    assert db.execute("SELECT count(*) FROM app_credentials").fetchone() == (0,)  # gone with the app
    db.close()


@pytest.mark.anyio
async def test_apps_credentials_on_postgresql_need_the_fleets_credentials_key(tmp_path: Path) -> None:
    async with throwaway_database() as url:
        assert run("apps", "create", "shop", "--database-url", url, data_dir=tmp_path).returncode == 0
        unset = refusal(
            credentials("set", "shop", "openai", "--database-url", url, data_dir=tmp_path, stdin=STORED_KEY)
        )
        assert "credentials_key is not set (BFSTREAM_CREDENTIALS_KEY)" in unset
        assert not (tmp_path / "credentials.key").exists()  # no key file: another instance could not read it
        fleet = {"BFSTREAM_CREDENTIALS_KEY": "the-fleet-credentials-key-0123456789"}
        stored = credentials(
            "set", "shop", "openai", "--database-url", url, data_dir=tmp_path, stdin=STORED_KEY, **fleet
        )
        assert stored.returncode == 0, stored.stderr
        listed = credentials("list", "shop", "--json", "--database-url", url, data_dir=tmp_path, **fleet)
        assert [c["key"] for c in json.loads(listed.stdout)] == ["sk-…5678"]
        # The throwaway database's every row is searched for the key before it is dropped (the secret scan).
