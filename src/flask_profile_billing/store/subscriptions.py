"""The statements on ``billing_subscriptions``, each run on a connection of the caller's.

A user has at most one current subscription (``ended_at IS NULL``; a partial unique index decides
between concurrent writers). Rows come back as ``domain.subscriptions.Subscription``.

A plan change reads the current subscription, decides from it (extend it, or end it and start
another) and writes; the decision is only right if nothing changes the row in between. So the read
locks it: ``lock_current`` is ``SELECT ... FOR UPDATE`` on PostgreSQL, where a concurrent change of
the same user waits for the commit and then reads the row as committed. SQLite has no row locks and
SQLAlchemy leaves ``FOR UPDATE`` out there; the caller's transaction began with ``BEGIN
IMMEDIATE``, which already holds the database's one write lock, so no other writer runs until it
commits.

Two rules hold in Python and in SQL alike, and their SQL is written here only:

- a paid period that is over counts as the default plan: ``Subscription.has_lapsed`` in Python,
  ``lapsed`` and ``LAPSED_SQL`` here (the reports, the one-statement reservation and the batch
  expiry use them);
- a cancelled subscription stays ``cancelled`` when it lapses and any other becomes ``expired``:
  ``lapsed_status`` and ``LAPSED_STATUS_SQL``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    and_,
    bindparam,
    case,
    select,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from ..domain.subscriptions import EndReason, Subscription, SubscriptionStatus
from .dialect import dialect_insert, insert_ignoring_conflict
from .models import subscriptions

_subscription = subscriptions.c
IS_CURRENT = _subscription.ended_at.is_(None)

LAPSED_SQL = "{table}.expires_at IS NOT NULL AND {table}.expires_at <= :now"
"""``lapsed`` as SQL text over ``{table}`` (a table name or an alias), for the hand-written
statements; the caller binds ``:now``."""

LAPSED_STATUS_SQL = "CASE WHEN {table}.status = :cancelled THEN :cancelled ELSE :expired END"
"""``lapsed_status`` as SQL text; the caller binds ``:cancelled`` and ``:expired``."""


def lapsed(now: Any) -> ColumnElement[bool]:
    """The subscription's paid period is over at ``now``: it has an end, and ``now`` reached it
    (``Subscription.has_lapsed``). Until something ends the row, it counts as the default plan."""
    return and_(_subscription.expires_at.is_not(None), _subscription.expires_at <= now)


def plan_in_force(now: Any, default_plan: str) -> ColumnElement[Any]:
    """The code of the plan whose limits apply at ``now``: the default plan once the paid period
    is over, else the subscription's own."""
    return case((lapsed(now), default_plan), else_=_subscription.plan_code)


def lapsed_status() -> ColumnElement[Any]:
    """The status a subscription ends with when it lapses: a cancelled one stays ``cancelled``,
    any other becomes ``expired``."""
    cancelled = SubscriptionStatus.CANCELLED.value
    return case(
        (_subscription.status == cancelled, cancelled),
        else_=SubscriptionStatus.EXPIRED.value,
    )


def to_subscription(row: Row[Any]) -> Subscription:
    return Subscription(
        id=row.id,
        account_id=row.account_id,
        plan_code=row.plan_code,
        status=SubscriptionStatus(row.status),
        started_at=row.started_at,
        expires_at=row.expires_at,
        period_anchor=row.period_anchor,
        cancelled_at=row.cancelled_at,
    )


# Built once: the guards read the current subscription on every request.
_SELECT_CURRENT = select(subscriptions).where(
    _subscription.account_id == bindparam("account_id"), IS_CURRENT
)
_LOCK_CURRENT = _SELECT_CURRENT.with_for_update()


# -- reading -------------------------------------------------------------------------------------


def select_current(connection: Connection, account_id: str) -> Subscription | None:
    """The user's current subscription as it stands (no creation and no rollover: inside a
    caller's transaction)."""
    row = connection.execute(_SELECT_CURRENT, {"account_id": account_id}).one_or_none()
    return None if row is None else to_subscription(row)


def lock_current(connection: Connection, account_id: str) -> Subscription | None:
    """The user's current subscription, locked until the transaction ends; None when there is none.

    On PostgreSQL, None also answers a wait for a concurrent transaction that ended the row: the
    subscription it started in its place was not there when this statement began. The caller
    leaves its transaction and asks again.
    """
    row = connection.execute(_LOCK_CURRENT, {"account_id": account_id}).one_or_none()
    return None if row is None else to_subscription(row)


def current_of_users(connection: Connection, account_ids: Sequence[str]) -> dict[str, Subscription]:
    """The current subscriptions of ``account_ids``, by user id (users with none are left out)."""
    rows = connection.execute(
        select(subscriptions).where(_subscription.account_id.in_(account_ids), IS_CURRENT)
    )
    return {row.account_id: to_subscription(row) for row in rows}


def history(connection: Connection, account_id: str) -> list[Subscription]:
    """Every subscription the user had, the current one included, oldest first."""
    rows = connection.execute(
        select(subscriptions)
        .where(_subscription.account_id == account_id)
        .order_by(_subscription.started_at, _subscription.id)
    )
    return [to_subscription(row) for row in rows]


# -- plan changes --------------------------------------------------------------------------------


