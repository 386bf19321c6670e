"""The client stays light: importing it loads none of the server (FastAPI, aiohttp, pydantic, the
store), and without httpx a receiver still gets ``verify_webhook`` while the clients say which
extra to install. Each check runs in a fresh interpreter, whose imports this suite has not made."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_client_imports_nothing_of_the_server() -> None:
    loaded = run(
        "import sys\n"
        "from bfstream.client import AsyncClient, Client, verify_webhook\n"
        "print(' '.join(sorted(sys.modules)))\n"
    ).split()
    assert "httpx" in loaded
    heavy = {"fastapi", "starlette", "uvicorn", "aiohttp", "pydantic", "orjson", "cryptography", "redis", "asyncpg"}
    assert heavy.isdisjoint(loaded)
    ours = [name for name in loaded if name.startswith("bfstream")]
    assert ours and all(name == "bfstream" or name.startswith("bfstream.client") for name in ours), ours


def test_without_httpx_the_clients_name_their_extra_and_the_check_still_works() -> None:
    out = run(
        "import sys\n"
        "sys.modules['httpx'] = None  # as if it were not installed\n"
        "from bfstream.client import BfstreamAPIError, verify_webhook\n"
        "print(verify_webhook('s', {}, b''))\n"
        "try:\n"
        "    from bfstream.client import Client\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    refused, message = out.splitlines()
    assert refused == "False"
    assert message == (
        "bfstream.client.Client needs httpx, which the client extra installs: pip install 'bfstream[client]'"
    )
