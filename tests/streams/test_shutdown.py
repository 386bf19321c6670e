"""Restart and shutdown of a real ``bfstream serve`` process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServeProcess

pytestmark = pytest.mark.anyio

WORDS = " ".join(f"w{i}" for i in range(40))


def echo_body(api_key: str) -> dict:
    return {
        "apiKey": api_key,
        "channels": ["anonymous"],
        "actionName": "onStream",
        "service": "echo",
        "payload": {"stream": True, "model": "echo", "messages": [{"role": "user", "content": WORDS}]},
    }


async def test_sigkill_mid_stream_leaves_the_record_interrupted(tmp_path: Path) -> None:
    server = await ServeProcess.start(tmp_path, BFSTREAM_SERVICES__ECHO__DELAY_MS="100")
    async with httpx.AsyncClient() as http:
        created = await http.post(server.url + "/stream/create", json=echo_body(server.api_key))
        stream_id = created.json()["streamId"]
        await asyncio.sleep(1.5)  # long enough for the running text to have been saved once
        server.proc.send_signal(signal.SIGKILL)
        assert await server.proc.wait() == -signal.SIGKILL

        restarted = await ServeProcess.start(tmp_path)
        try:
            status = await http.post(
                restarted.url + "/stream/status", json={"apiKey": server.api_key, "streamId": stream_id}
            )
            assert status.status_code == 200
            record = status.json()
            assert record["status"] == "interrupted"
            assert record["text"] and WORDS.startswith(record["text"])  # the answer as far as it was saved
        finally:
            await restarted.stop()
    listing = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bfstream.cli", "streams", "list", "--json", "--data-dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, env=os.environ,
    )  # fmt: skip
    out, _ = await listing.communicate()
    assert [(r["streamId"], r["status"]) for r in json.loads(out)] == [(stream_id, "interrupted")]


async def test_sigterm_lets_running_streams_finish_then_exits_0(tmp_path: Path) -> None:
    server = await ServeProcess.start(
        tmp_path, BFSTREAM_SERVICES__ECHO__DELAY_MS="25", BFSTREAM_STREAMS__DRAIN_SECONDS="10"
    )
    client = await server.ws(server.app_id, "anonymous")
    async with httpx.AsyncClient() as http:
        created = await http.post(server.url + "/stream/create", json=echo_body(server.api_key))
        assert created.status_code == 200
        await asyncio.sleep(0.2)  # about a quarter of the way through
        server.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(5):  # draining shows on the health check, for load balancers
            while (health := await http.get(server.url + "/healthz")).status_code == 200:
                await asyncio.sleep(0.01)
        assert health.status_code == 503 and health.json()["status"] == "draining"
        late = await http.post(server.url + "/stream/create", json=echo_body(server.api_key))
        assert late.status_code == 503 and late.json()["error"]["type"] == "shutting_down"
    events = await client.stream_events()
    assert events[-1]["finish_reason"] == "stop" and events[-1]["text"] == WORDS
    assert await asyncio.wait_for(server.proc.wait(), 15) == 0
    # bfstream's own log lines come out at the log level, formatted as uvicorn's (found by a review:
    # they reached no handler, and only warnings came out, bare).
    assert "INFO:     draining: no new streams; 1 running get up to 10 s" in server.output


async def test_streams_past_the_drain_time_end_with_error(tmp_path: Path) -> None:
    server = await ServeProcess.start(
        tmp_path, BFSTREAM_SERVICES__ECHO__DELAY_MS="200", BFSTREAM_STREAMS__DRAIN_SECONDS="0.3"
    )
    client = await server.ws(server.app_id, "anonymous")
    async with httpx.AsyncClient() as http:
        created = await http.post(server.url + "/stream/create", json=echo_body(server.api_key))
        stream_id = created.json()["streamId"]
    await asyncio.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)
    events = await client.stream_events()
    assert [e["type"] for e in events][-2:] == ["error", "end"]
    assert events[-2]["error"]["code"] == 503
    assert await asyncio.wait_for(server.proc.wait(), 15) == 0
    restarted = await ServeProcess.start(tmp_path)
    try:
        async with httpx.AsyncClient() as http:
            body = {"apiKey": server.api_key, "streamId": stream_id}
            assert (await http.post(restarted.url + "/stream/status", json=body)).json()["status"] == "interrupted"
    finally:
        await restarted.stop()


async def test_sigterm_ends_open_event_streams(tmp_path: Path) -> None:
    server = await ServeProcess.start(tmp_path)
    async with httpx.AsyncClient(timeout=10) as http:
        params = {"app": server.app_id, "channel": "news"}
        async with http.stream("GET", server.url + "/message/sse", params=params) as sse:
            lines = sse.aiter_lines()
            assert await anext(lines) == "event: hello"
            server.proc.send_signal(signal.SIGTERM)
            asked = time.monotonic()
            rest = [line async for line in lines]  # ends once the server closes the stream
    assert any(line.startswith("event: joined") for line in rest)
    assert await asyncio.wait_for(server.proc.wait(), 10) == 0
    # Well before uvicorn's 5 s backstop would cut the open response.
    assert time.monotonic() - asked < 2
