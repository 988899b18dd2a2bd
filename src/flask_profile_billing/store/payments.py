"""The statements on ``billing_payments``: starting a payment, finding it, moving its status, and
its history in ``billing_payment_events``.

Payments are read as ``domain.payments.Payment`` records. Every status move is conditional on the
status it leaves (``move``), so of racing writers exactly one moves a payment; the move that wins
writes its history row in the same transaction, so the history holds each status a payment took
exactly once.

A user's pending payments are capped, so starting one is count-then-insert. Two concurrent starts
that both count before either inserts would both pass the cap. So the writer first takes a lock
for that user's payments, in the same write transaction as the count and the insert.

Why a lock of its own rather than ``SELECT ... FOR UPDATE`` on the user's pending rows: a user
with no pending payment has no rows to lock, and concurrent first payments would all pass. Why
not one ``INSERT ... SELECT ... WHERE (SELECT count(*) ...) < :cap`` alone: under READ COMMITTED
each concurrent statement counts without seeing the others' uncommitted rows, and all of them
insert.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, select, text, update

from ..domain.payments import Payment, PaymentMove, PaymentNote, PaymentStatus
from .dialect import insert_ignoring_conflict
from .models import payment_events, payments
from .records import from_row, to_columns

# Advisory lock keys are two int4s: a constant naming the lock's kind, and the user id's hash.
# Apart from the gauge locks' class (store.locks), so the two kinds never wait for each other.
_PAYMENTS_LOCK_CLASS = 0x4250  # "BP"
_LOCK = text("SELECT pg_advisory_xact_lock(:cls, :key)")


def lock_payments_of(connection: Connection, account_id: str) -> None:
    """Make the rest of the current write transaction the only one on ``account_id``'s payments.

    PostgreSQL: a transaction-scoped advisory lock, released at commit or rollback (also when the
    process dies), and kept on one server connection by a transaction-mode pooler. Other users'
    payments do not wait (a hash collision only makes two users take turns). SQLite: nothing to
    take, since ``write_transaction`` began with ``BEGIN IMMEDIATE``, which holds the database's
    only write lock until the end of the transaction.
    """
    if connection.dialect.name != "postgresql":
        return
    key = zlib.crc32(account_id.encode()) - 2**31  # into int4's range
    connection.execute(_LOCK, {"cls": _PAYMENTS_LOCK_CLASS, "key": key})


def count_payments(
    connection: Connection, account_id: str, status: str, created_since: datetime
) -> int:
    """How many of ``account_id``'s payments created after ``created_since`` are in ``status``
    (served by the account_id index)."""
    query = (
        select(func.count())
        .select_from(payments)
        .where(
            payments.c.account_id == account_id,
            payments.c.status == status,
            payments.c.created_at > created_since,
        )
    )
    return int(connection.execute(query).scalar_one())


def _payment(row: Row[Any] | None) -> Payment | None:
    return None if row is None else from_row(Payment, row, PaymentStatus)


def insert_payment(connection: Connection, payment: Payment) -> None:
    """Insert a payment and the first entry of its history."""
    connection.execute(payments.insert().values(**to_columns(payment)))
    record_event(connection, payment.id, None, payment.status, payment.created_at)


def record_event(
    connection: Connection,
    payment_id: str,
    from_status: str | None,
    to_status: str,
    occurred_at: datetime,
    *,
    provider_event_id: str | None = None,
    reason: str | None = None,
) -> None:
    """Add a step to the payment's history (``from_status == to_status``: nothing changed)."""
    connection.execute(
        payment_events.insert().values(
            payment_id=payment_id,
            from_status=from_status,
            to_status=to_status,
            provider_event_id=provider_event_id,
            reason=None if reason is None else reason[:255],
            occurred_at=occurred_at,
        )
    )


def payment_history(connection: Connection, payment_id: str) -> list[Row[Any]]:
    """The payment's history, oldest first."""
    query = (
        select(payment_events)
        .where(payment_events.c.payment_id == payment_id)
        .order_by(payment_events.c.id)
    )
    return list(connection.execute(query).all())


def set_provider_payment_id(
    connection: Connection, payment_id: str, provider_payment_id: str
) -> None:
    """Keep the provider's id of payment ``payment_id``, once the provider started it."""
    connection.execute(
        update(payments)
        .where(payments.c.id == payment_id)
        .values(provider_payment_id=provider_payment_id)
    )


