"""The subscription lifecycle (SPEC S2, S3, S5, S6): free on first access, plan changes, cancel,
resume, trial, expiry without a job, maintenance, and quota periods that reset on their own."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from blinker import Signal
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Row, func, select

from flask_profile_billing import (
    BillingError,
    ProfileBilling,
    SubscriptionRow,
    SubscriptionStatus,
    signals,
)
from flask_profile_billing.domain.catalog import UnknownPlanError
from flask_profile_billing.extension import get_state
from tests.conftest import AppFactory, as_user
from tests.host_app import Clock

NOW = datetime(2025, 10, 13, 10, 0, tzinfo=UTC)
ONE_MONTH_LATER = datetime(2025, 11, 13, 10, 0, tzinfo=UTC)
ONE_YEAR_LATER = datetime(2026, 10, 13, 10, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
FREE_ANALYSES = 20
CONCURRENT_USERS = 50

ACTIVE = SubscriptionStatus.ACTIVE
TRIAL = SubscriptionStatus.TRIAL
EXPIRED = SubscriptionStatus.EXPIRED
CANCELLED = SubscriptionStatus.CANCELLED

subscriptions_table = SubscriptionRow.__table__


# --- helpers -------------------------------------------------------------------------------------


def stored_rows(app: Flask, user_id: str) -> list[Row[Any]]:
    """Every subscription row of the user, oldest first, read straight from the table."""
    engine = app.extensions["sqlalchemy"].engine
    query = (
        select(subscriptions_table)
        .where(subscriptions_table.c.user_id == user_id)
        .order_by(subscriptions_table.c.id)
    )
    with engine.connect() as connection:
        return list(connection.execute(query))


def current_row_count(app: Flask, user_id: str) -> int:
    engine = app.extensions["sqlalchemy"].engine
    query = (
        select(func.count())
        .select_from(subscriptions_table)
        .where(subscriptions_table.c.user_id == user_id, subscriptions_table.c.ended_at.is_(None))
    )
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def row_of(app: Flask, user_id: str, subscription_id: int) -> Row[Any]:
    return next(row for row in stored_rows(app, user_id) if row.id == subscription_id)


@contextmanager
def recorded(signal: Signal, app: Flask) -> Iterator[list[dict[str, Any]]]:
    """The keyword arguments of every ``signal`` the app sends inside the block."""
    calls: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append(kwargs)

    with signal.connected_to(receiver, sender=app):
        yield calls


def run_together(count: int, task: Callable[[], Any]) -> list[Any]:
    """Run ``task`` in ``count`` threads released at once; re-raises the first thread's error."""
    barrier = threading.Barrier(count)

    def start_together() -> Any:
        barrier.wait(timeout=30)
        return task()

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(start_together) for _ in range(count)]
        return [future.result() for future in futures]


def api_data(client: FlaskClient, user_id: str) -> Any:
    return client.get("/api/data", headers=as_user(user_id))


def analyze(client: FlaskClient, user_id: str) -> Any:
    return client.post("/analyze", headers=as_user(user_id))


def assert_feature_refused(response: Any) -> None:
    assert response.status_code == 403
    assert response.get_json()["error"] == "FEATURE_NOT_AVAILABLE"


# --- first access (S3) ---------------------------------------------------------------------------


def test_first_access_creates_one_free_subscription_that_never_lapses(
    app: Flask, billing: ProfileBilling
) -> None:
    subscription = billing.subscription("alice")

    assert subscription.user_id == "alice"
    assert subscription.plan_code == "free"
    assert subscription.status is ACTIVE
    assert subscription.expires_at is None
    assert subscription.started_at == NOW
    assert subscription.is_active_at(NOW + timedelta(days=3650))
    assert subscription.days_remaining_at(NOW) is None
    assert billing.plan("alice").code == "free"
    assert [row.id for row in stored_rows(app, "alice")] == [subscription.id]


def test_second_access_returns_the_same_subscription(app: Flask, billing: ProfileBilling) -> None:
    first = billing.subscription("alice")

    assert billing.subscription("alice") == first
    assert len(stored_rows(app, "alice")) == 1


