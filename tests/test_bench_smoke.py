"""The benchmark command keeps working: ``python -m bench --smoke`` runs every scenario at toy size.

No timing is asserted (the figures of a smoke run mean nothing); only that the command exits 0 and its
JSON has every scenario with numbers where the full run would have them. The redis scenario needs Redis
and PostgreSQL; without them it is skipped by the command, which is accepted here except under CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Per scenario: metrics every case must have as a number.
REQUIRED = {
    "latency": ["added_p50_ms", "added_p99_ms", "bf_p99_ms", "direct_p99_ms", "ttft_overhead_ms",
                "server_cpu_us_per_chunk", "cpu_s_per_1000_chunks"],
    "ttft": ["ttft_overhead_ms", "bf_ttft_p50_ms", "direct_ttft_p50_ms"],
    "knee": ["knee_streams", "knee_chunks_per_s", "cpu_s_per_1000_chunks_at_knee"],
    "fanout": ["deliveries_per_s", "p99_ms", "server_cpu_us_per_delivery"],
    "memory": ["connections", "kb_per_connection"],
    "startup": ["ms_to_healthz"],
}  # fmt: skip
REDIS = {"latency": ["added_p50_ms", "added_p99_ms"], "fanout": ["deliveries_per_s", "p99_ms"]}


def median(value: object) -> object:
    return value.get("median") if isinstance(value, dict) else value


def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    scenarios = results["scenarios"]
    for name, metrics in REQUIRED.items():
        assert scenarios.get(name), f"scenario {name} missing: {done.stdout[-2000:]}"
        for case, values in scenarios[name].items():
            for metric in metrics:
                assert isinstance(median(values.get(metric)), int | float), (name, case, metric, values)
    assert set(scenarios["memory"]) == {"ws", "sse"}
    redis = scenarios.get("redis")
    assert redis, "scenario redis missing"
    if "skipped" in redis:
        assert not os.environ.get("CI"), f"redis scenario skipped under CI: {redis['skipped']}"
        return
    for prefix, metrics in REDIS.items():
        [case] = [c for c in redis if c.startswith(prefix)]
        for metric in metrics:
            assert isinstance(median(redis[case].get(metric)), int | float), (case, metric, redis[case])
