"""The data migration to accounts over a large database: ``flask billing db upgrade`` timed in a
process of its own.

A database at the revision before the accounts migration (``BEFORE``) gets, bulk-loaded with
``INSERT ... SELECT generate_series``: ``subscriptions`` users, each with a current subscription
(a tenth of them paid, the rest free) and a tenth of them also with an ended older one; ``events``
usage events spread over those users (a tenth with an idempotency key, a fifth with metadata), two
on different days per user by default; a counter row per user and periodic metric for the current
period; the daily rollup built from those events as the extension's own migration builds it (about
one row per event); payments for a tenth of the users, recurring arrangements for a hundredth,
notifications for a tenth. Then ``ANALYZE``, and the command a deployment runs,
``flask billing db upgrade``, in a child process: its wall time, its resident memory sampled from
``/proc``, the CPU time of the process and of the database, the WAL written, and every statement
the server ran for it with its duration (``log_min_duration_statement = 0`` on that database during
the run). Afterwards the bench checks that every table holds as many rows as before, and, when the
upgrade reached the accounts revision, that every row is keyed by its user's personal account
(``'user:' || old user id``), that each usage event names its acting user, and that there is one
personal account per user.

``python -m bench.migration`` runs it alone, on a throwaway PostgreSQL of its own (``--help``);
``python -m bench.run`` runs it as its ``migration`` part.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, inspect, text

from .app import ENV_DATABASE_URL, billing, create_app, db
from .machine import CpuMeter
from .maintenance import _database_cpu, _rss_kib, _rss_summary

BEFORE = "0007"
"""The revision before the accounts migration: the bench loads its data there."""
USER_PREFIX = "mig-"
ACCOUNT_PREFIX = "user:"
SAMPLE_SECONDS = 0.2
ROOT = Path(__file__).resolve().parent.parent
DATABASE = "bench_migration"

# The tables the migration rewrites, and the column that names the user before it.
REKEYED = (
    "billing_subscriptions",
    "billing_usage_counters",
    "billing_usage_events",
    "billing_usage_daily",
    "billing_payments",
    "billing_recurring",
    "billing_notifications",
)
COUNTED = (*REKEYED, "billing_plans")


def create_migration_app() -> Any:
    """The app the CLI runs in (``--app`` target): the bench host with the default plans."""
    return create_app(config={"BILLING_PLANS": None})


# -- the data, at the revision before -----------------------------------------------------------

# Each statement takes :prefix, :users (subscriptions), and the counts it names; ``g`` is the row
# number. Users are ``mig-1`` .. ``mig-<users>``.
LOAD: dict[str, str] = {
    # The ended ones first, as history comes first: ids in the order they were written.
    "billing_subscriptions (ended)": (
        "INSERT INTO billing_subscriptions (user_id, plan_code, status, started_at, expires_at, "
        "period_anchor, cancelled_at, ended_at, end_reason) "
        "SELECT :prefix || (g * 10), 'starter', 'expired', now() - interval '92 days', "
        "now() - interval '61 days', now() - interval '92 days', NULL, "
        "now() - interval '61 days', 'expired' "
        "FROM generate_series(1, :users / 10) AS g"
    ),
    # A tenth paid (their period ends within the next month), the rest free.
    "billing_subscriptions (current)": (
        "INSERT INTO billing_subscriptions (user_id, plan_code, status, started_at, expires_at, "
        "period_anchor) "
        "SELECT :prefix || g, CASE WHEN g % 10 = 0 THEN 'professional' ELSE 'free' END, "
        "'active', now() - interval '61 days', "
        "CASE WHEN g % 10 = 0 THEN now() + (g % 30) * interval '1 day' + interval '1 hour' END, "
        "now() - interval '61 days' "
        "FROM generate_series(1, :users) AS g"
    ),
    "billing_usage_counters": (
        "INSERT INTO billing_usage_counters (user_id, metric, period_start, period_end, used) "
        "SELECT :prefix || g, m.metric, date_trunc('month', now()), "
        "date_trunc('month', now()) + interval '1 month', g % 50 "
        "FROM generate_series(1, :users) AS g CROSS JOIN (VALUES ('analysis'), ('export')) "
        "AS m(metric)"
    ),
    # Event g is user ((g - 1) % users) + 1's, on day (g - 1) / users before yesterday: with twice
    # as many events as users, each user has two, on two days, so the rollup gets a row for each.
    "billing_usage_events": (
        "INSERT INTO billing_usage_events (user_id, metric, amount, period_start, resources, "
        "metadata, idempotency_key, created_at) "
        "SELECT :prefix || ((g - 1) % :users + 1), "
        "CASE WHEN g % 4 = 0 THEN 'export' ELSE 'analysis' END, 1 + g % 3, "
        "date_trunc('month', now()), "
        "CASE WHEN g % 7 = 0 THEN json_build_object('vacancy', g) END, "
        "CASE WHEN g % 5 = 0 THEN json_build_object('endpoint', '/analyze', 'request', g) END, "
        "CASE WHEN g % 10 = 0 THEN 'idem-' || md5(CAST(g AS text)) END, "
        "date_trunc('day', now()) - ((g - 1) / :users + 1) * interval '1 day' "
        "+ (g % 86000) * interval '1 second' "
        "FROM generate_series(1, :events) AS g"
    ),
    # As the extension's own migration fills it from the log.
    "billing_usage_daily": (
        "INSERT INTO billing_usage_daily (user_id, metric, day, total) "
        "SELECT user_id, metric, CAST(timezone('UTC', created_at) AS DATE), SUM(amount) "
        "FROM billing_usage_events "
        "GROUP BY user_id, metric, CAST(timezone('UTC', created_at) AS DATE)"
    ),
    "billing_recurring": (
        "INSERT INTO billing_recurring (id, user_id, provider, reference, customer_reference, "
        "plan_code, months, amount, currency, status, last_event_at, created_at, updated_at) "
        "SELECT 'rec-' || g, :prefix || (g * 10), "
        "CASE WHEN g % 2 = 0 THEN 'stripe' ELSE 'yookassa' END, 'sub_' || md5(CAST(g AS text)), "
        "'cus_' || g, 'professional', 1, 29.00, 'USD', 'active', now() - interval '3 days', "
        "now() - interval '40 days', now() - interval '3 days' "
        "FROM generate_series(1, :users / 100) AS g"
    ),
    "billing_payments": (
        "INSERT INTO billing_payments (id, user_id, provider, provider_payment_id, plan_code, "
        "months, amount, currency, status, created_at, settled_at, refund_reference, "
        "recurring_id) "
        "SELECT 'pay-' || md5(CAST(g AS text)), :prefix || (g * 10), "
        "CASE WHEN g % 2 = 0 THEN 'stripe' ELSE 'yookassa' END, 'pp-' || g, 'professional', "
        "CASE WHEN g % 3 = 0 THEN 12 ELSE 1 END, "
        "CASE WHEN g % 3 = 0 THEN 290.00 ELSE 29.00 END, 'USD', "
        "CASE WHEN g % 20 = 0 THEN 'pending' ELSE 'succeeded' END, "
        "now() - (g % 60) * interval '1 day', "
        "CASE WHEN g % 20 <> 0 THEN now() - (g % 60) * interval '1 day' END, "
        "'ref-' || g, CASE WHEN g <= :users / 100 THEN 'rec-' || g END "
        "FROM generate_series(1, :users / 10) AS g"
    ),
    "billing_notifications": (
        "INSERT INTO billing_notifications (user_id, kind, subject, period_key, status, "
        "attempts, next_attempt_at, created_at, sent_at) "
        "SELECT :prefix || (g * 10), CASE WHEN g % 3 = 0 THEN 'quota_low' ELSE 'expiring' END, "
        "CASE WHEN g % 3 = 0 THEN 'analysis' ELSE 'professional' END, "
        "to_char(now(), 'YYYY-MM'), CASE WHEN g % 50 = 0 THEN 'pending' ELSE 'sent' END, "
        "1, CASE WHEN g % 50 = 0 THEN now() + interval '5 minutes' END, "
        "now() - interval '2 days', CASE WHEN g % 50 <> 0 THEN now() - interval '2 days' END "
        "FROM generate_series(1, :users / 10) AS g"
    ),
}


def load(url: str, subscriptions: int, events: int) -> dict[str, Any]:
    """The billing tables at ``BEFORE`` (through the extension's own migrations), the plans, and
    the data; seconds per statement and in all."""
    app = create_app(url, {"BILLING_PLANS": None})
    timings: dict[str, float] = {}
    started = time.monotonic()
    with app.app_context():
        billing.upgrade_database(BEFORE)
        billing.seed_plans()
        params = {"prefix": USER_PREFIX, "users": subscriptions, "events": events}
        for name, statement in LOAD.items():
            began = time.monotonic()
            with db.engine.begin() as connection:  # one transaction per table: WAL in pieces
                connection.execute(text(statement), params)
            timings[name] = round(time.monotonic() - began, 1)
        began = time.monotonic()
        with db.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
        timings["ANALYZE"] = round(time.monotonic() - began, 1)
        db.engine.dispose()
    return {"load_seconds": round(time.monotonic() - started, 1), "load_statements": timings}


def _counts(connection: Connection) -> dict[str, int]:
    return {
        table: int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
        for table in COUNTED
    }


# One row per rewritten table, read before (its key and user) and checked after.
SAMPLES = {
    "billing_subscriptions": ("id", "ORDER BY id DESC"),
    "billing_usage_events": ("id", "ORDER BY id DESC"),
    "billing_payments": ("id", "ORDER BY id"),
    "billing_notifications": ("id", "ORDER BY id"),
}


def snapshot(url: str) -> dict[str, Any]:
    """What the upgrade must keep: the row count of every table and a sample row of some."""
    app = create_app(url, {"BILLING_PLANS": None})
    with app.app_context(), db.engine.connect() as connection:
        samples = {}
        for table, (key, order) in SAMPLES.items():
            row = connection.execute(
                text(f"SELECT {key}, user_id FROM {table} {order} LIMIT 1")
            ).one()
            samples[table] = {"key": row[0], "user_id": row[1]}
        state = {
            "counts": _counts(connection),
            "samples": samples,
            "revision": connection.execute(
                text("SELECT version_num FROM billing_alembic_version")
            ).scalar_one(),
            "database_bytes": int(
                connection.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
            ),
            "wal_lsn": str(connection.execute(text("SELECT pg_current_wal_lsn()")).scalar_one()),
        }
    with app.app_context():
        db.engine.dispose()
    return state


def verify(url: str, before: dict[str, Any], users: int) -> dict[str, Any]:
    """Counts unchanged; at the accounts revision, every row keyed ``'user:' || user id``, the
    events' actors set, one personal account per user. Raises when anything is off."""
    app = create_app(url, {"BILLING_PLANS": None})
    problems: list[str] = []
    result: dict[str, Any] = {}
    with app.app_context(), db.engine.connect() as connection:
        result["revision_after"] = connection.execute(
            text("SELECT version_num FROM billing_alembic_version")
        ).scalar_one()
        counts = _counts(connection)
        result["rows"] = counts
        for table, count in before["counts"].items():
            if counts[table] != count:
                problems.append(f"{table}: {counts[table]} rows after, {count} before")
        columns = {c["name"] for c in inspect(connection).get_columns("billing_subscriptions")}
        result["rekeyed"] = "account_id" in columns
        if result["rekeyed"]:
            problems.extend(_check_rekeyed(connection, before, users, result))
        result["database_bytes_after"] = int(
            connection.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
        )
        result["wal_bytes"] = int(
            connection.execute(
                text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), CAST(:lsn AS pg_lsn))"),
                {"lsn": before["wal_lsn"]},
            ).scalar_one()
        )
    with app.app_context():
        db.engine.dispose()
    if problems:
        raise RuntimeError("the migration left: " + "; ".join(problems))
    return result


