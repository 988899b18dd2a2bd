"""Measurements inside this process (no HTTP server): guard overhead, statements, usage statistics.

- ``overhead``: time of one call of each view, with a fresh ``test_request_context`` per call, the
  view called directly (no WSGI, no routing). A guard's overhead is its median minus ``/bare``'s.
- ``statements``: what one request of each route sends to the database, counted with SQLAlchemy's
  ``before_cursor_execute`` event (plus the transaction events), and on PostgreSQL also from the
  server's own log (``log_statement = all``), which also shows the driver's implicit ``BEGIN``.
- ``usage_stats``: ``GET /api/subscription/usage?days=N`` over a user with millions of events,
  bulk-loaded with one ``INSERT ... SELECT generate_series``; and ``GET /api/profile/me``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import Engine, event, inspect, text

from .app import HOT_USER, create_app, db, setup_database

# The routes measured in process, and the path each is called under.
VIEWS = {
    "bare": "/bare",
    "sql/update": "/sql/update",
    "sql/update-insert": "/sql/update-insert",
    "guard/quota": "/guard/quota",
    "guard/feature": "/guard/feature",
    "guard/capacity": "/guard/capacity",
}


def _endpoint(app: Flask, path: str) -> str:
    adapter = app.url_map.bind("localhost")
    endpoint, _ = adapter.match(path, method="GET")
    return str(endpoint)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def summarise(samples_us: list[float]) -> dict[str, float]:
    return {
        "n": len(samples_us),
        "median_us": round(statistics.median(samples_us), 1),
        "mean_us": round(statistics.fmean(samples_us), 1),
        "p95_us": round(_percentile(samples_us, 0.95), 1),
    }


# -- overhead per call -------------------------------------------------------------------------


def overhead(app: Flask, iterations: int, *, block: int = 50) -> dict[str, Any]:
    """Median µs per call of each view; the views take turns in blocks of ``block`` calls."""
    views = {name: (path, app.view_functions[_endpoint(app, path)]) for name, path in VIEWS.items()}
    samples: dict[str, list[float]] = {name: [] for name in views}
    headers = {"X-User": HOT_USER}

    def call(path: str, view: Callable[[], Any]) -> float:
        with app.test_request_context(path, headers=headers):
            start = time.perf_counter_ns()
            response = view()
            elapsed = time.perf_counter_ns() - start
        status = getattr(response, "status_code", 200)
        if status != 200:
            raise RuntimeError(f"{path} answered {status} in process")
        return elapsed / 1000

    for path, view in views.values():  # warm-up: pools, statement caches, first-use paths
        for _ in range(min(50, iterations)):
            call(path, view)
    done = 0
    while done < iterations:
        count = min(block, iterations - done)
        for name, (path, view) in views.items():
            samples[name].extend(call(path, view) for _ in range(count))
        done += count
    results = {name: summarise(values) for name, values in samples.items()}
    bare = results["bare"]["median_us"]
    for values in results.values():
        values["overhead_us"] = round(values["median_us"] - bare, 1)
    return results


# -- statements per request --------------------------------------------------------------------


@contextmanager
def recording(engine: Engine) -> Iterator[list[tuple[str, str]]]:
    """Every statement the engine sends, and its transaction boundaries, while the block runs."""
    log: list[tuple[str, str]] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        log.append(("execute", " ".join(statement.split())))

    def on_begin(conn: Any) -> None:
        log.append(("begin", ""))

    def on_commit(conn: Any) -> None:
        log.append(("commit", ""))

    def on_rollback(conn: Any) -> None:
        log.append(("rollback", ""))

    listeners: list[tuple[str, Callable[..., Any]]] = [
        ("before_cursor_execute", on_execute),
        ("begin", on_begin),
        ("commit", on_commit),
        ("rollback", on_rollback),
    ]
    for name, fn in listeners:
        event.listen(engine, name, fn)
    try:
        yield log
    finally:
        for name, fn in listeners:
            event.remove(engine, name, fn)


def statements(
    app: Flask, server_log: Path | None = None, routes: dict[str, str] | None = None
) -> dict[str, Any]:
    """What one request of each route sends to the database (after warm-up requests)."""
    client = app.test_client()
    headers = {"X-User": HOT_USER}
    result: dict[str, Any] = {}
    with app.app_context():
        engine = db.engine
    for name, path in (routes or VIEWS).items():
        for _ in range(3):
            client.get(path, headers=headers)
        offset = server_log.stat().st_size if server_log else 0
        with recording(engine) as log:
            status = client.get(path, headers=headers).status_code
        executed = [sql for kind, sql in log if kind == "execute"]
        entry: dict[str, Any] = {
            "status": status,
            "statements": len(executed),
            "transactions": sum(1 for kind, _ in log if kind == "begin"),
            "commits": sum(1 for kind, _ in log if kind == "commit"),
            "rollbacks": sum(1 for kind, _ in log if kind == "rollback"),
            "sql": executed,
        }
        if server_log is not None:
            time.sleep(0.3)  # the logging collector is asynchronous to us
            entry["server"] = _server_statements(server_log, offset)
            entry["round_trips"] = len(entry["server"])
        result[name] = entry
    return result


def _server_statements(log: Path, offset: int) -> list[str]:
    """Statements PostgreSQL logged since ``offset`` (``statement:`` and ``execute ...:`` entries;
    a statement of several lines continues on lines that start with a tab)."""
    with log.open("rb") as handle:
        handle.seek(offset)
        lines = handle.read().decode(errors="replace").splitlines()
    found: list[list[str]] = []
    current: list[str] | None = None
    for line in lines:
        if line.startswith("\t") and current is not None:
            current.append(line.strip())
            continue
        current = None
        for marker in ("LOG:  statement: ", "LOG:  execute "):
            if marker in line:
                sql = line.split(marker, 1)[1]
                if marker.endswith("execute "):
                    sql = sql.split(": ", 1)[1] if ": " in sql else sql
                current = [sql.strip()]
                found.append(current)
                break
    return [" ".join(" ".join(parts).split()) for parts in found]


# -- usage statistics and the profile ----------------------------------------------------------

STATS_USER = "stats"
LOAD_EVENTS_SQL = text(
    """
    INSERT INTO billing_usage_events
        (account_id, actor_user_id, metric, amount, period_start, resources, metadata,
         idempotency_key, created_at)
    SELECT 'user:' || :user_id, :user_id,
           CASE WHEN g % 5 = 0 THEN 'export' ELSE 'analysis' END,
           1,
           date_trunc('month', ts),
           NULL, NULL, NULL,
           ts
    FROM (
        SELECT g, CAST(:now AS timestamptz) - g * (interval '400 days' / :n) AS ts
        FROM generate_series(0, :n - 1) AS g
    ) AS spread
    """
)


ROLLUP_TABLE = "billing_usage_daily"
REBUILD_ROLLUP_SQL = [
    text(f"DELETE FROM {ROLLUP_TABLE} WHERE account_id = 'user:' || :user_id"),
    text(
        f"INSERT INTO {ROLLUP_TABLE} (account_id, metric, day, total) "
        "SELECT account_id, metric, CAST(timezone('UTC', created_at) AS DATE), SUM(amount) "
        "FROM billing_usage_events WHERE account_id = 'user:' || :user_id "
        "GROUP BY account_id, metric, CAST(timezone('UTC', created_at) AS DATE)"
    ),
]


def load_usage_events(app: Flask, events: int) -> dict[str, Any]:
    """Bulk-load ``events`` usage events of STATS_USER over 400 days.

    Events loaded behind the extension's back miss what a charge also writes: when the extension
    keeps a daily rollup (``billing_usage_daily``), it is rebuilt from the log for that user, as
    the extension's migration does, so the statistics read what real charges would have left.
    """
    timings: dict[str, Any] = {}
    start = time.perf_counter()
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(
            LOAD_EVENTS_SQL, {"user_id": STATS_USER, "now": datetime.now(UTC), "n": events}
        )
    timings["load_seconds"] = round(time.perf_counter() - start, 1)
    with app.app_context():
        engine = db.engine
        timings["rollup_table"] = inspect(engine).has_table(ROLLUP_TABLE)
        if timings["rollup_table"]:
            start = time.perf_counter()
            with engine.begin() as connection:
                for statement in REBUILD_ROLLUP_SQL:
                    connection.execute(statement, {"user_id": STATS_USER})
            timings["rollup_rebuild_seconds"] = round(time.perf_counter() - start, 1)
        with engine.connect() as connection:
            autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
            autocommit.execute(text("VACUUM ANALYZE billing_usage_events"))
            if timings["rollup_table"]:
                autocommit.execute(text(f"VACUUM ANALYZE {ROLLUP_TABLE}"))
    return timings


def time_get(app: Flask, path: str, user: str, calls: int, warmup: int = 2) -> dict[str, Any]:
    """p50/p95 ms of ``GET path`` through the test client (server time: no network)."""
    client = app.test_client()
    headers = {"X-User": user}
    status = 0
    for _ in range(warmup):
        status = client.get(path, headers=headers).status_code
    if status != 200:
        return {"available": False, "status": status}
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        response = client.get(path, headers=headers)
        samples.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            return {"available": False, "status": response.status_code}
    return {
        "available": True,
        "status": 200,
        "calls": calls,
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(_percentile(samples, 0.95), 2),
        "max_ms": round(max(samples), 2),
    }


def explain_usage(app: Flask, days: int) -> list[str]:
    """PostgreSQL's plan, with timings, of the usage statistics query the endpoint sends."""
    client = app.test_client()
    with app.app_context():
        engine = db.engine
    captured: list[tuple[str, Any]] = []

    def on_execute(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        lowered = statement.lower()
        if ("billing_usage_events" in lowered and "sum(" in lowered) or (
            ROLLUP_TABLE in lowered and lowered.lstrip().startswith("select")
        ):
            captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        client.get(f"/api/subscription/usage?days={days}", headers={"X-User": STATS_USER})
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
    if not captured:
        return ["(the usage query was not seen)"]
    statement, parameters = captured[0]
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters
        ).fetchall()
    return [row[0] for row in rows]


