"""Load client process: holds many connections, starts streams, stamps every chunk's arrival.

Run by bench/scenarios.py as ``python -m bench.client``; talks JSON lines over stdin/stdout:

1. stdin: the job (one JSON object, see ``Job``).
2. It opens its listeners (WebSocket: connect, ``hello``, ``join`` -> ``joined``; SSE: ``GET /message/sse``
   -> 200), ``connect_at_once`` at a time, and prints ``{"ready": n, "failed": n, "error": ...}``.
3. stdin: ``go <t0 perf_counter_ns>``. Stream k is started at t0 + at_k: ``POST /stream/create`` to bfstream
   (its listener is in this process) or, for the direct path, ``POST /v1/chat/completions`` to the fake
   provider, read with the same parsing code. Each delta's latency = receipt perf_counter_ns - its stamp.
   The run ends when every listener and direct stream has seen its end (or closed), or at the deadline;
   an idle job instead waits for ``stop`` on stdin.
4. stdout: the result (one JSON object); then it exits, closing everything.
"""

from __future__ import annotations

import array
import asyncio
import base64
import collections
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import uvloop

from bench.wire import STAMP, HTTPStream, WebSocket, http_call, now_ns, request_bytes

CONNECT_TIMEOUT = 20.0


@dataclass
class Job:
    listen_port: int = 0  # bfstream instance the listeners connect to
    post_port: int = 0  # bfstream instance the streams are POSTed to
    provider_port: int = 0
    app_id: str = ""
    api_key: str = ""
    listeners: list[list[Any]] = field(default_factory=list)  # [channel, "ws" | "sse"]
    posts: list[list[Any]] = field(default_factory=list)  # [channel, at_s]: streams started through bfstream
    direct: list[float] = field(default_factory=list)  # at_s: streams read straight from the provider
    rate: float = 20.0
    count: int = 20
    deadline_s: float = 30.0
    idle: bool = False
    connect_at_once: int = 100


