"""The subscription lifecycle: a free subscription on first access (once, also under concurrent
first requests), plan changes and manual grants (history kept, features unlocked at the guard,
the same plan again extends it), cancel (access kept to the end, then Free without a job) and
resume, and trials.

Lapses, batch expiry and quota periods are test_subscription_expiry.py's.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_profile_billing import (
    BillingError,
    ProfileBilling,
    signals,
)
from flask_profile_billing.domain.catalog import UnknownPlanError
from flask_profile_billing.state import get_state
from tests.support.host_app import Clock
from tests.support.subscriptions import (
    ACTIVE,
    CANCELLED,
    CONCURRENT_USERS,
    FREE_ANALYSES,
    NOW,
    ONE_MONTH_LATER,
    ONE_YEAR_LATER,
    SECOND,
    TRIAL,
    api_data,
    assert_feature_refused,
    current_row_count,
    recorded,
    row_of,
    run_together,
    stored_rows,
)

# --- first access ---------------------------------------------------------------------------------


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

    assert changes == [
        {"user_id": "alice", "account_id": "user:alice", "previous": None, "current": created}
    ]


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


# --- changing plans, manual grants ----------------------------------------------------------------


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

    history = get_state().subscriptions.history("user:alice")
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

    assert changes == [
        {"user_id": "alice", "account_id": "user:alice", "previous": free, "current": paid}
    ]


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


# --- cancel and resume ----------------------------------------------------------------------------


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


# --- trial ----------------------------------------------------------------------------------------


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