def extend_current(
    connection: Connection, subscription_id: int, expires_at: datetime
) -> Subscription | None:
    """Move the end of the current subscription ``subscription_id`` to ``expires_at`` and make it
    active again (an extension also undoes a cancel). The subscription as stored now, or None when
    it is no longer current."""
    row = connection.execute(
        update(subscriptions)
        .where(_subscription.id == subscription_id, IS_CURRENT)
        .values(
            expires_at=expires_at,
            status=SubscriptionStatus.ACTIVE.value,
            cancelled_at=None,
        )
        .returning(*subscriptions.c)
    ).one_or_none()
    return None if row is None else to_subscription(row)


def replace_current(
    connection: Connection,
    subscription_id: int,
    *,
    now: datetime,
    account_id: str,
    plan_code: str,
    status: SubscriptionStatus,
    expires_at: datetime | None,
) -> Subscription | None:
    """End the current subscription ``subscription_id`` at ``now`` (replaced) and start the user's
    next one from ``now``. The new subscription, or None (nothing written) when the old one is no
    longer current."""
    ended = connection.execute(
        update(subscriptions)
        .where(_subscription.id == subscription_id, IS_CURRENT)
        .values(ended_at=now, end_reason=EndReason.REPLACED.value)
    )
    if ended.rowcount != 1:
        return None
    row = connection.execute(
        subscriptions.insert()
        .values(
            account_id=account_id,
            plan_code=plan_code,
            status=status.value,
            started_at=now,
            expires_at=expires_at,
            period_anchor=now,
        )
        .returning(*subscriptions.c)
    ).one()
    return to_subscription(row)


def set_status(
    connection: Connection,
    subscription_id: int,
    status: SubscriptionStatus,
    *,
    cancelled_at: datetime | None,
) -> bool:
    """Set the status and ``cancelled_at`` of ``subscription_id`` if it is still current; False
    (nothing written) when it is not. Nothing else changes, so a concurrent extension of the same
    row composes with it."""
    result = connection.execute(
        update(subscriptions)
        .where(_subscription.id == subscription_id, IS_CURRENT)
        .values(status=status.value, cancelled_at=cancelled_at)
    )
    return result.rowcount == 1


# -- lapsing and the free subscription -----------------------------------------------------------


def end_lapsed(connection: Connection, subscription_id: int) -> list[Subscription]:
    """End the current subscription ``subscription_id``, whose paid period the caller saw is
    over, at its expiry; the ended subscription as stored now, or nothing when a concurrent
    request ended it first."""
    return end_at_expiry(connection, _subscription.id == subscription_id)


def end_at_expiry(connection: Connection, which: ColumnElement[bool]) -> list[Subscription]:
    """End the current subscriptions ``which`` selects at their expiry, with the status of
    ``lapsed_status``; the ended ones, as stored now."""
    rows = connection.execute(
        update(subscriptions)
        .where(and_(which, IS_CURRENT))
        .values(
            ended_at=_subscription.expires_at,
            end_reason=EndReason.EXPIRED.value,
            status=lapsed_status(),
        )
        .returning(*subscriptions.c)
    )
    return [to_subscription(row) for row in rows]


def free_values(account_id: str, starts_at: datetime | None, plan_code: str) -> dict[str, Any]:
    """The columns of a free subscription from ``starts_at`` (a first access, or the expiry of the
    paid one it follows)."""
    return {
        "account_id": account_id,
        "plan_code": plan_code,
        "status": SubscriptionStatus.ACTIVE.value,
        "started_at": starts_at,
        "expires_at": None,
        "period_anchor": starts_at,
    }


def insert_default(
    connection: Connection, account_id: str, starts_at: datetime | None, plan_code: str
) -> Subscription | None:
    """Insert a free subscription unless the user already has a current one (the unique index
    decides between concurrent first requests); the inserted subscription, or None."""
    row = insert_ignoring_conflict(
        connection,
        subscriptions,
        free_values(account_id, starts_at, plan_code),
        ["account_id"],
        conflict_where=IS_CURRENT,
    )
    return None if row is None else to_subscription(row)


def insert_defaults(
    connection: Connection, ended: Sequence[Subscription], plan_code: str
) -> dict[str, Subscription]:
    """Free subscriptions for the users of ``ended``, from their expiry, in one multi-row insert;
    users who meanwhile got a current subscription keep it. Returns user id to the current
    subscription."""
    rows = [free_values(lapsed.account_id, lapsed.expires_at, plan_code) for lapsed in ended]
    statement = (
        dialect_insert(connection, subscriptions)
        .on_conflict_do_nothing(index_elements=["account_id"], index_where=IS_CURRENT)
        .returning(*subscriptions.c)
    )
    inserted = connection.execute(statement, rows).all()
    current = {row.account_id: to_subscription(row) for row in inserted}
    add_others_current(connection, ended, current)
    return current


def add_others_current(
    connection: Connection, ended: Sequence[Subscription], current: dict[str, Subscription]
) -> None:
    """Add to ``current`` the subscriptions that users of ``ended`` got meanwhile instead of a
    free follower."""
    missing = [lapsed.account_id for lapsed in ended if lapsed.account_id not in current]
    if missing:
        current.update(current_of_users(connection, missing))