def test_first_access_announces_the_new_subscription_once(
    app: Flask, billing: ProfileBilling
) -> None:
    with recorded(signals.subscription_changed, app) as changes:
        created = billing.subscription("alice")
        billing.subscription("alice")

    assert changes == [{"user_id": "alice", "previous": None, "current": created}]


def test_concurrent_first_accesses_create_exactly_one_subscription(
    app: Flask, billing: ProfileBilling
) -> None:
    def first_access() -> int:
        with app.app_context():
            return billing.subscription("newbie").id

    ids = run_together(CONCURRENT_USERS, first_access)

    assert current_row_count(app, "newbie") == 1
    assert len(stored_rows(app, "newbie")) == 1
    assert set(ids) == {billing.subscription("newbie").id}


def test_concurrent_first_accesses_announce_one_new_subscription(
    app: Flask, billing: ProfileBilling
) -> None:
    def first_access() -> None:
        with app.app_context():
            billing.subscription("newbie")

    with recorded(signals.subscription_changed, app) as changes:
        run_together(CONCURRENT_USERS, first_access)

    assert [change["previous"] for change in changes] == [None]
    assert changes[0]["current"] == billing.subscription("newbie")


def test_concurrent_first_requests_create_exactly_one_subscription(
    app: Flask, billing: ProfileBilling
) -> None:
    def first_request() -> tuple[int, str]:
        response = api_data(app.test_client(), "newbie")
        return response.status_code, response.get_json()["error"]

    answers = run_together(CONCURRENT_USERS, first_request)

    assert answers == [(403, "FEATURE_NOT_AVAILABLE")] * CONCURRENT_USERS
    assert current_row_count(app, "newbie") == 1
    assert len(stored_rows(app, "newbie")) == 1
    assert billing.subscription("newbie").plan_code == "free"


# --- changing plans (S7, manual grants) ----------------------------------------------------------


@pytest.mark.parametrize(("months", "expires_at"), [(1, ONE_MONTH_LATER), (12, ONE_YEAR_LATER)])
def test_change_plan_starts_a_paid_subscription_for_the_months_given(
    billing: ProfileBilling, months: int, expires_at: datetime
) -> None:
    free = billing.subscription("alice")

    paid = billing.change_plan("alice", "professional", months)

    assert paid.plan_code == "professional"
    assert paid.status is ACTIVE
    assert paid.started_at == NOW
    assert paid.expires_at == expires_at
    assert paid.id != free.id
    assert billing.subscription("alice") == paid


def test_change_plan_keeps_the_previous_subscription_as_ended_history(
    app: Flask, billing: ProfileBilling
) -> None:
    free = billing.subscription("alice")

    paid = billing.change_plan("alice", "professional", 1)

    history = get_state().subscriptions.history("alice")
    assert [(s.id, s.plan_code) for s in history] == [(free.id, "free"), (paid.id, "professional")]
    previous = row_of(app, "alice", free.id)
    assert previous.ended_at == NOW
    assert previous.end_reason == "replaced"
    assert row_of(app, "alice", paid.id).ended_at is None
    assert current_row_count(app, "alice") == 1


def test_change_plan_announces_previous_and_current(app: Flask, billing: ProfileBilling) -> None:
    free = billing.subscription("alice")

    with recorded(signals.subscription_changed, app) as changes:
        paid = billing.change_plan("alice", "professional", 1)

    assert changes == [{"user_id": "alice", "previous": free, "current": paid}]


def test_change_plan_unlocks_the_plans_features_at_the_guard(
    billing: ProfileBilling, client: FlaskClient
) -> None:
    assert_feature_refused(api_data(client, "alice"))

    billing.change_plan("alice", "professional", 1)

    response = api_data(client, "alice")
    assert response.status_code == 200
    assert response.get_json() == {"success": True, "data": [1, 2, 3]}


@pytest.mark.parametrize("months", [0, 2, 3, 6, 24, -1])
def test_change_plan_refuses_durations_other_than_1_or_12_months(
    app: Flask, billing: ProfileBilling, months: int
) -> None:
    free = billing.subscription("alice")

    with pytest.raises(ValueError, match="months"):
        billing.change_plan("alice", "professional", months)

    assert billing.subscription("alice") == free
    assert len(stored_rows(app, "alice")) == 1