class Listener:
    __slots__ = ("channel", "count", "ended", "first_ns", "joined", "run")

    def __init__(self, run: Run, channel: str) -> None:
        self.run, self.channel = run, channel
        self.count = self.first_ns = 0
        self.ended = False
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_data(self, payload: bytes, now: int) -> None:
        m = STAMP.search(payload)
        run = self.run
        if m is not None:
            run.lat.append((now - int(m.group(1))) // 1000)
            run.last_ns = now
            if not run.first_ns:
                run.first_ns = now
            self.count += 1
            if not self.first_ns:
                self.first_ns = now
                sent = run.post_sent.get(self.channel)
                if sent:
                    run.ttft.append((now - sent) // 1000)
            return
        if b'"type":"end"' in payload or b"data: [DONE]" in payload:
            self.finish()
        elif b'"op":"joined"' in payload or b"event: joined" in payload:
            if not self.joined.done():
                self.joined.set_result(None)
        elif b'"type":"error"' in payload:
            run.error("stream error event: " + payload.decode(errors="replace")[-300:])
        elif b'"op":"error"' in payload:
            run.error("error frame: " + payload.decode(errors="replace")[:300])
            if not self.joined.done():
                self.joined.set_exception(RuntimeError(payload.decode(errors="replace")[:300]))

    def finish(self) -> None:
        if not self.ended:
            self.ended = True
            self.run.ended_one()

    def closed(self) -> None:
        if not self.ended and self.run.started:
            self.run.error("connection closed before the stream's end")
        self.finish()
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("closed before joining"))


class Run:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.lat: array.array[int] = array.array("q")
        self.ttft: list[int] = []
        self.post_rtt: list[int] = []
        self.post_sent: dict[str, int] = {}
        self.errors: collections.Counter[str] = collections.Counter()
        self.first_ns = self.last_ns = 0
        self.started = False
        self.remaining = 0
        self.done = asyncio.Event()
        self.posts_ok = self.posts_failed = 0
        self.by_channel: dict[str, list[Listener]] = collections.defaultdict(list)
        self.listeners: list[Listener] = []
        self.conns: list[Any] = []

    def error(self, text: str) -> None:
        self.errors[text[:300]] += 1

    def ended_one(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0 and self.started:
            self.done.set()

    async def open_listener(self, channel: str, kind: str) -> Listener:
        loop = asyncio.get_running_loop()
        job = self.job
        listener = Listener(self, channel)
        if kind == "ws":
            path = f"/message/ws?app={job.app_id}"
            _, ws = await loop.create_connection(
                lambda: WebSocket("127.0.0.1", path, listener.on_data, listener.closed), "127.0.0.1", job.listen_port
            )
            self.conns.append(ws)
            await ws.opened
            ws.send_text(json.dumps({"op": "join", "channel": channel, "id": 1}).encode())
            await listener.joined
        else:
            path = f"/message/sse?app={job.app_id}&channel={channel}"
            req = request_bytes("GET", "127.0.0.1", path, headers="Accept: text/event-stream\r\n")
            _, sse = await loop.create_connection(
                lambda: HTTPStream(req, listener.on_data), "127.0.0.1", job.listen_port
            )
            sse.done.add_done_callback(lambda _: listener.closed())
            self.conns.append(sse)
            status = await sse.status
            if status != 200:
                raise ConnectionError(f"SSE answered {status}")
        return listener

    async def connect_all(self) -> dict[str, Any]:
        sem = asyncio.Semaphore(self.job.connect_at_once)
        failures: collections.Counter[str] = collections.Counter()

        async def one(channel: str, kind: str) -> None:
            async with sem:
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        listener = await self.open_listener(channel, kind)
                except Exception as e:
                    failures[f"{type(e).__name__}: {e}"[:200]] += 1
                    return
                self.listeners.append(listener)
                self.by_channel[channel].append(listener)

        await asyncio.gather(*(one(ch, kind) for ch, kind in self.job.listeners))
        top = failures.most_common(1)
        return {"ready": len(self.listeners), "failed": sum(failures.values()), "error": top[0][0] if top else None}

    def spec(self) -> str:
        return f"bench rate={self.job.rate:g} count={self.job.count}"

    async def post(self, channel: str) -> None:
        job = self.job
        body = {
            "apiKey": job.api_key,
            "channels": [channel],
            "actionName": "x",
            "service": "openai",
            "payload": {
                "apiKey": "sk-bench",
                "model": "m",
                "stream": True,
                "messages": [{"role": "user", "content": self.spec()}],
            },
        }
        sent = now_ns()
        self.post_sent[channel] = sent
        try:
            status, answer = await http_call(job.post_port, "POST", "/stream/create", json.dumps(body).encode(), 60.0)
        except Exception as e:
            status, answer = 0, f"{type(e).__name__}: {e}".encode()
        self.post_rtt.append((now_ns() - sent) // 1000)
        if status == 200:
            self.posts_ok += 1
            return
        self.posts_failed += 1
        self.error(f"POST /stream/create {status}: {answer.decode(errors='replace')[:200]}")
        for listener in self.by_channel.get(channel, []):
            listener.finish()  # nothing will come

    async def direct(self) -> None:
        job = self.job
        loop = asyncio.get_running_loop()
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": self.spec()}]}
        req = request_bytes(
            "POST", "127.0.0.1", "/v1/chat/completions", json.dumps(body).encode(), "Authorization: Bearer sk-bench\r\n"
        )
        listener = Listener(self, "")
        sent = now_ns()
        try:
            _, proto = await loop.create_connection(lambda: HTTPStream(req, listener.on_data), "127.0.0.1",
                                                    job.provider_port)  # fmt: skip
            self.conns.append(proto)
            status = await proto.status
            if status != 200:
                raise ConnectionError(f"provider answered {status}")
            await proto.done
        except Exception as e:
            self.error(f"direct stream: {type(e).__name__}: {e}")
        finally:
            if listener.first_ns:
                self.ttft.append((listener.first_ns - sent) // 1000)
            listener.finish()

    async def run(self, t0: int) -> None:
        loop = asyncio.get_running_loop()
        job = self.job
        self.remaining = len(self.listeners) + len(job.direct)
        self.started = True
        tasks: set[asyncio.Task[None]] = set()

        def start(coro: Any) -> None:
            task = asyncio.create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        base = loop.time() + (t0 - now_ns()) / 1e9
        for channel, at in job.posts:
            loop.call_at(base + at, start, self.post(channel))
        for at in job.direct:
            loop.call_at(base + at, start, self.direct())
        if self.remaining <= 0:
            self.done.set()
        try:
            await asyncio.wait_for(self.done.wait(), max(0.1, base + job.deadline_s - loop.time()))
        except TimeoutError:
            self.error("deadline passed before every stream ended")
        for task in list(tasks):
            task.cancel()

    def result(self) -> dict[str, Any]:
        expected = self.job.count * (len(self.listeners) + len(self.job.direct))
        return {
            "lat_us": base64.b64encode(self.lat.tobytes()).decode(),
            "ttft_us": self.ttft,
            "post_rtt_us": self.post_rtt,
            "deltas": len(self.lat),
            "expected": expected,
            "unfinished": sum(not listener.ended for listener in self.listeners),
            "posts_ok": self.posts_ok,
            "posts_failed": self.posts_failed,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "errors": dict(self.errors.most_common(5)),
            "error_count": sum(self.errors.values()),
            "cpu_s": time.process_time(),
        }


async def main() -> None:
    from bench.procs import raise_nofile

    raise_nofile()
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    job = Job(**json.loads(await stdin.readline()))
    run = Run(job)

    def say(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    say(await run.connect_all())
    line = (await stdin.readline()).decode().split()
    if not line or line[0] != "go":
        return
    if job.idle:
        await stdin.readline()  # "stop", or EOF when the parent is gone
        say({"cpu_s": time.process_time(), "closed": sum(listener.ended for listener in run.listeners)})
    else:
        await run.run(int(line[1]))
        say(run.result())
    for conn in run.conns:
        conn.close()


if __name__ == "__main__":
    uvloop.run(main())
