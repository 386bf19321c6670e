"""Processes of a benchmark run: bfstream servers, fake providers, load clients; their CPU and memory.

CPU is utime+stime from ``/proc/<pid>/stat``, memory VmRSS from ``/proc/<pid>/status`` (Linux only).
Every wait has a timeout; every process started here is stopped here (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
HUGE = "1000000000"

# Generous limits: the benchmark measures the relay, not the rate limiter. Keys an older checkout
# (--bfstream) does not know are dropped one by one (see ``create_app``).
BENCH_SETTINGS = {
    "BFSTREAM_LOG_LEVEL": "warning",  # no access log line per POST
    "BFSTREAM_CREATE_FIRST_APP": "false",
    "BFSTREAM_LIMITS__STREAMS__RATE": HUGE,
    "BFSTREAM_LIMITS__STREAMS__BURST": HUGE,
    "BFSTREAM_LIMITS__MESSAGES__RATE": HUGE,
    "BFSTREAM_LIMITS__MESSAGES__BURST": HUGE,
    "BFSTREAM_LIMITS__PUBLISHES__RATE": HUGE,
    "BFSTREAM_LIMITS__PUBLISHES__BURST": HUGE,
    "BFSTREAM_LIMITS__BODY_BYTES_PER_ADDRESS__RATE": HUGE,
    "BFSTREAM_LIMITS__BODY_BYTES_PER_ADDRESS__BURST": HUGE,
    "BFSTREAM_LIMITS__CONNECTIONS_PER_APP": "1000000",
    "BFSTREAM_LIMITS__CONNECTIONS_PER_ADDRESS": "1000000",
    "BFSTREAM_STREAMS__MAX_PER_APP": "100000",
    "BFSTREAM_MESSAGING__SEND_QUEUE": "10000",
}


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def settled_rss_kb(pid: int, within: float = 10.0) -> int:
    """VmRSS once it stops moving: two readings 0.5 s apart within 0.5% (or the last one after ``within`` s)."""
    deadline = time.monotonic() + within
    last = rss_kb(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = rss_kb(pid)
        if abs(now - last) <= max(64, last * 0.005):
            return now
        last = now
    return last


@dataclass
class Proc:
    """A child process; stdout is read line by line into ``lines`` (``readline`` to wait for one)."""

    name: str
    proc: asyncio.subprocess.Process
    log: Path | None = None
    lines: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def spawn(
        cls, name: str, argv: list[str], env: dict[str, str], log: Path | None = None, cwd: Path = ROOT
    ) -> Proc:
        """With ``log``, stdout and stderr go to that file; else stdout is a pipe read into ``lines``.
        ``python -m`` puts the working directory first on sys.path: a server runs in its own tree."""
        if log is not None:
            with log.open("ab") as out:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.PIPE, stdout=out, stderr=asyncio.subprocess.STDOUT, env=env,
                    cwd=cwd,
                )  # fmt: skip
            return cls(name, proc, log)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env, cwd=cwd, limit=2**26
        )
        self = cls(name, proc)
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            await self.lines.put(raw.decode(errors="replace"))
        await self.lines.put("")

    async def readline(self, within: float) -> str:
        """The next stdout line; '' at end of output; TimeoutError after ``within`` s."""
        return await asyncio.wait_for(self.lines.get(), within)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    async def stop(self, within: float = STOP_TIMEOUT) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), within)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await asyncio.wait_for(self.proc.wait(), within)
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader

    def complaints(self) -> list[str]:
        """Non-empty log lines (the server runs at log level warning: so these are warnings and errors)."""
        if self.log is None or not self.log.exists():
            return []
        return [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]


def python_env(tree: Path | None, **extra: str) -> dict[str, str]:
    """This environment without BFSTREAM_*, with ``tree`` (another checkout) first on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BFSTREAM_", "OPENAI_BASE_URL"))}
    path = str(tree or ROOT)
    env["PYTHONPATH"] = path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return {**env, **extra}


@dataclass
class Target:
    """What a server is started from and with: the tree, the settings (env), and the app it serves."""

    tree: Path | None
    settings: dict[str, str]
    app_id: str = ""
    api_key: str = ""
    dropped: list[str] = field(default_factory=list)


