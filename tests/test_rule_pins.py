"""Rules that exist in Python and in SQL (the SQL for speed) say the same thing.

"A paid period that is over counts as the default plan" is ``Subscription.has_lapsed`` in the
domain, and ``lapsed`` / ``plan_in_force`` / ``LAPSED_SQL`` in the store (reports, the one-statement
reservation, batch expiry). These tests evaluate every form over the same rows, on both databases,
at the edges (no end, one microsecond before, exactly at, after).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy import bindparam, select, text

from flask_profile_billing.domain.subscriptions import SubscriptionStatus
from flask_profile_billing.state import get_state
from flask_profile_billing.store import subscriptions as store
from flask_profile_billing.store.models import subscriptions
from flask_profile_billing.store.types import UTCDateTime
from tests.support.host_app import Clock

# When each row's paid period ends, from now.
EDGES = {
    "no end": None,
    "ended a month ago": timedelta(days=-30),
    "ended a microsecond ago": timedelta(microseconds=-1),
    "ends exactly now": timedelta(0),
    "ends in a microsecond": timedelta(microseconds=1),
    "ends in a month": timedelta(days=30),
}


def stored_rows(app: Flask, now: datetime) -> None:
    get_state(app).plans.ensure_seeded()
    with get_state(app).runtime.engine.begin() as connection:
        for index, (name, offset) in enumerate(EDGES.items()):
            connection.execute(
                subscriptions.insert().values(
                    account_id=name,
                    plan_code="starter",
                    status=(
                        SubscriptionStatus.CANCELLED if index % 2 else SubscriptionStatus.ACTIVE
                    ).value,
                    started_at=now - timedelta(days=60),
                    expires_at=None if offset is None else now + offset,
                    period_anchor=now - timedelta(days=60),
                )
            )


def test_every_form_of_the_lapsed_rule_agrees_with_the_domain(app: Flask, clock: Clock) -> None:
    now = clock.now
    stored_rows(app, now)
    table = subscriptions.c
    query = select(
        subscriptions,
        store.lapsed(now).label("lapsed_expression"),
        store.plan_in_force(now, "free").label("plan_in_force"),
        text(f"({store.LAPSED_SQL.format(table='billing_subscriptions')}) AS lapsed_text")
        # Typed as the column is, as the statements that use the text bind it.
        .bindparams(bindparam("now", now, type_=UTCDateTime())),
    ).order_by(table.id)

    with get_state(app).runtime.engine.connect() as connection:
        rows = connection.execute(query).all()

    assert len(rows) == len(EDGES)
    for row in rows:
        lapsed = store.to_subscription(row).has_lapsed(now)
        assert bool(row.lapsed_expression) is lapsed, row.account_id
        assert bool(row.lapsed_text) is lapsed, row.account_id
        assert row.plan_in_force == ("free" if lapsed else "starter"), row.account_id
    assert {row.account_id for row in rows if row.lapsed_expression} == {
        "ended a month ago",
        "ended a microsecond ago",
        "ends exactly now",
    }


def test_both_forms_of_the_status_a_lapse_leaves_agree(app: Flask, clock: Clock) -> None:
    stored_rows(app, clock.now)
    status_text = store.LAPSED_STATUS_SQL.format(table="billing_subscriptions")
    query = select(
        subscriptions.c.status,
        store.lapsed_status().label("expression"),
        text(f"{status_text} AS from_text"),
    )
    parameters = {
        "cancelled": SubscriptionStatus.CANCELLED.value,
        "expired": SubscriptionStatus.EXPIRED.value,
    }

    with get_state(app).runtime.engine.connect() as connection:
        rows = connection.execute(query, parameters).all()

    for row in rows:
        expected = "cancelled" if row.status == "cancelled" else "expired"
        assert row.expression == row.from_text == expected
