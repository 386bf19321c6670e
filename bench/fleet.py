"""Fleet benchmark: what a second instance and Redis cost a channel's fan-out, against one instance on memory.

The same workload runs twice, each time on fresh ``bfstream serve`` SUBPROCESSES on free ports:

* ``memory``: ONE instance with the defaults (memory broker, SQLite in a temp data dir); the publisher
  POSTs to it and the subscribers are connected to it.
* ``redis``: TWO instances, A and B, sharing the machine's Redis (``BFSTREAM_BROKER_URL``, a key prefix of
  the run's own) and a throwaway PostgreSQL database (``BFSTREAM_DATABASE_URL``), as a fleet behind a load
  balancer would; the publisher POSTs to A, every subscriber is connected to B, so each message crosses Redis.

Workload: ``--subscribers`` WebSocket clients join channel ``bench``; ``--messages`` messages with a
payload of about ``--size`` bytes go to ``POST /message/sendmessage`` from ``--concurrency`` publishers
at once (each sends its next POST when its previous one is answered, or, with ``--rate``, when its
message is due), so the rate is not one request's round trip. The publishers speak HTTP/1.1 over
plain asyncio streams, one keep-alive connection each, not httpx: httpx costs this process more CPU
per POST than the server spends on it, and stalls some requests under concurrency (see ``RawHTTP``;
``--http httpx`` to compare). Subscribers connect ``--connect-at-once`` at a time. Each message
carries its sequence number ``n`` and ``t``, this process's
``perf_counter()`` just before its POST is sent; subscribers and publishers share this process (and
its uvloop loop), hence the clock. Printed, never asserted:

* delivered/s = deliveries (messages x subscribers) / (first POST sent -> last delivery)
* latency = a delivery's receipt time - its message's ``t``: median, p90, p99, max over ALL deliveries
* the POSTs' round trips (the publisher's side of where the time goes)
* CPU seconds from just before the first POST to the last delivery: each server (``/proc/<pid>/stat``), Redis
  (``INFO cpu``, the whole server, so other clients of that Redis count too) and this process (clients and
  publishers, which share the machine's cores with the servers: the CPU rows say who was busy)
* correctness: every subscriber got every message exactly once, offsets strictly increasing with no gap
  (one past its ``joined`` offset onwards), and the same message at the same offset as every other
  subscriber; any failure is a loud ``!!!!!`` line, not an exception.

Frames are only stamped and kept while the workload runs; they are parsed afterwards, so the clients'
JSON work is not in the figures. Before measuring, each publisher sends one POST to another channel,
so connections are open and the app key has been looked up once.

Cleanup: servers stopped (SIGTERM, then SIGKILL), the throwaway database dropped, the Redis keys under
the prefix deleted (SCAN + DEL). Every wait has a timeout. Inherited ``BFSTREAM_*`` variables are not
passed to the servers, so both runs see the defaults plus what this script sets. Does not use tests/:
the throwaway database is made here with asyncpg, as ``tests/services.py`` does.

Unpaced (the default), the publishers go as fast as the POSTs are answered. In the memory run one
event loop answers the POSTs and does the fan-out, so a busy fan-out slows the answers and with them
the publishers; in the redis run A answers once Redis has the message while B fans out, so nothing
holds the publishers to what B delivers and the latency is mostly B's backlog. ``--rate`` below
saturation shows the path's own latency.

Run from the repo root (about 10 s with the defaults):
  .venv/bin/python bench/fleet.py [--subscribers 100] [--messages 1000] [--size 200] [--concurrency 8]
      [--rate 0] [--http raw|httpx] [--connect-at-once 100] [--only memory|redis]
      [--redis-url redis://127.0.0.1:6379/0] [--database-url postgresql://postgres@127.0.0.1:5432/postgres]
(``--database-url`` is an admin connection: the run creates and drops its own database next to it.)
The figures are only as quiet as the machine: the first line prints its load average.
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
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import uvloop  # noqa: E402  (uvicorn[standard] brings it; the servers run on it too)
from redis.asyncio import Redis  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from bfstream.store.store import open_store  # noqa: E402

CHANNEL = "bench"
SEND_PATH = "/message/sendmessage"
FRAME_PREFIX = '{"op":"message","channel":"bench","offset":'  # how the server starts a message frame (protocol.py)
START_TIMEOUT = 20.0  # a server prints "Uvicorn running on" within this
CONNECT_TIMEOUT = 10.0  # per WebSocket handshake and each of its first two frames
POST_TIMEOUT = 30.0  # per HTTP request
DELIVERY_TIMEOUT = 30.0  # after the last POST is answered, for the last delivery
STOP_TIMEOUT = 10.0  # after SIGTERM, before SIGKILL
RUN_TIMEOUT = 180.0  # a whole run (one side of the table), whatever hangs
EXTRA_WAIT = 0.2  # after the last expected delivery: frames past it would show up as duplicates


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def process_cpu(pid: int) -> float:
    """utime + stime of one process, from /proc (psutil is not a dependency); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def client_cpu() -> float:
    """This process: subscribers and publishers (a probe like the others, hence async)."""
    return time.process_time()


