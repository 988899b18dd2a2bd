"""Medians, ratios and the printed tables of a benchmark run."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

BASELINES = ("bare", "sql/update", "sql/update-insert")


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (config, route, variant): medians over the rounds and the ratios."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["config"], run["route"], run["variant"]), []).append(run)
    rows = []
    for (config, route, variant), items in groups.items():
        good = [item["result"] for item in items if item.get("result")]
        row: dict[str, Any] = {"config": config, "route": route, "variant": variant}
        if good:
            row.update(
                rps=round(statistics.median(r["rps"] for r in good), 1),
                p50_ms=round(statistics.median(r["p50_ms"] for r in good), 2),
                p99_ms=round(statistics.median(r["p99_ms"] for r in good), 2),
                rounds=len(good),
                rps_rounds=[r["rps"] for r in good],
                failed=sum(_failed(r) for r in good),
                requests=sum(r["requests"] for r in good),
                others_cpu_share=_median_or_none(i.get("others_cpu_share") for i in items),
            )
        else:
            row.update(rps=None, rounds=0, error=next((i.get("error") for i in items), None))
        rows.append(row)
    index = {(r["config"], r["route"], r["variant"]): r for r in rows}
    for row in rows:
        for base in BASELINES:
            other = index.get((row["config"], base, row["variant"]))
            key = "ratio_" + base.replace("/", "_").replace("-", "_")
            if row.get("rps") and other and other.get("rps"):
                row[key] = round(row["rps"] / other["rps"], 3)
            else:
                row[key] = None
    return rows


def _median_or_none(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def _failed(result: dict[str, Any]) -> int:
    e = result.get("errors", {})
    return int(e.get("status", 0) + e.get("timeout", 0) + e.get("connect", 0) + e.get("write", 0))


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec)


def table(rows: Iterable[list[str]], header: list[str], right: set[int] | None = None) -> str:
    rows = [header, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = right if right is not None else set(range(1, len(header)))
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def http_table(rows: list[dict[str, Any]]) -> str:
    header = [
        "database",
        "route",
        "variant",
        "req/s",
        "p50 ms",
        "p99 ms",
        "x bare",
        "x sql/update",
        "x sql/upd+ins",
        "failed",
        "others",
    ]
    body = [
        [
            row["config"],
            "/" + row["route"],
            row["variant"],
            _fmt(row.get("rps"), ",.0f"),
            _fmt(row.get("p50_ms"), ".1f"),
            _fmt(row.get("p99_ms"), ".1f"),
            _fmt(row.get("ratio_bare"), ".2f"),
            _fmt(row.get("ratio_sql_update"), ".2f"),
            _fmt(row.get("ratio_sql_update_insert"), ".2f"),
            _fmt(row.get("failed", row.get("error"))),
            _fmt(row.get("others_cpu_share"), ".0%"),
        ]
        for row in rows
    ]
    return table(body, header, right={3, 4, 5, 6, 7, 8, 9, 10})


def overhead_table(results: dict[str, dict[str, Any]]) -> str:
    header = ["database", "view", "median µs", "p95 µs", "overhead µs", "vs sql/upd+ins µs"]
    body = []
    for config, views in results.items():
        if "error" in views:
            body.append([config, "(failed)", str(views["error"])[:60], "", "", ""])
            continue
        base = views.get("sql/update-insert", {}).get("median_us")
        for name, v in views.items():
            extra = None if base is None else round(v["median_us"] - base, 1)
            body.append(
                [
                    config,
                    "/" + name,
                    _fmt(v["median_us"], ",.1f"),
                    _fmt(v["p95_us"], ",.1f"),
                    _fmt(v["overhead_us"], ",.1f"),
                    _fmt(extra, ",.1f") if name.startswith("guard/") else "",
                ]
            )
    return table(body, header, right={2, 3, 4, 5})


def statements_table(results: dict[str, dict[str, Any]]) -> str:
    header = ["database", "route", "statements", "transactions", "round trips (server log)"]
    body = []
    for config, routes in results.items():
        if "error" in routes:
            body.append([config, "(failed)", str(routes["error"])[:60], "", ""])
            continue
        for name, v in routes.items():
            body.append(
                [
                    config,
                    "/" + name,
                    str(v["statements"]),
                    str(v["transactions"]),
                    _fmt(v.get("round_trips")),
                ]
            )
    return table(body, header, right={2, 3, 4})
