"""Malformed WebSocket upgrades, sent raw to the real server: each gets a plain refusal, and the
server's log gets at most one line for it, never a traceback, at any log level."""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import Iterator

import pytest

from tests.conftest import Server, ServerFactory

pytestmark = pytest.mark.anyio

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example key
METRICS_TOKEN = "metrics-token-for-upgrade-tests"


class ServerLog(logging.Handler):
    """Everything the in-process server logs, down to DEBUG, where websockets writes what it finds
    wrong with a handshake. Attached once the server runs, as uvicorn's log set-up replaces the
    handlers of its loggers, which do not propagate to the root: the handler goes on each."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._levels: list[tuple[logging.Logger, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(("httpx", "httpcore")):  # the test's own client
            self.records.append(record)

    def attach(self) -> None:
        # The root at INFO: bfstream's own lines, and asyncio's errors, without the test's HTTP client chatter.
        for name, level in (("", logging.INFO), ("uvicorn.error", logging.DEBUG), ("uvicorn.access", logging.INFO)):
            logger = logging.getLogger(name)
            self._levels.append((logger, logger.level))
            logger.setLevel(level)
        for name in ("", "uvicorn", "uvicorn.access"):
            logging.getLogger(name).addHandler(self)

    def detach(self) -> None:
        for name in ("", "uvicorn", "uvicorn.access"):
            logging.getLogger(name).removeHandler(self)
        for logger, level in self._levels:
            logger.setLevel(level)

    def text(self) -> str:
        formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
        return "\n".join(formatter.format(record) for record in self.records)

    def said(self, level: int = logging.INFO) -> list[str]:
        """The lines at ``level`` or above, but for the access log's one a request."""
        return [r.getMessage() for r in self.records if r.levelno >= level and r.name != "uvicorn.access"]

    def assert_no_traceback(self) -> None:
        text = self.text()
        assert "Traceback" not in text, text
        assert not any(record.exc_info for record in self.records), text


@pytest.fixture
def server_log() -> Iterator[ServerLog]:
    handler = ServerLog()
    yield handler
    handler.detach()


async def exchange(server: Server, request: bytes, then: bytes = b"", abort: bool = False) -> bytes:
    """Send ``request`` as it is, and ``then`` once the server has switched protocols; return all
    the server answers, to the close of the connection. ``abort``: leave at once, with a reset."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
    try:
        writer.write(request)
        await writer.drain()
        if abort:
            writer.transport.abort()
            return b""
        answer = b""
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):
                answer += chunk
                head, ended, _ = answer.partition(b"\r\n\r\n")
                if ended and not head.startswith(b"HTTP/1.1 101"):
                    break  # a plain HTTP answer: nothing follows
                if ended and then:
                    writer.write(then)
                    then = b""
                if close_code(answer) is not None:
                    break
        return answer
    finally:
        writer.close()


async def done_with_websockets(server: Server, log: ServerLog, accepted: int) -> None:
    """Wait until the server has accepted ``accepted`` WebSockets and is done with each: what it
    logs of one is logged by then (a connection counts from before its accept until its end)."""
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    async with asyncio.timeout(10):
        while True:
            if sum(line.endswith("[accepted]") for line in log.said()) >= accepted:
                scrape = (await server.http.get(server.url + "/metrics", headers=headers)).text
                if 'bfstream_connections{transport="websocket"} 0.0' in scrape:
                    return
            await asyncio.sleep(0.02)


def close_code(answer: bytes) -> int | None:
    """The code of the close frame after a 101 answer's head, if one came whole."""
    _, _, frames = answer.partition(b"\r\n\r\n")
    while len(frames) >= 2:
        opcode, length = frames[0] & 0x0F, frames[1] & 0x7F
        start = 2 + {126: 2, 127: 8}.get(length, 0)
        if length >= 126:
            length = int.from_bytes(frames[2:start])
        if len(frames) < start + length:
            return None
        if opcode == 0x8:
            return struct.unpack("!H", frames[start : start + 2])[0] if length >= 2 else 1005
        frames = frames[start + length :]
    return None


