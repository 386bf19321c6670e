"""Raw sockets against a real server: request headers that never finish are cut (slowloris), and one
client address holds a bounded number of sockets (bfstream/api/sockets.py).

Linux routes all of 127.0.0.0/8 to loopback, so a client binding 127.0.0.2 is another address to the
server; 127.0.0.1 itself is a trusted proxy by uvicorn's default and is never counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect

from bfstream.api.app import server_config
from bfstream.config import load_settings
from tests.conftest import GENEROUS_RATES, ServerFactory

pytestmark = pytest.mark.anyio

GENEROUS = {name: {"rate": 1e6, "burst": 10**6} for name in GENEROUS_RATES}
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: bfstream\r\n\r\n"


@asynccontextmanager
async def serving(data_dir: Path, http: str, **settings: object) -> AsyncIterator[int]:
    """The server on uvicorn's ``http`` protocol (the conftest fixture's takes ``auto``); yields its port."""
    loaded = load_settings(data_dir=data_dir, create_first_app=False, **settings)
    config = server_config(loaded, host="127.0.0.1", port=0, http=http, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.005)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def open_raw(port: int, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def read_response(reader: asyncio.StreamReader, timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    """One whole HTTP/1.1 response with a Content-Length (every answer here has one)."""
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
        body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


async def read_to_eof(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything until the server closes; a reset counts as closed too."""
    data = b""
    async with asyncio.timeout(timeout):
        with contextlib.suppress(ConnectionError):  # a reset, or our own write side broken by the close
            while chunk := await reader.read(65536):
                data += chunk
    return data


def error_of(response: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


@pytest.mark.parametrize("http", ["httptools", "h11"])
async def test_unfinished_headers_are_cut_and_idle_keep_alive_is_not(tmp_path: Path, http: str) -> None:
    timeout = 0.5
    async with serving(tmp_path, http, limits={"header_timeout": timeout}) as port:
        silent = await open_raw(port)  # connects and sends nothing
        slow = await open_raw(port)
        slow[1].write(HEALTHZ[:10])  # a request line that never ends
        kept = await open_raw(port)
        kept[1].write(HEALTHZ)
        assert (await read_response(kept[0]))[0] == 200
        await asyncio.sleep(2 * timeout)  # idle between requests: uvicorn's keep-alive (5 s) governs that gap
        kept[1].write(HEALTHZ)
        assert (await read_response(kept[0]))[0] == 200
        started = time.monotonic()
        kept[1].write(HEALTHZ[:10])  # then a second request that never ends

        answers = await asyncio.gather(*(read_to_eof(r, 3 * timeout + 1) for r, _ in (silent, slow, kept)))
        assert time.monotonic() - started < timeout + 1
        for answer in answers:
            status, error = error_of(answer)
            assert status == 408 and error["type"] == "request_timeout" and error["code"] == 408, answer
        for _, writer in (silent, slow, kept):
            writer.close()


async def trickle_until_closed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
) -> tuple[float, bytes]:
    """Send a request's head one byte a second until the server closes; return (seconds held, answer)."""
    started = time.monotonic()
    sent = 0
    answer = b""
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(ConnectionError):
                writer.write(HEALTHZ[sent : sent + 1])
            sent += 1
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 1.0)
            except TimeoutError:
                continue  # still open: the next byte
            except ConnectionError:
                chunk = b""
            if not chunk:
                writer.close()
                return time.monotonic() - started, answer
            answer += chunk


async def test_300_slow_header_connections_are_all_closed_while_healthz_answers(
    start_server: ServerFactory,
) -> None:
    timeout, margin = 1.0, 1.5
    server = await start_server(limits={**GENEROUS, "header_timeout": timeout})
    port = int(server.url.rsplit(":", 1)[1])
    latencies: list[float] = []
    stop = asyncio.Event()

    async def probe() -> None:
        async with httpx.AsyncClient(timeout=5) as probe_client:
            while not stop.is_set():
                began = time.monotonic()
                response = await probe_client.get(server.url + "/healthz")
                latencies.append(time.monotonic() - began)
                assert response.status_code == 200
                await asyncio.sleep(0.05)

    async def fresh() -> tuple[float, bytes]:
        return await trickle_until_closed(*await open_raw(port), timeout + 5)

    async def after_a_request() -> tuple[float, bytes]:
        reader, writer = await open_raw(port)
        writer.write(HEALTHZ)
        assert (await read_response(reader))[0] == 200
        return await trickle_until_closed(reader, writer, timeout + 5)  # the keep-alive connection's next request

    prober = asyncio.create_task(probe())
    try:
        held = await asyncio.gather(*(fresh() for _ in range(200)), *(after_a_request() for _ in range(100)))
    finally:
        stop.set()
        await prober
    seconds = [s for s, _ in held]
    assert max(seconds) < timeout + margin, max(seconds)
    assert all(error_of(answer)[0] == 408 for _, answer in held)
    assert len(latencies) > 10 and max(latencies) < 0.5, max(latencies)
    print(f"\n300 slow-header sockets held at most {max(seconds):.2f} s; /healthz took at most {max(latencies):.3f} s")