def find_payment(
    connection: Connection,
    provider: str,
    *,
    payment_id: str | None,
    provider_payment_id: str | None,
    refund_reference: str | None = None,
) -> Payment | None:
    """The payment of ``provider`` with our id ``payment_id`` when given, else with the
    provider's id ``provider_payment_id``, else with its ``refund_reference``; None when there is
    none."""
    query = select(payments).where(payments.c.provider == provider)
    if payment_id is not None:
        query = query.where(payments.c.id == payment_id)
    elif provider_payment_id is not None:
        query = query.where(payments.c.provider_payment_id == provider_payment_id)
    elif refund_reference is not None:
        query = query.where(payments.c.refund_reference == refund_reference).limit(1)
    else:
        return None
    return _payment(connection.execute(query).first())


def get_payment(connection: Connection, payment_id: str) -> Payment | None:
    """The payment with our id ``payment_id`` as it stands."""
    return _payment(connection.execute(select(payments).where(payments.c.id == payment_id)).first())


def insert_payment_once(
    connection: Connection, payment: Payment, unique: Sequence[str] = ("id",)
) -> bool:
    """Insert a payment and the first entry of its history unless a payment with the same
    ``unique`` columns exists; whether this call inserted it. Of concurrent callers exactly one
    does: a renewal is started, or an invoice recorded, once."""
    row = insert_ignoring_conflict(connection, payments, to_columns(payment), list(unique))
    if row is None:
        return False
    record_event(connection, payment.id, None, payment.status, payment.created_at)
    return True


def set_references(
    connection: Connection,
    payment_id: str,
    *,
    refund_reference: str | None = None,
    recurring_id: str | None = None,
) -> None:
    """Keep the provider's refund reference and the recurring arrangement of a payment, once
    known; a value already kept stays."""
    for column, value in (
        (payments.c.refund_reference, refund_reference),
        (payments.c.recurring_id, recurring_id),
    ):
        if value is not None:
            connection.execute(
                update(payments)
                .where(payments.c.id == payment_id, column.is_(None))
                .values({column.name: value})
            )


def latest_payments(connection: Connection, account_id: str, limit: int) -> list[Payment]:
    """The user's ``limit`` latest payments, newest first (served by the account_id index)."""
    query = (
        select(payments)
        .where(payments.c.account_id == account_id)
        .order_by(payments.c.created_at.desc(), payments.c.id.desc())
        .limit(limit)
    )
    return [payment for row in connection.execute(query) if (payment := _payment(row))]


def move(
    connection: Connection,
    payment_id: str,
    source: str,
    target: str,
    at: datetime,
    *,
    settle: bool = False,
    provider_event_id: str | None = None,
    reason: str | None = None,
) -> bool:
    """Move a payment from status ``source`` to ``target`` at ``at`` (its ``settled_at`` too when
    ``settle``), and add the step to its history; False (and no change) when it was not in
    ``source``. The row count decides, so of racing writers exactly one moves it."""
    values: dict[str, Any] = {"status": target}
    if settle:
        values["settled_at"] = at
    result = connection.execute(
        update(payments)
        .where(payments.c.id == payment_id, payments.c.status == source)
        .values(**values)
    )
    if result.rowcount != 1:
        return False
    record_event(
        connection,
        payment_id,
        source,
        target,
        at,
        provider_event_id=provider_event_id,
        reason=reason,
    )
    return True


def apply_move(connection: Connection, decided: PaymentMove, at: datetime) -> bool:
    """Make a decided move (see ``move``); False when the payment left the status it was decided
    on."""
    return move(
        connection,
        decided.payment.id,
        decided.payment.status,
        decided.target,
        at,
        settle=decided.settle,
        provider_event_id=decided.event_id,
        reason=decided.reason,
    )


def apply_note(connection: Connection, note: PaymentNote, at: datetime) -> None:
    """Keep a decided note in the payment's history (its status as decided on, unchanged)."""
    status = note.payment.status
    record_event(
        connection,
        note.payment.id,
        status,
        status,
        at,
        provider_event_id=note.event_id,
        reason=note.reason,
    )
