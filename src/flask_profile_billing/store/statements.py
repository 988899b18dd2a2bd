"""The atomic statements behind quotas: each decides in the database, never in Python.

Only SQLite (3.35+) and PostgreSQL are supported: both have ``INSERT ... ON CONFLICT`` with a
``WHERE`` on the update and ``RETURNING``, which is what makes a consumption one statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Row, Table, and_, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..domain.periods import Period
from ..errors import BillingConfigError
from .models import usage_counters, usage_daily, usage_events


def dialect_insert(connection: Connection, table: Table) -> Any:
    """``INSERT`` with the ``ON CONFLICT`` clauses of the connection's dialect."""
    name = connection.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise BillingConfigError(f"unsupported database {name!r}: use SQLite or PostgreSQL")


def insert_ignoring_conflict(
    connection: Connection,
    table: Table,
    values: dict[str, Any],
    conflict_columns: Sequence[str],
    conflict_where: Any = None,
) -> Row[Any] | None:
    """Insert a row unless one with the same key exists; the inserted row, or None.

    The answer comes from ``RETURNING``: a row count is not reliable here (PostgreSQL drivers
    report -1 for an insert that returns its generated key).
    """
    statement = (
        dialect_insert(connection, table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=list(conflict_columns), index_where=conflict_where)
        .returning(*table.c)
    )
    return connection.execute(statement).first()


def consume(
    connection: Connection,
    *,
    user_id: str,
    metric: str,
    period: Period,
    amount: int,
    limit: int | None,
) -> int | None:
    """Add ``amount`` to the period's counter if the result stays within ``limit``.

    One statement: it creates the counter when missing and increments it only under the limit, so
    concurrent consumers can never together exceed it. Returns the new total, or None when refused.
    The caller refuses ``amount > limit`` before calling, because the insert branch cannot check it.
    """
    counter = usage_counters.c
    statement = dialect_insert(connection, usage_counters).values(
        user_id=user_id,
        metric=metric,
        period_start=period.start,
        period_end=period.end,
        used=amount,
    )
    statement = statement.on_conflict_do_update(
        index_elements=[counter.user_id, counter.metric, counter.period_start],
        set_={"used": counter.used + amount},
        where=None if limit is None else (counter.used + amount <= limit),
    ).returning(counter.used)
    used = connection.execute(statement).scalar_one_or_none()
    return None if used is None else int(used)


def give_back(
    connection: Connection, *, user_id: str, metric: str, period_start: datetime, amount: int
) -> bool:
    """Return ``amount`` to a period's counter (a refund); never takes it below zero."""
    counter = usage_counters.c
    statement = (
        update(usage_counters)
        .where(
            and_(
                counter.user_id == user_id,
                counter.metric == metric,
                counter.period_start == period_start,
                counter.used >= amount,
            )
        )
        .values(used=counter.used - amount)
    )
    return connection.execute(statement).rowcount == 1


def used_in_period(
    connection: Connection, user_id: str, metric: str, period_start: datetime
) -> int:
    counter = usage_counters.c
    used = connection.execute(
        select(counter.used).where(
            counter.user_id == user_id,
            counter.metric == metric,
            counter.period_start == period_start,
        )
    ).scalar_one_or_none()
    return int(used or 0)


def insert_usage_event(connection: Connection, values: dict[str, Any]) -> int | None:
    """Insert a usage event; None when its idempotency key was already used by this user."""
    statement = dialect_insert(connection, usage_events).values(**values)
    if values.get("idempotency_key") is not None:
        statement = statement.on_conflict_do_nothing(
            index_elements=[usage_events.c.user_id, usage_events.c.idempotency_key]
        )
    event_id = connection.execute(statement.returning(usage_events.c.id)).scalar_one_or_none()
    return None if event_id is None else int(event_id)


def delete_usage_event(connection: Connection, event_id: int) -> None:
    connection.execute(delete(usage_events).where(usage_events.c.id == event_id))


def add_to_daily(
    connection: Connection, *, user_id: str, metric: str, day: date, amount: int
) -> None:
    """Add a charge to the day's total (the rollup the statistics read)."""
    daily = usage_daily.c
    statement = (
        dialect_insert(connection, usage_daily)
        .values(user_id=user_id, metric=metric, day=day, total=amount)
        .on_conflict_do_update(
            index_elements=[daily.user_id, daily.metric, daily.day],
            set_={"total": daily.total + amount},
        )
    )
    connection.execute(statement)


def take_from_daily(
    connection: Connection, *, user_id: str, metric: str, day: date, amount: int
) -> None:
    """Take a refunded charge off the day's total."""
    daily = usage_daily.c
    connection.execute(
        update(usage_daily)
        .where(
            daily.user_id == user_id,
            daily.metric == metric,
            daily.day == day,
            daily.total >= amount,
        )
        .values(total=daily.total - amount)
    )
