"""The end of a paid period without a scheduler: a lapsed subscription is expired and replaced
by Free on the next access (announced once, rolled over once under concurrent reads), status and
days remaining derived from the timestamps, the maintenance run that expires lapsed subscriptions
in batches (idempotent, overlapping runs end each one once), and quota periods that start from
zero on their own.

Starting, changing, cancelling and resuming subscriptions is test_subscription_lifecycle.py's.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from flask_profile_billing import (
    ProfileBilling,
    signals,
)
from flask_profile_billing.state import get_state
from flask_profile_billing.store.models import notifications
from tests.support.host_app import AppFactory, Clock, billing_of
from tests.support.subscriptions import (
    ACTIVE,
    CANCELLED,
    CONCURRENT_USERS,
    EXPIRED,
    FREE_ANALYSES,
    NOW,
    ONE_MONTH_LATER,
    SECOND,
    analyze,
    api_data,
    assert_feature_refused,
    current_row_count,
    recorded,
    row_of,
    run_together,
    stored_rows,
)

# --- expiry ---------------------------------------------------------------------------------------


def test_lapsed_subscription_is_expired_and_replaced_by_free_on_next_access(
    app: Flask, billing: ProfileBilling, client: FlaskClient, clock: Clock
) -> None:
    paid = billing.change_plan("alice", "professional", 1)

    clock.set(ONE_MONTH_LATER)
    current = billing.subscription("alice")

    assert current.plan_code == "free"
    assert current.status is ACTIVE
    assert current.started_at == ONE_MONTH_LATER
    old = row_of(app, "alice", paid.id)
    assert (old.status, old.ended_at, old.end_reason) == ("expired", ONE_MONTH_LATER, "expired")
    assert current_row_count(app, "alice") == 1
    assert not billing.has_feature("alice", "api_access")
    assert_feature_refused(api_data(client, "alice"))


def test_expiry_is_announced_once_however_often_the_user_is_read(
    app: Flask, billing: ProfileBilling, client: FlaskClient, clock: Clock
) -> None:
    paid = billing.change_plan("alice", "professional", 1)
    clock.set(ONE_MONTH_LATER + timedelta(days=2))

    with recorded(signals.subscription_expired, app) as expiries:
        current = billing.subscription("alice")
        billing.subscription("alice")
        billing.plan("alice")
        api_data(client, "alice")
        billing.expire_lapsed()

    assert len(expiries) == 1
    assert expiries[0]["user_id"] == "alice"
    assert expiries[0]["subscription"].id == paid.id
    assert expiries[0]["current"] == current


def test_concurrent_reads_after_expiry_roll_over_once(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    paid = billing.change_plan("alice", "professional", 1)
    clock.set(ONE_MONTH_LATER)

    def read() -> int:
        with app.app_context():
            return billing.subscription("alice").id

    with recorded(signals.subscription_expired, app) as expiries:
        ids = run_together(CONCURRENT_USERS, read)

    assert len(set(ids)) == 1
    assert paid.id not in ids
    assert current_row_count(app, "alice") == 1
    assert len(stored_rows(app, "alice")) == 3  # first free, professional, free again
    assert len(expiries) == 1


def test_subscription_status_is_derived_from_its_timestamps(billing: ProfileBilling) -> None:
    """The domain object answers for any moment, also when no row has been written since."""
    paid = billing.change_plan("alice", "professional", 1)
    last_second = ONE_MONTH_LATER - SECOND

    assert paid.status_at(last_second) is ACTIVE
    assert paid.is_active_at(last_second)
    assert paid.status_at(ONE_MONTH_LATER) is EXPIRED
    assert not paid.is_active_at(ONE_MONTH_LATER)
    assert paid.status_at(ONE_MONTH_LATER + timedelta(days=400)) is EXPIRED
    assert paid.status is ACTIVE  # as stored: nothing was written


@pytest.mark.parametrize(
    ("moment", "days"),
    [
        (NOW, 31),
        (NOW + SECOND, 30),  # the documented example: started 13.10 10:00, "days_remaining": 30
        (ONE_MONTH_LATER - timedelta(days=1), 1),
        (ONE_MONTH_LATER - SECOND, 0),
        (ONE_MONTH_LATER, 0),
        (ONE_MONTH_LATER + timedelta(days=5), 0),
    ],
)
def test_days_remaining_counts_whole_days_to_the_end(
    billing: ProfileBilling, moment: datetime, days: int
) -> None:
    paid = billing.change_plan("alice", "professional", 1)

    assert paid.days_remaining_at(moment) == days


def test_cancelled_subscription_reads_cancelled_until_its_end_then_expired(
    billing: ProfileBilling,
) -> None:
    billing.change_plan("alice", "professional", 1)
    cancelled = billing.cancel("alice")

    assert cancelled.status_at(ONE_MONTH_LATER - SECOND) is CANCELLED
    assert cancelled.is_active_at(ONE_MONTH_LATER - SECOND)
    assert cancelled.status_at(ONE_MONTH_LATER) is EXPIRED
    assert not cancelled.is_active_at(ONE_MONTH_LATER)


# --- maintenance ----------------------------------------------------------------------------------

LAPSED_PAID = ["paid-1", "paid-2", "paid-3"]
LAPSED_CANCELLED = "cancelled-1"
STILL_ACTIVE = "yearly-1"
FREE_USERS = ["free-1", "free-2"]
EVERYONE = [*LAPSED_PAID, LAPSED_CANCELLED, STILL_ACTIVE, *FREE_USERS]


def subscribe_everyone(billing: ProfileBilling) -> dict[str, int]:
    """Users in every state; returns the id of each user's subscription."""
    ids = {}
    for user, plan in zip(LAPSED_PAID, ["starter", "professional", "enterprise"], strict=True):
        ids[user] = billing.change_plan(user, plan, 1).id
    ids[LAPSED_CANCELLED] = billing.change_plan(LAPSED_CANCELLED, "starter", 1).id
    billing.cancel(LAPSED_CANCELLED)
    ids[STILL_ACTIVE] = billing.change_plan(STILL_ACTIVE, "professional", 12).id
    for user in FREE_USERS:
        ids[user] = billing.subscription(user).id
    return ids


