"""Plan changes and extensions: concurrent grants add up, extensions keep the anchor's day, and a
change between paid plans credits the unused paid time to the new period."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, localcontext
from functools import partial
from typing import Any

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Row, select

from flask_profile_billing import (
    ProfileBilling,
    Subscription,
    SubscriptionConflictError,
    SubscriptionRow,
    SubscriptionStatus,
)
from flask_profile_billing.domain.periods import add_months, extend_from_anchor
from flask_profile_billing.domain.proration import credited_time
from tests.support.host_app import Clock
from tests.support.subscriptions import current_row_count

NOW = datetime(2025, 10, 13, 10, 0, tzinfo=UTC)
CONCURRENT_EXTENSIONS = 12
MIXED_ROUNDS = 4

subscriptions_table = SubscriptionRow.__table__


# --- helpers -------------------------------------------------------------------------------------


def months_between(earlier: datetime, later: datetime) -> int:
    """Whole calendar months from ``earlier`` to ``later`` (their days and times are alike here)."""
    return (later.year - earlier.year) * 12 + later.month - earlier.month


def stored_history(app: Flask, user_id: str) -> list[Row[Any]]:
    """Every subscription row of the user, oldest first, without its ids: what two users with the
    same story must have alike."""
    engine = app.extensions["sqlalchemy"].engine
    columns = [
        column for column in subscriptions_table.c if column.name not in {"id", "account_id"}
    ]
    query = (
        select(*columns)
        .where(subscriptions_table.c.account_id == "user:" + user_id)
        .order_by(subscriptions_table.c.id)
    )
    with engine.connect() as connection:
        return list(connection.execute(query))


def run_together(app: Flask, tasks: list[Callable[[], Any]]) -> list[Any]:
    """Run each task in a thread of its own, released at once, each in an app context.

    Returns what each task returned, or the ``SubscriptionConflictError`` it raised (any other
    error fails the test).
    """
    barrier = threading.Barrier(len(tasks))

    def start_together(task: Callable[[], Any]) -> Any:
        with app.app_context():
            barrier.wait(timeout=30)
            try:
                return task()
            except SubscriptionConflictError as conflict:
                return conflict

    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        futures = [pool.submit(start_together, task) for task in tasks]
        return [future.result() for future in futures]


# --- concurrent changes of one user --------------------------------------------------------------


def test_concurrent_one_month_extensions_add_up_to_exactly_their_months(
    app: Flask, billing: ProfileBilling
) -> None:
    """Payment webhooks and ``flask billing grant`` may extend one user's plan at the same time."""
    paid = billing.change_plan("alice", "starter", 1)
    assert paid.expires_at is not None

    def extend() -> Subscription:
        return billing.change_plan("alice", "starter", 1)

    results = run_together(app, [extend] * CONCURRENT_EXTENSIONS)

    current = billing.subscription("alice")
    assert current.expires_at is not None
    assert months_between(paid.expires_at, current.expires_at) == CONCURRENT_EXTENSIONS
    assert current.id == paid.id
    assert current_row_count(app, "alice") == 1
    # Each extension saw the one before it: the ends they returned are every step, once.
    assert sorted(result.expires_at for result in results) == [
        add_months(NOW, months) for months in range(2, CONCURRENT_EXTENSIONS + 2)
    ]


MIXED_OPERATIONS: dict[str, Callable[[ProfileBilling, str], Subscription]] = {
    "extend": lambda billing, user: billing.change_plan(user, "starter", 1),
    "cancel": lambda billing, user: billing.cancel(user),
    "upgrade": lambda billing, user: billing.change_plan(user, "professional", 1),
}


def test_concurrent_extension_cancel_and_upgrade_end_as_if_run_one_after_another(
    app: Flask, billing: ProfileBilling
) -> None:
    """Whatever the interleaving, the user ends with one current subscription, and the history is
    what some order of the operations that went through produces when run one at a time."""
    for round_number in range(MIXED_ROUNDS):
        user = f"mixed-{round_number}"
        billing.change_plan(user, "starter", 1)

        outcomes = run_together(
            app,
            [partial(operation, billing, user) for operation in MIXED_OPERATIONS.values()],
        )

        applied = [
            name
            for name, outcome in zip(MIXED_OPERATIONS, outcomes, strict=True)
            if not isinstance(outcome, SubscriptionConflictError)
        ]
        # Every change goes through: each one that meets a concurrent replacement decides again.
        assert applied == list(MIXED_OPERATIONS)
        assert current_row_count(app, user) == 1
        serial_histories = []
        for order_number, order in enumerate(itertools.permutations(applied)):
            serial_user = f"serial-{round_number}-{order_number}"
            billing.change_plan(serial_user, "starter", 1)
            for name in order:
                MIXED_OPERATIONS[name](billing, serial_user)
            serial_histories.append(stored_history(app, serial_user))
        assert stored_history(app, user) in serial_histories


