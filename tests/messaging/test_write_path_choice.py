"""What a server says at start-up of how its WebSocket frames leave it: written straight to
uvicorn's transport, or through its ASGI send, and why (bfstream/messaging/transports/websocket.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from bfstream.api.app import server_config
from bfstream.config import MessagingSettings, load_settings
from bfstream.messaging.transports import websocket


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("WebSocket frames"):
            self.lines.append((record.levelno, record.getMessage()))


@pytest.fixture
def start_up_log() -> Iterator[_Lines]:
    """uvicorn's error log, where the line goes (uvicorn's loggers need not propagate to the root)."""
    handler, server_log = _Lines(), logging.getLogger("uvicorn.error")
    server_log.addHandler(handler)
    yield handler
    server_log.removeHandler(handler)


@pytest.mark.parametrize(
    ("messaging", "options", "level", "line"),
    [
        ({}, {}, logging.INFO, "WebSocket frames: written straight to the transport"),
        (
            {"compression": True},
            {},
            logging.INFO,
            "WebSocket frames: written straight to the transport;"
            " connections that negotiate permessage-deflate use send",
        ),
        (
            {"direct_writes": False},
            {},
            logging.INFO,
            "WebSocket frames: through the ASGI send, as messaging.direct_writes is off",
        ),
        (
            {},
            {"ws": "websockets"},  # uvicorn's legacy protocol: nothing the direct path knows
            logging.WARNING,
            "WebSocket frames: through the ASGI send, as uvicorn speaks WebSocket with WebSocketProtocol,"
            " the direct path knows its websockets-sansio protocol only",
        ),
        (
            {},
            # A websockets-sansio protocol from before uvicorn 0.52.1, which had no write flow control.
            {"ws": type("WebSocketsSansIOProtocol", (asyncio.Protocol,), {})},
            logging.WARNING,
            "WebSocket frames: through the ASGI send, as this uvicorn's websockets-sansio protocol has no write"
            " flow control (uvicorn 0.52.1 added it)",
        ),
    ],
    ids=["default", "compression", "switched off", "another protocol", "an older uvicorn"],
)
@pytest.mark.filterwarnings("ignore:.*deprecated")  # uvicorn's legacy protocol, and the websockets API it uses
def test_the_write_path_is_said_once_at_start_up(
    tmp_path: Path, start_up_log: _Lines, messaging: dict, options: dict, level: int, line: str
) -> None:
    settings = load_settings(data_dir=tmp_path, messaging=messaging)
    # No log_config: uvicorn's own would replace the handlers of its loggers, the test's among them.
    server_config(settings, host="127.0.0.1", port=0, log_level="info", log_config=None, **options)
    assert start_up_log.lines == [(level, line)]


def test_a_protocol_without_what_the_direct_path_reads_falls_back_and_says_so_once(
    start_up_log: _Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A uvicorn whose protocol has the right name but not the attributes the direct path reads
    (they are private: a release may rename them) passes the start-up check; its connections
    then write through ``send``, and the log says why, once."""

    class WebSocketsSansIOProtocol:
        def __init__(self) -> None:
            self.conn = SimpleNamespace(extensions=[])
            self.transport, self.writable, self.close_sent = None, asyncio.Event(), False  # no ``disconnected``

        async def send(self, message: dict) -> None:
            raise AssertionError("not called here")

    monkeypatch.setattr(websocket, "_warned", set())
    for _ in range(3):
        assert websocket.direct_protocol(WebSocketsSansIOProtocol().send, MessagingSettings()) is None
    line = "WebSocket frames: through the ASGI send, as uvicorn's WebSocketsSansIOProtocol has no disconnected"
    assert start_up_log.lines == [(logging.WARNING, line)]