async def create_app(target: Target, data_dir: Path, database_url: str | None = None) -> None:
    """``bfstream apps create bench --json`` in ``data_dir`` (or the database). A setting the tree refuses
    as unknown (an older checkout) is dropped and the command run again; the dropped ones are kept."""
    argv = [sys.executable, "-m", "bfstream.cli", "apps", "create", "bench", "--json", "--data-dir", str(data_dir)]
    if database_url:
        argv += ["--database-url", database_url]
    for _ in range(len(target.settings) + 1):
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=target.tree or ROOT,
            env=python_env(target.tree, **target.settings),
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), START_TIMEOUT)
        if proc.returncode == 0:
            app = json.loads(out.decode().strip().splitlines()[-1])
            target.app_id, target.api_key = app["appId"], app["apiKey"]
            return
        text = err.decode(errors="replace")
        unknown = [
            m.group(1) for m in re.finditer(r"([\w.]+): Extra inputs are not permitted", text)
        ]  # e.g. limits.body_bytes_per_address
        prefixes = tuple("bfstream_" + u.replace(".", "__") for u in unknown)
        envs = {k for k in target.settings if k.lower().startswith(prefixes)}
        if not envs:
            raise RuntimeError(f"bfstream apps create failed ({proc.returncode}): {text[-2000:]}")
        for key in envs:
            target.settings.pop(key)
            target.dropped.append(key)
    raise RuntimeError("bfstream apps create kept refusing the settings")


async def healthz(port: int, within: float = 2.0) -> bool:
    from bench.wire import http_call

    try:
        status, _ = await http_call(port, "GET", "/healthz", within=within)
    except (OSError, TimeoutError):
        return False
    return status == 200


async def start_server(
    target: Target, data_dir: Path, provider_port: int, log: Path, extra: dict[str, str] | None = None
) -> tuple[Proc, int, float]:
    """``bfstream serve`` on a free port; returns it, the port and the seconds from spawn to the first 200
    from /healthz (polled every 5 ms, each try on a new connection)."""
    port = free_port()
    env = python_env(
        target.tree, **{**target.settings, **(extra or {})}, OPENAI_BASE_URL=f"http://127.0.0.1:{provider_port}/v1"
    )
    argv = [sys.executable, "-m", "bfstream.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    t0 = time.perf_counter()
    proc = await Proc.spawn("bfstream", argv, env, log=log, cwd=target.tree or ROOT)
    try:
        deadline = t0 + START_TIMEOUT
        while not await healthz(port, within=1.0):
            if proc.proc.returncode is not None:
                raise RuntimeError(f"bfstream serve exited ({proc.proc.returncode}): {proc.complaints()[-20:]}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"bfstream serve: no 200 from /healthz within {START_TIMEOUT} s")
            await asyncio.sleep(0.005)
    except BaseException:
        await proc.stop()
        raise
    return proc, port, time.perf_counter() - t0


async def start_providers(count: int) -> tuple[list[Proc], int]:
    """``count`` fake provider processes sharing one port (SO_REUSEPORT)."""
    port = free_port()
    procs: list[Proc] = []
    try:
        for i in range(count):
            argv = [sys.executable, "-m", "bench.provider", "--port", str(port), "--reuse-port"]
            proc = await Proc.spawn(f"provider{i}", argv, python_env(None))
            procs.append(proc)
            line = await proc.readline(START_TIMEOUT)
            if not line.startswith("ready"):
                raise RuntimeError(f"fake provider did not start: {line!r}")
    except BaseException:
        await asyncio.gather(*(p.stop() for p in procs), return_exceptions=True)
        raise
    return procs, port


def total_cpu(procs: list[Proc]) -> float:
    return sum(cpu_seconds(p.pid) for p in procs)


def imported_from(tree: Path | None) -> str:
    """Where a server started for ``tree`` imports bfstream from (a check on --bfstream)."""
    import subprocess

    code = "import bfstream; print(bfstream.__file__)"
    try:
        done = subprocess.run([sys.executable, "-c", code], env=python_env(tree), cwd=tree or ROOT,
                              capture_output=True, text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"? ({e})"
    return done.stdout.strip() or done.stderr.strip()[-200:]


def describe_machine() -> dict[str, Any]:
    import platform

    return {
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