@dataclass
class Server:
    """One ``bfstream serve`` subprocess; its output is read all along (a full pipe would block it) and kept."""

    name: str
    proc: asyncio.subprocess.Process
    port: int
    lines: list[str] = field(default_factory=list)
    drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    async def start(cls, name: str, data_dir: Path, env: dict[str, str]) -> Server:
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bfstream.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env, cwd=ROOT, limit=2**20,
        )  # fmt: skip
        server = cls(name, proc, port)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while not any("Uvicorn running on" in line for line in server.lines):
                    raw = await proc.stdout.readline()  # type: ignore[union-attr]
                    if not raw:
                        raise RuntimeError(f"server {name} exited at start:\n" + "".join(server.lines)[-3000:])
                    server.lines.append(raw.decode(errors="replace"))
        except BaseException:
            await server.stop()
            raise
        server.drain = asyncio.create_task(server._keep_reading())
        return server

    async def _keep_reading(self) -> None:
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            self.lines.append(raw.decode(errors="replace"))

    async def cpu(self) -> float:
        return process_cpu(self.proc.pid)

    async def stop(self) -> None:
        """SIGTERM (a clean drain: nothing is streaming), SIGKILL if it lingers; then the last output."""
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                self.proc.kill()
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
        if self.drain is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drain, STOP_TIMEOUT)

    def complaints(self) -> list[str]:
        """What it printed besides its banner and INFO lines (access log, connections): warnings, tracebacks."""
        banner = ("Created your first app", "  appId:", "  apiKey:", "Keep the apiKey", "Browsers connect to")
        return [line.rstrip() for line in self.lines if not line.startswith(("INFO:", *banner)) and line.strip()]


class Run:
    """What the subscribers of one run share: how many still wait for their last expected message."""

    def __init__(self, expected: int) -> None:
        self.expected, self.done = expected, asyncio.Event()
        self.subscribers: list[Subscriber] = []

    def expect(self, expected: int) -> None:
        """Fewer messages were accepted than planned: finish with what should come."""
        self.expected = expected
        self.check()

    def check(self) -> None:
        if all(s.count >= self.expected or s.closed for s in self.subscribers):
            self.done.set()


@dataclass(slots=True)
class Subscriber:
    """One WebSocket client: it stamps and keeps every frame while the workload runs, parsing comes later."""

    conn: ClientConnection
    joined_offset: int
    frames: list[tuple[float, str | bytes]] = field(default_factory=list)
    count: int = 0  # message frames of channel bench
    closed: bool = False

    async def read(self, run: Run) -> None:
        try:
            async for raw in self.conn:
                self.frames.append((time.perf_counter(), raw))
                if isinstance(raw, str) and raw.startswith(FRAME_PREFIX):
                    self.count += 1
                    if self.count == run.expected:
                        run.check()
        except ConnectionClosed:
            pass
        finally:
            self.closed = True  # nothing more will come
            run.check()


async def subscribe(ws_url: str) -> Subscriber:
    conn = await asyncio.wait_for(connect(ws_url, max_queue=None), CONNECT_TIMEOUT)
    try:
        hello = json.loads(await asyncio.wait_for(conn.recv(), CONNECT_TIMEOUT))
        await conn.send(json.dumps({"op": "join", "channel": CHANNEL, "id": 1}))
        joined = json.loads(await asyncio.wait_for(conn.recv(), CONNECT_TIMEOUT))
        if (hello.get("op"), joined.get("op")) != ("hello", "joined"):
            raise RuntimeError(f"unexpected first frames {hello} {joined}")
    except BaseException:
        await conn.close()
        raise
    return Subscriber(conn, int(joined["offset"]))


