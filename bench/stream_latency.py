"""Stream relay benchmark: how fast bfstream turns OpenAI chunks into WebSocket frames.

Everything runs in one asyncio process (one event loop): a fake OpenAI server
(``tests/fakes/openai_server.py``), the real bfstream app on uvicorn (127.0.0.1, port 0, temp data dir)
and real ``websockets`` clients joined to channel ``bench``. Figures therefore include the clients' and the
fake's own CPU time on the same loop; compare runs against each other, not against production.

A. first-delta latency: the fake writes the role chunk and the first text chunk as one HTTP chunk (its
   ``first_byte_at`` marks the write), waits 50 ms, then sends the rest. Latency = the perf_counter() at which
   a client receives the first ``delta`` message frame minus that mark. Repeated ``--runs`` times.
B. relay throughput: one stream of ``--deltas`` deltas written by the fake as a single piece with no delay;
   elapsed = from sending POST /stream/create until every client has its ``end`` event. Run with one client,
   and again with ``--clients`` clients when that is more than one.

Run from the repo root:  .venv/bin/python bench/stream_latency.py [--runs N] [--deltas N] [--clients N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from bfstream.api.app import DrainingServer, server_config  # noqa: E402
from bfstream.config import load_settings  # noqa: E402
from bfstream.store.store import open_store  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI, StreamReply, text_stream  # noqa: E402

TIMEOUT = 60.0
WIDTH = 72  # label column
ACTION = "assistantReceiveResultsStream"
PAYLOAD: dict[str, Any] = {
    "apiKey": "sk-bench",
    "stream": True,
    "model": "gpt-4-turbo-preview",
    "messages": [{"role": "user", "content": "a joke"}],
}


@dataclass
class Received:
    first_delta_at: float  # perf_counter() when the first delta frame arrived (0.0: none)
    end_at: float
    frames: int  # message frames of this stream, end included
    deltas: int
    end: dict[str, Any]


async def read_stream(conn: ClientConnection) -> Received:
    """Read message frames until the stream's ``end`` event."""
    first = 0.0
    frames = deltas = 0
    while True:
        raw = await conn.recv()
        now = time.perf_counter()
        frame = json.loads(raw)
        if frame.get("op") != "message":
            continue
        frames += 1
        options = frame["message"]["actions"][0]["options"]
        if options["type"] == "delta":
            deltas += 1
            first = first or now
        elif options["type"] == "end":
            return Received(first, now, frames, deltas, options)
        elif options["type"] == "error":
            print(f"  !! error event: {options.get('error')}")


class Bench:
    def __init__(self, base_url: str, app_id: str, api_key: str, http: httpx.AsyncClient) -> None:
        self.base_url, self.app_id, self.api_key, self.http = base_url, app_id, api_key, http

    async def client(self, *channels: str) -> ClientConnection:
        conn = await connect(f"{self.base_url.replace('http://', 'ws://')}/message/ws?app={self.app_id}")
        hello = json.loads(await asyncio.wait_for(conn.recv(), 5))
        assert hello["op"] == "hello", hello
        for i, channel in enumerate(channels, 1):
            await conn.send(json.dumps({"op": "join", "channel": channel, "id": i}))
            reply = json.loads(await asyncio.wait_for(conn.recv(), 5))
            assert reply["op"] == "joined", reply
        return conn

    async def stream(self, channel: str, clients: list[ClientConnection]) -> tuple[float, list[Received]]:
        """POST one stream to ``channel``; return perf_counter() before the POST and what each client got."""
        readers = [asyncio.create_task(read_stream(c)) for c in clients]
        body: dict[str, Any] = {"apiKey": self.api_key, "channels": [channel], "actionName": ACTION}
        body.update(service="openAI", payload=PAYLOAD)
        sent = time.perf_counter()
        response = await self.http.post(self.base_url + "/stream/create", json=body)
        if response.status_code != 200:
            for reader in readers:
                reader.cancel()
            raise RuntimeError(f"POST /stream/create -> {response.status_code}: {response.text}")
        async with asyncio.timeout(TIMEOUT):
            received = await asyncio.gather(*readers)
        for reason in {r.end.get("finish_reason") for r in received} - {"stop"}:
            print(f"  !! stream ended with finish_reason={reason!r}")
        return sent, received


def split_after_first_text(body: bytes) -> list[bytes]:
    """[role chunk + first text chunk, everything else]: two SSE events end at the second blank line."""
    cut = body.index(b"\n\n", body.index(b"\n\n") + 2) + 2
    return [body[:cut], body[cut:]]


