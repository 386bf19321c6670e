"""docs/deployment.md, followed literally on a fresh clone (issue 21): the shell blocks of its
"Try a fleet on one machine" section are run as they are written, on the machine's Redis and
PostgreSQL, and must bring up two instances that stream across each other. Only the first block,
the names the guide tells its reader to change, is replaced: by a throwaway database, role and key
prefix, and free ports, all removed afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
from websockets.asyncio.client import connect

from tests.conftest import WSClient, assert_well_formed
from tests.deploy.podman import ROOT
from tests.deploy.test_container import free_port
from tests.services import delete_keys, require_postgres, require_redis, unavailable, unique_prefix

pytestmark = pytest.mark.anyio

SECTION = "## Try a fleet on one machine"
NAMES = "# The names used below: change them to yours."
# This machine reaches no provider, as an air-gapped intranet would not: the guide's reader points
# the services at a server they reach, with the variables the providers' own SDKs read.
LOCAL_PROVIDERS = {name: "http://127.0.0.1:9" for name in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "GEMINI_BASE_URL")}


def guide_blocks(guide: Path) -> list[str]:
    text = guide.read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


async def run(script: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """A reader's shell: bash, stopping at the first failing command, with no bfstream settings of
    the test run's own (nor its PYTHONPATH, which would run this checkout instead of the clone)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("BFSTREAM_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    return await asyncio.to_thread(
        subprocess.run, ["bash", "-eu", "-o", "pipefail", "-c", script],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, env={**env, **LOCAL_PROVIDERS},
    )  # fmt: skip


async def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_the_guide_followed_literally_brings_up_two_instances_that_stream_across(tmp_path: Path) -> None:
    redis_url, admin_url = require_redis(), require_postgres()
    for tool in ("git", "psql", "curl"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed, and the guide uses it")
    clone = tmp_path / "bfstream"
    cloned = await asyncio.to_thread(
        subprocess.run, ["git", "clone", "-q", str(ROOT), str(clone)], capture_output=True, text=True, check=False
    )
    if cloned.returncode != 0:
        unavailable(f"cannot clone {ROOT}: {cloned.stderr.strip()}")
    blocks = guide_blocks(clone / "docs" / "deployment.md")
    assert len(blocks) == 7 and blocks[0].startswith(NAMES), blocks[:1]
    names_block, install, database, settings, start, stream, stop = blocks

    suffix = uuid.uuid4().hex[:12]
    db, role, prefix, port_a, port_b = (
        f"bfstest_{suffix}",
        f"bfstest_{suffix}",
        unique_prefix(),
        free_port(),
        free_port(),
    )
    names = (
        f"BF_DB={db} BF_ROLE={role} BF_PASSWORD={secrets.token_hex(12)} BF_PREFIX={prefix}"
        f" BF_PORT_A={port_a} BF_PORT_B={port_b}\n"
    )
    assert set(re.findall(r"BF_\w+", names)) == set(re.findall(r"BF_\w+", names_block))  # the guide's names, all
    pids: list[int] = []
    try:
        up = await run(names + install + database + settings + start, clone, timeout=400)
        pids = [int((clone / f"{which}.pid").read_text()) for which in "ab" if (clone / f"{which}.pid").is_file()]
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        checks = [line for line in up.stdout.splitlines() if line.startswith(("ok   ", "fix  "))]
        assert checks and all(line.startswith("ok   ") for line in checks), checks  # the guide's doctor
        app_id = json.loads((clone / "shop.json").read_text())["appId"]

        conn = await connect(f"ws://127.0.0.1:{port_b}/message/ws?app={app_id}")
        on_b = WSClient(conn, json.loads(await asyncio.wait_for(conn.recv(), 5)))
        await on_b.join("anonymous")
        started = await run(names + stream, clone, timeout=60)
        assert started.returncode == 0, started.stderr
        stream_id = json.loads(started.stdout)["streamId"]
        events = await on_b.stream_events(timeout=10)
        await conn.close()
        assert_well_formed(events, stream_id)
        assert events[-1]["text"] == "hello from the first instance"

        stopped = await run(names + stop, clone, timeout=30)
        assert stopped.returncode == 0, stopped.stderr
        assert all([await gone(pid, 30) for pid in pids])  # each drained and exited
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await admin.close()
        await delete_keys(redis_url, prefix)