Post = Callable[[str, bytes], Awaitable[tuple[int, bytes]]]  # (path, JSON body) -> (status, response body)


class RawHTTP:
    """One keep-alive HTTP/1.1 connection, a request at a time: the default publisher, because httpx is
    what it would measure otherwise. On this machine httpx spends about 1.5 ms of CPU per POST (the
    server about 0.4 ms) and, with 8 requests in flight on its pool, holds a few of them 100-300 ms while
    the others go ahead: the publish rate and the latency tail were the client's. ``--http httpx`` shows it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        self.writer.write(f"{head}content-length: {len(body)}\r\n\r\n".encode() + body)
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
        if "content-length" not in headers:
            raise RuntimeError(f"response without content-length: {lines}")
        answer = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection") == "close":
            await self.close()
        return int(lines[0].split()[1]), answer

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


@contextlib.asynccontextmanager
async def http_clients(kind: str, port: int, count: int) -> AsyncIterator[list[Post]]:
    """``count`` ways to POST, one per publisher: own connections (raw), or one shared httpx pool of that size."""
    if kind == "raw":
        raws = [RawHTTP(port) for _ in range(count)]
        try:
            yield [raw.post for raw in raws]
        finally:
            await asyncio.gather(*(raw.close() for raw in raws), return_exceptions=True)
        return
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=POST_TIMEOUT, limits=limits) as http:

        async def post(path: str, body: bytes) -> tuple[int, bytes]:
            response = await http.post(path, content=body, headers={"content-type": "application/json"})
            return response.status_code, response.content

        yield [post] * count


@dataclass
class Result:
    """The figures of one run, and what went wrong in it."""

    label: str
    subscribers: int
    messages: int
    connect_s: float = 0.0
    deliveries: int = 0
    elapsed: float = 0.0  # first POST sent -> last delivery
    posting: float = 0.0  # first POST sent -> last POST answered
    latencies: list[float] = field(default_factory=list)
    rtts: list[float] = field(default_factory=list)  # POST round trips
    cpu: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    complaints: dict[str, list[str]] = field(default_factory=dict)


async def workload(
    label: str, publish_to: Server, subscribe_to: Server, app_id: str, api_key: str,
    cpu_probes: dict[str, Callable[[], Awaitable[float]]], args: argparse.Namespace,
) -> Result:  # fmt: skip
    """Connect the subscribers to ``subscribe_to``, POST the messages to ``publish_to``, then check and measure."""
    n, m = args.subscribers, args.messages
    result = Result(label, n, m)
    subs: list[Subscriber] = []
    readers: list[asyncio.Task[None]] = []
    try:
        t0 = time.perf_counter()
        ws_url = f"ws://127.0.0.1:{subscribe_to.port}/message/ws?app={app_id}"
        failures: list[BaseException] = []
        for i in range(0, n, args.connect_at_once):
            tries = (subscribe(ws_url) for _ in range(min(args.connect_at_once, n - i)))
            batch = await asyncio.gather(*tries, return_exceptions=True)
            subs += [s for s in batch if isinstance(s, Subscriber)]
            failures += [s for s in batch if isinstance(s, BaseException)]
        result.connect_s = time.perf_counter() - t0
        if failures:  # the run goes on with those that made it: the failure is a finding, not a reason to stop
            result.problems.append(f"{len(failures)} of {n} subscribers failed to connect or join: {failures[0]!r}")
            result.subscribers = n = len(subs)
            if not subs:
                raise RuntimeError(f"no subscriber could connect: {failures[0]!r}")
        run = Run(m)
        run.subscribers = subs
        async with http_clients(args.http, publish_to.port, args.concurrency) as posts:

            async def post(send: Post, channel: str, k: int, pad: str) -> float:
                options = {"n": k, "t": time.perf_counter(), "pad": pad}
                message = {"actions": [{"action": "bench", "options": options}]}
                body = {"apiKey": api_key, "channels": [channel], "message": message}
                async with asyncio.timeout(POST_TIMEOUT):
                    status, text = await send(SEND_PATH, json.dumps(body, separators=(",", ":")).encode())
                if status != 201:
                    raise RuntimeError(f"POST {SEND_PATH} -> {status}: {text[:300]!r}")
                return time.perf_counter() - options["t"]

            # Warm-up, on another channel: connections opened, first-request paths run once.
            await asyncio.gather(*(post(send, "warmup", -1, "") for send in posts))
            readers = [asyncio.create_task(s.read(run)) for s in subs]
            pad, todo, failed = "x" * args.size, iter(range(m)), []

            async def publisher(send: Post) -> None:
                for k in todo:  # shared: each worker takes the next number
                    if args.rate and (wait := first + k / args.rate - time.perf_counter()) > 0:
                        await asyncio.sleep(wait)  # paced: message k is due k/rate seconds after the first
                    try:
                        result.rtts.append(await post(send, CHANNEL, k, pad))
                    except Exception as e:
                        failed.append(f"message {k}: {e!r}")

            before = {name: await probe() for name, probe in cpu_probes.items()}
            first = time.perf_counter()
            await asyncio.gather(*(publisher(send) for send in posts))
            result.posting = time.perf_counter() - first
        if failed:
            result.problems.append(f"{len(failed)} POSTs failed, first: {failed[0]}")
            run.expect(m - len(failed))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.done.wait(), DELIVERY_TIMEOUT)
        after = {name: await probe() for name, probe in cpu_probes.items()}
        last = max((s.frames[-1][0] for s in subs if s.frames), default=first)
        if not run.done.is_set():
            short = sum(s.count < run.expected for s in subs)
            result.problems.append(f"{short} subscribers still short of {run.expected} messages "
                                   f"{DELIVERY_TIMEOUT:.0f} s after the last POST was answered")  # fmt: skip
        await asyncio.sleep(EXTRA_WAIT)
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.gather(*(s.conn.close() for s in subs), return_exceptions=True)
    result.elapsed = last - first
    result.cpu = {name: after[name] - before[name] for name in cpu_probes}
    check(result, subs)
    return result


def check(result: Result, subs: list[Subscriber]) -> None:
    """Parse what every subscriber got: latencies, and whether it is every message once, in offset order."""
    m = result.messages
    reference: list[int] | None = None  # message numbers in offset order, as the first subscriber saw them
    bad: collections.Counter[str] = collections.Counter()
    example: dict[str, str] = {}
    others = 0
    for i, sub in enumerate(subs):
        offsets, numbers = [], []
        for received, raw in sub.frames:
            frame = json.loads(raw)
            if frame.get("op") != "message" or frame.get("channel") != CHANNEL:
                others += 1
                continue
            options = frame["message"]["actions"][0]["options"]
            offsets.append(frame["offset"])
            numbers.append(options["n"])
            result.latencies.append(received - options["t"])
        result.deliveries += len(numbers)
        why = None
        if offsets != list(range(sub.joined_offset + 1, sub.joined_offset + 1 + len(offsets))):
            why = "offsets not strictly increasing by one from the joined offset"
        elif len(numbers) != m or sorted(numbers) != list(range(m)):
            why = "not every message exactly once"
        elif reference is not None and numbers != reference:
            why = "messages in another offset order than subscriber 0"
        reference = numbers if reference is None else reference
        if why:
            bad[why] += 1
            example.setdefault(
                why, f"subscriber {i}: {len(numbers)} messages, joined at {sub.joined_offset}, offsets "
                f"{offsets[:5]}...{offsets[-3:]}, close code {sub.conn.close_code}"
            )  # fmt: skip
    for why, count in bad.items():
        result.problems.append(f"{count} of {len(subs)} subscribers: {why} (e.g. {example[why]})")
    if others:
        result.problems.append(f"{others} frames other than messages of {CHANNEL!r} (errors? left?)")


def server_env(**extra: str) -> dict[str, str]:
    """The servers' environment: this one's without BFSTREAM_* (the defaults are the baseline), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFSTREAM_")}
    return {**env, "BFSTREAM_CREATE_FIRST_APP": "false", **extra}