def _check_rekeyed(
    connection: Connection, before: dict[str, Any], users: int, result: dict[str, Any]
) -> list[str]:
    problems = []
    for table in REKEYED:
        wrong = connection.execute(
            text(
                f"SELECT count(*) FROM {table} "
                "WHERE account_id NOT LIKE :personal OR account_id IS NULL"
            ),
            {"personal": f"{ACCOUNT_PREFIX}{USER_PREFIX}%"},
        ).scalar_one()
        if wrong:
            problems.append(f"{table}: {wrong} rows not keyed by a personal account")
    unmatched = connection.execute(
        text(
            "SELECT count(*) FROM billing_usage_events "
            "WHERE actor_user_id IS NULL OR account_id <> :prefix || actor_user_id"
        ),
        {"prefix": ACCOUNT_PREFIX},
    ).scalar_one()
    if unmatched:
        problems.append(f"billing_usage_events: {unmatched} events whose actor is not the user")
    for table, sample in before["samples"].items():
        key = SAMPLES[table][0]
        account = connection.execute(
            text(f"SELECT account_id FROM {table} WHERE {key} = :key"), {"key": sample["key"]}
        ).scalar_one()
        if account != ACCOUNT_PREFIX + sample["user_id"]:
            problems.append(f"{table} {sample['key']}: {account!r} for user {sample['user_id']!r}")
    event = before["samples"]["billing_usage_events"]
    actor = connection.execute(
        text("SELECT actor_user_id FROM billing_usage_events WHERE id = :id"),
        {"id": event["key"]},
    ).scalar_one()
    if actor != event["user_id"]:
        problems.append(f"event {event['key']}: actor {actor!r}, not {event['user_id']!r}")
    accounts = connection.execute(
        text(
            "SELECT count(*), count(*) FILTER (WHERE kind = 'personal' "
            "AND id = :prefix || created_by) FROM billing_accounts"
        ),
        {"prefix": ACCOUNT_PREFIX},
    ).one()
    result["accounts"] = int(accounts[0])
    if tuple(accounts) != (users, users):
        problems.append(
            f"billing_accounts: {tuple(accounts)} (all, personal of their user), not {users}"
        )
    return problems


