"""The scenarios. Each run starts what it needs (a fresh ``bfstream serve`` for every measured run, so a
saturated run cannot spill into the next), drives it from load-client processes and returns plain numbers;
``__main__`` repeats runs and keeps the median and spread.
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import json
import math
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.procs import (
    Proc,
    Target,
    cpu_seconds,
    create_app,
    python_env,
    rss_kb,
    settled_rss_kb,
    start_server,
    total_cpu,
)
from bench.report import pct

THRESHOLD_MS = 100.0  # the knee: added p99 past this


@dataclass
class Profile:
    """How big and how long: full (default), quick, smoke."""

    levels: list[int]
    duration: float  # seconds of stream per latency run
    direct_duration: float
    drain: float  # after a run's last chunk is due, how long stragglers may take
    knee_start: int
    knee_max: int
    knee_duration: float
    fanout: list[int]
    fanout_offered: float  # deliveries/s asked of the fan-out stream (its chunk rate = this / listeners)
    fanout_duration: float
    idle: int
    ttft_streams: int
    redis_streams: int
    redis_fanout: int
    rate: float = 20.0
    log_streams: int = 1000  # the logs scenario: streams that end, then whose logs expire
    log_rounds: int = 2  # ... that many times over
    # Cases that take tens of seconds a run (10,000 connections opened at today's ~550/s; the knee's search)
    # run this many times unless --repeats-all: their spread is small next to the run time.
    heavy_repeats: int = 1


PROFILES = {
    "full": Profile([1, 100, 500, 1000], 6, 3, 6, 50, 1600, 4, [1, 100, 1000, 10000], 1e5, 5, 10_000, 20, 100, 1000),
    "quick": Profile([1, 100, 500], 4, 3, 5, 50, 800, 3, [1, 100, 1000], 1e5, 3, 2000, 10, 50, 200),
    "smoke": Profile([1], 0.5, 0.5, 3, 1, 1, 0.5, [1, 3], 50, 0.5, 20, 3, 1, 3, log_streams=10, log_rounds=1),
}  # fmt: skip


@dataclass
class Context:
    args: Any
    profile: Profile
    tmp: Path
    target: Target
    data_dir: Path
    provider_port: int
    providers: list[Proc]
    clients: int
    nofile: int
    runs: int = 0
    notes: list[str] = field(default_factory=list)

    def log(self) -> Path:
        self.runs += 1
        return self.tmp / f"server-{self.runs}.log"


@contextlib.asynccontextmanager
async def server(
    ctx: Context, extra: dict[str, str] | None = None, data_dir: Path | None = None, kill: bool = False
) -> Any:
    """A fresh ``bfstream serve``; stopped with SIGTERM (a clean drain), or SIGKILL with ``kill`` (thousands of
    idle connections take seconds to close cleanly, and nothing is measured then)."""
    data_dir = data_dir or ctx.data_dir
    proc, port, startup = await start_server(ctx.target, data_dir, ctx.provider_port, ctx.log(), extra)
    try:
        yield proc, port, startup
    finally:
        if kill and proc.proc.returncode is None:
            proc.proc.kill()
        await proc.stop()
        problems = [line for line in proc.complaints() if "Traceback" in line or "ERROR" in line]
        if problems:
            ctx.notes.append(f"server log ({proc.log}): {len(problems)} error lines, e.g. {problems[0][:200]}")


# ---- the engine: client processes, a job each --------------------------------------------------------


async def drive(
    ctx: Context,
    jobs: list[dict[str, Any]],
    watch: dict[str, list[int]],
    deadline_s: float,
    ready_timeout: float = 120.0,
) -> dict[str, Any]:
    """Run one job per client process; CPU of the ``watch``ed pids is taken from just before ``go`` to the
    last result. Returns the merged figures."""
    procs: list[Proc] = []
    try:
        for i, job in enumerate(jobs):
            proc = await Proc.spawn(f"client{i}", [sys.executable, "-m", "bench.client"], python_env(None))
            procs.append(proc)
            proc.send(json.dumps(job))
        ready = [json.loads(await p.readline(ready_timeout) or "{}") for p in procs]
        if not all("ready" in r for r in ready):
            raise RuntimeError(f"a load client did not get ready: {ready}")
        cpu0 = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in watch.items()}
        client0 = total_cpu(procs)
        t_go = time.perf_counter_ns() + 200_000_000
        for p in procs:
            p.send(f"go {t_go}")
        results = []
        for p in procs:
            line = await p.readline(deadline_s + 60)
            if not line:
                raise RuntimeError(f"{p.name} exited without a result")
            results.append(json.loads(line))
        elapsed = (time.perf_counter_ns() - t_go) / 1e9
        cpu = {name: sum(cpu_seconds(pid) for pid in pids) - cpu0[name] for name, pids in watch.items()}
        cpu["clients"] = sum(r["cpu_s"] for r in results) - client0
    finally:
        for p in procs:
            if p.proc.stdin is not None:
                p.proc.stdin.close()
        await asyncio.gather(*(p.stop() for p in procs), return_exceptions=True)
    lat = array.array("q")
    for r in results:
        lat.frombytes(base64.b64decode(r["lat_us"]))
    ordered = sorted(lat)
    ttft = sorted(x for r in results for x in r["ttft_us"])
    rtt = sorted(x for r in results for x in r["post_rtt_us"])
    firsts = [r["first_ns"] for r in results if r["first_ns"]]
    lasts = [r["last_ns"] for r in results if r["last_ns"]]
    window = (max(lasts) - min(firsts)) / 1e9 if firsts else 0.0
    expected = sum(r["expected"] for r in results)
    errors: dict[str, int] = {}
    for r in results:
        for text, n in r["errors"].items():
            errors[text] = errors.get(text, 0) + n
    return {
        "ready": sum(r["ready"] for r in ready),
        "connect_failed": sum(r["failed"] for r in ready),
        "connect_error": next((r["error"] for r in ready if r["error"]), None),
        "p50_ms": pct(ordered, 0.5) / 1000,
        "p99_ms": pct(ordered, 0.99) / 1000,
        "max_ms": (ordered[-1] / 1000) if ordered else math.nan,
        "ttft_p50_ms": pct(ttft, 0.5) / 1000,
        "ttft_p99_ms": pct(ttft, 0.99) / 1000,
        "post_rtt_p50_ms": pct(rtt, 0.5) / 1000,
        "delivered": len(ordered),
        "expected": expected,
        "missing_pct": 100.0 * (expected - len(ordered)) / expected if expected else 0.0,
        "window_s": window,
        "per_s": len(ordered) / window if window > 0 else 0.0,
        "posts_failed": sum(r["posts_failed"] for r in results),
        "unfinished": sum(r["unfinished"] for r in results),
        "errors": sorted(errors.items(), key=lambda kv: -kv[1])[:5],
        "cpu": cpu,
        "elapsed_s": elapsed,
    }


def split(items: list[Any], k: int) -> list[list[Any]]:
    return [items[i::k] for i in range(k)]


def base_job(ctx: Context, **kw: Any) -> dict[str, Any]:
    job = {"app_id": ctx.target.app_id, "api_key": ctx.target.api_key, "provider_port": ctx.provider_port}
    return {**job, **kw}


def problems_of(run: dict[str, Any]) -> list[str]:
    out = []
    if run["connect_failed"]:
        out.append(f"{run['connect_failed']} listeners failed to connect: {run['connect_error']}")
    if run["posts_failed"]:
        out.append(f"{run['posts_failed']} POST /stream/create failed")
    if run["unfinished"]:
        out.append(f"{run['unfinished']} listeners never saw their stream's end")
    if run["missing_pct"] > 0:
        got = f"{run['delivered']} of {run['expected']}"
        out.append(f"{run['missing_pct']:.1f}% of chunks not received by the deadline ({got})")
    out += [f"{n}x {text}" for text, n in run["errors"]]
    return out


# ---- per-stream latency ------------------------------------------------------------------------------


async def streams_run(ctx: Context, n: int, path: str, duration: float, spread: float = 1.0) -> dict[str, Any]:
    """``n`` concurrent streams of ``rate`` chunks/s for ``duration`` s, started evenly over ``spread`` s,
    one WebSocket listener each; ``path`` is "bf" (through bfstream) or "direct" (the provider read by the
    client itself)."""
    p = ctx.profile
    count = max(1, round(p.rate * duration))
    at = [i * spread / n for i in range(n)]
    k = max(1, min(ctx.clients, n))
    deadline = spread + duration + p.drain
    common = {"rate": p.rate, "count": count, "deadline_s": deadline}
    if path == "direct":
        jobs = [base_job(ctx, direct=part, **common) for part in split(at, k)]
        run = await drive(ctx, jobs, {"provider": [x.pid for x in ctx.providers]}, deadline)
        run["server_cpu_s"] = 0.0
        return run
    async with server(ctx) as (proc, port, _):
        streams = [[f"s{i}", t] for i, t in enumerate(at)]
        jobs = [
            base_job(
                ctx, listen_port=port, post_port=port, listeners=[[ch, "ws"] for ch, _ in part], posts=part, **common
            )
            for part in split(streams, k)
        ]
        run = await drive(ctx, jobs, {"server": [proc.pid], "provider": [x.pid for x in ctx.providers]}, deadline)
    run["server_cpu_s"] = run["cpu"]["server"]
    return run


def latency_figures(bf: dict[str, Any], direct: dict[str, Any]) -> dict[str, Any]:
    chunks = max(1, bf["delivered"])
    window = max(bf["elapsed_s"], 1e-9)
    return {
        "added_p50_ms": bf["p50_ms"] - direct["p50_ms"],
        "added_p99_ms": bf["p99_ms"] - direct["p99_ms"],
        "bf_p50_ms": bf["p50_ms"],
        "bf_p99_ms": bf["p99_ms"],
        "bf_max_ms": bf["max_ms"],
        "direct_p50_ms": direct["p50_ms"],
        "direct_p99_ms": direct["p99_ms"],
        "ttft_overhead_ms": bf["ttft_p50_ms"] - direct["ttft_p50_ms"],
        "bf_ttft_p50_ms": bf["ttft_p50_ms"],
        "server_cpu_s": bf["server_cpu_s"],
        "server_cpu_us_per_chunk": 1e6 * bf["server_cpu_s"] / chunks,
        "cpu_s_per_1000_chunks": 1000 * bf["server_cpu_s"] / chunks,
        "server_cpu_pct": 100 * bf["server_cpu_s"] / window,
        "client_cpu_pct": 100 * bf["cpu"]["clients"] / window,
        "provider_cpu_pct": 100 * bf["cpu"]["provider"] / window,
        "delivered": bf["delivered"],
        "expected": bf["expected"],
        "missing_pct": bf["missing_pct"],
        "posts_failed": bf["posts_failed"],
        "unfinished": bf["unfinished"],
        "problems": problems_of(bf) + [f"direct: {x}" for x in problems_of(direct)],
    }


async def latency(ctx: Context, level: int) -> dict[str, Any]:
    p = ctx.profile
    direct = await streams_run(ctx, level, "direct", p.direct_duration)
    bf = await streams_run(ctx, level, "bf", p.duration)
    return latency_figures(bf, direct)


async def ttft(ctx: Context) -> dict[str, Any]:
    """Streams one after another (2 chunks, 0.15 s apart): POST sent -> first delta at the listener, and the
    same for the provider read directly (request sent -> first delta)."""
    p = ctx.profile
    n, gap = p.ttft_streams, 0.15
    at = [i * gap for i in range(n)]
    common = {"rate": p.rate, "count": 2, "deadline_s": n * gap + p.drain}
    direct = await drive(ctx, [base_job(ctx, direct=at, **common)], {}, common["deadline_s"])
    async with server(ctx) as (_, port, _):
        streams = [[f"t{i}", t] for i, t in enumerate(at)]
        job = base_job(ctx, listen_port=port, post_port=port, listeners=[[ch, "ws"] for ch, _ in streams],
                       posts=streams, **common)  # fmt: skip
        bf = await drive(ctx, [job], {}, common["deadline_s"])
    return {
        "ttft_overhead_ms": bf["ttft_p50_ms"] - direct["ttft_p50_ms"],
        "bf_ttft_p50_ms": bf["ttft_p50_ms"],
        "bf_ttft_p99_ms": bf["ttft_p99_ms"],
        "direct_ttft_p50_ms": direct["ttft_p50_ms"],
        "post_rtt_p50_ms": bf["post_rtt_p50_ms"],
        "problems": problems_of(bf),
    }


async def knee(ctx: Context) -> dict[str, Any]:
    """Doubling from ``knee_start`` streams until the added p99 passes 100 ms, then two bisection steps."""
    p = ctx.profile
    steps: list[dict[str, Any]] = []

    async def measure(n: int) -> float:
        direct = await streams_run(ctx, n, "direct", min(p.knee_duration, p.direct_duration))
        bf = await streams_run(ctx, n, "bf", p.knee_duration)
        fig = latency_figures(bf, direct)
        # Chunks that never came are worse than late ones: a run that lost any counts as over.
        over = fig["added_p99_ms"] > THRESHOLD_MS or fig["missing_pct"] > 1.0
        steps.append({"streams": n, **{k: round(v, 3) for k, v in fig.items() if isinstance(v, float)}, "over": over})
        return math.inf if fig["missing_pct"] > 1.0 else fig["added_p99_ms"]

    good, bad, n = 0, 0, p.knee_start
    while n <= p.knee_max:
        if await measure(n) > THRESHOLD_MS:
            bad = n
            break
        good, n = n, n * 2
    for _ in range(2):
        if not bad or bad - good <= max(1, good // 8):
            break
        mid = (good + bad) // 2
        if await measure(mid) > THRESHOLD_MS:
            bad = mid
        else:
            good = mid
    at_knee = next((s for s in steps if s["streams"] == good), None)
    return {
        "knee_streams": good,
        "knee_chunks_per_s": good * p.rate,
        "first_over_streams": bad or None,
        "cpu_s_per_1000_chunks_at_knee": at_knee["cpu_s_per_1000_chunks"] if at_knee else None,
        "server_cpu_us_per_chunk_at_knee": at_knee["server_cpu_us_per_chunk"] if at_knee else None,
        "steps": [json.dumps(s) for s in steps],
    }


# ---- fan-out -----------------------------------------------------------------------------------------


def fanout_jobs(ctx: Context, listeners: int, listen_port: int, post_port: int) -> tuple[list[dict[str, Any]], float]:
    p = ctx.profile
    rate = min(2000.0, max(1.0, p.fanout_offered / listeners))
    count = max(2, round(rate * p.fanout_duration))
    k = max(1, min(ctx.clients, listeners))
    deadline = p.fanout_duration + p.drain + 1
    per = split(list(range(listeners)), k)
    jobs = [
        base_job(
            ctx,
            listen_port=listen_port,
            post_port=post_port,
            listeners=[["fan", "ws"]] * len(part),
            posts=[["fan", 0.0]] if i == 0 else [],
            rate=rate,
            count=count,
            deadline_s=deadline,
        )
        for i, part in enumerate(per)
    ]
    return jobs, deadline


def fanout_figures(run: dict[str, Any], listeners: int, rate: float, cpu_s: float) -> dict[str, Any]:
    return {
        "listeners": listeners,
        "chunks_per_s": rate,
        "offered_per_s": rate * listeners,
        "deliveries_per_s": run["per_s"],
        "p50_ms": run["p50_ms"],
        "p99_ms": run["p99_ms"],
        "missing_pct": run["missing_pct"],
        "connect_failed": run["connect_failed"],
        "server_cpu_us_per_delivery": 1e6 * cpu_s / max(1, run["delivered"]),
        "server_cpu_pct": 100 * cpu_s / max(run["window_s"], 1e-9),
        "client_cpu_pct": 100 * run["cpu"]["clients"] / max(run["window_s"], 1e-9),
        "problems": problems_of(run),
    }


async def fanout(ctx: Context, listeners: int) -> dict[str, Any]:
    async with server(ctx, kill=listeners > 1000) as (proc, port, _):
        jobs, deadline = fanout_jobs(ctx, listeners, port, port)
        run = await drive(ctx, jobs, {"server": [proc.pid]}, deadline)
    return fanout_figures(run, listeners, jobs[0]["rate"], run["cpu"]["server"])


# ---- memory and start-up -----------------------------------------------------------------------------


async def memory(ctx: Context, kind: str) -> dict[str, Any]:
    """Server RSS (settled) before and after ``idle`` connections, each joined to a channel of its own."""
    n = ctx.profile.idle
    async with server(ctx, kill=True) as (proc, port, _):
        before = await settled_rss_kb(proc.pid)
        k = max(1, min(ctx.clients, n))
        listeners = [[f"idle{i}", kind] for i in range(n)]
        parts = split(listeners, k)
        jobs = [base_job(ctx, listen_port=port, post_port=port, listeners=part, idle=True) for part in parts]
        procs: list[Proc] = []
        try:
            for i, job in enumerate(jobs):
                procs.append(await Proc.spawn(f"idle{i}", [sys.executable, "-m", "bench.client"], python_env(None)))
                procs[-1].send(json.dumps(job))
            t0 = time.perf_counter()
            ready = [json.loads(await x.readline(180) or "{}") for x in procs]
            connect_s = time.perf_counter() - t0
            for x in procs:
                x.send("go 0")
            after = await settled_rss_kb(proc.pid, within=20)
            settle_s = time.perf_counter() - t0 - connect_s
            for x in procs:
                x.send("stop")
            done = [json.loads(await x.readline(30) or "{}") for x in procs]
        finally:
            await asyncio.gather(*(x.stop() for x in procs), return_exceptions=True)
    held = sum(r.get("ready", 0) for r in ready)
    return {
        "connections": held,
        "connects_per_s": held / connect_s if connect_s > 0 else None,
        "connect_s": connect_s,
        "settle_s": settle_s,
        "kb_per_connection": (after - before) / held if held else None,
        "rss_idle_mb": before / 1024,
        "rss_loaded_mb": after / 1024,
        "connect_failed": sum(r.get("failed", 0) for r in ready),
        "dropped": sum(r.get("closed", 0) for r in done),
        "problems": [f"connect: {r['error']}" for r in ready if r.get("error")][:3],
    }


LOG_TTL = 10.0  # seconds, the logs scenario's streams.log_ttl and messaging.history_ttl
LOG_WORDS = 400  # words (deltas) per stream of the logs scenario


async def logs(ctx: Context) -> dict[str, Any]:
    """Server RSS (settled) before, once ``log_streams`` echo streams of ``LOG_WORDS`` deltas each have
    ended (their logs and channel histories held), and once those have expired; twice over. RSS does not
    fall back after the first round (the allocator keeps freed memory for reuse): the second round shows
    whether it is reused (bounded) or added to (a leak)."""
    import httpx

    n = ctx.profile.log_streams
    ttl = f"{LOG_TTL:g}"
    extra = {
        "BFSTREAM_STREAMS__LOG_TTL": ttl, "BFSTREAM_MESSAGING__HISTORY_TTL": ttl,
        "BFSTREAM_STREAMS__MAX_PER_APP": str(n + 10), "BFSTREAM_LIMITS__STREAMS__RATE": str(n),
        "BFSTREAM_LIMITS__STREAMS__BURST": str(n),
    }  # fmt: skip
    words = " ".join(f"w{i}" for i in range(LOG_WORDS))
    figures: dict[str, Any] = {"streams": n, "deltas": n * LOG_WORDS}
    async with server(ctx, extra) as (proc, port, _):
        before = await settled_rss_kb(proc.pid)
        figures["rss_before_mb"] = before / 1024
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:

            async def create(i: int) -> str:
                body = {
                    "apiKey": ctx.target.api_key, "channels": [f"log{i}"], "actionName": "a", "service": "echo",
                    "payload": {"stream": True, "messages": [{"role": "user", "content": words}]},
                }  # fmt: skip
                response = await http.post("/stream/create", json=body)
                response.raise_for_status()
                return str(response.json()["streamId"])

            async def ended(stream_id: str) -> bool:
                asked = {"apiKey": ctx.target.api_key, "streamId": stream_id}
                return (await http.post("/stream/status", json=asked)).json().get("status") != "running"

            for round_ in range(1, ctx.profile.log_rounds + 1):
                t0 = time.perf_counter()
                ids: list[str] = []
                for batch in split(list(range(n)), max(1, n // 50)):
                    ids += await asyncio.gather(*(create(i) for i in batch))
                running = set(ids)
                while running:  # every stream ended (its record says so)
                    running -= {s for s in list(running)[:100] if await ended(s)}
                    await asyncio.sleep(0.1)
                figures[f"run_{round_}_s"] = time.perf_counter() - t0
                figures[f"rss_ended_{round_}_mb"] = await settled_rss_kb(proc.pid) / 1024
                # Expired, and swept (the memory broker sweeps every LOG_TTL / 10 s, at least every 1 s).
                await asyncio.sleep(max(0.0, LOG_TTL + 3.0 - (time.perf_counter() - t0)))
                figures[f"rss_expired_{round_}_mb"] = await settled_rss_kb(proc.pid, within=20) / 1024
    figures["kb_per_ended_stream"] = (figures["rss_ended_1_mb"] * 1024 - before) / n
    if "rss_expired_2_mb" in figures:
        figures["kb_added_by_round_2"] = (figures["rss_expired_2_mb"] - figures["rss_expired_1_mb"]) * 1024 / n
    return figures


async def startup(ctx: Context) -> dict[str, Any]:
    async with server(ctx) as (proc, _, seconds):
        rss = rss_kb(proc.pid)
    return {"ms_to_healthz": seconds * 1000, "rss_mb_at_start": rss / 1024}


# ---- two instances on Redis --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fleet(ctx: Context) -> Any:
    """Two instances, A and B, on Redis and a throwaway PostgreSQL database; yields (A, B) as (proc, port)."""
    import asyncpg
    from redis.asyncio import Redis

    args = ctx.args
    name = "bfbench_" + uuid.uuid4().hex[:12]
    prefix = f"bfbench-{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(args.database_url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = urlunsplit(urlsplit(args.database_url)._replace(path="/" + name))
        target = Target(ctx.target.tree, dict(ctx.target.settings))
        await create_app(target, ctx.tmp / f"fleet-{name}", url)
        env = {"BFSTREAM_BROKER_URL": args.redis_url, "BFSTREAM_BROKER_PREFIX": prefix, "BFSTREAM_DATABASE_URL": url}
        saved = ctx.target
        ctx.target = target
        try:
            async with (
                server(ctx, env, ctx.tmp / f"{name}-a") as a,
                server(ctx, env, ctx.tmp / f"{name}-b") as b,
            ):
                yield a, b
        finally:
            ctx.target = saved
    finally:
        with contextlib.suppress(Exception):
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=30)
        await admin.close()
        redis = Redis.from_url(args.redis_url, socket_timeout=10)
        with contextlib.suppress(Exception):
            keys = [key async for key in redis.scan_iter(match=f"{prefix}:*", count=500)]
            if keys:
                await redis.delete(*keys)
        await redis.aclose()


async def redis_latency(ctx: Context) -> dict[str, Any]:
    """Streams POSTed to A, listeners on B: every chunk crosses Redis."""
    p = ctx.profile
    n = p.redis_streams
    direct = await streams_run(ctx, n, "direct", p.direct_duration)
    count = max(1, round(p.rate * p.duration))
    at = [i * 1.0 / n for i in range(n)]
    deadline = 1.0 + p.duration + p.drain
    async with fleet(ctx) as ((a, a_port, _), (b, b_port, _)):
        streams = [[f"s{i}", t] for i, t in enumerate(at)]
        jobs = [
            base_job(
                ctx,
                listen_port=b_port,
                post_port=a_port,
                listeners=[[ch, "ws"] for ch, _ in part],
                posts=part,
                rate=p.rate,
                count=count,
                deadline_s=deadline,
            )
            for part in split(streams, max(1, min(ctx.clients, n)))
        ]
        run = await drive(ctx, jobs, {"a": [a.pid], "b": [b.pid]}, deadline)
    run["server_cpu_s"] = run["cpu"]["a"] + run["cpu"]["b"]
    run["cpu"]["provider"] = 0.0
    fig = latency_figures(run, direct)
    window = max(run["elapsed_s"], 1e-9)
    fig["server_a_cpu_pct"] = 100 * run["cpu"]["a"] / window
    fig["server_b_cpu_pct"] = 100 * run["cpu"]["b"] / window
    return fig


async def redis_fanout(ctx: Context) -> dict[str, Any]:
    listeners = ctx.profile.redis_fanout
    async with fleet(ctx) as ((a, a_port, _), (b, b_port, _)):
        jobs, deadline = fanout_jobs(ctx, listeners, b_port, a_port)
        run = await drive(ctx, jobs, {"a": [a.pid], "b": [b.pid]}, deadline)
    fig = fanout_figures(run, listeners, jobs[0]["rate"], run["cpu"]["a"] + run["cpu"]["b"])
    window = max(run["window_s"], 1e-9)
    fig["server_a_cpu_pct"] = 100 * run["cpu"]["a"] / window
    fig["server_b_cpu_pct"] = 100 * run["cpu"]["b"] / window
    return fig