def test_expire_lapsed_ends_exactly_the_lapsed_subscriptions(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    ids = subscribe_everyone(billing)
    clock.advance(days=40)

    assert billing.expire_lapsed() == 4

    for user in [*LAPSED_PAID, LAPSED_CANCELLED]:
        old = row_of(app, user, ids[user])
        expected_status = "cancelled" if user == LAPSED_CANCELLED else "expired"
        assert (old.status, old.ended_at) == (expected_status, ONE_MONTH_LATER)
        current = stored_rows(app, user)[-1]
        assert (current.plan_code, current.status, current.ended_at) == ("free", "active", None)
        assert current.started_at == ONE_MONTH_LATER
    for user in [STILL_ACTIVE, *FREE_USERS]:
        assert stored_rows(app, user)[-1].id == ids[user]
        assert stored_rows(app, user)[-1].ended_at is None
    for user in EVERYONE:
        assert current_row_count(app, user) == 1


def test_expire_lapsed_is_idempotent(app: Flask, billing: ProfileBilling, clock: Clock) -> None:
    subscribe_everyone(billing)
    clock.advance(days=40)
    billing.expire_lapsed()
    rows_after_first_run = {user: stored_rows(app, user) for user in EVERYONE}

    assert billing.expire_lapsed() == 0
    assert {user: stored_rows(app, user) for user in EVERYONE} == rows_after_first_run


def test_expire_lapsed_announces_each_expiry_with_the_free_subscription_that_follows(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    """``subscription_expired`` documents ``current`` as the free subscription that follows."""
    ids = subscribe_everyone(billing)
    clock.advance(days=40)

    with recorded(signals.subscription_expired, app) as expiries:
        billing.expire_lapsed()

    lapsed = [*LAPSED_PAID, LAPSED_CANCELLED]
    assert sorted(call["user_id"] for call in expiries) == sorted(lapsed)
    for call in expiries:
        assert call["subscription"].id == ids[call["user_id"]]
        assert call["current"] == billing.subscription(call["user_id"])


def test_expire_lapsed_works_through_batches(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    users = [f"lapsed-{n}" for n in range(5)]
    for user in users:
        billing.change_plan(user, "starter", 1)
    clock.set(ONE_MONTH_LATER)

    assert get_state().subscriptions.expire_lapsed(batch_size=2) == 5

    for user in users:
        assert current_row_count(app, user) == 1
        assert stored_rows(app, user)[-1].plan_code == "free"
    assert get_state().subscriptions.expire_lapsed(batch_size=2) == 0


def test_overlapping_maintenance_runs_end_each_subscription_once(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    users = [f"lapsed-{n}" for n in range(30)]
    for user in users:
        billing.change_plan(user, "starter", 1)
    clock.set(ONE_MONTH_LATER)

    def maintenance() -> int:
        with app.app_context():
            return get_state().subscriptions.expire_lapsed(batch_size=4)

    with recorded(signals.subscription_expired, app) as expiries:
        counts = run_together(3, maintenance)

    assert sum(counts) == len(users)
    assert sorted(call["user_id"] for call in expiries) == sorted(users)
    for user in users:
        rows = stored_rows(app, user)
        assert [row.plan_code for row in rows] == ["free", "starter", "free"]
        assert current_row_count(app, user) == 1


def test_expire_lapsed_leaves_a_subscription_alone_before_its_end(
    billing: ProfileBilling, clock: Clock
) -> None:
    paid = billing.change_plan("alice", "professional", 1)
    clock.set(ONE_MONTH_LATER - SECOND)

    assert billing.expire_lapsed() == 0
    assert billing.subscription("alice") == paid


def test_maintenance_announces_each_batch_once_and_feeds_every_users_activity(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    users = [f"lapsing-{index}" for index in range(5)]
    for user in users:
        billing.change_plan(user, "starter")
    clock.advance(days=40)
    batches: list[list[str]] = []
    singles: list[bool] = []

    def on_batch(sender: Flask, *, expired: list[Any], **_: Any) -> None:
        batches.append(sorted(lapsed.user_id for lapsed, _current in expired))

    def on_single(sender: Flask, *, in_batch: bool = False, **_: Any) -> None:
        singles.append(in_batch)

    with (
        signals.subscriptions_expired.connected_to(on_batch, sender=app),
        signals.subscription_expired.connected_to(on_single, sender=app),
    ):
        assert get_state().subscriptions.expire_lapsed(batch_size=2) == 5

    assert [len(batch) for batch in batches] == [2, 2, 1]
    assert sorted(user for batch in batches for user in batch) == users
    assert singles == [True] * 5
    for user in users:
        assert [event.type for event in billing.activity(user)][:1] == ["subscription.expired"]


def test_a_batch_without_receivers_still_writes_each_users_entry_and_notice_once(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    """With nothing connected the batch reads nothing back, yet writes what a receiver would
    have seen; a run with receivers afterwards finds it all done."""
    users = [f"quiet-{index}" for index in range(3)]
    for user in users:
        billing.change_plan(user, "starter")
    clock.advance(days=32)

    assert get_state().subscriptions.expire_lapsed(batch_size=2) == 3

    with (
        recorded(signals.subscription_expired, app) as expiries,
        recorded(signals.notification_due, app) as notices,
    ):
        assert billing.run_maintenance().ended == 0
    assert (expiries, notices) == ([], [])
    for user in users:
        assert [event.type for event in billing.activity(user)][:1] == ["subscription.expired"]
        assert expired_notices_of(app, user) == 1


def test_a_batch_announces_its_user_ids_and_each_expired_notice(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    users = ["ids-1", "ids-2"]
    paid = {user: billing.change_plan(user, "starter").id for user in users}
    clock.advance(days=32)

    with (
        recorded(signals.subscriptions_expired, app) as batches,
        recorded(signals.notification_due, app) as notices,
    ):
        get_state().subscriptions.expire_lapsed()

    assert [sorted(batch["user_ids"]) for batch in batches] == [users]
    assert sorted((call["user_id"], call["kind"], call["subject"]) for call in notices) == [
        (user, "expired", str(paid[user])) for user in users
    ]


@pytest.mark.parametrize("microseconds", [0, 123456])
def test_a_batch_describes_an_expiry_as_the_next_visit_would(
    billing: ProfileBilling, clock: Clock, microseconds: int
) -> None:
    """The batch writes its feed entries in SQL; they read as those written one by one."""
    clock.set(NOW + timedelta(microseconds=microseconds))
    for user in ("by-batch", "by-visit"):
        billing.change_plan(user, "professional")
    billing.cancel("by-visit")
    billing.cancel("by-batch")
    clock.advance(days=40)

    billing.subscription("by-visit")
    assert get_state().subscriptions.expire_lapsed() == 1

    by_batch, by_visit = (billing.activity(user)[0] for user in ("by-batch", "by-visit"))
    assert (by_batch.type, by_batch.title) == ("subscription.expired", "Professional plan expired")
    assert by_batch.metadata == by_visit.metadata
    assert (
        by_batch.metadata["expired_at"]
        == (ONE_MONTH_LATER + timedelta(microseconds=microseconds)).isoformat()
    )
    assert by_batch.metadata["now_on"] == "free"
    assert by_batch.occurred_at == by_visit.occurred_at


def expired_notices_of(app: Flask, user_id: str) -> int:
    engine = app.extensions["sqlalchemy"].engine
    query = (
        select(func.count())
        .select_from(notifications)
        .where(notifications.c.account_id == "user:" + user_id, notifications.c.kind == "expired")
    )
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


# --- quota periods reset with no scheduler --------------------------------------------------------


def use_up_free_analyses(client: FlaskClient, user_id: str) -> None:
    for _ in range(FREE_ANALYSES):
        assert analyze(client, user_id).status_code == 200
    refused = analyze(client, user_id)
    assert refused.status_code == 429
    assert refused.get_json()["error"] == "LIMIT_EXCEEDED"


@pytest.mark.parametrize(
    ("rule", "reset_at"),
    [
        ("calendar_month", datetime(2025, 11, 1, tzinfo=UTC)),
        # Counted from the free subscription's start, which the first request created at NOW.
        ("rolling_30_days", NOW + timedelta(days=30)),
        ("anniversary_month", ONE_MONTH_LATER),
    ],
)
def test_a_new_period_starts_from_zero_without_a_scheduler(
    make_app: AppFactory, clock: Clock, rule: str, reset_at: datetime
) -> None:
    app = make_app(BILLING_PERIOD_RULE=rule)
    billing = billing_of(app)
    client = app.test_client()
    with app.app_context():
        use_up_free_analyses(client, "alice")

        clock.set(reset_at - SECOND)
        assert analyze(client, "alice").status_code == 429

        clock.set(reset_at)
        assert analyze(client, "alice").status_code == 200
        assert billing.allowance("alice", "analysis").used == 1
