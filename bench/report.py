"""Figures: percentiles, the median-and-spread of repeated runs, the printed tables and ``--compare``.

A result file is ``{"meta": {...}, "scenarios": {scenario: {case: {metric: value}}}}`` where a value is a
``stat`` (``{"median", "min", "max", "runs"}``), or a plain number/string for what is not repeated.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def pct(ordered: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values (nearest rank); NaN when empty."""
    if not ordered:
        return math.nan
    return float(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))])


def stat(values: Sequence[float | None]) -> dict[str, Any]:
    runs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not runs:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {
        "median": round(statistics.median(runs), 4),
        "min": round(min(runs), 4),
        "max": round(max(runs), 4),
        "runs": [round(v, 4) for v in runs],
    }


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric over repeated runs: numbers become a stat, lists of strings are merged, others kept from the last."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for run in runs for k in run):
        values = [run.get(key) for run in runs]
        if all(isinstance(v, int | float) or v is None for v in values):
            out[key] = stat(values)
        elif all(isinstance(v, list) for v in values if v is not None):
            out[key] = list(dict.fromkeys(x for v in values if v for x in v))[:10]
        else:
            out[key] = values[-1]
    return out


def fmt(value: Any) -> str:
    if isinstance(value, dict) and "median" in value:
        med, lo, hi = value["median"], value["min"], value["max"]
        if med is None:
            return "-"
        if lo == hi or len(value.get("runs", [])) < 2:
            return num(med)
        return f"{num(med)} ({num(lo)}-{num(hi)})"
    if isinstance(value, float | int):
        return num(value)
    return "-" if value is None else str(value)


def num(x: float) -> str:
    if x is None:
        return "-"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


# What the tables show per scenario (all metrics stay in the JSON).
COLUMNS: dict[str, list[str]] = {
    "latency": [
        "added_p50_ms", "added_p99_ms", "bf_p50_ms", "bf_p99_ms", "direct_p50_ms", "direct_p99_ms",
        "ttft_overhead_ms", "server_cpu_us_per_chunk", "server_cpu_pct", "missing_pct", "posts_failed",
        "client_cpu_pct",
    ],
    "ttft": ["ttft_overhead_ms", "bf_ttft_p50_ms", "direct_ttft_p50_ms", "bf_ttft_p99_ms", "post_rtt_p50_ms"],
    "knee": ["knee_streams", "knee_chunks_per_s", "first_over_streams", "cpu_s_per_1000_chunks_at_knee"],
    "fanout": [
        "deliveries_per_s", "offered_per_s", "p50_ms", "p99_ms", "missing_pct", "server_cpu_us_per_delivery",
        "server_cpu_pct", "connect_failed",
    ],
    "memory": [
        "connections", "kb_per_connection", "rss_idle_mb", "rss_loaded_mb", "connects_per_s", "connect_failed",
        "dropped",
    ],
    "logs": [
        "streams", "deltas", "rss_before_mb", "rss_ended_1_mb", "rss_expired_1_mb", "rss_ended_2_mb",
        "rss_expired_2_mb", "kb_per_ended_stream", "kb_added_by_round_2",
    ],
    "startup": ["ms_to_healthz"],
    "redis": [
        "added_p50_ms", "added_p99_ms", "bf_p50_ms", "bf_p99_ms", "deliveries_per_s", "p99_ms", "missing_pct",
        "server_a_cpu_pct", "server_b_cpu_pct",
    ],
}  # fmt: skip


def print_tables(results: dict[str, Any]) -> None:
    for name, cases in results.get("scenarios", {}).items():
        print(f"\n== {name} ==")
        if not isinstance(cases, dict) or "skipped" in cases:
            print(f"  skipped: {cases.get('skipped') if isinstance(cases, dict) else cases}")
            continue
        columns = [c for c in COLUMNS.get(name, []) if any(c in case for case in cases.values())]
        rows = [[str(case)] + [fmt(values.get(c)) for c in columns] for case, values in cases.items()]
        header = ["case", *columns]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        print("  " + "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
        for row in rows:
            print("  " + "  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))
        for case, values in cases.items():
            problems = values.get("problems", []) or []
            for problem in problems[:3]:
                print(f"  ! {case}: {problem}")
            if len(problems) > 3:
                print(f"  ! {case}: ... {len(problems) - 3} more in the JSON")


def flatten(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, cases in results.get("scenarios", {}).items():
        if not isinstance(cases, dict):
            continue
        for case, values in cases.items():
            if not isinstance(values, dict):
                continue
            for metric in COLUMNS.get(name, []):
                if metric in values:
                    out[f"{name} / {case} / {metric}"] = values[metric]
    return out


def compare(old: dict[str, Any], new: dict[str, Any], old_name: str, new_name: str) -> None:
    a, b = flatten(old), flatten(new)
    keys = list(dict.fromkeys([*a, *b]))
    rows = [["", old_name, new_name, "new/old"]]
    for key in keys:
        va, vb = a.get(key), b.get(key)
        ma = va.get("median") if isinstance(va, dict) else va
        mb = vb.get("median") if isinstance(vb, dict) else vb
        ratio = f"{mb / ma:.2f}x" if isinstance(ma, int | float) and isinstance(mb, int | float) and ma else ""
        rows.append([key, fmt(va), fmt(vb), ratio])
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print(row[0].ljust(widths[0]) + "  " + "  ".join(v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)))