# -- the timed upgrade --------------------------------------------------------------------------


def run_upgrade(url: str, log: Path | None = None, meter: CpuMeter | None = None) -> dict[str, Any]:
    """``flask billing db upgrade`` in a child process: wall time, output, RSS over time, CPU of
    the process and (with a ``meter``) of the database, and with the server's ``log`` the
    statements it logged meanwhile."""
    # The package of this tree first: an installed (editable) copy elsewhere is not what is measured.
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env = {**os.environ, ENV_DATABASE_URL: url, "PYTHONPATH": path}
    command = [
        sys.executable,
        "-m",
        "flask",
        "--app",
        "bench.migration:create_migration_app()",
        "billing",
        "db",
        "upgrade",
    ]
    log_offset = log.stat().st_size if log else 0
    load_before = os.getloadavg()[0]
    before = meter.snapshot() if meter else None
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    samples: list[tuple[float, int]] = []
    with tempfile.TemporaryFile("w+") as sink:  # a file, not a pipe: nothing blocks on it
        child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=sink, stderr=sink)
        while child.poll() is None:
            size = _rss_kib(child.pid)
            if size is not None:
                samples.append((round(time.monotonic() - started, 2), size))
            time.sleep(SAMPLE_SECONDS)
        seconds = time.monotonic() - started
        after = meter.snapshot() if meter else None
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        sink.seek(0)
        output = sink.read().strip()
    if child.returncode != 0:
        raise RuntimeError(f"the upgrade exited {child.returncode}: {output[-2000:]}")
    result: dict[str, Any] = {
        "seconds": round(seconds, 1),
        "output": output,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "others_cpu_share": CpuMeter.others_share(before, after),
        "cli_cpu_seconds": round(
            usage.ru_utime + usage.ru_stime - usage_before.ru_utime - usage_before.ru_stime, 1
        ),
        "database_cpu_seconds": _database_cpu(before, after, usage, usage_before),
        **_rss_summary(samples),
    }
    if log:
        result["statements"] = logged_statements(log, log_offset)
    return result