# --- extensions keep the day the subscription started on -----------------------------------------


def test_monthly_extensions_stay_on_the_day_the_subscription_started(
    billing: ProfileBilling, clock: Clock
) -> None:
    clock.set(datetime(2025, 11, 30, 10, 0, tzinfo=UTC))

    for _ in range(8):  # the first grant starts the period, the next seven extend it
        extended = billing.change_plan("alice", "starter", 1)

    # Through February's 28th, back to the 30th: never dragged down to the 28th.
    assert extended.expires_at == datetime(2026, 7, 30, 10, 0, tzinfo=UTC)


def test_a_yearly_extension_after_a_clamped_month_returns_to_the_anchor_day(
    billing: ProfileBilling, clock: Clock
) -> None:
    clock.set(datetime(2024, 1, 31, 10, 0, tzinfo=UTC))
    first = billing.change_plan("alice", "professional", 1)
    assert first.expires_at == datetime(2024, 2, 29, 10, 0, tzinfo=UTC)

    extended = billing.change_plan("alice", "professional", 12)

    assert extended.expires_at == datetime(2025, 2, 28, 10, 0, tzinfo=UTC)
    again = billing.change_plan("alice", "professional", 1)
    assert again.expires_at == datetime(2025, 3, 31, 10, 0, tzinfo=UTC)


# --- changing between paid plans credits the unused paid time ------------------------------------

STARTER_MONTHLY = 2990
PROFESSIONAL_MONTHLY = 5990
TWENTY_DAYS = 20 * 24 * 3600


