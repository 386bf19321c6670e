"""Fan-out benchmark: how many messages per second the in-memory broker delivers to N subscribers of one channel.

A. end to end over WebSocket: ``bfstream serve`` in a SUBPROCESS (own core, own loop) on a temp data dir,
   N ``websockets`` clients joined to channel ``bench``, one pooled httpx client POSTing M messages of about
   ``--size`` payload bytes to /message/sendmessage one after the other. Elapsed = first POST sent -> last
   subscriber has the last message; latency = a message's POST sent -> first / last subscriber has it. Every
   client must get offsets 1..M in order. Clients and publisher share this process's loop (uvloop, like the
   server), so their CPU time is in the figures: the CPU line says which side was busy.
B. broker+hub only, in process: ``Hub(MemoryBroker())``, N listeners that only count, M ``hub.publish``
   calls; elapsed = until every listener has every message. Best and median of ``ROUNDS`` rounds.

Run from the repo root:  .venv/bin/python bench/fanout.py [--subscribers 1000] [--messages 200] [--size 200]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvloop  # noqa: E402  (uvicorn[standard] brings it; the server runs on it too)
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from bfstream.messaging.broker import Publication  # noqa: E402
from bfstream.messaging.brokers.memory import MemoryBroker  # noqa: E402
from bfstream.messaging.hub import Hub  # noqa: E402

TIMEOUT = 120.0
BATCH = 100  # clients connected at once
ROUNDS = 5  # in-process rounds
PREFIX = '{"op":"message","channel":"bench","offset":'  # how the server starts a message frame (protocol.py)


class Run:
    """What all subscribers share: per offset, receipt time at the first and at the last subscriber."""

    def __init__(self, n: int, m: int) -> None:
        self.m, self.remaining, self.done = m, n, asyncio.Event()
        self.first, self.last = [0.0] * (m + 1), [0.0] * (m + 1)

    def finished(self) -> None:
        self.remaining -= 1
        if not self.remaining:
            self.done.set()


@dataclass(slots=True)
class Subscriber:
    conn: ClientConnection
    count: int = 0
    in_order: bool = True
    last_at: float = 0.0
    others: int = 0  # frames other than messages (errors...)

    async def read(self, run: Run) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.conn:
                now = time.perf_counter()
                if isinstance(raw, str) and raw.startswith(PREFIX):
                    offset = int(raw[len(PREFIX) : raw.index(",", len(PREFIX))])
                elif (frame := json.loads(raw)).get("op") == "message":
                    offset = frame["offset"]
                else:
                    self.others += 1
                    continue
                self.count += 1
                self.in_order &= offset == self.count
                if 0 < offset <= run.m:
                    run.first[offset] = run.first[offset] or now
                    run.last[offset] = now
                self.last_at = now
                if self.count == run.m:
                    run.finished()
        if self.count < run.m:
            run.finished()  # closed early: nothing more will come


async def subscribe(ws_url: str) -> Subscriber:
    conn = await connect(ws_url, max_queue=None)
    hello = json.loads(await asyncio.wait_for(conn.recv(), 10))
    await conn.send(json.dumps({"op": "join", "channel": "bench", "id": 1}))
    joined = json.loads(await asyncio.wait_for(conn.recv(), 10))
    assert (hello["op"], joined["op"]) == ("hello", "joined"), (hello, joined)
    return Subscriber(conn)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ms(values: list[float]) -> str:
    p99 = statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else values[0]
    return f"median {statistics.median(values) * 1000:8.2f} ms   p99 {p99 * 1000:8.2f} ms"


def line(label: str, text: str) -> None:
    print(f"  {label:<48} {text}")


async def end_to_end(
    base: str, app: dict[str, str], pid: int, subs: list[Subscriber], args: argparse.Namespace
) -> None:
    n, m = args.subscribers, args.messages
    t0 = time.perf_counter()
    for i in range(0, n, BATCH):
        url = f"{base.replace('http://', 'ws://')}/message/ws?app={app['appId']}"
        batch = await asyncio.gather(*(subscribe(url) for _ in range(min(BATCH, n - i))), return_exceptions=True)
        subs += [s for s in batch if isinstance(s, Subscriber)]
        for failure in (s for s in batch if isinstance(s, BaseException)):
            raise RuntimeError(f"connecting subscriber {len(subs) + 1} failed: {failure!r}") from failure
    print(f"end to end over WebSocket ({n} subscribers connected and joined in {time.perf_counter() - t0:.2f} s)")
    run = Run(n, m)
    readers = [asyncio.create_task(s.read(run)) for s in subs]
    sent = [0.0] * (m + 1)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        cpu = (cpu_seconds(pid), time.process_time())
        for k in range(1, m + 1):
            message = {"actions": [{"action": "bench", "options": {"k": k, "pad": "x" * args.size}}]}
            body: dict[str, Any] = {"apiKey": app["apiKey"], "channels": ["bench"], "message": message}
            sent[k] = time.perf_counter()
            response = await http.post("/message/sendmessage", json=body)
            if response.status_code != 201:
                raise RuntimeError(f"POST /message/sendmessage -> {response.status_code}: {response.text}")
    posted = time.perf_counter() - sent[1]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run.done.wait(), 30)
    cpu = (cpu_seconds(pid) - cpu[0], time.process_time() - cpu[1])
    if not run.done.is_set():
        print(f"  !!!!! {run.remaining} subscribers still short of {m} messages 30 s after the last POST")
    await asyncio.sleep(0.2)  # frames past the M-th would show up as a count above M
    for reader in readers:
        reader.cancel()
    elapsed = max(s.last_at for s in subs) - sent[1]
    total = sum(s.count for s in subs)
    line(f"deliveries ({m} x {n} = {m * n} expected):", f"{total} in {elapsed:.3f} s = {total / elapsed:9.0f} /s")
    line("messages (each to every subscriber):", f"{m / elapsed:9.1f} /s   (the {m} POSTs took {posted:.3f} s)")
    if all(run.last[1:]):
        line("latency POST sent -> first subscriber:", ms([run.first[k] - sent[k] for k in range(1, m + 1)]))
        line("latency POST sent -> last subscriber:", ms([run.last[k] - sent[k] for k in range(1, m + 1)]))
    line("CPU, first POST to end:", f"server {cpu[0]:.2f} s, clients+publisher {cpu[1]:.2f} s (of {elapsed:.2f} s)")
    bad, others = [s for s in subs if s.count != m or not s.in_order], sum(s.others for s in subs)
    counts, codes = collections.Counter(s.count for s in bad), collections.Counter(s.conn.close_code for s in bad)
    print(
        f"  !!!!! {len(bad)} of {n} subscribers did NOT get exactly {m} messages with offsets 1..{m} in order "
        f"(counts {sorted(counts.items())[:5]}, close codes {dict(codes)}, other frames {others}) !!!!!"
        if bad or others
        else f"  all {n} subscribers got exactly {m} messages, offsets 1..{m} in order"
    )


class Listener:
    user = None

    def __init__(self, run: Run) -> None:
        self.run, self.count = run, 0

    def deliver(self, channel: str, publication: Publication, frame: str) -> None:
        self.count += 1
        if self.count == self.run.m:
            self.run.finished()


async def in_process(n: int, m: int, size: int) -> None:
    data = json.dumps({"actions": [{"action": "bench", "options": {"k": 0, "pad": "x" * size}}]})
    rates = []
    for _ in range(ROUNDS):
        hub, run = Hub(MemoryBroker()), Run(n, m)
        await hub.start()
        try:
            listeners = [Listener(run) for _ in range(n)]
            for listener in listeners:
                await hub.join(listener, "app/bench")
            start = time.perf_counter()
            for _ in range(m):
                await hub.publish("app/bench", data)
            await asyncio.wait_for(run.done.wait(), 30)
            rates.append(n * m / (time.perf_counter() - start))
            assert all(x.count == m for x in listeners)
        finally:
            await hub.stop()
    print(f"broker+hub only, in process (no sockets; {ROUNDS} rounds)")
    line(f"deliveries ({m} x {n}):", f"best {max(rates):9.0f} /s   median {statistics.median(rates):9.0f} /s")


async def bench(server: subprocess.Popen[bytes], base: str, app: dict[str, str], args: argparse.Namespace) -> None:
    subs: list[Subscriber] = []
    try:
        async with asyncio.timeout(TIMEOUT), httpx.AsyncClient() as http:
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"server exited with {server.returncode}")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(base + "/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
            await end_to_end(base, app, server.pid, subs, args)
            await in_process(args.subscribers, args.messages, args.size)
    finally:
        await asyncio.gather(*(s.conn.close() for s in subs), return_exceptions=True)


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bfstream-fanout-") as tmp:
        env, cli = {**os.environ, "BFSTREAM_LOG_LEVEL": "warning"}, [sys.executable, "-m", "bfstream.cli"]
        created = subprocess.run(
            [*cli, "apps", "create", "bench", "--json", "--data-dir", tmp], env=env, cwd=ROOT, capture_output=True
        )
        if created.returncode:
            raise SystemExit(f"bfstream apps create failed: {created.stderr.decode()}")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            serve = [*cli, "serve", "--port", str(port), "--data-dir", tmp]
            server = subprocess.Popen(serve, env=env, cwd=ROOT, stdout=out, stderr=out)
        try:
            uvloop.run(bench(server, f"http://127.0.0.1:{port}", json.loads(created.stdout), args))
        except TimeoutError:
            print(f"!!!!! TIMED OUT after {TIMEOUT:.0f} s", file=sys.stderr)
            return 1
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            if text := log.read_text(errors="replace").strip():
                print(f"server output (exit code {server.returncode}):\n{text[-3000:]}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="bfstream fan-out benchmark")
    parser.add_argument("--subscribers", type=int, default=1000, help="WebSocket clients on one channel (1000)")
    parser.add_argument("--messages", type=int, default=200, help="messages published (200)")
    parser.add_argument("--size", type=int, default=200, help="payload bytes per message (200)")
    parsed = parser.parse_args()
    if min(parsed.subscribers, parsed.messages) < 1 or parsed.size < 0:
        parser.error("--subscribers and --messages must be at least 1, --size at least 0")
    if (limit := resource.getrlimit(resource.RLIMIT_NOFILE)[0]) < parsed.subscribers + 100:
        parser.error(f"ulimit -n is {limit}: raise it to at least {parsed.subscribers + 100} for this many clients")
    print(
        f"python {platform.python_version()} ({sys.implementation.name}), cpus {os.cpu_count()}, client loop uvloop, "
        f"subscribers {parsed.subscribers}, messages {parsed.messages}, size {parsed.size}"
    )
    sys.exit(main(parsed))
