"""Usage statistics: totals and a daily breakdown per action, from the daily rollup.

``billing_usage_daily`` holds one row per (user, metric, UTC day), kept exact by every charge and
refund, so a year of statistics reads at most 366 rows per metric however many events there were.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, timedelta

from ..store.transactions import read_connection
from ..store.usage import daily_totals
from .runtime import Runtime


@dataclass(frozen=True, slots=True)
class UsageStats:
    days: int
    totals: dict[str, int]
    daily: dict[date, dict[str, int]]
    """Days with no use are left out."""


class UsageStatsService:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def usage(self, account_id: str, days: int) -> UsageStats:
        """What the user was charged over the last ``days`` days, per metric, in whole UTC days:
        from the day ``days`` days ago up to today."""
        since = (self._runtime.now() - timedelta(days=days)).astimezone(UTC).date()
        totals: dict[str, int] = defaultdict(int)
        daily: dict[date, dict[str, int]] = defaultdict(dict)
        with read_connection(self._runtime.engine) as connection:
            for row in daily_totals(connection, account_id, since):
                daily[row.day][row.metric] = int(row.total)
                totals[row.metric] += int(row.total)
        return UsageStats(days, dict(totals), dict(daily))
