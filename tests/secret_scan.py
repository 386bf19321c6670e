"""The suite-wide secret scan: during every test, everything bfstream lets out is captured, and at
the end of the test it is searched for keys.

Captured: every log record of the test process at debug level (bfstream's, uvicorn's, httpx's);
every WebSocket frame a test client receives and every SSE line it reads; the body of every
HTTP answer that is an error or comes from ``/metrics`` (and, for the stored key alone, every
other answer read whole: a model may be asked to repeat the suite's provider key, never a key the
server keeps); the output of ``bfstream serve``
processes (run at debug level); the test's SQLite files and, before it is dropped, every row of a
throwaway PostgreSQL database. The keys looked for are recognisable: the suite's provider key
(whole, or its first eight characters, which a provider's masked copy keeps), the provider key
the tests store for an app (``bfstream apps credentials``) likewise, the FileMaker account password
the tests store (``bfstream apps update --filemaker``) whole and as the Basic authorization it
travels in, and anything shaped like an app key (``BFAPI_`` and 43 characters). The fixture
``secret_scan`` in ``conftest.py`` applies it to every test.
"""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.connection import Connection

PROVIDER_KEY = "sk-test-SuperSecretProviderKey-1234"
# The provider key tests keep on the server for an app: it must never come back out, not even in an answer.
STORED_KEY = "sk-kept-StoredOnTheServerKey-5678"
# The FileMaker account password tests keep for an app: only ever sent to the FileMaker Server's login.
FILEMAKER_PASSWORD = "fm-Pa55 word-NeverShown-9012"
FILEMAKER_BASIC = base64.b64encode(f"bfstream:{FILEMAKER_PASSWORD}".encode()).decode()
_APP_KEY = re.compile(r"BFAPI_[A-Za-z0-9_-]{43}")
_KEPT = (STORED_KEY, STORED_KEY[:8], FILEMAKER_PASSWORD, FILEMAKER_BASIC)
_KEYS = (PROVIDER_KEY, PROVIDER_KEY[:8], *_KEPT)


class Captured:
    def __init__(self) -> None:
        self.parts: list[tuple[str, str]] = []  # (where, text)

    def add(self, where: str, text: str) -> None:
        self.parts.append((where, text))

    def leaks(self) -> list[str]:
        """Where a key was found, with a little of the text around it."""
        found = []
        for where, text in self.parts:
            answer = where.startswith("answer")  # a successful answer: only the stored key is out of place
            for wanted in _KEPT if answer else _KEYS:
                if (at := text.find(wanted)) >= 0:
                    found.append(f"{where}: ...{text[max(at - 60, 0) : at + 60]!r}...")
            for match in () if answer else _APP_KEY.finditer(text):
                found.append(f"{where}: an app key ...{text[max(match.start() - 60, 0) : match.end() + 20]!r}...")
        return found


current: Captured | None = None


def record(where: str, text: str) -> None:
    if current is not None:
        current.add(where, text)


class _Everything(logging.Handler):
    def emit(self, record_: logging.LogRecord) -> None:
        try:
            record("log", self.format(record_))
        except Exception:  # a record that cannot be formatted is the logging module's to report
            self.handleError(record_)


_original_send = httpx.AsyncClient.send
_original_recv = Connection.recv


async def _send(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
    response = await _original_send(self, request, **kwargs)
    if not kwargs.get("stream"):
        if response.status_code >= 400 or request.url.path == "/metrics":
            record(f"HTTP {response.status_code} {request.url.path}", response.text)
        else:
            record(f"answer {response.status_code} {request.url.path}", response.text)
    return response


async def _recv(self: Connection, *args: Any, **kwargs: Any) -> Any:
    frame = await _original_recv(self, *args, **kwargs)
    record("frame", frame if isinstance(frame, str) else frame.decode("utf-8", "replace"))
    return frame


class Scan:
    """One test's capture: started before it, searched after it."""

    def __init__(self) -> None:
        self.captured = Captured()
        self.handler = _Everything(logging.DEBUG)
        self.handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self._level = logging.DEBUG

    def start(self) -> None:
        global current
        current = self.captured
        root = logging.getLogger()
        self._level = root.level
        root.setLevel(logging.DEBUG)
        root.addHandler(self.handler)
        # websockets' debug log is a dump of every frame, which the frames' own capture covers; at
        # debug it would also slow every connection of the test's server down.
        logging.getLogger("websockets").setLevel(logging.INFO)
        httpx.AsyncClient.send = _send  # type: ignore[method-assign]
        Connection.recv = _recv  # type: ignore[method-assign]

    def stop(self, data_dirs: list[Path]) -> None:
        global current
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self._level)
        httpx.AsyncClient.send = _original_send  # type: ignore[method-assign]
        Connection.recv = _original_recv  # type: ignore[method-assign]
        for folder in data_dirs:
            for path in folder.rglob("*"):
                if path.is_file() and ("sqlite" in path.name or path.suffix in (".log", ".db")):
                    self.captured.add(f"file {path.name}", path.read_bytes().decode("latin-1"))
        current = None
