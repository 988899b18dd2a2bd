"""The statements of a plan change, run inside one write transaction of the caller's.

A plan change reads the current subscription, decides from it (extend it, or end it and start
another) and writes; the decision is only right if nothing changes the row in between. So the read
locks it: ``lock_current`` is ``SELECT ... FOR UPDATE`` on PostgreSQL, where a concurrent change of
the same user waits for the commit and then reads the row as committed. SQLite has no row locks and
SQLAlchemy leaves ``FOR UPDATE`` out there; the caller's transaction began with ``BEGIN
IMMEDIATE``, which already holds the database's one write lock, so no other writer runs until it
commits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, select, update

from ..domain.subscriptions import EndReason, SubscriptionStatus
from .models import subscriptions

_subscription = subscriptions.c
_IS_CURRENT = _subscription.ended_at.is_(None)

# Built once, like the guards' read of the current subscription.
_LOCK_CURRENT = (
    select(subscriptions)
    .where(_subscription.user_id == bindparam("user_id"), _IS_CURRENT)
    .with_for_update()
)


def lock_current(connection: Connection, user_id: str) -> Row[Any] | None:
    """The user's current subscription, locked until the transaction ends; None when there is none.

    On PostgreSQL, None also answers a wait for a concurrent transaction that ended the row: the
    subscription it started in its place was not there when this statement began. The caller
    leaves its transaction and asks again.
    """
    return connection.execute(_LOCK_CURRENT, {"user_id": user_id}).one_or_none()


def extend_current(
    connection: Connection, subscription_id: int, expires_at: datetime
) -> Row[Any] | None:
    """Move the end of the current subscription ``subscription_id`` to ``expires_at`` and make it
    active again (an extension also undoes a cancel). The row as stored now, or None when it is no
    longer current."""
    return connection.execute(
        update(subscriptions)
        .where(_subscription.id == subscription_id, _IS_CURRENT)
        .values(
            expires_at=expires_at,
            status=SubscriptionStatus.ACTIVE.value,
            cancelled_at=None,
        )
        .returning(*subscriptions.c)
    ).one_or_none()


def replace_current(
    connection: Connection,
    subscription_id: int,
    *,
    now: datetime,
    user_id: str,
    plan_code: str,
    status: SubscriptionStatus,
    expires_at: datetime | None,
) -> Row[Any] | None:
    """End the current subscription ``subscription_id`` at ``now`` (replaced) and start the user's
    next one from ``now``. The new row, or None (nothing written) when the old one is no longer
    current."""
    ended = connection.execute(
        update(subscriptions)
        .where(_subscription.id == subscription_id, _IS_CURRENT)
        .values(ended_at=now, end_reason=EndReason.REPLACED.value)
    )
    if ended.rowcount != 1:
        return None
    return connection.execute(
        subscriptions.insert()
        .values(
            user_id=user_id,
            plan_code=plan_code,
            status=status.value,
            started_at=now,
            expires_at=expires_at,
            period_anchor=now,
        )
        .returning(*subscriptions.c)
    ).one()
