"""Accounts: the personal and the team guard, against the hand-written statements, in process.

The same three views side by side, on one database, in one run:

- ``/sql/update-insert``: the hand-written conditional upsert of a counter and an ``INSERT`` into
  a log, in one transaction (what a developer writes without the extension);
- ``/guard/quota``: ``@requires_quota`` charging the user's personal account;
- ``/guard/quota/team``: the same guard charging a team the user is a capped member of: the pool
  under the plan's limit and the member's counter under their cap move together.

For each: the statements one request sends (SQLAlchemy's ``before_cursor_execute``, and on
PostgreSQL the server's own log, which shows the driver's implicit ``BEGIN``), and the median time
of a call of the view in a ``test_request_context``, the views taking turns in blocks so that a
busy moment of the machine falls on all of them. Ratios are requests per second (the inverse of
the median): ``personal / hand-written`` and ``team / personal``.

``python -m bench.accounts [DATABASE_URL ...]`` runs it without the suite's servers.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event

from flask_profile_billing.domain.accounts import Role

from . import inprocess
from .app import ACCOUNT_HEADER, HOT_USER, HUGE, billing, create_app, db, setup_database

TEAM_OWNER = "team-owner"
TEAM_MEMBER = "team-member"
CAP = HUGE // 2
"""The member's cap: below the pool (so it is a real cap, compared on every charge), never
reached during a run."""

ViewCall = tuple[str, dict[str, str]]


def setup_team(app: Flask) -> str:
    """A team on the bench plan with ``TEAM_MEMBER`` capped; its first charge writes the member's
    and the pool's counter rows of the period, as a team in use has them."""
    with app.app_context():
        account = billing.accounts.create_team(TEAM_OWNER, "Bench team")
        billing.accounts.add_member(TEAM_OWNER, account.id, TEAM_MEMBER, Role.MEMBER)
        billing.accounts.set_cap(TEAM_OWNER, account.id, TEAM_MEMBER, "analysis", CAP)
        billing.consume(TEAM_MEMBER, "analysis", account_id=account.id)
        return account.id


def views(team: str) -> dict[str, ViewCall]:
    return {
        "sql/update-insert": ("/sql/update-insert", {"X-User": HOT_USER}),
        "guard/quota": ("/guard/quota", {"X-User": HOT_USER}),
        "guard/quota/team": ("/guard/quota/team", {"X-User": TEAM_MEMBER, ACCOUNT_HEADER: team}),
    }


def timing(app: Flask, calls: dict[str, ViewCall], iterations: int, block: int = 50) -> Any:
    """Median µs per call of each view, the views taking turns in blocks of ``block`` calls."""
    found = {
        name: (path, headers, app.view_functions[inprocess._endpoint(app, path)])
        for name, (path, headers) in calls.items()
    }
    samples: dict[str, list[float]] = {name: [] for name in found}

    def call(path: str, headers: dict[str, str], view: Callable[[], Any]) -> float:
        with app.test_request_context(path, headers=headers):
            start = time.perf_counter_ns()
            response = view()
            elapsed = time.perf_counter_ns() - start
        status = getattr(response, "status_code", 200)
        if status != 200:
            raise RuntimeError(f"{path} answered {status} in process")
        return elapsed / 1000

    for path, headers, view in found.values():  # warm-up: pools, statement caches
        for _ in range(min(50, iterations)):
            call(path, headers, view)
    done = 0
    while done < iterations:
        count = min(block, iterations - done)
        for name, (path, headers, view) in found.items():
            samples[name].extend(call(path, headers, view) for _ in range(count))
        done += count
    return {name: inprocess.summarise(values) for name, values in samples.items()}


