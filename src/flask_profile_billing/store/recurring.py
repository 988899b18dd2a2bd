"""The statements on ``billing_recurring``: the standing arrangements that renew a user's plan
(Stripe subscriptions, saved YooKassa payment methods), and the subscriptions due for renewal.

Arrangements are read as ``domain.payments.Arrangement`` records. A provider's events about an
arrangement can arrive late or out of order: a change is applied only when the event is not older
than the newest one applied (``last_event_at``), and an ``ended`` arrangement never changes again
(``domain.payments.ARRANGEMENT_MOVES``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, or_, select, update

from ..domain.payments import Arrangement, ArrangementMove, ArrangementStatus
from ..domain.subscriptions import SubscriptionStatus
from .dialect import insert_ignoring_conflict
from .models import recurring, subscriptions
from .records import from_row, to_columns
from .subscriptions import IS_CURRENT

_R = recurring.c
_S = subscriptions.c


def _arrangement(row: Row[Any]) -> Arrangement:
    return from_row(Arrangement, row, ArrangementStatus)


def insert_once(connection: Connection, arrangement: Arrangement) -> Arrangement:
    """Record ``arrangement`` unless the provider's reference is already known; the arrangement
    as stored."""
    values = to_columns(arrangement)
    row = insert_ignoring_conflict(connection, recurring, values, ["provider", "reference"])
    if row is not None:
        return _arrangement(row)
    found = find(connection, arrangement.provider, arrangement.reference)
    assert found is not None
    return found


def find(connection: Connection, provider: str, reference: str) -> Arrangement | None:
    query = select(recurring).where(_R.provider == provider, _R.reference == reference)
    row = connection.execute(query).first()
    return None if row is None else _arrangement(row)


def get(connection: Connection, recurring_id: str) -> Arrangement | None:
    row = connection.execute(select(recurring).where(_R.id == recurring_id)).first()
    return None if row is None else _arrangement(row)


def of_account(
    connection: Connection, account_id: str, statuses: Collection[ArrangementStatus]
) -> list[Arrangement]:
    """The user's arrangements in ``statuses``, oldest first."""
    query = (
        select(recurring)
        .where(_R.account_id == account_id, _R.status.in_([status.value for status in statuses]))
        .order_by(_R.created_at, _R.id)
    )
    return [_arrangement(row) for row in connection.execute(query)]


def move(
    connection: Connection,
    recurring_id: str,
    sources: Collection[ArrangementStatus],
    target: ArrangementStatus,
    now: datetime,
    *,
    event_at: datetime | None = None,
) -> bool:
    """Move an arrangement to ``target`` if it is in one of ``sources`` and the change is not
    older (``event_at``) than the newest one applied; whether it moved. The row count decides,
    so of racing writers exactly one moves it."""
    conditions = [_R.id == recurring_id, _R.status.in_([source.value for source in sources])]
    values: dict[str, Any] = {"status": target.value, "updated_at": now}
    if event_at is not None:
        conditions.append(or_(_R.last_event_at.is_(None), _R.last_event_at <= event_at))
        values["last_event_at"] = event_at
    result = connection.execute(update(recurring).where(*conditions).values(**values))
    return result.rowcount == 1


def apply_move(connection: Connection, decided: ArrangementMove, now: datetime) -> bool:
    """Make a decided move; False when the arrangement left the status it was decided on, or a
    newer event was applied meanwhile."""
    return move(
        connection,
        decided.arrangement.id,
        [decided.arrangement.status],
        decided.target,
        now,
        event_at=decided.event_at,
    )


def end_others(
    connection: Connection, account_id: str, provider: str, keep_id: str, now: datetime
) -> list[Arrangement]:
    """End the user's other renewing arrangements with ``provider``: the newest one is the one
    that renews. The ones ended, as they were."""
    rows = connection.execute(
        update(recurring)
        .where(
            _R.account_id == account_id,
            _R.provider == provider,
            _R.id != keep_id,
            _R.status.in_([ArrangementStatus.ACTIVE.value, ArrangementStatus.CANCELLING.value]),
        )
        .values(status=ArrangementStatus.ENDED.value, updated_at=now)
        .returning(*recurring.c)
    )
    return [_arrangement(row) for row in rows]


@dataclass(frozen=True, slots=True)
class RenewalCandidate:
    """A subscription due for renewal, with the arrangement that renews it."""

    subscription_id: int
    expires_at: datetime
    arrangement: Arrangement


def renewal_candidates(
    connection: Connection,
    *,
    providers: Sequence[str],
    now: datetime,
    until: datetime,
    after_subscription_id: int,
    batch_size: int,
) -> list[RenewalCandidate]:
    """Current, active (not cancelled, not trial) subscriptions whose paid period ends after
    ``now`` and by ``until``, with an active arrangement of one of ``providers`` for the same
    plan: up to ``batch_size``, by subscription id after ``after_subscription_id``."""
    query = (
        select(_S.id.label("subscription_id"), _S.expires_at.label("period_end"), *recurring.c)
        .select_from(
            subscriptions.join(
                recurring,
                and_(
                    _R.account_id == _S.account_id,
                    _R.plan_code == _S.plan_code,
                    _R.status == ArrangementStatus.ACTIVE.value,
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
    return [
        RenewalCandidate(row.subscription_id, row.period_end, _arrangement(row))
        for row in connection.execute(query)
    ]
