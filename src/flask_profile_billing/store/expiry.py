"""One maintenance batch on PostgreSQL in ONE statement: end lapsed subscriptions, start free ones.

The statement locks up to ``batch_size`` current subscriptions whose paid period is over (skipping
rows another worker holds, so several maintenance runs share the work instead of waiting), ends
each at its expiry, and inserts the free subscription that follows it, from that moment. A user
who meanwhile got a current subscription keeps it (the unique index on current subscriptions
decides, and the insert yields). The ended rows come back with the id of their follower.

The rows are found by primary key (``= ANY(ARRAY(...))``), never by joining the lapsed set to the
table: a join would make each batch scan every current subscription.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, column, text

from ..domain.subscriptions import EndReason, SubscriptionStatus
from .models import subscriptions
from .types import BigId, UTCDateTime

# Columns named, not ``*``: the result is matched to the model's columns by position, and a
# table altered out of the model's order must not shift them.
_SQL = text(
    f"""
WITH lapsed AS (
    SELECT id FROM billing_subscriptions
    WHERE ended_at IS NULL AND expires_at <= :now
    LIMIT :batch_size
    FOR UPDATE SKIP LOCKED
),
ended AS (
    UPDATE billing_subscriptions s
    SET ended_at = s.expires_at,
        end_reason = :expired_reason,
        -- as services.subscriptions._lapsed_status: a cancelled subscription stays cancelled
        status = CASE WHEN s.status = :cancelled THEN :cancelled ELSE :expired END
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
) -> list[Row[Any]]:
    """The ended subscriptions (their columns as stored now) with ``follower_id``: the id of the
    free subscription that follows, or None when the user already had another current one."""
    parameters = {
        "now": now,
        "batch_size": batch_size,
        "default_plan": default_plan,
        "expired_reason": EndReason.EXPIRED.value,
        "cancelled": SubscriptionStatus.CANCELLED.value,
        "expired": SubscriptionStatus.EXPIRED.value,
        "active": SubscriptionStatus.ACTIVE.value,
    }
    return list(connection.execute(_SQL_TYPED, parameters).all())
