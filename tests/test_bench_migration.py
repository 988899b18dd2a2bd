"""The data migration bench (bench/migration.py) at a small scale: its data loads at the revision
before the accounts migration, ``flask billing db upgrade`` takes it to head, and its checks pass
on what the migration leaves and fail on a row left behind or lost. PostgreSQL only, as the bench
(it loads with ``generate_series`` and reads the server's WAL position)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from bench import migration
from sqlalchemy import create_engine, text

from flask_profile_billing import migrate
from tests.support.servers import PostgresServer

USERS = 200
EVENTS = 400


def _loaded(server: PostgresServer) -> tuple[str, dict[str, Any]]:
    url = server.new_database(f"test_bench_{uuid.uuid4().hex[:12]}")
    migration.load(url, USERS, EVENTS)
    return url, migration.snapshot(url)


def test_the_cli_upgrade_rekeys_every_row_of_the_loaded_data(
    postgresql_server: PostgresServer,
) -> None:
    url, before = _loaded(postgresql_server)
    assert before["revision"] == migration.BEFORE
    assert before["counts"] == {
        "billing_subscriptions": USERS + USERS // 10,
        "billing_usage_counters": 2 * USERS,
        "billing_usage_events": EVENTS,
        "billing_usage_daily": EVENTS,  # two events per user, on two days
        "billing_payments": USERS // 10,
        "billing_recurring": USERS // 100,
        "billing_notifications": USERS // 10,
        "billing_plans": 4,
    }

    run = migration.run_upgrade(url)
    checked = migration.verify(url, before, USERS)

    assert run["seconds"] > 0
    assert run["rss_peak_mib"] > 0
    assert checked["revision_after"] != migration.BEFORE
    assert checked["rekeyed"] is True
    assert checked["rows"] == before["counts"]
    assert checked["accounts"] == USERS


@pytest.mark.parametrize(
    ("tamper", "complaint"),
    [
        (
            "UPDATE billing_usage_counters SET account_id = substr(account_id, 6) "
            "WHERE account_id = 'user:mig-7'",
            "billing_usage_counters: 2 rows not keyed by a personal account",
        ),
        (
            "UPDATE billing_usage_events SET actor_user_id = 'mig-1' WHERE account_id = 'user:mig-2'",
            "billing_usage_events: 2 events whose actor is not the user",
        ),
        (
            "DELETE FROM billing_usage_daily WHERE account_id = 'user:mig-3'",
            "billing_usage_daily: 398 rows after, 400 before",
        ),
        (
            "DELETE FROM billing_accounts WHERE id = 'user:mig-4'",
            "billing_accounts: (199, 199)",
        ),
    ],
)
def test_the_checks_fail_on_what_a_wrong_migration_would_leave(
    postgresql_server: PostgresServer, tamper: str, complaint: str
) -> None:
    url, before = _loaded(postgresql_server)
    engine = create_engine(url)
    try:
        migrate.upgrade(engine)
        with engine.begin() as connection:
            connection.execute(text(tamper))
    finally:
        engine.dispose()

    with pytest.raises(RuntimeError, match="the migration left: ") as failure:
        migration.verify(url, before, USERS)
    assert complaint in str(failure.value)


def test_the_server_log_gives_each_statement_with_its_duration(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    earlier = "2026-12-07 22:00:00.000 UTC [7] LOG:  duration: 9.0 ms  statement: SELECT 0\n"
    log.write_text(
        earlier + "2026-12-07 22:00:01.000 UTC [8] LOG:  duration: 1234.5 ms  statement: UPDATE t\n"
        "\tSET a = 1\n"
        "2026-12-07 22:00:02.000 UTC [8] LOG:  checkpoint starting: wal\n"
        "2026-12-07 22:00:03.000 UTC [8] LOG:  duration: 2.5 ms  execute <unnamed>: "
        "INSERT INTO t VALUES ($1)\n"
        "2026-12-07 22:00:03.000 UTC [8] DETAIL:  parameters: $1 = 'x'\n"
    )

    found = migration.logged_statements(log, len(earlier))

    assert found == [
        {"ms": 1234.5, "sql": "UPDATE t SET a = 1"},
        {"ms": 2.5, "sql": "INSERT INTO t VALUES ($1)"},
    ]
    assert migration.slowest(found, 1) == ["   1,234.5 ms  UPDATE t SET a = 1"]
