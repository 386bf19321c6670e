"""Fan-out benchmark: how many messages per second the in-memory broker delivers to N subscribers of one channel.

A. end to end over WebSocket: ``bfstream apps create`` into a temp data dir, then ``bfstream serve`` in a
   SUBPROCESS (its own core and event loop), N ``websockets`` clients joined to channel ``bench`` and one
   pooled httpx client POSTing M messages of about ``--size`` payload bytes to /message/sendmessage, back to
   back. Elapsed = from sending the first POST until the last subscriber has the last message. Latency = from
   sending a message's POST until the first / the last subscriber has it. Every client must get offsets 1..M
   in order. The clients and the publisher share this process's loop, so their CPU time is in the figures.
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
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from bfstream.messaging.broker import Publication  # noqa: E402
from bfstream.messaging.brokers.memory import MemoryBroker  # noqa: E402
from bfstream.messaging.hub import Hub  # noqa: E402

TIMEOUT = 120.0
BATCH = 100  # clients connected at once
ROUNDS = 5  # in-process rounds
CHANNEL = "bench"
PREFIX = '{"op":"message","channel":"bench","offset":'  # how the server starts a message frame (protocol.py)
WIDTH = 52


@dataclass(slots=True)
class Subscriber:
    conn: ClientConnection
    count: int = 0
    in_order: bool = True
    last_at: float = 0.0
    others: int = 0  # frames other than messages (errors...)


class Run:
    """What all subscribers share: per offset, receipt time at the first and the last subscriber."""

    def __init__(self, n: int, m: int) -> None:
        self.m, self.remaining, self.done = m, n, asyncio.Event()
        self.first, self.last = [0.0] * (m + 1), [0.0] * (m + 1)

    def finished(self) -> None:
        self.remaining -= 1
        if not self.remaining:
            self.done.set()


async def read(sub: Subscriber, run: Run) -> None:
    try:
        async for raw in sub.conn:
            now = time.perf_counter()
            if isinstance(raw, str) and raw.startswith(PREFIX):
                offset = int(raw[len(PREFIX) : raw.index(",", len(PREFIX))])
            else:
                frame = json.loads(raw)
                if frame.get("op") != "message":
                    sub.others += 1
                    continue
                offset = frame["offset"]
            sub.count += 1
            sub.in_order &= offset == sub.count
            if 0 < offset <= run.m:
                run.first[offset] = run.first[offset] or now
                run.last[offset] = now
            sub.last_at = now
            if sub.count == run.m:
                run.finished()
    except ConnectionClosed:
        pass
    if sub.count < run.m:
        run.finished()  # closed early: nothing more will come


async def subscribe(ws_url: str) -> Subscriber:
    conn = await connect(ws_url, max_queue=None)
    try:
        hello = json.loads(await asyncio.wait_for(conn.recv(), 10))
        assert hello["op"] == "hello", hello
        await conn.send(json.dumps({"op": "join", "channel": CHANNEL, "id": 1}))
        joined = json.loads(await asyncio.wait_for(conn.recv(), 10))
        assert joined["op"] == "joined", joined
    except BaseException:
        await conn.close()
        raise
    return Subscriber(conn)


def ms(values: list[float]) -> str:
    p99 = statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else values[0]
    return f"median {statistics.median(values) * 1000:8.2f} ms   p99 {p99 * 1000:8.2f} ms"


def line(label: str, text: str) -> None:
    print(f"  {label:<{WIDTH}} {text}")


async def end_to_end(base: str, app_id: str, api_key: str, subs: list[Subscriber], args: argparse.Namespace) -> None:
    n, m = args.subscribers, args.messages
    ws_url = f"{base.replace('http://', 'ws://')}/message/ws?app={app_id}"
    t0 = time.perf_counter()
    for i in range(0, n, BATCH):
        batch = await asyncio.gather(*(subscribe(ws_url) for _ in range(min(BATCH, n - i))), return_exceptions=True)
        subs += [s for s in batch if isinstance(s, Subscriber)]
        for failure in (s for s in batch if isinstance(s, BaseException)):
            raise RuntimeError(f"connecting subscriber {len(subs) + 1} failed: {failure!r}") from failure
    print(f"end to end over WebSocket ({n} subscribers connected and joined in {time.perf_counter() - t0:.2f} s)")
    run = Run(n, m)
    readers = [asyncio.create_task(read(s, run)) for s in subs]
    body: dict[str, Any] = {"apiKey": api_key, "channels": [CHANNEL], "message": {"actions": []}}
    sent = [0.0] * (m + 1)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        for k in range(1, m + 1):
            body["message"] = {"actions": [{"action": "bench", "options": {"k": k, "pad": "x" * args.size}}]}
            sent[k] = time.perf_counter()
            response = await http.post("/message/sendmessage", json=body)
            if response.status_code != 201:
                raise RuntimeError(f"POST /message/sendmessage -> {response.status_code}: {response.text}")
        posted = time.perf_counter() - sent[1]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.done.wait(), 30)
        if not run.done.is_set():
            print(f"  !!!!! {run.remaining} subscribers still short of {m} messages 30 s after the last POST")
    await asyncio.sleep(0.2)  # frames past the M-th would show up as a count above M
    for reader in readers:
        reader.cancel()
    elapsed = max(s.last_at for s in subs) - sent[1]
    total = sum(s.count for s in subs)
    line(f"deliveries ({m} x {n} expected {m * n}):", f"{total} in {elapsed:.3f} s = {total / elapsed:10.0f} /s")
    line("messages (each to every subscriber):", f"{m / elapsed:10.1f} /s   (the {m} POSTs took {posted:.3f} s)")
    if all(run.last[1:]):
        line("latency POST sent -> first subscriber:", ms([run.first[k] - sent[k] for k in range(1, m + 1)]))
        line("latency POST sent -> last subscriber:", ms([run.last[k] - sent[k] for k in range(1, m + 1)]))
    bad = [s for s in subs if s.count != m or not s.in_order]
    if bad or any(s.others for s in subs):
        codes = collections.Counter(s.conn.close_code for s in bad)
        print(
            f"  !!!!! {len(bad)} of {n} subscribers did NOT get exactly {m} messages with offsets 1..{m} in order "
            f"(counts {sorted(collections.Counter(s.count for s in bad).items())[:5]}, close codes {dict(codes)}, "
            f"other frames {sum(s.others for s in subs)}) !!!!!"
        )
    else:
        print(f"  all {n} subscribers got exactly {m} messages, offsets 1..{m} in order")


class CountingListener:
    __slots__ = ("count", "tally")
    user = None

    def __init__(self, tally: list[int], done: asyncio.Event) -> None:
        self.count, self.tally = 0, (tally, done)

    def deliver(self, publication: Publication, frame: str) -> None:
        self.count += 1
        tally, done = self.tally
        tally[0] -= 1
        if not tally[0]:
            done.set()


async def in_process(args: argparse.Namespace) -> None:
    n, m = args.subscribers, args.messages
    data = json.dumps({"actions": [{"action": "bench", "options": {"pad": "x" * args.size}}]}, separators=(",", ":"))
    rates = []
    for _ in range(ROUNDS):
        hub, tally, done = Hub(MemoryBroker()), [n * m], asyncio.Event()
        await hub.start()
        try:
            listeners = [CountingListener(tally, done) for _ in range(n)]
            for listener in listeners:
                await hub.join(listener, "app/bench")
            start = time.perf_counter()
            for _ in range(m):
                await hub.publish("app/bench", data)
            await asyncio.wait_for(done.wait(), 30)
            rates.append(n * m / (time.perf_counter() - start))
            assert all(x.count == m for x in listeners)
        finally:
            await hub.stop()
    print(f"broker+hub only, in process (no sockets, no encoding per listener, {ROUNDS} rounds)")
    line(f"deliveries ({m} x {n}):", f"best {max(rates):10.0f} /s   median {statistics.median(rates):10.0f} /s")


async def bench(server: subprocess.Popen[bytes], base: str, app: dict[str, str], args: argparse.Namespace) -> None:
    subs: list[Subscriber] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            async with httpx.AsyncClient() as http:
                while True:
                    if server.poll() is not None:
                        raise RuntimeError(f"server exited with {server.returncode}")
                    try:
                        if (await http.get(base + "/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)
            await end_to_end(base, app["appId"], app["apiKey"], subs, args)
            await in_process(args)
    finally:
        await asyncio.gather(*(s.conn.close() for s in subs), return_exceptions=True)


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bfstream-fanout-") as tmp:
        env = {**os.environ, "BFSTREAM_LOG_LEVEL": "warning"}
        cli = [sys.executable, "-m", "bfstream.cli"]
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
            server = subprocess.Popen(
                [*cli, "serve", "--port", str(port), "--data-dir", tmp], env=env, cwd=ROOT, stdout=out, stderr=out
            )
        try:
            asyncio.run(bench(server, f"http://127.0.0.1:{port}", json.loads(created.stdout), args))
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
                print("server output:\n" + text[-3000:])
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="bfstream fan-out benchmark")
    parser.add_argument("--subscribers", type=int, default=1000, help="WebSocket clients on one channel (1000)")
    parser.add_argument("--messages", type=int, default=200, help="messages published (200)")
    parser.add_argument("--size", type=int, default=200, help="payload bytes per message (200)")
    parsed = parser.parse_args()
    if min(parsed.subscribers, parsed.messages) < 1 or parsed.size < 0:
        parser.error("--subscribers and --messages must be at least 1, --size at least 0")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < parsed.subscribers + 100:
        if hard != resource.RLIM_INFINITY and hard < parsed.subscribers + 100:
            parser.error(f"ulimit -n is {soft} (hard {hard}): too low for {parsed.subscribers} subscribers")
        resource.setrlimit(resource.RLIMIT_NOFILE, (parsed.subscribers + 100, hard))
    print(
        f"python {platform.python_version()} ({sys.implementation.name}), cpus {os.cpu_count()}, "
        f"subscribers {parsed.subscribers}, messages {parsed.messages}, size {parsed.size}"
    )
    sys.exit(main(parsed))