def test_change_plan_to_an_unknown_plan_names_the_known_plans(billing: ProfileBilling) -> None:
    free = billing.subscription("alice")

    with pytest.raises(UnknownPlanError, match="platinum") as raised:
        billing.change_plan("alice", "platinum", 1)

    for code in ("free", "starter", "professional", "enterprise"):
        assert code in str(raised.value)
    assert billing.subscription("alice") == free


@pytest.mark.parametrize(
    ("months", "expires_at"),
    [
        (1, datetime(2025, 12, 13, 10, 0, tzinfo=UTC)),
        (12, datetime(2026, 11, 13, 10, 0, tzinfo=UTC)),
    ],
)
def test_granting_the_current_paid_plan_again_extends_it(
    app: Flask, billing: ProfileBilling, clock: Clock, months: int, expires_at: datetime
) -> None:
    """The months are added to the paid period's end, not to today (manual extension)."""
    paid = billing.change_plan("alice", "professional", 1)
    clock.advance(days=10)

    extended = billing.change_plan("alice", "professional", months)

    assert extended.id == paid.id
    assert extended.status is ACTIVE
    assert extended.started_at == NOW
    assert extended.expires_at == expires_at
    assert billing.subscription("alice") == extended
    assert current_row_count(app, "alice") == 1


def test_granting_the_plan_again_after_a_cancel_reactivates_and_extends_it(
    billing: ProfileBilling,
) -> None:
    paid = billing.change_plan("alice", "professional", 1)
    billing.cancel("alice")

    extended = billing.change_plan("alice", "professional", 1)

    assert extended.id == paid.id
    assert extended.status is ACTIVE
    assert extended.cancelled_at is None
    assert extended.expires_at == datetime(2025, 12, 13, 10, 0, tzinfo=UTC)


# --- cancel and resume (S6) ----------------------------------------------------------------------


def test_cancel_marks_the_subscription_cancelled_and_keeps_access(
    billing: ProfileBilling, client: FlaskClient
) -> None:
    paid = billing.change_plan("alice", "professional", 1)

    cancelled = billing.cancel("alice")

    assert cancelled.id == paid.id
    assert cancelled.status is CANCELLED
    assert cancelled.cancelled_at == NOW
    assert cancelled.expires_at == ONE_MONTH_LATER
    assert cancelled.is_active_at(NOW)
    assert billing.subscription("alice") == cancelled
    assert billing.plan("alice").code == "professional"
    assert api_data(client, "alice").status_code == 200


def test_cancelled_subscription_keeps_access_until_the_last_second(
    billing: ProfileBilling, client: FlaskClient, clock: Clock
) -> None:
    paid = billing.change_plan("alice", "professional", 1)
    billing.cancel("alice")

    clock.set(ONE_MONTH_LATER - SECOND)

    assert billing.subscription("alice").id == paid.id
    assert billing.plan("alice").code == "professional"
    assert api_data(client, "alice").status_code == 200


@pytest.mark.parametrize("after_expiry", [timedelta(0), SECOND, timedelta(days=40)])
def test_cancelled_subscription_falls_back_to_free_at_its_end_without_a_job(
    app: Flask,
    billing: ProfileBilling,
    client: FlaskClient,
    clock: Clock,
    after_expiry: timedelta,
) -> None:
    paid = billing.change_plan("alice", "professional", 1)
    billing.cancel("alice")

    clock.set(ONE_MONTH_LATER + after_expiry)
    current = billing.subscription("alice")

    assert current.id != paid.id
    assert current.plan_code == "free"
    assert current.status is ACTIVE
    assert current.expires_at is None
    assert current.started_at == ONE_MONTH_LATER
    old = row_of(app, "alice", paid.id)
    assert old.status == "cancelled"
    assert old.ended_at == ONE_MONTH_LATER
    assert current_row_count(app, "alice") == 1
    assert_feature_refused(api_data(client, "alice"))


