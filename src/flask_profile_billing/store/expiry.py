"""One maintenance batch: end lapsed subscriptions and start the free ones that follow them.

A batch takes up to ``batch_size`` current subscriptions whose paid period is over, ends each at
its expiry, and inserts the free subscription that follows it, from that moment. A user who
meanwhile got a current subscription keeps it (the unique index on current subscriptions decides,
and the insert yields).

PostgreSQL does it in ONE statement: it locks the lapsed rows skipping those another worker holds
(``FOR UPDATE SKIP LOCKED``, so several maintenance runs share the work instead of waiting), and
the ended rows come back with the id of their follower. The rows are found by primary key
(``= ANY(ARRAY(...))``), never by joining the lapsed set to the table: a join would make each batch
scan every current subscription. SQLite has no data-modifying CTEs: two statements, in the
caller's transaction, whose ``BEGIN IMMEDIATE`` makes concurrent runs take turns.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, bindparam, column, func, select, text

from ..domain.subscriptions import EndReason, Subscription, SubscriptionStatus
from .models import subscriptions
from .subscriptions import (
    IS_CURRENT,
    LAPSED_SQL,
    LAPSED_STATUS_SQL,
    add_others_current,
    end_at_expiry,
    free_values,
    insert_defaults,
    lapsed,
    to_subscription,
)
from .types import BigId, UTCDateTime

ExpiredBatch = list[tuple[Subscription, Subscription | None]]
"""Each ended subscription (as stored now) with the user's current one: the free follower, or the
subscription the user got meanwhile; None when there is none."""

# Columns named, not ``*``: the result is matched to the model's columns by position, and a
# table altered out of the model's order must not shift them.
_SQL = text(
    f"""
WITH lapsed AS (
    SELECT id FROM billing_subscriptions
    WHERE ended_at IS NULL AND {LAPSED_SQL.format(table="billing_subscriptions")}
    LIMIT :batch_size
    FOR UPDATE SKIP LOCKED
),
ended AS (
    UPDATE billing_subscriptions s
    SET ended_at = s.expires_at,
        end_reason = :expired_reason,
        status = {LAPSED_STATUS_SQL.format(table="s")}
    WHERE s.id = ANY(ARRAY(SELECT id FROM lapsed)) AND s.ended_at IS NULL
    RETURNING {", ".join(f"s.{column.name}" for column in subscriptions.c)}
),
followers AS (
    INSERT INTO billing_subscriptions
        (user_id, plan_code, status, started_at, expires_at, period_anchor)
    SELECT user_id, :default_plan, :active, expires_at, NULL, expires_at FROM ended
    ON CONFLICT (user_id) WHERE ended_at IS NULL DO NOTHING
    RETURNING id, user_id
)
SELECT {", ".join(f"ended.{column.name}" for column in subscriptions.c)},
       followers.id AS follower_id
FROM ended LEFT JOIN followers ON followers.user_id = ended.user_id
"""
    # Typed like the model: ``now`` must be aware, and timestamps come back in UTC.
).bindparams(bindparam("now", type_=UTCDateTime()))
_SQL_TYPED = _SQL.columns(*subscriptions.c, column("follower_id", BigId))


def end_lapsed_batch(
    connection: Connection, *, now: datetime, batch_size: int, default_plan: str
) -> ExpiredBatch:
    """End up to ``batch_size`` subscriptions lapsed at ``now`` and start their free followers on
    ``default_plan``, in the caller's write transaction; empty when none is left."""
    if connection.dialect.name == "postgresql":
        return _in_one_statement(connection, now, batch_size, default_plan)
    return _in_two_statements(connection, now, batch_size, default_plan)


def _in_one_statement(
    connection: Connection, now: datetime, batch_size: int, default_plan: str
) -> ExpiredBatch:
    parameters = {
        "now": now,
        "batch_size": batch_size,
        "default_plan": default_plan,
        "expired_reason": EndReason.EXPIRED.value,
        "cancelled": SubscriptionStatus.CANCELLED.value,
        "expired": SubscriptionStatus.EXPIRED.value,
        "active": SubscriptionStatus.ACTIVE.value,
    }
    rows = connection.execute(_SQL_TYPED, parameters).all()
    ended = [to_subscription(row) for row in rows]
    current = {
        lapsed_one.user_id: _follower(lapsed_one, default_plan, row.follower_id)
        for lapsed_one, row in zip(ended, rows, strict=True)
        if row.follower_id is not None
    }
    add_others_current(connection, ended, current)
    return [(lapsed_one, current.get(lapsed_one.user_id)) for lapsed_one in ended]


def _in_two_statements(
    connection: Connection, now: datetime, batch_size: int, default_plan: str
) -> ExpiredBatch:
    subs = subscriptions.c
    batch = select(subs.id).where(IS_CURRENT, lapsed(now)).limit(batch_size).scalar_subquery()
    ended = end_at_expiry(connection, subs.id.in_(batch))
    current = insert_defaults(connection, ended, default_plan) if ended else {}
    return [(lapsed_one, current.get(lapsed_one.user_id)) for lapsed_one in ended]


def _follower(lapsed_one: Subscription, plan_code: str, follower_id: int) -> Subscription:
    """The free subscription inserted as ``follower_id`` after ``lapsed_one``."""
    values = free_values(lapsed_one.user_id, lapsed_one.expires_at, plan_code)
    values["status"] = SubscriptionStatus.ACTIVE
    return Subscription(id=follower_id, cancelled_at=None, **values)


def count_lapsed(connection: Connection, now: datetime) -> dict[SubscriptionStatus, int]:
    """How many current subscriptions have lapsed at ``now``, by stored status."""
    subs = subscriptions.c
    rows = connection.execute(
        select(subs.status, func.count()).where(IS_CURRENT, lapsed(now)).group_by(subs.status)
    )
    return {SubscriptionStatus(status): int(count) for status, count in rows}