async def test_one_address_holds_at_most_its_sockets(start_server: ServerFactory) -> None:
    server = await start_server(limits={**GENEROUS, "sockets_per_address": 3})
    port = int(server.url.rsplit(":", 1)[1])
    # WebSockets leave the socket count at their upgrade: connections_per_address counts them.
    sockets = [await connect(f"{server.ws_url}?app={server.app_id}", local_addr=("127.0.0.2", 0)) for _ in range(3)]
    for ws in sockets:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["op"] == "hello"
    held = [await open_raw(port, "127.0.0.2") for _ in range(3)]
    refused_reader, refused_writer = await open_raw(port, "127.0.0.2")
    status, headers, body = await read_response(refused_reader)
    assert status == 429 and int(headers["retry-after"]) >= 1
    error = json.loads(body)["error"]
    assert error["type"] == "rate_limited" and "At most 3 open sockets" in error["message"]
    assert await read_to_eof(refused_reader, 5) == b""
    refused_writer.close()

    # Other addresses are not affected, nor is the trusted loopback proxy (127.0.0.1).
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address="127.0.0.3")) as other:
        assert (await other.get(server.url + "/healthz")).status_code == 200
    assert (await server.http.get(server.url + "/healthz")).status_code == 200

    # A closed socket frees its place.
    held[0][1].close()
    async with asyncio.timeout(5):
        while True:
            reader, writer = await open_raw(port, "127.0.0.2")
            writer.write(HEALTHZ)
            status = (await read_response(reader))[0]
            writer.close()
            if status == 200:
                break
            assert status == 429  # until the server has seen the close
            await asyncio.sleep(0.02)
    for _, writer in held[1:]:
        writer.close()
    for ws in sockets:
        await ws.close()


@pytest.mark.parametrize("http", ["httptools", "h11"])
async def test_headers_past_their_byte_bound_are_refused_and_what_fits_is_served(tmp_path: Path, http: str) -> None:
    """Found by a black-box review: a 64 MB header was read whole (httptools bounds none), and eight
    such sockets from one address took the server from 70 to 515 MB. Past ``limits.max_header_bytes``
    the socket is answered and closed, whatever the protocol; a big header under it is served."""
    async with serving(tmp_path, http, limits={**GENEROUS, "max_header_bytes": 32 * 1024}) as port:
        reader, writer = await open_raw(port, "127.0.0.2")
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bfstream\r\nCookie: " + b"a" * 24_000 + b"\r\n\r\n")
        status, _, _ = await read_response(reader)
        assert status == 200  # a fat cookie fits

        reader, writer = await open_raw(port, "127.0.0.2")
        answered = asyncio.create_task(read_to_eof(reader, 10))  # read as it comes: the write side breaks
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bfstream\r\nX-Flood: ")
        sent = 0
        with contextlib.suppress(ConnectionError):
            while sent < 64 * 1024 * 1024 and not answered.done():  # the server must give up long before
                writer.write(b"a" * 65536)
                await asyncio.wait_for(writer.drain(), 5)
                sent += 65536
        answer = await answered
        assert sent < 4 * 1024 * 1024, sent  # cut within a few reads of the bound, not at the end
        status = int(answer.split()[1])
        if http == "httptools":
            assert error_of(answer) == (431, error_of(answer)[1]) and error_of(answer)[1]["type"] == "payload_too_large"
        else:  # h11 refuses a head past its bound by itself, as any malformed request: 400
            assert status == 400
        writer.close()
