"""The usage tables: the period counters, the usage log of charges and the daily totals.

A charge decides in the database, never in Python: ``consume`` adds to the period's counter in one
conditional upsert whose returned row says whether it fitted under the limit.

The statements of the hot path are built once per dialect, with bound parameters, and reused:
SQLAlchemy memoises a construct's cache key, so a reused construct is neither rebuilt nor keyed
again on every request (building and keying them cost more CPU than SQLite takes to run them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Row, and_, delete, func, select, update

from ..domain.accounts import TEAM_PREFIX
from ..domain.periods import Period
from .accounts import give_back_member
from .dialect import insert_for, param
from .models import usage_counters, usage_daily, usage_events


def consume(
    connection: Connection,
    *,
    account_id: str,
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
        "p_account_id": account_id,
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
    amount = param(counter.used, "amount")
    statement = insert_for(dialect, usage_counters).values(
        account_id=param(counter.account_id),
        metric=param(counter.metric),
        period_start=param(counter.period_start),
        period_end=param(counter.period_end),
        used=amount,
    )
    limit = param(counter.used, "limit")
    return statement.on_conflict_do_update(
        index_elements=[counter.account_id, counter.metric, counter.period_start],
        set_={"used": counter.used + amount},
        where=(counter.used + amount <= limit) if limited else None,
    ).returning(counter.used)


def give_back(
    connection: Connection, *, account_id: str, metric: str, period_start: datetime, amount: int
) -> bool:
    """Return ``amount`` to a period's counter (a refund); never takes it below zero."""
    counter = usage_counters.c
    statement = (
        update(usage_counters)
        .where(
            and_(
                counter.account_id == account_id,
                counter.metric == metric,
                counter.period_start == period_start,
                counter.used >= amount,
            )
        )
        .values(used=counter.used - amount)
    )
    return connection.execute(statement).rowcount == 1


def used_in_period(
    connection: Connection, account_id: str, metric: str, period_start: datetime
) -> int:
    used = connection.execute(
        _USED_IN_PERIOD,
        {"p_account_id": account_id, "p_metric": metric, "p_period_start": period_start},
    ).scalar_one_or_none()
    return int(used or 0)


_USED_IN_PERIOD = select(usage_counters.c.used).where(
    usage_counters.c.account_id == param(usage_counters.c.account_id),
    usage_counters.c.metric == param(usage_counters.c.metric),
    usage_counters.c.period_start == param(usage_counters.c.period_start),
)


def used_by_metric(
    connection: Connection, account_id: str, metrics: list[str], period_start: datetime
) -> dict[str, int]:
    """What ``account_id`` used of each of ``metrics`` in the period starting at ``period_start``;
    a metric with no counter yet is left out (nothing used)."""
    counter = usage_counters.c
    rows = connection.execute(
        select(counter.metric, counter.used).where(
            counter.account_id == account_id,
            counter.metric.in_(metrics),
            counter.period_start == period_start,
        )
    )
    return {row.metric: int(row.used) for row in rows}


def insert_usage_event(connection: Connection, values: dict[str, Any]) -> int | None:
    """Insert a usage event; None when its idempotency key was already used by this account.

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
    statement = insert_for(dialect, usage_events).values(
        {column.name: param(column) for column in columns}
    )
    if keyed:
        statement = statement.on_conflict_do_nothing(
            index_elements=[usage_events.c.account_id, usage_events.c.idempotency_key]
        )
    return statement.returning(usage_events.c.id)


def refund_event(
    connection: Connection,
    *,
    account_id: str,
    event_id: int | None = None,
    idempotency_key: str | None = None,
) -> bool:
    """Undo one charge: delete its usage event and take its amount off the period's counter (and,
    for a team, the acting member's) and the day's total. The event is found by id or by the
    account's idempotency key.

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
        .where(events.account_id == account_id, found)
        .returning(
            events.metric,
            events.amount,
            events.period_start,
            events.created_at,
            events.actor_user_id,
        )
    ).one_or_none()
    if row is None:
        return False
    if account_id.startswith(TEAM_PREFIX):
        # The member's counter before the pool's: the order every team charge locks them in.
        give_back_member(
            connection, account_id, row.actor_user_id, row.metric, row.period_start, row.amount
        )
    give_back(
        connection,
        account_id=account_id,
        metric=row.metric,
        period_start=row.period_start,
        amount=row.amount,
    )
    take_from_daily(
        connection,
        account_id=account_id,
        metric=row.metric,
        day=row.created_at.astimezone(UTC).date(),
        amount=row.amount,
    )
    return True


