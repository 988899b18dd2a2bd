"""Usage statistics from the usage log: totals and a daily breakdown per action."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Date, cast, func, select

from ..store.models import usage_events
from ..store.transactions import read_connection
from .runtime import Runtime


@dataclass(frozen=True, slots=True)
class UsageStats:
    days: int
    totals: dict[str, int]
    daily: dict[date, dict[str, int]]
    """Days with no use are left out, as in the seed's example."""


class UsageStatsService:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def usage(self, user_id: str, days: int) -> UsageStats:
        """What the user was charged over the last ``days`` days (UTC days), per metric."""
        since = self._runtime.now() - timedelta(days=days)
        events = usage_events.c
        engine = self._runtime.engine
        day = _utc_day(events.created_at, engine.dialect.name).label("day")
        query = (
            select(day, events.metric, func.sum(events.amount).label("total"))
            .where(events.user_id == user_id, events.created_at >= since)
            .group_by(day, events.metric)
            .order_by(day, events.metric)
        )
        totals: dict[str, int] = defaultdict(int)
        daily: dict[date, dict[str, int]] = defaultdict(dict)
        with read_connection(engine) as connection:
            for row in connection.execute(query):
                on = row.day if isinstance(row.day, date) else date.fromisoformat(str(row.day))
                daily[on][row.metric] = int(row.total)
                totals[row.metric] += int(row.total)
        return UsageStats(days, dict(totals), dict(daily))


def _utc_day(column: Any, dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        # timestamptz to date follows the session's TimeZone; the day is taken in UTC explicitly.
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)  # SQLite stores UTC already
