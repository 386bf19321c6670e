"""One app's runaway provider costs another app's stream nothing (hardening issue).

App A's provider answers with one 20 MB ``data:`` line, read in 64 KB pieces; the stream must fail
at ``services.openai.max_line`` (4 Mi characters) with ``error`` + ``end``. Meanwhile app B's
provider sends a small delta every 10 ms, and B's listener must keep receiving them at that pace:
the gaps between its consecutive deltas during A's line have a p99 under 100 ms, and ``/healthz``
answers at once. A parser that rejoined the unfinished line at every read, as the one before
19c8c3e did (quadratic, and with no line limit), fails this: with it B's p99 gap was 220-430 ms,
/healthz took up to 0.9 s, and A's line went out whole as one 20 MB delta. With the linear parser
B's p99 is 12-17 ms, 30 ms with three busy processes on two cores.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.conftest import Server, WSClient, assert_well_formed, seed_body
from tests.fakes.openai_server import FakeOpenAI, StreamReply, chunk, sse

pytestmark = pytest.mark.anyio

LINE_BYTES = 20 * 1024 * 1024
PIECE = 64 * 1024  # what the server reads at a time (httpcore's read size)
A_PACE = 0.03  # seconds between A's pieces: the 4 Mi characters that fail it take about 2 s
B_PACE = 0.01  # seconds between B's deltas


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


async def runaway_line(started: asyncio.Event, started_at: list[float]) -> AsyncIterator[bytes]:
    """A's answer: a first ordinary delta, then one 20 MB ``data:`` line, 64 KB at a time."""
    yield sse(chunk({"role": "assistant", "content": "Hi"}))
    head = b'data: {"choices":[{"index":0,"delta":{"content":"'
    sent = 0
    while sent < LINE_BYTES:
        piece = head + b"z" * (PIECE - len(head)) if sent == 0 else b"z" * PIECE
        if sent == 0:
            started_at.append(time.perf_counter())
            started.set()
        yield piece
        sent += len(piece)
        await asyncio.sleep(A_PACE)
    yield b'"}}]}\n\n'


async def steady_deltas(parts: list[str], until: asyncio.Event) -> AsyncIterator[bytes]:
    """B's answer: a small delta every 10 ms, for as long as A's line lasts and a while after."""
    yield sse(chunk({"role": "assistant", "content": ""}))
    after = 0
    while after < 30:
        if until.is_set():
            after += 1
        parts.append(f"b{len(parts)} ")
        yield sse(chunk({"content": parts[-1]}))
        await asyncio.sleep(B_PACE)
    yield sse(chunk({}, finish_reason="stop"))
    yield sse("[DONE]")


async def read_stream(
    client: WSClient, arrivals: list[tuple[float, dict[str, Any]]], arrived: asyncio.Event | None = None
) -> None:
    """Every stream event as it arrives, with the time it did, until ``end``."""
    while True:
        frame = await client.recv(timeout=120)
        if frame["op"] == "message":
            options = frame["message"]["actions"][0]["options"]
            arrivals.append((time.perf_counter(), options))
            if arrived is not None:
                arrived.set()
            if options["type"] == "end":
                return


async def test_a_20_mb_line_fails_its_stream_and_another_apps_stream_keeps_its_pace(
    server: Server, fake_openai: FakeOpenAI
) -> None:
    # No frame size limit for A's listener: were the line let through, the test would say so below.
    a_conn = await connect(f"{server.ws_url}?app={server.app_id}", max_size=None)
    a_listener = WSClient(a_conn, json.loads(await asyncio.wait_for(a_conn.recv(), 5)))
    await a_listener.join("a")
    b_listener = await server.ws(app_id=server.other_app_id, channels=("b",))
    a_events: list[tuple[float, dict[str, Any]]] = []
    b_events: list[tuple[float, dict[str, Any]]] = []
    line_started, a_ended = asyncio.Event(), asyncio.Event()
    line_started_at: list[float] = []
    b_parts: list[str] = []

    # B first: its reply is taken from the fake's queue once its POST is answered.
    fake_openai.enqueue(StreamReply(steady_deltas(b_parts, a_ended), delay=0))
    b_arrived = asyncio.Event()
    b_reading = asyncio.create_task(read_stream(b_listener, b_events, b_arrived))
    b_body = {**seed_body(server), "apiKey": server.other_api_key, "channels": ["b"]}
    assert (await server.post("/stream/create", b_body)).status_code == 200
    async with asyncio.timeout(10):
        while len(b_events) < 20:  # B flows before A's line begins
            b_arrived.clear()
            await b_arrived.wait()

    fake_openai.enqueue(StreamReply(runaway_line(line_started, line_started_at), delay=0))
    a_reading = asyncio.create_task(read_stream(a_listener, a_events))
    a_body = {**seed_body(server), "channels": ["a"]}
    assert (await server.post("/stream/create", a_body)).status_code == 200

    # /healthz during A's line, asked each time B's listener gets something.
    health: list[float] = []

    async def probe_health() -> None:
        await line_started.wait()
        while not a_ended.is_set():
            b_arrived.clear()
            await b_arrived.wait()
            asked = time.perf_counter()
            answer = await server.http.get(server.url + "/healthz")
            health.append(time.perf_counter() - asked)
            assert answer.status_code == 200, answer.text

    probing = asyncio.create_task(probe_health())
    try:
        async with asyncio.timeout(120):
            await a_reading
    finally:
        a_ended.set()
    a_ended_at = a_events[-1][0]
    await asyncio.wait_for(probing, 10)
    await asyncio.wait_for(b_reading, 30)

    # B's pace during A's line: every gap between two deltas that overlaps it.
    (started_at,) = line_started_at
    times = [at for at, options in b_events if options["type"] == "delta"]
    gaps = [
        later - earlier for earlier, later in itertools.pairwise(times) if later > started_at and earlier < a_ended_at
    ]
    line_seconds = a_ended_at - started_at
    print(
        f"A's line: {line_seconds:.2f} s; B: {len(gaps)} gaps during it, p50 {sorted(gaps)[len(gaps) // 2] * 1e3:.1f}"
        f" ms, p99 {p99(gaps) * 1e3:.1f} ms, max {max(gaps) * 1e3:.1f} ms; /healthz: {len(health)} answers,"
        f" p99 {p99(health) * 1e3:.1f} ms, max {max(health) * 1e3:.1f} ms"
    )

    # B lost nothing.
    b = [options for _, options in b_events]
    assert_well_formed(b)
    assert [e["content"] for e in b if e["type"] == "delta"] == b_parts
    assert b[-1]["finish_reason"] == "stop" and b[-1]["text"] == "".join(b_parts)

    # B kept its pace, and the server answered at once, all through A's line.
    assert len(gaps) >= 50, f"A's line lasted {line_seconds:.2f} s: too short to measure anything"
    assert p99(gaps) < 0.1, sorted(gaps)[-10:]
    assert len(health) >= 20 and p99(health) < 0.1, sorted(health)[-10:]

    # A failed at the line limit, and said so.
    a = [options for _, options in a_events]
    assert_well_formed(a)
    types = [e["type"] for e in a]
    assert types == ["threadInfo", "delta", "error", "end"], types
    assert "longer than 4194304 characters" in a[2]["error"]["message"], a[2]
    assert a[-1]["finish_reason"] == "error" and a[-1]["text"] == "Hi"