def add_to_daily(
    connection: Connection, *, account_id: str, metric: str, day: date, amount: int
) -> None:
    """Add a charge to the day's total (the rollup the statistics read)."""
    connection.execute(
        _add_to_daily_statement(connection.dialect.name),
        {"p_account_id": account_id, "p_metric": metric, "p_day": day, "p_total": amount},
    )


@cache
def _add_to_daily_statement(dialect: str) -> Any:
    daily = usage_daily.c
    total = param(daily.total)
    return (
        insert_for(dialect, usage_daily)
        .values(
            account_id=param(daily.account_id),
            metric=param(daily.metric),
            day=param(daily.day),
            total=total,
        )
        .on_conflict_do_update(
            index_elements=[daily.account_id, daily.metric, daily.day],
            set_={"total": daily.total + total},
        )
    )


def take_from_daily(
    connection: Connection, *, account_id: str, metric: str, day: date, amount: int
) -> None:
    """Take a refunded charge off the day's total."""
    daily = usage_daily.c
    connection.execute(
        update(usage_daily)
        .where(
            daily.account_id == account_id,
            daily.metric == metric,
            daily.day == day,
            daily.total >= amount,
        )
        .values(total=daily.total - amount)
    )


def daily_totals(connection: Connection, account_id: str, since: date) -> list[Row[Any]]:
    """The user's non-zero day totals (``day``, ``metric``, ``total``) from ``since`` on, by day
    and metric."""
    daily = usage_daily.c
    query = (
        select(daily.day, daily.metric, daily.total)
        .where(daily.account_id == account_id, daily.day >= since, daily.total > 0)
        .order_by(daily.day, daily.metric)
    )
    return list(connection.execute(query))


def latest_charges(
    connection: Connection, account_id: str, since: datetime, limit: int
) -> list[Row[Any]]:
    """The user's ``limit`` latest usage events since ``since`` (``id``, ``metric``, ``amount``,
    ``resources``, ``created_at``), newest first.

    Walks the (account_id, created_at) index backwards and stops after ``limit`` rows."""
    events = usage_events.c
    query = (
        select(events.id, events.metric, events.amount, events.resources, events.created_at)
        .where(events.account_id == account_id, events.created_at >= since)
        .order_by(events.created_at.desc(), events.id.desc())
        .limit(limit)
    )
    return list(connection.execute(query))


# -- verification -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CounterDrift:
    """A period's usage counter that is not the sum of the amounts of its usage events."""

    account_id: str
    metric: str
    period_start: datetime
    counter: int
    events: int


def counter_drifts(
    connection: Connection, since: datetime | None = None, limit: int = 100
) -> list[CounterDrift]:
    """Every (account, metric, period) whose counter differs from the sum of its events' amounts,
    in either direction: a counter without events counts their sum as 0, events without a counter
    count it as 0. Two grouped joins over the whole tables, never a query per row.

    ``since``: only the periods that start at or after it (older ones may have lost events to the
    retention, which deletes events before the counters of their period)."""
    events = usage_events.c
    event_sums_query = select(
        events.account_id,
        events.metric,
        events.period_start,
        func.sum(events.amount).label("events"),
    ).group_by(events.account_id, events.metric, events.period_start)
    if since is not None:
        event_sums_query = event_sums_query.where(events.period_start >= since)
    event_sums = event_sums_query.subquery()
    counter = usage_counters.c
    joined = and_(
        counter.account_id == event_sums.c.account_id,
        counter.metric == event_sums.c.metric,
        counter.period_start == event_sums.c.period_start,
    )
    summed = func.coalesce(event_sums.c.events, 0)
    counters = (
        select(
            counter.account_id,
            counter.metric,
            counter.period_start,
            counter.used.label("counter"),
            summed.label("events"),
        )
        .select_from(usage_counters.outerjoin(event_sums, joined))
        .where(counter.used != summed)
    )
    if since is not None:
        counters = counters.where(counter.period_start >= since)
    orphans = (
        select(
            event_sums.c.account_id,
            event_sums.c.metric,
            event_sums.c.period_start,
            func.coalesce(counter.used, 0).label("counter"),
            event_sums.c.events,
        )
        .select_from(event_sums.outerjoin(usage_counters, joined))
        .where(counter.account_id.is_(None), event_sums.c.events != 0)
    )
    statement = counters.union_all(orphans).limit(limit)
    return [
        CounterDrift(row[0], row[1], row[2], int(row[3]), int(row[4]))
        for row in connection.execute(statement)
    ]