def upgrade(server: Server, *headers: str, app: str | None = None, after: bytes = b"") -> bytes:
    head = [f"GET /message/ws?app={app or server.app_id} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + after


VALID = ("Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13")
CASES = {
    "version 99": (VALID[0], VALID[1], VALID[2], "Sec-WebSocket-Version: 99"),
    "no key": (VALID[0], VALID[1], VALID[3]),
    "a key that is not base64": (VALID[0], VALID[1], "Sec-WebSocket-Key: abc", VALID[3]),
    "a key of the wrong length": (VALID[0], VALID[1], "Sec-WebSocket-Key: c2hvcnQ=", VALID[3]),
    "two keys": (*VALID, f"Sec-WebSocket-Key: {KEY}"),
    "no version": VALID[:3],
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_malformed_handshake_gets_a_400_and_one_line(
    start_server: ServerFactory, server_log: ServerLog, case: str
) -> None:
    server = await start_server(metrics_token=METRICS_TOKEN)
    server_log.attach()
    answer = await exchange(server, upgrade(server, *CASES[case]))
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"Failed to open a WebSocket connection" in answer
    assert server_log.said() == ["connection rejected (400 Bad Request)"]
    server_log.assert_no_traceback()
    # At DEBUG what was wrong is said too, on one line.
    (reason,) = [line for line in server_log.said(logging.DEBUG) if line.startswith("! ")]
    assert "\n" not in reason and "Sec-WebSocket-" in reason


@pytest.mark.parametrize(
    ("headers", "status", "said"),
    [
        # Not an upgrade: a plain GET of a path that takes WebSocket connections only.
        (("Upgrade: websocket", "Connection: keep-alive", VALID[2], VALID[3]), 404, []),
        # An upgrade to something else (curl --http2 asks for h2c): uvicorn says so once.
        (("Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings", "HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA"), 404,
         ["Unsupported upgrade request."]),
        # Not HTTP after the headers it recognised.
        ((*VALID, "this line is no header"), 400, ["Invalid HTTP request received."]),
    ],
)  # fmt: skip
async def test_what_is_no_websocket_upgrade_gets_a_plain_http_answer(
    start_server: ServerFactory, server_log: ServerLog, headers: tuple[str, ...], status: int, said: list[str]
) -> None:
    server = await start_server(metrics_token=METRICS_TOKEN)
    server_log.attach()
    answer = await exchange(server, upgrade(server, *headers))
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer
    if status == 404:  # bfstream's answer, in its documented error shape
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == 404
    assert server_log.said() == said
    server_log.assert_no_traceback()


async def test_garbage_after_the_handshake_gets_a_protocol_error_close(
    start_server: ServerFactory, server_log: ServerLog
) -> None:
    server = await start_server(metrics_token=METRICS_TOKEN)
    server_log.attach()
    # Bytes sent along with the upgrade, before the 101, are dropped by uvicorn; bytes after it are
    # read as frames, and these are none (no mask, reserved bits set).
    request = upgrade(server, *VALID, after=b"\x00\xffgarbage\r\n\r\n")
    answer = await exchange(server, request, then=b"hello there\r\n")
    assert answer.startswith(b"HTTP/1.1 101 "), answer
    assert close_code(answer) == 1002
    await done_with_websockets(server, server_log, accepted=1)
    assert server_log.said(logging.WARNING) == []
    server_log.assert_no_traceback()


@pytest.mark.parametrize("known", [True, False], ids=["app", "unknown app"])
async def test_a_client_gone_before_the_server_answers_is_no_server_error(
    start_server: ServerFactory, server_log: ServerLog, known: bool
) -> None:
    """The server accepts, then (unknown app) closes with 4404; a client that left at once is not
    there for either, which is nothing to log a traceback for."""
    server = await start_server(metrics_token=METRICS_TOKEN)
    server_log.attach()
    for _ in range(3):
        await exchange(server, upgrade(server, *VALID, app=None if known else "app_unknown"), abort=True)
    await done_with_websockets(server, server_log, accepted=3)  # they did get that far
    assert server_log.said(logging.WARNING) == []
    server_log.assert_no_traceback()
