"""``python -m bench``: bfstream's benchmark, one command (issue 11).

Starts everything on loopback, each in its own process, so the server's CPU is read apart from the load's:
fake OpenAI provider(s) (bench/provider.py), a fresh ``bfstream serve`` per measured run (bench/procs.py),
and load-client processes holding many connections each (bench/client.py). Scenarios (bench/scenarios.py):

  latency   N streams x 20 chunks/s, one WebSocket listener each, N in 1, 100, 500, 1000: latency per chunk
            (provider's write -> listener's receipt) through bfstream and read directly from the provider by
            the same client code; added = bfstream - direct (p50, p99). Time to first token through bfstream
            minus the direct one; server CPU per relayed chunk.
  ttft      streams one after another: POST sent -> first delta, minus the provider read directly.
  knee      streams (and chunks/s) where the added p99 passes 100 ms: doubling, then bisection.
  fanout    one stream to 1, 100, 1,000, 10,000 listeners of a channel: deliveries/s, p50/p99.
  memory    server RSS per idle WebSocket and per idle SSE connection at 10,000 of each.
  startup   ``bfstream serve`` spawned -> first 200 from /healthz.
  redis     two instances on Redis + PostgreSQL, POSTs to A, listeners on B: added latency and fan-out.

Each case is repeated ``--repeats`` times (median, min-max); the tables are printed and the JSON written to
``--json`` (bench/results/latest.json). ``--quick`` is smaller, ``--smoke`` tiny (CI; a few seconds).
``--bfstream PATH`` runs the server from another checkout (e.g. ``git worktree add /tmp/base <rev>``);
``--compare OLD.json NEW.json`` prints two result files side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

from bench import scenarios as sc
from bench.procs import (
    BENCH_SETTINGS,
    ROOT,
    Target,
    create_app,
    describe_machine,
    imported_from,
    raise_nofile,
    reachable,
    start_providers,
)
from bench.report import combine, compare, print_tables

SCENARIOS = ["latency", "ttft", "knee", "fanout", "memory", "logs", "startup", "redis"]
RUN_TIMEOUT = 240.0  # one run of one case, whatever hangs


def git_rev(tree: Path) -> str:
    try:
        rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--", "bfstream"],
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return rev + ("+dirty" if dirty else "")


def cases(ctx: sc.Context, name: str) -> list[tuple[str, bool, Callable[[], Awaitable[dict[str, Any]]]]]:
    """(label, heavy, run) per case of a scenario; a heavy case runs ``heavy_repeats`` times."""
    return [(label, heavy or name in ("knee", "memory", "logs"), make) for label, heavy, make in _cases(ctx, name)]


def _cases(ctx: sc.Context, name: str) -> list[tuple[str, bool, Callable[[], Awaitable[dict[str, Any]]]]]:
    p = ctx.profile
    if name == "latency":
        return [(f"{n} streams", False, lambda n=n: sc.latency(ctx, n)) for n in p.levels]
    if name == "ttft":
        return [(f"{p.ttft_streams} sequential", False, lambda: sc.ttft(ctx))]
    if name == "knee":
        return [(f"p99 > {sc.THRESHOLD_MS:g} ms", True, lambda: sc.knee(ctx))]
    if name == "fanout":
        return [(f"{n} listeners", n > 1000, lambda n=n: sc.fanout(ctx, n)) for n in p.fanout]
    if name == "memory":
        return [(kind, True, lambda kind=kind: sc.memory(ctx, kind)) for kind in ("ws", "sse")]
    if name == "logs":
        return [(f"{p.log_streams} ended streams", True, lambda: sc.logs(ctx))]
    if name == "startup":
        return [("serve -> /healthz", False, lambda: sc.startup(ctx))]
    if name == "redis":
        return [
            (f"latency {p.redis_streams} streams", False, lambda: sc.redis_latency(ctx)),
            (f"fanout {p.redis_fanout} listeners", False, lambda: sc.redis_fanout(ctx)),
        ]
    raise ValueError(name)


def redis_missing(args: argparse.Namespace) -> str | None:
    from urllib.parse import urlsplit

    for url, port in ((args.redis_url, 6379), (args.database_url, 5432)):
        parts = urlsplit(url)
        if not reachable(parts.hostname or "127.0.0.1", parts.port or port):
            return f"{url} is not reachable"
    try:
        import asyncpg  # noqa: F401
        import redis  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed"
    return None


async def run(args: argparse.Namespace) -> int:
    started = time.time()
    nofile = raise_nofile()
    profile = sc.PROFILES["smoke" if args.smoke else "quick" if args.quick else "full"]
    repeats = args.repeats if args.repeats is not None else (1 if args.smoke else 3)
    clients = args.clients or (1 if args.smoke else 2)
    if nofile < profile.idle + 1000:
        scaled = max(10, nofile - 1000)
        print(f"! ulimit -n hard limit is {nofile}: idle connections scaled from {profile.idle} to {scaled}")
        profile.idle = scaled
        profile.fanout = [min(n, scaled) for n in profile.fanout]
    if args.levels:
        profile.levels = [int(x) for x in args.levels.split(",")]
    if args.fanout:
        profile.fanout = [int(x) for x in args.fanout.split(",")]
    tree: Path | None = args.bfstream
    only = [s for item in args.only for s in item.split(",")] if args.only else SCENARIOS
    rev = git_rev(tree or ROOT)  # at the start: others may commit during a long run
    print(f"bench: {', '.join(only)}; repeats {repeats}; {clients} client processes; bfstream from "
          f"{tree or ROOT} ({rev}); ulimit -n {nofile}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)  # fmt: skip
    results: dict[str, Any] = {"scenarios": {}}
    with tempfile.TemporaryDirectory(prefix="bfstream-bench-") as tmp_name:
        tmp = Path(tmp_name)
        target = Target(tree, dict(BENCH_SETTINGS))
        await create_app(target, tmp / "data")
        if target.dropped:
            print(f"! settings this tree does not know, not set: {', '.join(target.dropped)}")
        providers, provider_port = await start_providers(args.providers)
        ctx = sc.Context(args, profile, tmp, target, tmp / "data", provider_port, providers, clients, nofile)
        try:
            for name in only:
                if name == "redis" and (why := redis_missing(args)):
                    print(f"\n== redis == skipped: {why}", flush=True)
                    results["scenarios"]["redis"] = {"skipped": why}
                    continue
                todo = cases(ctx, name)
                runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in todo}
                for r in range(repeats):
                    for label, heavy, make in todo:
                        if heavy and not args.repeats_all and r >= profile.heavy_repeats:
                            continue
                        t0 = time.perf_counter()
                        try:
                            async with asyncio.timeout(RUN_TIMEOUT):
                                figures = await make()
                        except Exception as e:
                            figures = {"problems": [f"run failed: {type(e).__name__}: {e}"]}
                            if args.verbose:
                                traceback.print_exc()
                        runs[label].append(figures)
                        took = time.perf_counter() - t0
                        print(f"  {name} / {label} #{r + 1}: {brief(figures)} ({took:.1f} s)", flush=True)
                results["scenarios"][name] = {label: combine(rs) for label, rs in runs.items()}
        finally:
            for p in providers:
                if p.proc.stdin is not None:
                    p.proc.stdin.close()
            await asyncio.gather(*(p.stop() for p in providers), return_exceptions=True)
    results["meta"] = {
        "tree": str(tree or ROOT),
        "rev": rev,
        "bfstream_imported_from": imported_from(tree),
        "profile": "smoke" if args.smoke else "quick" if args.quick else "full",
        "repeats": repeats,
        "clients": clients,
        "providers": args.providers,
        "nofile": nofile,
        "settings": target.settings,
        "settings_dropped": target.dropped,
        "notes": ctx.notes[:20],
        "machine": describe_machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
    }
    print_tables(results)
    for note in ctx.notes[:10]:
        print(f"! {note}")
    out = write_json(Path(args.json), results)
    print(f"\nwritten {out} ({results['meta']['seconds']} s)")
    failed = [n for n, cs in results["scenarios"].items() for c in cs.values()
              if isinstance(c, dict) and any("run failed" in x for x in c.get("problems", []))]  # fmt: skip
    return 1 if failed else 0


def write_json(out: Path, results: dict[str, Any]) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    return out


def brief(figures: dict[str, Any]) -> str:
    keys = ("added_p50_ms", "added_p99_ms", "ttft_overhead_ms", "server_cpu_us_per_chunk", "knee_streams",
            "deliveries_per_s", "p99_ms", "kb_per_connection", "ms_to_healthz", "missing_pct")  # fmt: skip
    shown = [f"{k}={figures[k]:.2f}" for k in keys if isinstance(figures.get(k), int | float)]
    problems = figures.get("problems") or []
    return " ".join(shown) + (f" [{len(problems)} problems: {problems[0][:160]}]" if problems else "")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller and shorter (a couple of minutes)")
    size.add_argument("--smoke", action="store_true", help="tiny counts, one repeat: checks the command works (CI)")
    parser.add_argument("--repeats", type=int, help="runs per case (3; smoke 1)")
    parser.add_argument(
        "--repeats-all",
        action="store_true",
        help="repeat the heavy cases too (knee, memory, fan-out past 1,000 listeners; by default they run once)",
    )
    parser.add_argument("--only", action="append", help=f"scenario(s), comma-separated: {','.join(SCENARIOS)}")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "latest.json"), help="result file")
    parser.add_argument("--bfstream", metavar="PATH", help="run the server from this checkout instead")
    parser.add_argument("--levels", help="latency: concurrent streams, comma-separated (1,100,500,1000)")
    parser.add_argument("--fanout", help="fanout: listeners, comma-separated (1,100,1000,10000)")
    parser.add_argument("--clients", type=int, help="load-client processes (2; smoke 1)")
    parser.add_argument("--providers", type=int, default=1, help="fake provider processes (SO_REUSEPORT)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL admin connection; the redis scenario makes and drops a database of its own there",
    )
    parser.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="print two result files side by side")
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks of failed runs")
    args = parser.parse_args()
    if args.bfstream:
        args.bfstream = Path(args.bfstream).resolve()
        if not (args.bfstream / "bfstream" / "cli.py").is_file():
            parser.error(f"--bfstream {args.bfstream}: no bfstream/cli.py there")
    if args.compare:
        old, new = (json.loads(Path(p).read_text()) for p in args.compare)
        compare(old, new, f"{Path(args.compare[0]).stem} ({old['meta']['rev']})",
                f"{Path(args.compare[1]).stem} ({new['meta']['rev']})")  # fmt: skip
        return
    unknown = [s for item in args.only or [] for s in item.split(",") if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown}: choose from {', '.join(SCENARIOS)}")
    sys.exit(uvloop.run(run(args)))


if __name__ == "__main__":
    main()
