"""Compare two benchmark results: ``python -m bench.compare OLD.json NEW.json``.

Prints, for every measurement present in both files, the old and new value and the change in
percent; a change larger than ``--threshold`` percent (default 10) in the bad direction is marked
``worse``, in the good direction ``better``. Settings that differ between the runs (durations,
workers, fsync, quick mode...) are listed first: such results are not comparable as they are.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .report import table


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _change(
    old: float | None, new: float | None, higher_is_better: bool, threshold: float
) -> list[str]:
    if old is None or new is None or old == 0:
        return ["-", ""]
    pct = (new - old) / old * 100
    verdict = ""
    if abs(pct) >= threshold:
        verdict = "better" if (pct > 0) == higher_is_better else "worse"
    return [f"{pct:+.1f}%", verdict]


def compare(old: dict[str, Any], new: dict[str, Any], threshold: float) -> str:
    out: list[str] = []
    out.append(
        f"old: {old.get('started_at')}  commit {str(old.get('git', {}).get('commit'))[:10]}"
        f"  {old.get('label', '')}"
    )
    out.append(
        f"new: {new.get('started_at')}  commit {str(new.get('git', {}).get('commit'))[:10]}"
        f"  {new.get('label', '')}"
    )
    volatile = {"port", "unix_socket_directories"}  # differ on every run, mean nothing

    def stable(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k not in volatile}
        return value

    old_settings = old.get("settings", {})
    for key, value in new.get("settings", {}).items():
        if stable(old_settings.get(key)) != stable(value):
            out.append(
                f"settings differ: {key}: {stable(old_settings.get(key))!r} -> {stable(value)!r}"
            )
    for run, name in ((old, "old"), (new, "new")):
        if run.get("source_changed_during_run"):
            out.append(f"note: the package's source changed during the {name} run")
        share = _median_others(run)
        if share is not None and share > 0.1:
            out.append(
                f"note: during the {name} run other processes used {share:.0%} of the CPUs "
                "(median over its wrk runs): its numbers are not reliable"
            )

    old_http = {(r["config"], r["route"], r["variant"]): r for r in old.get("http", [])}
    rows = []
    for row in new.get("http", []):
        key = (row["config"], row["route"], row["variant"])
        before = old_http.get(key)
        if before is None:
            continue
        rows.append(
            [
                row["config"],
                "/" + row["route"],
                row["variant"],
                _num(before.get("rps")),
                _num(row.get("rps")),
                *_change(before.get("rps"), row.get("rps"), True, threshold),
                _num(before.get("p99_ms"), ".1f"),
                _num(row.get("p99_ms"), ".1f"),
                _pct(before.get("others_cpu_share")),
                _pct(row.get("others_cpu_share")),
            ]
        )
    if rows:
        out.append("\nHTTP req/s (median over rounds)")
        out.append(
            table(
                rows,
                [
                    "database",
                    "route",
                    "variant",
                    "old req/s",
                    "new req/s",
                    "change",
                    "",
                    "old p99 ms",
                    "new p99 ms",
                    "old others",
                    "new others",
                ],
                right={3, 4, 5, 7, 8, 9, 10},
            )
        )

    rows = []
    for config, views in new.get("in_process", {}).items():
        for view, values in views.items() if isinstance(views, dict) else ():
            before = old.get("in_process", {}).get(config, {}).get(view)
            if not isinstance(values, dict) or not isinstance(before, dict):
                continue
            rows.append(
                [
                    config,
                    "/" + view,
                    _num(before.get("median_us"), ",.1f"),
                    _num(values.get("median_us"), ",.1f"),
                    *_change(before.get("median_us"), values.get("median_us"), False, threshold),
                ]
            )
    if rows:
        out.append("\nIn-process time per call (median µs)")
        out.append(table(rows, ["database", "view", "old", "new", "change", ""], right={2, 3, 4}))

    rows = []
    for key in ("usage_30d", "usage_365d", "profile_me_cached", "profile_me_uncached"):
        a = old.get("usage_stats", {}).get(key, {})
        b = new.get("usage_stats", {}).get(key, {})
        if a.get("available") and b.get("available"):
            for stat in ("p50_ms", "p95_ms"):
                rows.append(
                    [
                        key,
                        stat,
                        _num(a[stat], ".1f"),
                        _num(b[stat], ".1f"),
                        *_change(a[stat], b[stat], False, threshold),
                    ]
                )
        elif a and b:
            rows.append(
                [key, "available", str(a.get("available")), str(b.get("available")), "", ""]
            )
    if rows:
        events = (
            old.get("usage_stats", {}).get("events"),
            new.get("usage_stats", {}).get("events"),
        )
        out.append(f"\nUsage statistics and profile (ms; events {events[0]} -> {events[1]})")
        out.append(table(rows, ["measure", "", "old", "new", "change", ""], right={2, 3, 4}))

    rows = []
    for scenario, run in new.get("maintenance", {}).items():
        before = old.get("maintenance", {}).get(scenario)
        if not isinstance(run, dict) or not isinstance(before, dict):
            continue
        for stat in ("seconds", "rss_peak_mib"):
            rows.append(
                [
                    scenario,
                    stat,
                    _num(before.get(stat), ".1f"),
                    _num(run.get(stat), ".1f"),
                    *_change(before.get(stat), run.get(stat), False, threshold),
                ]
            )
    if rows:
        out.append("\nMaintenance (flask billing maintenance)")
        out.append(table(rows, ["scenario", "", "old", "new", "change", ""], right={2, 3, 4}))

    rows = []
    for config, routes in new.get("statements", {}).items():
        for route, values in routes.items() if isinstance(routes, dict) else ():
            before = old.get("statements", {}).get(config, {}).get(route)
            if not isinstance(values, dict) or not isinstance(before, dict):
                continue
            pairs = [(before.get(k), values.get(k)) for k in ("statements", "round_trips")]
            if any(a != b for a, b in pairs):
                rows.append([config, "/" + route, *(f"{a} -> {b}" for a, b in pairs)])
    if rows:
        out.append("\nStatements per request that changed")
        out.append(table(rows, ["database", "route", "statements", "round trips"], right=set()))
    return "\n".join(out)


def _median_others(run: dict[str, Any]) -> float | None:
    shares = sorted(
        r["others_cpu_share"]
        for r in run.get("http_runs", [])
        if r.get("others_cpu_share") is not None
    )
    return shares[len(shares) // 2] if shares else None


def _pct(value: Any) -> str:
    return "-" if value is None else format(value, ".0%")


def _num(value: Any, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("old", type=Path)
    parser.add_argument(
        "new",
        type=Path,
        nargs="?",
        default=Path(__file__).resolve().parent / "results" / "latest.json",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=10.0,
        help="percent change that counts as better/worse (default 10)",
    )
    args = parser.parse_args(argv)
    print(compare(_load(args.old), _load(args.new), args.threshold))
    return 0


if __name__ == "__main__":
    sys.exit(main())
