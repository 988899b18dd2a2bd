"""The statements on ``billing_recurring``: the standing arrangements that renew a user's plan
(Stripe subscriptions, saved YooKassa payment methods), and the subscriptions due for renewal.

A provider's events about an arrangement can arrive late or out of order: a change is applied only
when the event is not older than the newest one applied (``last_event_at``), and an ``ended``
arrangement never changes again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Row, and_, or_, select, update

from ..domain.subscriptions import SubscriptionStatus
from .dialect import insert_ignoring_conflict
from .models import recurring, subscriptions
from .subscriptions import IS_CURRENT

ACTIVE = "active"
"""Renews: Stripe charges the subscription, or maintenance charges the saved method."""
CANCELLING = "cancelling"
"""Ends with the current period (a Stripe subscription set to cancel at the period's end)."""
FAILED = "failed"
"""A renewal was declined: the method is not charged again (the user pays anew)."""
ENDED = "ended"
"""Over: renews no more."""

_R = recurring.c
_S = subscriptions.c


def insert_once(connection: Connection, values: dict[str, Any]) -> Row[Any]:
    """The arrangement of ``values`` (every column), inserted unless the provider's reference is
    already known; the row as stored."""
    row = insert_ignoring_conflict(connection, recurring, values, ["provider", "reference"])
    if row is not None:
        return row
    found = find(connection, values["provider"], values["reference"])
    assert found is not None
    return found


def find(connection: Connection, provider: str, reference: str) -> Row[Any] | None:
    query = select(recurring).where(_R.provider == provider, _R.reference == reference)
    return connection.execute(query).first()


def get(connection: Connection, recurring_id: str) -> Row[Any] | None:
    return connection.execute(select(recurring).where(_R.id == recurring_id)).first()


def of_user(connection: Connection, user_id: str, statuses: Sequence[str]) -> list[Row[Any]]:
    """The user's arrangements in ``statuses``, oldest first."""
    query = (
        select(recurring)
        .where(_R.user_id == user_id, _R.status.in_(statuses))
        .order_by(_R.created_at, _R.id)
    )
    return list(connection.execute(query).all())


def set_status(
    connection: Connection,
    recurring_id: str,
    status: str,
    now: datetime,
    *,
    event_at: datetime | None = None,
    only_from: Sequence[str] | None = None,
) -> bool:
    """Move an arrangement to ``status`` unless it ended, the change is older (``event_at``) than
    the newest one applied, or (``only_from``) it is in another status; whether it moved."""
    conditions = [_R.id == recurring_id, _R.status != ENDED]
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if only_from is not None:
        conditions.append(_R.status.in_(only_from))
    if event_at is not None:
        conditions.append(or_(_R.last_event_at.is_(None), _R.last_event_at <= event_at))
        values["last_event_at"] = event_at
    result = connection.execute(update(recurring).where(*conditions).values(**values))
    return result.rowcount == 1


def end_others(
    connection: Connection, user_id: str, provider: str, keep_id: str, now: datetime
) -> list[Row[Any]]:
    """End the user's other renewing arrangements with ``provider``: the newest one is the one
    that renews. The ones ended, as they were."""
    rows = connection.execute(
        update(recurring)
        .where(
            _R.user_id == user_id,
            _R.provider == provider,
            _R.id != keep_id,
            _R.status.in_([ACTIVE, CANCELLING]),
        )
        .values(status=ENDED, updated_at=now)
        .returning(*recurring.c)
    )
    return cast(list[Row[Any]], list(rows.all()))


def renewal_candidates(
    connection: Connection,
    *,
    providers: Sequence[str],
    now: datetime,
    until: datetime,
    after_subscription_id: int,
    batch_size: int,
) -> list[Row[Any]]:
    """Current, active (not cancelled, not trial) subscriptions whose paid period ends after
    ``now`` and by ``until``, with an active arrangement of one of ``providers`` for the same
    plan: up to ``batch_size``, by subscription id after ``after_subscription_id``."""
    query = (
        select(
            _S.id.label("subscription_id"),
            _S.user_id,
            _S.expires_at,
            _R.id.label("recurring_id"),
            _R.provider,
            _R.reference,
            _R.plan_code,
            _R.months,
            _R.amount,
            _R.currency,
        )
        .select_from(
            subscriptions.join(
                recurring,
                and_(
                    _R.user_id == _S.user_id,
                    _R.plan_code == _S.plan_code,
                    _R.status == ACTIVE,
                    _R.provider.in_(providers),
                ),
            )
        )
        .where(
            IS_CURRENT,
            _S.status == SubscriptionStatus.ACTIVE.value,
            _S.expires_at > now,
            _S.expires_at <= until,
            _S.id > after_subscription_id,
        )
        .order_by(_S.id, _R.created_at.desc())
        .limit(batch_size)
    )
    return cast(list[Row[Any]], list(connection.execute(query).all()))
