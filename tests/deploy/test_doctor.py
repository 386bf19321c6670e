"""The command line introducing itself: ``--version``, a bare ``bfstream``, and ``bfstream doctor``
on settings that name a database and a broker that are not there (issue 21)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from bfstream import __version__
from tests.services import require_postgres, require_redis

pytestmark = pytest.mark.anyio

BFSTREAM = [sys.executable, "-m", "bfstream.cli"]
# The providers' hosts made resolvable, so that only what a test breaks on purpose is reported.
LOCAL_PROVIDERS = {name: "http://127.0.0.1:9" for name in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "GEMINI_BASE_URL")}


def bfstream(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BFSTREAM_")}
    return subprocess.run(
        [*BFSTREAM, *args], capture_output=True, text=True, timeout=60, check=False, env={**clean, **env}
    )


def _closed_port() -> int:
    """A port nothing listens on: bound, read, and let go."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_version_says_the_package_version() -> None:
    shown = bfstream("--version")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"bfstream {__version__}"


def test_a_bare_command_prints_help_and_succeeds() -> None:
    bare = bfstream()
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.startswith("usage: bfstream")
    for command in ("serve", "doctor", "apps", "streams"):
        assert command in bare.stdout
    assert bare.stderr == ""


def test_serve_takes_the_log_level_and_admin_token_like_its_other_settings() -> None:
    shown = bfstream("serve", "--help")
    assert "--log-level" in shown.stdout and "--admin-token" in shown.stdout
    refused = bfstream("serve", "--log-level", "loud")
    assert refused.returncode == 2 and "invalid choice: 'loud'" in refused.stderr


def test_doctor_on_a_fresh_data_directory_finds_nothing_to_fix(tmp_path: Path) -> None:
    checked = bfstream("doctor", "--data-dir", str(tmp_path / "data"), **LOCAL_PROVIDERS)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert all(line.startswith("ok   ") for line in lines), lines
    assert any("none yet; bfstream serve makes it" in line for line in lines)
    assert not (tmp_path / "data").exists()  # a check makes nothing


def test_doctor_names_a_wrong_database_and_a_wrong_broker_in_one_line_each() -> None:
    database = urlsplit(require_postgres())
    missing = urlunsplit(database._replace(path=f"/bfstest_missing_{uuid.uuid4().hex[:8]}"))
    redis = urlsplit(require_redis())
    dead = urlunsplit(redis._replace(netloc=f"127.0.0.1:{_closed_port()}"))
    checked = bfstream("doctor", BFSTREAM_DATABASE_URL=missing, BFSTREAM_BROKER_URL=dead, **LOCAL_PROVIDERS)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    fixes = [line for line in checked.stdout.splitlines() if line.startswith("fix  ")]
    assert len(fixes) == 2, checked.stdout
    database_line, broker_line = fixes
    assert missing.rsplit("/", 1)[1] in database_line and "does not exist" in database_line
    assert "BFSTREAM_DATABASE_URL" in database_line
    assert dead in broker_line and "BFSTREAM_BROKER_URL" in broker_line
    assert "Traceback" not in checked.stderr


def test_doctor_on_the_machines_services_passes_and_says_what_it_found() -> None:
    checked = bfstream(
        "doctor", BFSTREAM_DATABASE_URL=require_postgres(), BFSTREAM_BROKER_URL=require_redis(), **LOCAL_PROVIDERS
    )
    assert checked.returncode == 0, checked.stdout
    assert "broker redis://" in checked.stdout and "reachable" in checked.stdout


def test_doctor_reports_each_setting_that_is_too_short(tmp_path: Path) -> None:
    checked = bfstream(
        "doctor", "--data-dir", str(tmp_path), BFSTREAM_ADMIN_TOKEN="short", BFSTREAM_METRICS_TOKEN="tiny"
    )
    assert checked.returncode == 2
    lines = checked.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("fix  ") for line in lines), lines
    assert "BFSTREAM_ADMIN_TOKEN" in checked.stdout and "BFSTREAM_METRICS_TOKEN" in checked.stdout
    assert "short" not in checked.stdout and "tiny" not in checked.stdout  # the values are never echoed


def test_doctor_says_which_tls_files_cannot_be_loaded(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate\n")
    checked = bfstream(
        "doctor", "--data-dir", str(tmp_path / "data"),
        BFSTREAM_TLS_CERTFILE=str(cert), BFSTREAM_TLS_KEYFILE=str(key), **LOCAL_PROVIDERS,
    )  # fmt: skip
    assert checked.returncode == 2
    (fix,) = [line for line in checked.stdout.splitlines() if line.startswith("fix  ")]
    assert fix.startswith(f"fix  tls: {cert} with {key}:") and "readable PEM files" in fix


async def test_serve_applies_the_admin_token_and_log_level_given_as_options(tmp_path: Path) -> None:
    port = _closed_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BFSTREAM_")}
    log = tmp_path / "serve.out"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *BFSTREAM, "serve", "--port", str(port), "--data-dir", str(tmp_path / "data"),
            "--admin-token", "an-admin-token-of-the-test", "--log-level", "warning",
            stdout=out, stderr=asyncio.subprocess.STDOUT, env=clean,
        )  # fmt: skip
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            deadline = time.monotonic() + 30
            while True:
                assert proc.returncode is None, log.read_text()
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.1)
            landing = await http.get(f"http://127.0.0.1:{port}/")
            admin = await http.get(f"http://127.0.0.1:{port}/admin")
        assert 'href="/admin"' in landing.text and admin.status_code == 200  # the dashboard is on
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    assert "Uvicorn running on" not in log.read_text()  # an INFO line: not at warning
    assert "an-admin-token-of-the-test" not in log.read_text()


def test_a_password_that_breaks_its_url_is_one_line_that_quotes_none_of_it(tmp_path: Path) -> None:
    """Found by a review: a base64 password with an unencoded / ends the URL's authority early, and
    the rest was read as a port: doctor and serve died with a traceback, quoting part of the password."""
    broken = {
        "BFSTREAM_DATABASE_URL": "postgresql://bfstream:ab+cd/ef9secret@127.0.0.1:5432/bfstream",
        "BFSTREAM_BROKER_URL": "redis://:pa/ss9secret@127.0.0.1:6379/0",
    }
    for name, url in broken.items():
        for command in (["doctor"], ["serve", "--port", str(_closed_port())]):
            shown = bfstream(*command, "--data-dir", str(tmp_path), **LOCAL_PROVIDERS, **{name: url})
            output = shown.stdout + shown.stderr
            assert shown.returncode == 2, (command, output)
            assert "Traceback" not in output and "secret" not in output and "ab+cd" not in output, output
            assert "percent-encode" in output, output


def test_serve_on_a_data_directory_it_cannot_write_says_so_in_one_line(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    shown = bfstream("serve", "--port", str(_closed_port()), "--data-dir", str(blocked / "data"))
    assert shown.returncode == 2 and "Traceback" not in shown.stderr, shown.stderr
    assert "cannot write in the data directory" in shown.stderr and "--data-dir" in shown.stderr