async def run_memory(args: argparse.Namespace, tmp: Path) -> Result:
    """One instance, memory broker, SQLite: the app is created in its data dir before it starts."""
    data_dir = tmp / "memory"
    store = await open_store(None, data_dir)
    try:
        app, key = await store.create_app("bench")
    finally:
        await store.close()
    server = await Server.start("memory", data_dir, server_env())
    try:
        probes = {"server": server.cpu, "bench process": client_cpu}
        result = await workload("memory", server, server, app.id, key, probes, args)
    finally:
        await server.stop()
    result.complaints = {"memory": server.complaints()}
    return result


@contextlib.asynccontextmanager
async def throwaway_database(admin_url: str) -> Any:
    """A PostgreSQL database of the run's own, dropped afterwards (even with connections left); yields its URL."""
    name = "bfbench_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(admin_url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield urlunsplit(urlsplit(admin_url)._replace(path="/" + name))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=30)
        await admin.close()


async def delete_keys(redis_url: str, prefix: str) -> int:
    client = Redis.from_url(redis_url, socket_timeout=10)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()


async def run_redis(args: argparse.Namespace, tmp: Path) -> Result:
    """Two instances on Redis and PostgreSQL: POSTs to A, subscribers on B."""
    prefix = f"bfbench-{uuid.uuid4().hex[:12]}"
    redis = Redis.from_url(args.redis_url, socket_timeout=5)

    async def redis_cpu() -> float:
        info = await redis.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    try:
        async with throwaway_database(args.database_url) as database_url:
            store = await open_store(database_url, tmp / "store")
            try:
                app, key = await store.create_app("bench")
            finally:
                await store.close()
            env = server_env(
                BFSTREAM_BROKER_URL=args.redis_url, BFSTREAM_BROKER_PREFIX=prefix, BFSTREAM_DATABASE_URL=database_url
            )
            servers: list[Server] = []
            try:
                for name in ("A", "B"):
                    servers.append(await Server.start(name, tmp / name, env))
                a, b = servers
                probes = {
                    "server A (POSTs)": a.cpu,
                    "server B (subscribers)": b.cpu,
                    "redis-server": redis_cpu,
                    "bench process": client_cpu,
                }
                result = await workload("redis", a, b, app.id, key, probes, args)
            finally:
                await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)
            result.complaints = {s.name: s.complaints() for s in servers}
    finally:
        with contextlib.suppress(Exception):
            await delete_keys(args.redis_url, prefix)
        await redis.aclose()
    return result


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(results: list[Result]) -> None:
    """Side by side: one column per run."""
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, cell: Callable[[Result], str]) -> None:
        rows.append((label, [cell(r) for r in results]))

    def lat(q: float | None) -> Callable[[Result], str]:
        def cell(r: Result) -> str:
            if not r.latencies:
                return "-"
            value = max(r.latencies) if q is None else quantile(r.latencies, q)
            return f"{value * 1000:.2f} ms"

        return cell

    row("instances", lambda r: "1 (memory, SQLite)" if r.label == "memory" else "2 (Redis, PostgreSQL)")
    row("subscribers connected + joined in", lambda r: f"{r.connect_s:.2f} s")
    row("deliveries (got / expected)", lambda r: f"{r.deliveries} / {r.messages * r.subscribers}")
    row("first POST sent -> last delivery", lambda r: f"{r.elapsed:.3f} s")
    row("DELIVERED / s", lambda r: f"{r.deliveries / r.elapsed:,.0f}" if r.elapsed > 0 else "-")
    row("messages / s (accepted POSTs)", lambda r: f"{len(r.rtts) / r.posting:,.1f}" if r.posting > 0 else "-")
    row("LATENCY POST sent -> received, median", lat(0.5))
    row("  p90", lat(0.9))
    row("  p99", lat(0.99))
    row("  max", lat(None))
    row("POST round trip, median", lambda r: f"{statistics.median(r.rtts) * 1000:.2f} ms" if r.rtts else "-")
    row("POST round trip, p99", lambda r: f"{quantile(r.rtts, 0.99) * 1000:.2f} ms" if r.rtts else "-")
    names = list(dict.fromkeys(name for r in results for name in r.cpu))
    for name in names:
        row(f"CPU s, {name}", lambda r, name=name: f"{r.cpu[name]:.2f}" if name in r.cpu else "-")
    row("correct (all, once, in order)", lambda r: "yes" if not r.problems else "NO")
    width = max(len(label) for label, _ in rows) + 2
    cols = [max(len(r.label), *(len(cells[i]) for _, cells in rows)) + 2 for i, r in enumerate(results)]
    print(f"{'':<{width}}" + "".join(f"{r.label:>{c}}" for r, c in zip(results, cols, strict=True)))
    for label, cells in rows:
        print(f"{label:<{width}}" + "".join(f"{cell:>{c}}" for cell, c in zip(cells, cols, strict=True)))
    for r in results:
        for problem in r.problems:
            print(f"!!!!! {r.label}: {problem} !!!!!")
        for name, lines in r.complaints.items():
            if lines:
                shown = "\n    ".join(lines[-20:])
                print(f"server {name} ({r.label} run) printed {len(lines)} non-INFO lines, last ones:\n    {shown}")


