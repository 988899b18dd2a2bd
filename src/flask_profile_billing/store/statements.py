"""The atomic statements behind quotas: each decides in the database, never in Python.

Only SQLite (3.35+) and PostgreSQL are supported: both have ``INSERT ... ON CONFLICT`` with a
``WHERE`` on the update and ``RETURNING``, which is what makes a consumption one statement.

The statements of the hot path are built once per dialect, with bound parameters, and reused:
SQLAlchemy memoises a construct's cache key, so a reused construct is neither rebuilt nor keyed
again on every request (building and keying them cost more CPU than SQLite takes to run them).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

from sqlalchemy import Column, Connection, Row, Table, and_, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..domain.periods import Period
from ..errors import BillingConfigError
from .models import usage_counters, usage_daily, usage_events


def dialect_insert(connection: Connection, table: Table) -> Any:
    """``INSERT`` with the ``ON CONFLICT`` clauses of the connection's dialect."""
    return _insert_for(connection.dialect.name, table)


def _insert_for(dialect: str, table: Table) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise BillingConfigError(f"unsupported database {dialect!r}: use SQLite or PostgreSQL")


def _param(column: Column[Any], name: str | None = None) -> Any:
    """A bound parameter typed like ``column`` (so its type's conversions apply), named ``p_*``:
    a name of the table's own columns is reserved by ``values()``."""
    return bindparam(f"p_{name or column.name}", type_=column.type)


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
    statement = _consume_statement(connection.dialect.name, limited=limit is not None)
    parameters = {
        "p_user_id": user_id,
        "p_metric": metric,
        "p_period_start": period.start,
        "p_period_end": period.end,
        "p_amount": amount,
    }
    if limit is not None:
        parameters["p_limit"] = limit
    used = connection.execute(statement, parameters).scalar_one_or_none()
    return None if used is None else int(used)


@cache
def _consume_statement(dialect: str, *, limited: bool) -> Any:
    counter = usage_counters.c
    amount = _param(counter.used, "amount")
    statement = _insert_for(dialect, usage_counters).values(
        user_id=_param(counter.user_id),
        metric=_param(counter.metric),
        period_start=_param(counter.period_start),
        period_end=_param(counter.period_end),
        used=amount,
    )
    limit = _param(counter.used, "limit")
    return statement.on_conflict_do_update(
        index_elements=[counter.user_id, counter.metric, counter.period_start],
        set_={"used": counter.used + amount},
        where=(counter.used + amount <= limit) if limited else None,
    ).returning(counter.used)


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
    used = connection.execute(
        _USED_IN_PERIOD,
        {"p_user_id": user_id, "p_metric": metric, "p_period_start": period_start},
    ).scalar_one_or_none()
    return int(used or 0)


_USED_IN_PERIOD = select(usage_counters.c.used).where(
    usage_counters.c.user_id == _param(usage_counters.c.user_id),
    usage_counters.c.metric == _param(usage_counters.c.metric),
    usage_counters.c.period_start == _param(usage_counters.c.period_start),
)


def insert_usage_event(connection: Connection, values: dict[str, Any]) -> int | None:
    """Insert a usage event; None when its idempotency key was already used by this user.

    ``values`` has every column but ``id``.
    """
    statement = _insert_event_statement(
        connection.dialect.name, keyed=values.get("idempotency_key") is not None
    )
    parameters = {f"p_{name}": value for name, value in values.items()}
    event_id = connection.execute(statement, parameters).scalar_one_or_none()
    return None if event_id is None else int(event_id)


@cache
def _insert_event_statement(dialect: str, *, keyed: bool) -> Any:
    columns = [column for column in usage_events.c if column.name != "id"]
    statement = _insert_for(dialect, usage_events).values(
        {column.name: _param(column) for column in columns}
    )
    if keyed:
        statement = statement.on_conflict_do_nothing(
            index_elements=[usage_events.c.user_id, usage_events.c.idempotency_key]
        )
    return statement.returning(usage_events.c.id)


def refund_event(
    connection: Connection,
    *,
    user_id: str,
    event_id: int | None = None,
    idempotency_key: str | None = None,
) -> bool:
    """Undo one charge: delete its usage event and take its amount off the period's counter and
    the day's total. The event is found by id or by the user's idempotency key.

    Idempotent: a refund that already happened finds no event and changes nothing, so a refund
    whose outcome is unknown (the connection dropped at commit) can be retried safely. False when
    there was nothing to refund.
    """
    events = usage_events.c
    found = (
        events.id == event_id if event_id is not None else events.idempotency_key == idempotency_key
    )
    row = connection.execute(
        delete(usage_events)
        .where(events.user_id == user_id, found)
        .returning(events.metric, events.amount, events.period_start, events.created_at)
    ).one_or_none()
    if row is None:
        return False
    give_back(
        connection,
        user_id=user_id,
        metric=row.metric,
        period_start=row.period_start,
        amount=row.amount,
    )
    take_from_daily(
        connection,
        user_id=user_id,
        metric=row.metric,
        day=row.created_at.astimezone(UTC).date(),
        amount=row.amount,
    )
    return True


def add_to_daily(
    connection: Connection, *, user_id: str, metric: str, day: date, amount: int
) -> None:
    """Add a charge to the day's total (the rollup the statistics read)."""
    connection.execute(
        _add_to_daily_statement(connection.dialect.name),
        {"p_user_id": user_id, "p_metric": metric, "p_day": day, "p_total": amount},
    )


@cache
def _add_to_daily_statement(dialect: str) -> Any:
    daily = usage_daily.c
    total = _param(daily.total)
    return (
        _insert_for(dialect, usage_daily)
        .values(
            user_id=_param(daily.user_id),
            metric=_param(daily.metric),
            day=_param(daily.day),
            total=total,
        )
        .on_conflict_do_update(
            index_elements=[daily.user_id, daily.metric, daily.day],
            set_={"total": daily.total + total},
        )
    )


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
