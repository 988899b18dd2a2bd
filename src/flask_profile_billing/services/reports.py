"""The two usage reports: top users by a metric, and users and average use per plan."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ..domain.accounts import personal_user_id
from ..store import reports
from ..store.transactions import read_connection
from .runtime import Runtime


@dataclass(frozen=True, slots=True)
class TopUser:
    user_id: str
    """The user of a personal account; a team account's key as it is."""
    total: int
    account_id: str


@dataclass(frozen=True, slots=True)
class PlanUsage:
    plan_code: str
    plan_name: str
    users: int
    average_used: float
    """Mean use of the metric in each user's current billing period."""


class ReportService:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def top_users(self, metric: str, days: int = 30, limit: int = 10) -> list[TopUser]:
        """Users who used ``metric`` most over the last ``days`` days, from the usage log."""
        since = self._runtime.now() - timedelta(days=days)
        with read_connection(self._runtime.engine) as connection:
            rows = reports.top_users(connection, metric, since, limit)
        return [
            TopUser(
                personal_user_id(row.account_id) or row.account_id, int(row.total), row.account_id
            )
            for row in rows
        ]

    def plan_usage(self, metric: str) -> list[PlanUsage]:
        """Users per plan in force now, and their mean use of ``metric`` in their current period,
        for every plan of the catalog.

        A current subscription whose paid period is over counts under the default plan, as the
        guards already treat it, whether or not anything has rolled it over yet.
        """
        now = self._runtime.now()
        catalog = self._runtime.catalog
        with read_connection(self._runtime.engine) as connection:
            rows = reports.plan_usage(connection, metric, now, catalog.default_plan.code)
        return [
            PlanUsage(
                code,
                plan.name,
                int(rows[code].users) if code in rows else 0,
                round(float(rows[code].average_used), 2) if code in rows else 0.0,
            )
            for code, plan in catalog.plans.items()
        ]