def summary(values_ms: list[float]) -> str:
    p90 = statistics.quantiles(values_ms, n=10, method="inclusive")[8] if len(values_ms) > 1 else values_ms[0]
    return (
        f"median {statistics.median(values_ms):7.2f} ms  p90 {p90:7.2f} ms  "
        f"min {min(values_ms):7.2f} ms  max {max(values_ms):7.2f} ms"
    )


async def measure_latency(
    bench: Bench, fake: FakeOpenAI, clients: list[ClientConnection], args: argparse.Namespace
) -> None:
    parts = [f"tok{i} " for i in range(args.deltas)]
    fastest: list[float] = []
    slowest: list[float] = []
    for _ in range(args.runs):
        fake.enqueue(StreamReply(split_after_first_text(text_stream(parts)), delay=0.05))
        marks = len(fake.first_byte_at)
        _, received = await bench.stream("bench", clients)
        assert len(fake.first_byte_at) == marks + 1 and all(r.deltas == args.deltas for r in received)
        arrivals = [r.first_delta_at - fake.first_byte_at[-1] for r in received]
        fastest.append(min(arrivals) * 1000)
        slowest.append(max(arrivals) * 1000)
    who = (
        ["ws client"] if len(clients) == 1 else [f"first of {len(clients)} clients", f"last of {len(clients)} clients"]
    )
    for name, values in zip(who, (fastest, slowest), strict=False):
        print(f"{f'first delta latency (fake first byte -> {name}), {args.runs} runs:':<{WIDTH}} {summary(values)}")


async def measure_throughput(
    bench: Bench, fake: FakeOpenAI, channel: str, clients: list[ClientConnection], d: int
) -> None:
    fake.enqueue(StreamReply([text_stream([f"tok{i} " for i in range(d)])], delay=0))
    sent, received = await bench.stream(channel, clients)
    elapsed = max(r.end_at for r in received) - sent
    assert all(r.deltas == d for r in received), [r.deltas for r in received]
    frames = sum(r.frames for r in received)
    label = f"relay throughput, {d} deltas -> {len(clients)} client{'s' * (len(clients) > 1)}:"
    print(
        f"{label:<{WIDTH}} {elapsed * 1000:8.1f} ms  {d / elapsed:10.0f} deltas/s per client  "
        f"{frames / elapsed:10.0f} frames/s total"
    )


async def main(args: argparse.Namespace) -> None:
    print(
        f"python {platform.python_version()} ({sys.implementation.name}), cpus {os.cpu_count()}, "
        f"uvicorn {uvicorn.__version__}, runs {args.runs}, deltas {args.deltas}, clients {args.clients}"
    )
    async with FakeOpenAI() as fake:
        os.environ["OPENAI_BASE_URL"] = fake.base_url
        with tempfile.TemporaryDirectory(prefix="bfstream-bench-") as tmp:
            settings = load_settings(data_dir=Path(tmp) / "data", log_level="warning")
            store = await open_store(settings.database_url, settings.data_dir)
            app, key = await store.create_app("bench")
            await store.close()
            # The product's own uvicorn settings (compression, pings), not uvicorn's defaults.
            server = DrainingServer(server_config(settings, host="127.0.0.1", port=0, log_level="warning"))
            task = asyncio.create_task(server.serve())
            http = httpx.AsyncClient(timeout=TIMEOUT)
            clients: list[ClientConnection] = []
            try:
                async with asyncio.timeout(10):
                    while not server.started:
                        if task.done():
                            task.result()
                        await asyncio.sleep(0.005)
                port = server.servers[0].sockets[0].getsockname()[1]
                bench = Bench(f"http://127.0.0.1:{port}", app.id, key, http)
                clients.append(await bench.client("bench", "solo"))
                clients += await asyncio.gather(*(bench.client("bench") for _ in range(args.clients - 1)))
                await measure_latency(bench, fake, clients, args)
                await measure_throughput(bench, fake, "solo", clients[:1], args.deltas)
                if args.clients > 1:
                    await measure_throughput(bench, fake, "bench", clients, args.deltas)
            finally:
                await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
                await http.aclose()
                server.should_exit = True
                await asyncio.wait_for(task, 10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="bfstream stream relay benchmark")
    parser.add_argument("--runs", type=int, default=30, help="first-delta latency runs (default 30)")
    parser.add_argument("--deltas", type=int, default=200, help="text deltas per stream (default 200)")
    parser.add_argument("--clients", type=int, default=1, help="WebSocket clients on channel bench (default 1)")
    parsed = parser.parse_args()
    if min(parsed.runs, parsed.deltas, parsed.clients) < 1:
        parser.error("--runs, --deltas and --clients must be at least 1")
    asyncio.run(main(parsed))