DURATION = re.compile(r"duration: ([0-9.]+) ms\s+(?:statement|execute [^:]*): (.*)")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def logged_statements(log: Path, offset: int) -> list[dict[str, Any]]:
    """The statements PostgreSQL logged with their durations after ``offset`` in its log, in the
    order they ran (a statement's lines after the first are continuation lines)."""
    with log.open(encoding="utf-8", errors="replace") as handle:
        handle.seek(offset)
        lines = handle.read().splitlines()
    found: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for line in lines:
        if LOG_LINE.match(line):
            current = None
            match = DURATION.search(line)
            if match:
                current = {"ms": float(match.group(1)), "sql": match.group(2).strip()}
                found.append(current)
        elif current is not None:
            current["sql"] += " " + line.strip()
    for statement in found:
        statement["sql"] = " ".join(statement["sql"].split())
    return found


def migrate(
    pg: Any, subscriptions: int, events: int, meter: CpuMeter | None = None
) -> dict[str, Any]:
    """The whole measurement on a fresh database of the server ``pg`` (``bench.servers.Postgres``)."""
    url = pg.new_database(DATABASE)
    result: dict[str, Any] = {"subscriptions": subscriptions, "events": events}
    result.update(load(url, subscriptions, events))
    before = snapshot(url)
    result["revision_before"] = before["revision"]
    result["rows_before"] = before["counts"]
    result["database_bytes_before"] = before["database_bytes"]
    # Every statement of the sessions opened from now on (the upgrade's) goes to the server's log.
    pg.set_database_option(DATABASE, "log_min_duration_statement", "0")
    try:
        result.update(run_upgrade(url, pg.log, meter))
    finally:
        pg.set_database_option(DATABASE, "log_min_duration_statement", "-1")
    result.update(verify(url, before, subscriptions))
    return result