async def main(args: argparse.Namespace) -> int:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bfstream-fleet-") as tmp:
        for label, runner in (("memory", run_memory), ("redis", run_redis)):
            if args.only not in (None, label):
                continue
            if label == "redis" and not (reachable(args.redis_url, 6379) and reachable(args.database_url, 5432)):
                print(f"!!!!! redis run skipped: Redis {args.redis_url} or PostgreSQL {args.database_url} unreachable")
                continue
            try:
                async with asyncio.timeout(RUN_TIMEOUT):
                    results.append(await runner(args, Path(tmp)))
            except Exception as e:  # a failed run is reported, the other still runs
                print(f"!!!!! {label} run FAILED: {e!r}")
    if results:
        report(results)
    return 0 if results and not any(r.problems for r in results) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="bfstream fleet benchmark: two instances on Redis vs one on memory")
    parser.add_argument("--subscribers", type=int, default=100, help="WebSocket clients on one channel (100)")
    parser.add_argument("--messages", type=int, default=1000, help="messages published (1000)")
    parser.add_argument("--size", type=int, default=200, help="payload bytes per message (200)")
    parser.add_argument("--concurrency", type=int, default=8, help="POSTs in flight at once (8)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis for the fleet run")
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL admin connection; the run creates and drops a database of its own there",
    )
    parser.add_argument(
        "--http", choices=["raw", "httpx"], default="raw", help="publishers' HTTP client (raw: see RawHTTP)"
    )
    parser.add_argument(
        "--connect-at-once", type=int, default=100, help="subscribers connecting concurrently, batch after batch (100)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        help="messages per second, paced (open loop, still at most --concurrency in flight); 0: as fast as "
        "the POSTs are answered (default). Below saturation the latency is the path's, not a queue's",
    )
    parser.add_argument("--only", choices=["memory", "redis"], help="run one side only")
    parsed = parser.parse_args()
    counts = parsed.subscribers, parsed.messages, parsed.concurrency, parsed.connect_at_once
    if min(counts) < 1 or min(parsed.size, parsed.rate) < 0:
        parser.error("--subscribers, --messages, --concurrency, --connect-at-once must be at least 1, "
                     "--size and --rate at least 0")  # fmt: skip
    if (limit := resource.getrlimit(resource.RLIMIT_NOFILE)[0]) < parsed.subscribers + 100:
        parser.error(f"ulimit -n is {limit}: raise it to at least {parsed.subscribers + 100} for this many clients")
    print(
        f"python {platform.python_version()} ({sys.implementation.name}) on {platform.machine()} "
        f"{platform.system()} {platform.release()}, cpus {os.cpu_count()}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (the machine may be shared), client loop uvloop"
    )
    print(
        f"subscribers {parsed.subscribers} on channel {CHANNEL!r}, messages {parsed.messages}, "
        f"payload {parsed.size} bytes, POSTs in flight {parsed.concurrency} ({parsed.http} HTTP client), "
        f"rate {f'{parsed.rate:g}/s paced' if parsed.rate else 'unpaced'}, "
        f"redis {parsed.redis_url}"
    )
    sys.exit(uvloop.run(main(parsed)))