def statements(app: Flask, calls: dict[str, ViewCall], server_log: Path | None) -> Any:
    """What one request of each view sends to the database (after warm-up requests)."""
    client = app.test_client()
    with app.app_context():
        engine = db.engine
    result: dict[str, Any] = {}
    for name, (path, headers) in calls.items():
        for _ in range(3):
            client.get(path, headers=headers)
        offset = server_log.stat().st_size if server_log else 0
        with inprocess.recording(engine) as log:
            status = client.get(path, headers=headers).status_code
        executed = [sql for kind, sql in log if kind == "execute"]
        entry: dict[str, Any] = {
            "status": status,
            "statements": len(executed),
            "transactions": sum(1 for kind, _ in log if kind == "begin"),
            "sql": executed,
        }
        if server_log is not None:
            time.sleep(0.3)  # the logging collector is asynchronous to us
            entry["server"] = inprocess._server_statements(server_log, offset)
            entry["round_trips"] = len(entry["server"])
        result[name] = entry
    return result


def explain_team_charge(app: Flask, team: str) -> list[str]:
    """PostgreSQL's plan, with timings, of the team member's charging statement (rolled back)."""
    client = app.test_client()
    with app.app_context():
        engine = db.engine
    captured: list[tuple[str, Any]] = []

    def on_execute(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "billing_member_counters" in statement and "FOR UPDATE" in statement:
            captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        client.get("/guard/quota/team", headers={"X-User": TEAM_MEMBER, ACCOUNT_HEADER: team})
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
    if not captured:
        return ["(the team statement was not seen)"]
    statement, parameters = captured[0]
    # Without the request's idempotency key, which the charge above stored: a charge, not a replay.
    parameters = {**parameters, "idempotency_key": None}
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters
        ).fetchall()
        connection.rollback()
    return [row[0] for row in rows]


def measure(
    url: str,
    iterations: int,
    logged_url: str | None = None,
    server_log: Path | None = None,
) -> dict[str, Any]:
    """Statements and in-process time of the three views on the database at ``url``; the
    statements on ``logged_url`` when given (a database whose server logs every statement, which
    would slow the timed calls down)."""
    app = create_app(url)
    setup_database(app, [HOT_USER])
    team = setup_team(app)
    calls = views(team)
    if logged_url is not None:
        logged = create_app(logged_url)
        setup_database(logged, [HOT_USER])
        result: dict[str, Any] = {
            "statements": statements(logged, views(setup_team(logged)), server_log)
        }
        with logged.app_context():
            db.engine.dispose()
    else:
        result = {"statements": statements(app, calls, None)}
    result["timing"] = timing(app, calls, iterations)
    medians = {name: v["median_us"] for name, v in result["timing"].items()}
    # Requests per second of one against the other: the inverse ratio of the medians.
    result["personal_vs_hand_written"] = round(
        medians["sql/update-insert"] / medians["guard/quota"], 2
    )
    result["team_vs_personal"] = round(medians["guard/quota"] / medians["guard/quota/team"], 2)
    if url.startswith("postgresql"):
        result["team_plan"] = explain_team_charge(app, team)
    with app.app_context():
        db.engine.dispose()
    return result


def summary(config: str, measured: dict[str, Any]) -> str:
    lines = [f"{config}:"]
    for name, entry in measured["statements"].items():
        trips = entry.get("round_trips")
        lines.append(
            f"  /{name:<20} {entry['statements']} statement(s), {entry['transactions']} "
            f"transaction(s)"
            + (f", {trips} round trip(s)" if trips is not None else "")
            + f"; median {measured['timing'][name]['median_us']:,.1f} µs, "
            f"p95 {measured['timing'][name]['p95_us']:,.1f} µs"
        )
    lines.append(
        f"  personal / hand-written {measured['personal_vs_hand_written']:.2f} x; "
        f"team / personal {measured['team_vs_personal']:.2f} x"
    )
    for line in measured.get("team_plan", []):
        lines.append("    " + line)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    for url in argv or ["sqlite:////tmp/flask-profile-billing-bench-accounts.sqlite3"]:
        print(summary(url.split(":", 1)[0], measure(url, 500)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
