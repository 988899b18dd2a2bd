"""``billing.run_maintenance()`` and ``flask billing maintenance [--dry-run]``: the one entry point
that ends lapsed, cancelled and trial subscriptions, deletes what is older than the retention
(statistics stay right) and claims the notifications due; a dry run reports the same and changes
nothing. Time moves by the injectable clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from flask_profile_billing import BillingConfigError, ProfileBilling, SubscriptionStatus
from flask_profile_billing.state import get_state
from flask_profile_billing.store.models import activity, usage_counters, usage_events
from tests.support.host_app import AppFactory, Clock, billing_of
from tests.support.subscriptions import NOW, ONE_MONTH_LATER, current_row_count, stored_rows


def count(app: Flask, table: Any) -> int:
    with app.extensions["sqlalchemy"].engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def subscribe(billing: ProfileBilling) -> None:
    """A paid month, a cancelled paid month, a two-week trial, a year, and a free user."""
    billing.change_plan("paid", "starter", 1)
    billing.change_plan("cancelled", "professional", 1)
    billing.cancel("cancelled")
    billing.start_trial("trial", "professional", 14)
    billing.change_plan("yearly", "starter", 12)
    billing.subscription("free")


def plans(app: Flask, user: str) -> list[tuple[str, str]]:
    return [(row.plan_code, row.status) for row in stored_rows(app, user)]


def test_maintenance_ends_trials_then_lapsed_and_cancelled_periods(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    subscribe(billing)

    clock.set(NOW + timedelta(days=14))
    report = billing.run_maintenance()
    assert (report.ended, report.lapsed) == (1, {SubscriptionStatus.TRIAL: 1})
    assert plans(app, "trial")[-2:] == [("professional", "expired"), ("free", "active")]

    clock.set(ONE_MONTH_LATER)
    report = billing.run_maintenance()
    assert report.ended == 2
    assert report.lapsed == {SubscriptionStatus.ACTIVE: 1, SubscriptionStatus.CANCELLED: 1}
    assert plans(app, "paid")[-2:] == [("starter", "expired"), ("free", "active")]
    assert plans(app, "cancelled")[-2:] == [("professional", "cancelled"), ("free", "active")]
    assert stored_rows(app, "paid")[-1].started_at == ONE_MONTH_LATER
    for user in ["paid", "cancelled", "trial", "yearly", "free"]:
        assert current_row_count(app, user) == 1
    assert billing.subscription("yearly").plan_code == "starter"
    assert billing.run_maintenance().ended == 0


def test_a_dry_run_reports_what_would_change_and_changes_nothing(
    make_app: AppFactory, clock: Clock
) -> None:
    app = make_app(BILLING_RETENTION_DAYS=30)
    billing = billing_of(app)
    with app.app_context():
        subscribe(billing)
        billing.consume("paid", "analysis", 190)  # 95 % of Starter
        clock.set(ONE_MONTH_LATER - timedelta(days=2))
        billing.run_maintenance()  # the expiring notices and quota_low are claimed now
        clock.set(ONE_MONTH_LATER + timedelta(days=40))
        billing.change_plan("next", "starter", 1)  # expiring within the window below
        clock.advance(days=25)
        rows_before = {user: stored_rows(app, user) for user in ["paid", "cancelled", "trial"]}
        tables_before = [count(app, table) for table in (usage_events, usage_counters, activity)]

        dry = billing.run_maintenance(dry_run=True)

        assert {user: stored_rows(app, user) for user in rows_before} == rows_before
        assert [count(app, t) for t in (usage_events, usage_counters, activity)] == tables_before
        real = billing.run_maintenance()

    assert dry.dry_run
    assert not real.dry_run
    assert dry.lapsed == real.lapsed
    assert sum(dry.lapsed.values()) == real.ended == 2  # the trial was ended by the run before
    assert dry.ended == 0
    # The real run also deletes the activity entries of the expiries it records: they are dated
    # at the ends of the periods, past the retention too.
    for table in ["usage_events", "usage_counters", "notifications"]:
        assert dry.pruned[table] == real.pruned[table], table
    assert dry.pruned["usage_events"] == 1
    assert real.pruned["activity"] == dry.pruned["activity"] + 2
    assert dry.notifications == real.notifications
    assert dry.notifications.expiring == 1


def test_the_cli_dry_run_prints_what_would_change(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    subscribe(billing)
    clock.set(ONE_MONTH_LATER)

    output = app.test_cli_runner().invoke(args=["billing", "maintenance", "--dry-run"]).output

    assert output.splitlines() == [
        "Dry run: nothing was changed.",
        "Subscriptions that would end and move to the free plan: 3 (paid periods: 1, cancelled "
        "at the period's end: 1, trials: 1).",
        "Expired idempotency keys that would be deleted: 0.",
        "Notifications that would be claimed: expiring 0, quota_low 0.",
    ]
    assert billing.run_maintenance().ended == 3


# --- retention ---------------------------------------------------------------------------------------


def test_retention_deletes_old_rows_and_statistics_stay_right(
    make_app: AppFactory, clock: Clock
) -> None:
    app = make_app(BILLING_RETENTION_DAYS=60, BILLING_MAINTENANCE_BATCH_SIZE=2)
    billing = billing_of(app)
    with app.app_context():
        for _ in range(5):
            billing.consume("alice", "analysis")  # October
        billing.record_activity("alice", "job.done", "Old job")
        clock.set(datetime(2026, 1, 20, tzinfo=UTC))  # 60 days back is 21 Nov
        billing.consume("alice", "analysis")  # January
        usage = get_state().usage
        before = usage.usage("user:alice", 365)

        report = billing.run_maintenance()

        assert report.pruned == {
            "usage_events": 5,
            "usage_counters": 1,
            "activity": 1,
            "notifications": 0,
        }
        assert count(app, usage_events) == 1
        assert count(app, usage_counters) == 1  # January's, the current period
        assert usage.usage("user:alice", 365) == before
        assert before.totals == {"analysis": 6}
        assert billing.allowance("alice", "analysis").used == 1
        assert billing.run_maintenance().pruned["usage_events"] == 0


def test_without_a_retention_nothing_is_deleted(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    billing.consume("alice", "analysis")
    clock.advance(days=3650)

    assert billing.run_maintenance().pruned == {}
    assert count(app, usage_events) == 1


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"BILLING_RETENTION_DAYS": 10}, "at least 30"),
        ({"BILLING_RETENTION_DAYS": 40, "BILLING_NOTIFY_EXPIRING_DAYS": 45}, "at least 45"),
        ({"BILLING_MAINTENANCE_BATCH_SIZE": 0}, "BILLING_MAINTENANCE_BATCH_SIZE"),
        ({"BILLING_SCHEDULER_INTERVAL_SECONDS": "often"}, "BILLING_SCHEDULER_INTERVAL_SECONDS"),
        ({"BILLING_SCHEDULER_JITTER_SECONDS": -1}, "BILLING_SCHEDULER_JITTER_SECONDS"),
    ],
)
def test_wrong_maintenance_settings_fail_at_init(
    make_app: AppFactory, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(BillingConfigError, match=message):
        make_app(**config)
