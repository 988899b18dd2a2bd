"""The subscription seed's two analytics queries, set-based."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, case, func, select

from ..store.models import subscriptions, usage_counters, usage_events
from ..store.transactions import read_connection
from .runtime import Runtime


@dataclass(frozen=True, slots=True)
class TopUser:
    user_id: str
    total: int


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
        events = usage_events.c
        total = func.sum(events.amount).label("total")
        query = (
            select(events.user_id, total)
            .where(events.metric == metric, events.created_at >= since)
            .group_by(events.user_id)
            .order_by(total.desc(), events.user_id)
            .limit(limit)
        )
        with read_connection(self._runtime.engine) as connection:
            return [TopUser(row.user_id, int(row.total)) for row in connection.execute(query)]

    def plan_usage(self, metric: str) -> list[PlanUsage]:
        """Users per plan in force now, and their mean use of ``metric`` in their current period.

        A current subscription whose paid period is over counts under the default plan, as the
        guards already treat it, whether or not anything has rolled it over yet.
        """
        now = self._runtime.now()
        subs = subscriptions.c
        counters = usage_counters.c
        plan_in_force = case(
            (
                and_(subs.expires_at.is_not(None), subs.expires_at <= now),
                self._runtime.catalog.default_plan.code,
            ),
            else_=subs.plan_code,
        ).label("plan_code")
        query = (
            select(
                plan_in_force,
                func.count(func.distinct(subs.user_id)).label("users"),
                func.avg(func.coalesce(counters.used, 0)).label("average_used"),
            )
            .select_from(subscriptions)
            .outerjoin(
                usage_counters,
                and_(
                    counters.user_id == subs.user_id,
                    counters.metric == metric,
                    counters.period_start <= now,
                    counters.period_end > now,
                ),
            )
            .where(subs.ended_at.is_(None))
            .group_by(plan_in_force)
        )
        with read_connection(self._runtime.engine) as connection:
            rows = {row.plan_code: row for row in connection.execute(query)}
        catalog = self._runtime.catalog
        return [
            PlanUsage(
                code,
                plan.name,
                int(rows[code].users) if code in rows else 0,
                round(float(rows[code].average_used), 2) if code in rows else 0.0,
            )
            for code, plan in catalog.plans.items()
        ]
