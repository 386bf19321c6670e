"""Real clients of other projects, run against the real server: the npm packages pinned in
``tests/js/peers/`` (the Durable Streams client, the AI SDK), under Node.

They are installed once per lock file into a cache directory outside the checkout
(``~/.cache/bfstream/js-peers-<hash of the lock>``, or under ``BFSTREAM_PEERS_CACHE``) with ``npm ci``,
so a run leaves the checkout as it was and a second run needs no network. Without Node or npm the
tests that need them skip, saying so, except under CI, which must run them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

SOURCE = Path(__file__).resolve().parent / "js" / "peers"


def _cache_root() -> Path:
    given = os.environ.get("BFSTREAM_PEERS_CACHE")
    return Path(given) if given else Path.home() / ".cache" / "bfstream"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI must run these tests")
    pytest.skip(reason)


def install() -> Path:
    """The directory holding the peers' scripts and their ``node_modules``, installed if need be."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("node and npm are needed for the JavaScript peers (tests/js/peers)")
    files = sorted(p for p in SOURCE.iterdir() if p.is_file())
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()[:16]
    target = _cache_root() / f"js-peers-{digest}"
    if (target / "node_modules" / ".installed").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="js-peers-", dir=target.parent))
    try:
        for path in files:
            shutil.copy(path, staging / path.name)
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"],
            cwd=staging, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            _unavailable(f"npm ci failed for tests/js/peers: {result.stderr[-2000:]}")
        (staging / "node_modules" / ".installed").touch()
        try:
            staging.rename(target)
        except OSError:  # another run installed it meanwhile
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


async def run(peers: Path, script: str, *args: str, timeout: float = 90) -> dict[str, Any]:
    """Run a peer script without blocking the loop the server runs on; its one line of JSON."""
    proc = await asyncio.create_subprocess_exec(
        "node", script, *args, cwd=peers, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, f"{script} {args} failed ({proc.returncode}):\n{err.decode()[-4000:]}"
    return json.loads(out.decode().strip().splitlines()[-1])
