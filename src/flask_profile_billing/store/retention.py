"""Deleting what is older than the retention: usage events, counters of past periods, activity
entries and notifications, in batches by primary key.

Statistics do not read these rows: they read ``billing_usage_daily``, which is kept. Each batch
walks the primary key from its start: events and activity entries are appended in time order, so
the old rows are the first ones and a batch stops after ``batch_size`` of them without an index on
their date (which every charge would have to maintain). Counters are found by the index on
``period_end``, notifications by the one on ``created_at``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, Connection, Table, delete, func, select, tuple_

from .models import activity, notifications, usage_counters, usage_events


@dataclass(frozen=True, slots=True)
class Prunable:
    """A table whose rows older than the retention go, and the column that dates them."""

    name: str
    table: Table
    dated_by: Column[datetime]


PRUNABLE = (
    Prunable("usage_events", usage_events, usage_events.c.created_at),
    # A counter is old once its period ended: the current period's counter is never pruned.
    Prunable("usage_counters", usage_counters, usage_counters.c.period_end),
    Prunable("activity", activity, activity.c.occurred_at),
    Prunable("notifications", notifications, notifications.c.created_at),
)


def prune_batch(
    connection: Connection, prunable: Prunable, before: datetime, batch_size: int
) -> int:
    """Delete up to ``batch_size`` rows of ``prunable`` dated before ``before``; how many."""
    key = tuple_(*prunable.table.primary_key.columns)
    batch = (
        select(*prunable.table.primary_key.columns)
        .where(prunable.dated_by < before)
        .order_by(*prunable.table.primary_key.columns)
        .limit(batch_size)
    )
    result = connection.execute(delete(prunable.table).where(key.in_(batch)))
    return int(result.rowcount)


def count_older(connection: Connection, prunable: Prunable, before: datetime) -> int:
    query = select(func.count()).select_from(prunable.table).where(prunable.dated_by < before)
    return int(connection.execute(query).scalar_one())