def test_an_upgrade_credits_the_unused_paid_time_at_the_ratio_of_the_monthly_prices(
    billing: ProfileBilling, clock: Clock
) -> None:
    billing.change_plan("alice", "starter", 1)  # until 13 Nov
    clock.set(datetime(2025, 10, 24, 10, 0, tzinfo=UTC))  # 20 days of Starter left

    upgraded = billing.change_plan("alice", "professional", 1)

    credit = timedelta(seconds=TWENTY_DAYS * STARTER_MONTHLY // PROFESSIONAL_MONTHLY)
    assert credit == timedelta(seconds=862_557)  # rounded down from 862557.59...
    assert upgraded.plan_code == "professional"
    assert upgraded.started_at == clock.now
    assert upgraded.expires_at == datetime(2025, 11, 24, 10, 0, tzinfo=UTC) + credit


def test_a_downgrade_between_paid_plans_credits_more_of_the_cheaper_plan(
    billing: ProfileBilling, clock: Clock
) -> None:
    billing.change_plan("alice", "professional", 1)
    clock.set(datetime(2025, 10, 24, 10, 0, tzinfo=UTC))

    downgraded = billing.change_plan("alice", "starter", 12)

    credit = timedelta(seconds=TWENTY_DAYS * PROFESSIONAL_MONTHLY // STARTER_MONTHLY)
    assert downgraded.expires_at == datetime(2026, 10, 24, 10, 0, tzinfo=UTC) + credit


def test_a_plan_without_a_monthly_price_takes_the_unused_time_one_for_one(
    billing: ProfileBilling, clock: Clock
) -> None:
    billing.change_plan("alice", "starter", 1)
    clock.set(datetime(2025, 10, 24, 10, 0, tzinfo=UTC))

    enterprise = billing.change_plan("alice", "enterprise", 1)  # price on request

    assert enterprise.expires_at == datetime(2025, 11, 24, 10, 0, tzinfo=UTC) + timedelta(days=20)


def test_a_cancelled_paid_period_is_still_credited(billing: ProfileBilling, clock: Clock) -> None:
    """A cancel keeps the paid time until its end, so a change before then still carries it."""
    billing.change_plan("alice", "starter", 1)
    billing.cancel("alice")
    clock.set(datetime(2025, 10, 24, 10, 0, tzinfo=UTC))

    upgraded = billing.change_plan("alice", "professional", 1)

    credit = timedelta(seconds=TWENTY_DAYS * STARTER_MONTHLY // PROFESSIONAL_MONTHLY)
    assert upgraded.status is SubscriptionStatus.ACTIVE
    assert upgraded.expires_at == datetime(2025, 11, 24, 10, 0, tzinfo=UTC) + credit


def test_the_remaining_time_of_a_trial_is_not_credited(
    billing: ProfileBilling, clock: Clock
) -> None:
    billing.start_trial("alice", "starter", days=14)
    clock.advance(days=4)

    paid = billing.change_plan("alice", "professional", 1)

    assert paid.expires_at == datetime(2025, 11, 17, 10, 0, tzinfo=UTC)


def test_switching_to_the_free_plan_ends_the_paid_period_now(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    paid = billing.change_plan("alice", "professional", 1)
    clock.advance(days=11)

    free = billing.change_plan("alice", "free")

    assert free.plan_code == "free"
    assert free.expires_at is None
    assert free.started_at == clock.now
    ended = stored_history(app, "alice")[-2]
    assert (ended.plan_code, ended.expires_at) == ("professional", paid.expires_at)
    assert (ended.ended_at, ended.end_reason) == (clock.now, "replaced")
    assert current_row_count(app, "alice") == 1
    assert billing.plan("alice").code == "free"


# --- the rules themselves: pure functions --------------------------------------------------------


def utc(year: int, month: int, day: int, hour: int = 10) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def test_extensions_from_the_anchor_never_drift_to_a_clamped_day() -> None:
    anchor = utc(2025, 11, 30)
    expires_at = add_months(anchor, 1)

    ends = []
    for _ in range(7):
        expires_at = extend_from_anchor(anchor, expires_at, 1)
        ends.append(expires_at)

    assert ends == [
        utc(2026, 1, 30),
        utc(2026, 2, 28),
        utc(2026, 3, 30),
        utc(2026, 4, 30),
        utc(2026, 5, 30),
        utc(2026, 6, 30),
        utc(2026, 7, 30),
    ]


@pytest.mark.parametrize(
    ("expires_at", "months", "extended"),
    [
        (utc(2024, 2, 29), 1, utc(2024, 3, 31)),  # on the grid, though clamped
        (utc(2024, 2, 29), 12, utc(2025, 2, 28)),
        (utc(2025, 1, 31), 1, utc(2025, 2, 28)),
        (utc(2024, 1, 31), 1, utc(2024, 2, 29)),  # the end is the anchor itself
    ],
)
def test_an_end_on_the_anchor_grid_is_extended_from_the_anchor(
    expires_at: datetime, months: int, extended: datetime
) -> None:
    assert extend_from_anchor(utc(2024, 1, 31), expires_at, months) == extended


@pytest.mark.parametrize(
    ("expires_at", "extended"),
    [
        (utc(2025, 10, 27), utc(2025, 11, 27)),  # a 14-day trial's end
        (utc(2025, 11, 28), utc(2025, 12, 28)),  # a month and a credited week
        (utc(2025, 11, 13, 9), utc(2025, 12, 13, 9)),  # the anchor's day, another time of day
        (utc(2025, 10, 31), utc(2025, 11, 30)),  # off the grid, clamped as add_months clamps
    ],
)
def test_an_end_off_the_anchor_grid_is_extended_from_itself(
    expires_at: datetime, extended: datetime
) -> None:
    assert extend_from_anchor(utc(2025, 10, 13), expires_at, 1) == extended


def test_the_anchor_grid_is_compared_as_instants_whatever_the_ends_zone() -> None:
    expires_at = utc(2024, 2, 29).astimezone(timezone(timedelta(hours=3)))  # 13:00 at +03:00

    assert extend_from_anchor(utc(2024, 1, 31), expires_at, 1) == utc(2024, 3, 31)


def test_extending_from_a_naive_moment_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        extend_from_anchor(utc(2025, 1, 31), datetime(2025, 2, 28, 10), 1)


@given(
    anchor=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
    ),
    steps=st.lists(st.sampled_from([1, 12]), min_size=1, max_size=10),
)
def test_extensions_one_at_a_time_end_where_the_same_months_at_once_would(
    anchor: datetime, steps: list[int]
) -> None:
    expires_at = add_months(anchor, 1)
    for months in steps:
        expires_at = extend_from_anchor(anchor, expires_at, months)

    assert expires_at == add_months(anchor, 1 + sum(steps))


TWENTY_DAYS_DELTA = timedelta(days=20)


@pytest.mark.parametrize(
    ("old_price", "new_price", "credit"),
    [
        (Decimal(2990), Decimal(5990), timedelta(seconds=862_557)),  # 862557.59... s
        (Decimal(5990), Decimal(2990), timedelta(seconds=3_461_779)),  # 3461779.26... s
        (Decimal("9.99"), Decimal("19.98"), timedelta(days=10)),
        (Decimal(2990), Decimal(2990), TWENTY_DAYS_DELTA),
        # No ratio to convert at: one for one.
        (None, Decimal(5990), TWENTY_DAYS_DELTA),
        (Decimal(2990), None, TWENTY_DAYS_DELTA),
        (Decimal(0), Decimal(5990), TWENTY_DAYS_DELTA),
        (Decimal(2990), Decimal(0), TWENTY_DAYS_DELTA),
    ],
)
def test_unused_time_is_converted_at_the_ratio_of_the_monthly_prices(
    old_price: Decimal | None, new_price: Decimal | None, credit: timedelta
) -> None:
    assert credited_time(TWENTY_DAYS_DELTA, old_price, new_price) == credit


@pytest.mark.parametrize(("old_price", "new_price"), [(Decimal(1), Decimal(1)), (None, None)])
def test_credit_is_rounded_down_to_whole_seconds(
    old_price: Decimal | None, new_price: Decimal | None
) -> None:
    unused = timedelta(seconds=5, microseconds=999_999)

    assert credited_time(unused, old_price, new_price) == timedelta(seconds=5)


def test_credit_does_not_depend_on_the_hosts_decimal_context() -> None:
    with localcontext(prec=3):
        credit = credited_time(TWENTY_DAYS_DELTA, Decimal(2990), Decimal(5990))

    assert credit == timedelta(seconds=862_557)


def test_no_unused_time_is_no_credit_and_negative_time_is_refused() -> None:
    assert credited_time(timedelta(0), Decimal(2990), Decimal(5990)) == timedelta(0)
    with pytest.raises(ValueError, match="negative"):
        credited_time(-timedelta(seconds=1), Decimal(2990), Decimal(5990))


def subscription(
    status: SubscriptionStatus, expires_at: datetime | None, plan_code: str = "starter"
) -> Subscription:
    return Subscription(
        id=1,
        account_id="user:alice",
        plan_code=plan_code,
        status=status,
        started_at=NOW,
        expires_at=expires_at,
        period_anchor=NOW,
    )


@pytest.mark.parametrize(
    ("status", "expires_at", "moment", "unused"),
    [
        (SubscriptionStatus.ACTIVE, utc(2025, 11, 13), utc(2025, 10, 24), TWENTY_DAYS_DELTA),
        (SubscriptionStatus.CANCELLED, utc(2025, 11, 13), utc(2025, 10, 24), TWENTY_DAYS_DELTA),
        (SubscriptionStatus.TRIAL, utc(2025, 11, 13), utc(2025, 10, 24), timedelta(0)),
        (SubscriptionStatus.ACTIVE, None, utc(2025, 10, 24), timedelta(0)),
        (SubscriptionStatus.ACTIVE, utc(2025, 11, 13), utc(2025, 11, 13), timedelta(0)),
        (SubscriptionStatus.ACTIVE, utc(2025, 11, 13), utc(2025, 12, 1), timedelta(0)),
        (SubscriptionStatus.EXPIRED, utc(2025, 11, 13), utc(2025, 10, 24), timedelta(0)),
    ],
)
def test_unused_paid_time_is_what_is_left_of_a_paid_period(
    status: SubscriptionStatus, expires_at: datetime | None, moment: datetime, unused: timedelta
) -> None:
    assert subscription(status, expires_at).unused_paid_time_at(moment) == unused