def test_guard_alone_notices_the_end_of_a_cancelled_subscription(
    app: Flask, billing: ProfileBilling, client: FlaskClient, clock: Clock
) -> None:
    paid = billing.change_plan("alice", "professional", 1)
    billing.cancel("alice")
    clock.set(ONE_MONTH_LATER)

    assert_feature_refused(api_data(client, "alice"))
    assert row_of(app, "alice", paid.id).ended_at == ONE_MONTH_LATER


def test_cancelling_twice_keeps_the_first_cancel(billing: ProfileBilling, clock: Clock) -> None:
    billing.change_plan("alice", "professional", 1)
    first = billing.cancel("alice")
    clock.advance(days=1)

    assert billing.cancel("alice") == first


def test_a_free_subscription_cannot_be_cancelled(billing: ProfileBilling) -> None:
    free = billing.subscription("alice")

    with pytest.raises(BillingError):
        billing.cancel("alice")

    assert billing.subscription("alice") == free


def test_resume_before_the_end_restores_the_active_subscription(
    billing: ProfileBilling, client: FlaskClient, clock: Clock
) -> None:
    paid = billing.change_plan("alice", "professional", 1)
    billing.cancel("alice")
    clock.advance(days=20)

    resumed = billing.resume("alice")

    assert resumed.id == paid.id
    assert resumed.status is ACTIVE
    assert resumed.cancelled_at is None
    assert resumed.expires_at == ONE_MONTH_LATER
    assert billing.subscription("alice") == resumed
    assert api_data(client, "alice").status_code == 200


@pytest.mark.parametrize("plan", ["free", "professional"])
def test_only_a_cancelled_subscription_can_be_resumed(billing: ProfileBilling, plan: str) -> None:
    if plan != "free":
        billing.change_plan("alice", plan, 1)
    before = billing.subscription("alice")

    with pytest.raises(BillingError):
        billing.resume("alice")

    assert billing.subscription("alice") == before


def test_resume_after_the_end_is_refused_and_the_user_stays_free(
    billing: ProfileBilling, clock: Clock
) -> None:
    billing.change_plan("alice", "professional", 1)
    billing.cancel("alice")
    clock.set(ONE_MONTH_LATER)

    with pytest.raises(BillingError):
        billing.resume("alice")

    assert billing.plan("alice").code == "free"


# --- expiry (S5) ---------------------------------------------------------------------------------


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
        (NOW + SECOND, 30),  # the seed's example: started 13.10 10:00, "days_remaining": 30
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


# --- trial ---------------------------------------------------------------------------------------


def test_trial_gives_the_plan_for_its_days_then_free(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    trial = billing.start_trial("alice", "starter", days=14)
    trial_end = NOW + timedelta(days=14)

    assert trial.plan_code == "starter"
    assert trial.status is TRIAL
    assert trial.expires_at == trial_end
    assert trial.days_remaining_at(NOW) == 14
    assert billing.allowance("alice", "analysis").limit == 200

    clock.set(trial_end - SECOND)
    assert billing.subscription("alice").id == trial.id
    assert billing.plan("alice").code == "starter"

    clock.set(trial_end)
    current = billing.subscription("alice")
    assert current.plan_code == "free"
    assert current.started_at == trial_end
    assert row_of(app, "alice", trial.id).status == "expired"
    assert billing.allowance("alice", "analysis").limit == FREE_ANALYSES


@pytest.mark.parametrize("days", [0, -1])
def test_trial_of_less_than_a_day_is_refused(billing: ProfileBilling, days: int) -> None:
    with pytest.raises(ValueError, match="day"):
        billing.start_trial("alice", "starter", days=days)

    assert billing.plan("alice").code == "free"


# --- maintenance ---------------------------------------------------------------------------------

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


# --- quota periods reset with no scheduler (S4 through the subscription) -------------------------


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
    billing: ProfileBilling = app.extensions["test_billing"]
    client = app.test_client()
    with app.app_context():
        use_up_free_analyses(client, "alice")

        clock.set(reset_at - SECOND)
        assert analyze(client, "alice").status_code == 429

        clock.set(reset_at)
        assert analyze(client, "alice").status_code == 200
        assert billing.allowance("alice", "analysis").used == 1


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