def describe(subscriptions: int, events: int) -> str:
    return (
        f"flask billing db upgrade from {BEFORE} to head: {subscriptions:,} users with their "
        f"subscriptions, {events:,} usage events and the rest (PostgreSQL)"
    )


def slowest(statements: list[dict[str, Any]], count: int = 12, width: int = 160) -> list[str]:
    """The ``count`` longest statements, one line each: milliseconds and the start of the SQL."""
    ranked = sorted(statements, key=lambda s: s["ms"], reverse=True)[:count]
    return [f"{s['ms']:>10,.1f} ms  {s['sql'][:width]}" for s in ranked]


def summary(run: dict[str, Any]) -> str:
    """The lines the measurement prints."""
    statements = run.get("statements") or []
    logged = sum(s["ms"] for s in statements) / 1000
    lines = [
        f"loaded in {run['load_seconds']} s {run['load_statements']}",
        f"rows: {run['rows_before']}",
        f"upgrade {run['revision_before']} -> {run['revision_after']} took {run['seconds']} s "
        f"(CPU: {run.get('cli_cpu_seconds')} s the command, {run.get('database_cpu_seconds')} s "
        f"the database; load average at its start and end {run.get('load_average')}, other "
        f"processes used {_percent(run.get('others_cpu_share'))} of the CPUs); "
        f"{len(statements)} statements logged, {logged:.1f} s in all; WAL written "
        f"{run['wal_bytes'] / 2**20:,.0f} MiB; database {run['database_bytes_before'] / 2**20:,.0f}"
        f" -> {run['database_bytes_after'] / 2**20:,.0f} MiB",
        f"RSS by tenths of the run (MiB): {run.get('rss_by_tenth_mib')}; peak "
        f"{run.get('rss_peak_mib')} MiB",
    ]
    if run["rekeyed"]:
        lines.append(
            f"checked: row counts unchanged, every row keyed 'user:' || user id, every event's "
            f"actor its user, {run['accounts']:,} personal accounts"
        )
    else:
        lines.append("checked: row counts unchanged (the head revision does not rekey the rows)")
    if statements:
        lines.append("slowest statements:")
        lines.extend("  " + line for line in slowest(statements))
    return "\n".join(lines)


def _percent(share: float | None) -> str:
    return "?" if share is None else f"{share:.0%}"


def main(argv: list[str] | None = None) -> int:
    from . import servers

    parser = argparse.ArgumentParser(
        prog="python -m bench.migration",
        description="Time the billing migrations' upgrade from "
        f"{BEFORE} to head over many users on PostgreSQL.",
    )
    parser.add_argument("--subscriptions", type=int, default=1_000_000, help="users (1,000,000)")
    parser.add_argument("--events", type=int, default=2_000_000, help="usage events (2,000,000)")
    parser.add_argument("--pg-fsync", choices=["on", "off"], default="on")
    parser.add_argument("--output", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    if args.subscriptions < 100:
        parser.error("--subscriptions must be at least 100")
    with servers.postgres(fsync=args.pg_fsync == "on") as pg:
        meter = CpuMeter(lambda: [pid for pid in (pg.pid,) if pid])
        print(f"\n== {describe(args.subscriptions, args.events)} ==", flush=True)
        result = migrate(pg, args.subscriptions, args.events, meter)
        result["postgresql"] = pg.version
        print(summary(result), flush=True)
    if args.output:
        args.output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
