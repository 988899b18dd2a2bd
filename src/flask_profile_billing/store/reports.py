"""The two usage reports, set-based: top users by a metric, and users and average use per plan."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, func, select

from .models import subscriptions, usage_counters, usage_events
from .subscriptions import plan_in_force


def top_users(connection: Connection, metric: str, since: datetime, limit: int) -> list[Row[Any]]:
    """The ``limit`` users (``account_id``, ``total``) who used ``metric`` most since ``since``,
    from the usage log; most first, ties by user id."""
    events = usage_events.c
    total = func.sum(events.amount).label("total")
    query = (
        select(events.account_id, total)
        .where(events.metric == metric, events.created_at >= since)
        .group_by(events.account_id)
        .order_by(total.desc(), events.account_id)
        .limit(limit)
    )
    return list(connection.execute(query))


def plan_usage(
    connection: Connection, metric: str, now: datetime, default_plan: str
) -> dict[str, Row[Any]]:
    """Per plan in force at ``now`` (``plan_code``): how many users have a current subscription
    on it (``users``) and their mean use of ``metric`` in the period that contains ``now``
    (``average_used``). Plans nobody is on are left out.

    A current subscription whose paid period is over counts under ``default_plan``
    (``store.subscriptions.plan_in_force``), whether or not anything has ended it yet.
    """
    subs = subscriptions.c
    counters = usage_counters.c
    plan_code = plan_in_force(now, default_plan).label("plan_code")
    query = (
        select(
            plan_code,
            func.count(func.distinct(subs.account_id)).label("users"),
            func.avg(func.coalesce(counters.used, 0)).label("average_used"),
        )
        .select_from(subscriptions)
        .outerjoin(
            usage_counters,
            and_(
                counters.account_id == subs.account_id,
                counters.metric == metric,
                counters.period_start <= now,
                counters.period_end > now,
            ),
        )
        .where(subs.ended_at.is_(None))
        .group_by(plan_code)
    )
    return {row.plan_code: row for row in connection.execute(query)}
