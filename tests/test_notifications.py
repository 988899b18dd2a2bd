"""Notifications, each once per user, kind, subject and period: ``quota_low`` and ``quota_blocked``
claimed by the charge or refusal itself, ``expired`` by the expiry, ``expiring`` by the maintenance
sweep; their signals after commit; and the catch-up of a maintenance that was off for months.

Time moves by the injectable clock (BILLING_CLOCK), never by waiting.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from flask_profile_billing import ProfileBilling, QuotaExceeded, signals
from flask_profile_billing.state import get_state
from flask_profile_billing.store.models import notifications
from tests.support.host_app import Clock, as_user
from tests.support.subscriptions import FREE_ANALYSES, NOW, ONE_MONTH_LATER, analyze, recorded

LOW_MARK = 16  # 80 % of the free plan's 20 analyses


def stored_notices(app: Flask) -> list[tuple[str, str, str, str]]:
    """Every notification row: (user, kind, subject, period as ISO time)."""
    engine = app.extensions["sqlalchemy"].engine
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                func.substr(notifications.c.account_id, 6),
                notifications.c.kind,
                notifications.c.subject,
                notifications.c.period_key,
            ).order_by(notifications.c.id)
        ).all()
    return [
        (user, kind, subject, datetime.fromtimestamp(int(period), UTC).isoformat())
        for user, kind, subject, period in rows
    ]


@contextmanager
def due(app: Flask) -> Iterator[list[tuple[str, str, str]]]:
    """(user, kind, subject) of every ``notification_due`` the app sends inside the block."""
    with recorded(signals.notification_due, app) as calls:
        found: list[tuple[str, str, str]] = []
        yield found
    found.extend((call["user_id"], call["kind"], call["subject"]) for call in calls)


def consume(billing: ProfileBilling, user: str, times: int) -> list[Any]:
    return [billing.consume(user, "analysis") for _ in range(times)]


# --- quota_low: claimed by the charge that reaches the mark ---------------------------------------


def test_quota_low_is_sent_once_by_the_charge_that_reaches_the_mark(
    app: Flask, billing: ProfileBilling
) -> None:
    with recorded(signals.quota_low, app) as lows, due(app) as notices:
        consume(billing, "alice", LOW_MARK - 1)
        assert lows == []
        assert stored_notices(app) == []
        consume(billing, "alice", 1)
        consume(billing, "alice", 2)

    assert [(call["user_id"], call["allowance"].used) for call in lows] == [("alice", LOW_MARK)]
    assert notices == [("alice", "quota_low", "analysis")]
    period_start = datetime(2025, 10, 1, tzinfo=UTC).isoformat()
    assert stored_notices(app) == [("alice", "quota_low", "analysis", period_start)]


def test_a_refund_under_the_mark_and_a_second_crossing_notify_once(
    app: Flask, billing: ProfileBilling
) -> None:
    with recorded(signals.quota_low, app) as lows, due(app) as notices:
        crossing = consume(billing, "alice", LOW_MARK)[-1]
        billing.release(crossing)  # the work failed: back under the mark
        assert billing.allowance("alice", "analysis").used == LOW_MARK - 1
        consume(billing, "alice", 1)  # crosses again

    assert len(lows) == 1
    assert notices == [("alice", "quota_low", "analysis")]
    assert len(stored_notices(app)) == 1


def test_quota_low_is_sent_again_in_the_next_period(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    with recorded(signals.quota_low, app) as lows:
        consume(billing, "alice", LOW_MARK)
        clock.set(datetime(2025, 11, 2, tzinfo=UTC))
        consume(billing, "alice", LOW_MARK)

    assert len(lows) == 2
    assert [notice[3][:10] for notice in stored_notices(app)] == ["2025-10-01", "2025-11-01"]


def test_a_guarded_request_that_crosses_the_mark_notifies_once(
    app: Flask, client: FlaskClient
) -> None:
    with due(app) as notices:
        for _ in range(FREE_ANALYSES):
            assert analyze(client, "alice").status_code == 200

    assert notices == [("alice", "quota_low", "analysis")]


# --- quota_blocked: claimed by the refusal ---------------------------------------------------------


def test_quota_blocked_is_claimed_by_the_first_refusal_of_a_period(
    app: Flask, client: FlaskClient, clock: Clock
) -> None:
    for _ in range(FREE_ANALYSES):
        analyze(client, "alice")

    with due(app) as notices:
        assert analyze(client, "alice").status_code == 429
        assert analyze(client, "alice").status_code == 429
        assert analyze(client, "alice").status_code == 429

    assert notices == [("alice", "quota_blocked", "analysis")]
    kinds = [notice[1] for notice in stored_notices(app)]
    assert kinds == ["quota_low", "quota_blocked"]

    clock.set(datetime(2025, 11, 1, tzinfo=UTC))
    for _ in range(FREE_ANALYSES):
        analyze(client, "alice")
    with due(app) as notices:
        assert analyze(client, "alice").status_code == 429
    assert notices == [("alice", "quota_blocked", "analysis")]


def test_a_charge_larger_than_the_limit_is_blocked_once(
    app: Flask, billing: ProfileBilling
) -> None:
    with due(app) as notices:
        for _ in range(2):
            with pytest.raises(QuotaExceeded):
                billing.consume("alice", "analysis", FREE_ANALYSES + 1)

    assert notices == [("alice", "quota_blocked", "analysis")]


def test_a_refused_gauge_is_blocked_once_per_period(app: Flask, client: FlaskClient) -> None:
    assert client.post("/vacancies", headers=as_user("alice")).status_code == 201

    with due(app) as notices:
        assert client.post("/vacancies", headers=as_user("alice")).status_code == 429
        assert client.post("/vacancies", headers=as_user("alice")).status_code == 429

    assert notices == [("alice", "quota_blocked", "active_vacancies")]


# --- expiring: the maintenance sweep looks at a window -----------------------------------------


def test_expiring_is_sent_once_within_the_window_before_the_end(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    paid = billing.change_plan("alice", "starter", 1)

    clock.set(ONE_MONTH_LATER - timedelta(days=7, seconds=1))
    with due(app) as notices:
        assert billing.run_maintenance().notifications.expiring == 0
    assert notices == []

    clock.set(ONE_MONTH_LATER - timedelta(days=6))
    with due(app) as notices:
        assert billing.run_maintenance().notifications.expiring == 1
        clock.advance(days=1)
        assert billing.run_maintenance().notifications.expiring == 0

    assert notices == [("alice", "expiring", str(paid.id))]
    assert stored_notices(app) == [("alice", "expiring", str(paid.id), ONE_MONTH_LATER.isoformat())]


def test_the_expiring_sweep_claims_every_due_subscription_across_batches(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    """Batches continue behind the last one claimed: ends shared by several subscriptions and
    ends within the same second all get their notice, once."""
    users = []
    for offset in (0, 0, 0, 250_000, 250_000, 750_000, 1_000_000):
        clock.set(NOW + timedelta(microseconds=offset))
        user = f"due-{len(users)}"
        billing.change_plan(user, "starter", 1)
        users.append(user)
    clock.set(ONE_MONTH_LATER - timedelta(days=1))

    with due(app) as notices:
        swept = get_state().notifications.sweep(clock.now, batch_size=2)
        again = get_state().notifications.sweep(clock.now, batch_size=2)

    assert (swept.expiring, again.expiring) == (len(users), 0)
    assert sorted(user for user, _kind, _subject in notices) == users


def test_an_extended_period_gets_its_own_expiring_notice(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    billing.change_plan("alice", "starter", 1)
    clock.set(ONE_MONTH_LATER - timedelta(days=3))
    billing.run_maintenance()
    extended = billing.change_plan("alice", "starter", 1)  # the same plan: one more month
    assert extended.expires_at is not None

    clock.set(extended.expires_at - timedelta(days=2))
    assert billing.run_maintenance().notifications.expiring == 1

    assert [notice[3] for notice in stored_notices(app)] == [
        ONE_MONTH_LATER.isoformat(),
        extended.expires_at.isoformat(),
    ]


def test_trials_and_cancelled_subscriptions_are_expiring_too_but_free_never(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    billing.start_trial("trial-user", "professional", 14)
    billing.change_plan("cancelling", "starter", 1)
    billing.cancel("cancelling")
    billing.subscription("free-user")

    clock.set(NOW + timedelta(days=10))
    billing.run_maintenance()

    assert sorted((user, kind) for user, kind, *_ in stored_notices(app)) == [
        ("trial-user", "expiring")
    ]
    clock.set(NOW + timedelta(days=15))  # the trial ended yesterday
    billing.run_maintenance()
    clock.set(ONE_MONTH_LATER - timedelta(days=1))
    billing.run_maintenance()
    assert sorted((user, kind) for user, kind, *_ in stored_notices(app)) == [
        ("cancelling", "expiring"),
        ("trial-user", "expired"),
        ("trial-user", "expiring"),
    ]


# --- expired: claimed by the expiry itself ----------------------------------------------------------


def test_expired_is_claimed_by_maintenance_that_ends_the_subscription(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    paid = billing.change_plan("alice", "starter", 1)
    clock.set(ONE_MONTH_LATER + timedelta(hours=1))

    with due(app) as notices, recorded(signals.subscription_expired, app) as expiries:
        billing.run_maintenance()
        billing.run_maintenance()
        billing.subscription("alice")

    assert notices == [("alice", "expired", str(paid.id))]
    assert len(expiries) == 1


def test_expired_is_claimed_by_the_next_visit_when_no_maintenance_ran(
    app: Flask, billing: ProfileBilling, client: FlaskClient, clock: Clock
) -> None:
    paid = billing.change_plan("alice", "starter", 1)
    clock.set(ONE_MONTH_LATER + timedelta(days=1))

    with due(app) as notices:
        assert analyze(client, "alice").status_code == 200
        billing.run_maintenance()

    assert notices == [("alice", "expired", str(paid.id))]


def test_an_expiry_found_long_after_the_end_is_not_news(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    billing.change_plan("alice", "starter", 1)
    clock.set(ONE_MONTH_LATER + timedelta(days=8))

    with due(app) as notices:
        assert billing.run_maintenance().ended == 1

    assert notices == []
    assert billing.subscription("alice").plan_code == "free"


# --- quota_low by the sweep: usage over the mark that no charge crossed ---------------------------


def test_the_sweep_claims_quota_low_when_a_lower_limit_puts_usage_over_the_mark(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    billing.change_plan("alice", "starter", 1)
    consume(billing, "alice", 30)  # 15 % of Starter's 200
    assert stored_notices(app) == []
    billing.change_plan("alice", "free")  # 30 of Free's 20: over the mark, never crossed

    with due(app) as notices:
        report = billing.run_maintenance()
        billing.run_maintenance()

    assert report.notifications.quota_low == 1
    assert notices == [("alice", "quota_low", "analysis")]


def test_the_sweep_leaves_out_past_periods_and_unlimited_plans(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    billing.change_plan("rich", "enterprise", 12)
    consume(billing, "rich", 500)
    billing.change_plan("alice", "starter", 1)
    consume(billing, "alice", 30)
    billing.change_plan("alice", "free")
    clock.set(datetime(2025, 11, 1, tzinfo=UTC))  # the period with that usage is over

    assert billing.run_maintenance().notifications.quota_low == 0
    assert stored_notices(app) == []


# --- three months without maintenance --------------------------------------------------------------


def test_three_months_off_sends_each_relevant_notice_once_and_no_stale_one(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    """Maintenance last ran on 13 Oct 2025 and runs again on 7 Feb 2026, twice."""
    billing.run_maintenance()
    billing.change_plan("long-gone", "starter", 1)  # ended 13 Nov: no longer news
    billing.change_plan("yearly", "professional", 12)  # ends Oct 2026: not in its window yet
    consume(billing, "october-usage", LOW_MARK)  # its October notice was sent in October
    clock.set(datetime(2026, 1, 5, tzinfo=UTC))
    just_ended = billing.change_plan("just-ended", "starter", 1)  # ended 5 Feb
    clock.set(datetime(2026, 1, 10, tzinfo=UTC))
    ends_soon = billing.change_plan("ends-soon", "starter", 1)  # ends 10 Feb
    clock.set(datetime(2026, 2, 3, tzinfo=UTC))
    consume(billing, "busy", LOW_MARK)  # February's notice, claimed by the charge
    billing.change_plan("downgraded", "starter", 1)
    consume(billing, "downgraded", 30)
    billing.change_plan("downgraded", "free")  # 30 of 20 now: never crossed by a charge
    before = len(stored_notices(app))

    clock.set(datetime(2026, 2, 7, tzinfo=UTC))
    with due(app) as notices:
        first = billing.run_maintenance()
        second = billing.run_maintenance()

    assert (first.ended, second.ended) == (2, 0)  # long-gone and just-ended, once
    assert sorted(notices) == [
        ("downgraded", "quota_low", "analysis"),
        ("ends-soon", "expiring", str(ends_soon.id)),
        ("just-ended", "expired", str(just_ended.id)),
    ]
    assert len(stored_notices(app)) == before + 3
    assert billing.subscription("long-gone").plan_code == "free"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_on_postgresql_the_charge_that_claims_a_notice_is_still_one_statement(
    app: Flask, client: FlaskClient, statements: list[str]
) -> None:
    for _ in range(LOW_MARK - 1):
        analyze(client, "alice")
    statements.clear()

    with due(app) as notices:
        assert analyze(client, "alice").status_code == 200  # crosses the mark

    assert notices == [("alice", "quota_low", "analysis")]
    assert len(statements) == 1, statements