def usage_and_profile(url: str, events: int, calls: int) -> dict[str, Any]:
    """Load the events, then time the usage endpoint (30 and 365 days) and the profile read."""
    app = create_app(url)
    setup_database(app, [STATS_USER])
    result: dict[str, Any] = {"events": events, **load_usage_events(app, events)}
    with app.app_context():
        total = db.session.execute(
            text("SELECT count(*) FROM billing_usage_events WHERE account_id = 'user:' || :u"),
            {"u": STATS_USER},
        ).scalar_one()
    result["events_of_user"] = int(total)
    if result.get("rollup_table"):
        with app.app_context():
            result["rollup_rows"] = db.session.execute(
                text(f"SELECT count(*) FROM {ROLLUP_TABLE} WHERE account_id = 'user:' || :u"),
                {"u": STATS_USER},
            ).scalar_one()
    for days in (30, 365):
        result[f"usage_{days}d"] = time_get(
            app, f"/api/subscription/usage?days={days}", STATS_USER, calls
        )
    result["usage_365d_plan"] = explain_usage(app, 365)
    result["profile_me_cached"] = time_get(app, "/api/profile/me", STATS_USER, calls)
    uncached = create_app(url, {"BILLING_PROFILE_CACHE_SECONDS": 0})
    result["profile_me_uncached"] = time_get(uncached, "/api/profile/me", STATS_USER, calls)
    for each in (app, uncached):
        with each.app_context():
            db.engine.dispose()
    return result
