"""A charge of a team member: the team's pool and the member's own counter move together or not at
all, under the plan's limit and the member's cap, and only for a member of the team.

On PostgreSQL with calendar months it is one statement (``store.team_charge``); elsewhere one write
transaction that charges the member's counter under the cap, then the pool under the limit, and
rolls both back when either refuses. Every team charge moves the member's row before the pool's,
so concurrent charges take the two locks in one order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..domain.accounts import UnknownAccountError
from ..domain.catalog import Metric
from ..domain.limits import Allowance, crossed_threshold
from ..domain.notifications import Notification, NotificationKind
from ..domain.periods import Period, PeriodRule, period_containing
from ..store import accounts as stored_accounts
from ..store import usage
from ..store.reservation import StatementCharge
from ..store.subscriptions import select_current
from ..store.team_charge import (
    TeamChargeResult,
    TeamChargeStatement,
    charge_member,
    membership_and_cap,
)
from ..store.transactions import read_connection, write_transaction
from .notifications import NotificationService
from .runtime import Runtime


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """What a charge was asked for, as each way of charging (personal or team) receives it."""

    account_id: str
    actor_user_id: str
    metric: Metric
    amount: int
    idempotency_key: str | None
    resources: Mapping[str, Any] | None
    metadata: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class TeamCharge:
    """What one attempt found: charged when ``event_id`` is set."""

    period: Period
    pool: Allowance
    """The team's pool of the metric, after the charge (as it stands when refused)."""
    member: Allowance
    """The member's own use and cap (``limit`` None: not capped)."""
    event_id: int | None
    replayed: bool = False
    refused_by_member_cap: bool = False
    notice: Notification | None = None
    """The pool's ``quota_low`` (charged) or ``quota_blocked`` (refused by the pool)."""

    @property
    def tightest(self) -> Allowance:
        """What a client is told it has left: the member's cap when it refused or leaves less
        than the pool, else the pool."""
        if self.refused_by_member_cap:
            return self.member
        if self.event_id is None and self.pool.limit is not None:
            return self.pool
        member_left, pool_left = self.member.remaining, self.pool.remaining
        if member_left is not None and (pool_left is None or member_left < pool_left):
            return self.member
        return self.pool


class TeamCharges:
    def __init__(self, runtime: Runtime, notifications: NotificationService) -> None:
        self._runtime = runtime
        self._notifications = notifications
        self._statements: dict[str, TeamChargeStatement] = {}

    def charge_once(self, request: ChargeRequest) -> TeamCharge | None:
        """One attempt; None when the account has no current subscription or its paid period is
        over (the caller brings it up to date and tries again). ``UnknownAccountError`` when the
        user is not a member of the account: nothing is charged."""
        if self._in_one_statement:
            return self._in_statement(request)
        return self._in_transaction(request)

    # -- PostgreSQL, calendar months: one statement ----------------------------------------

    @property
    def _in_one_statement(self) -> bool:
        settings = self._runtime.settings
        return (
            settings.period_rule is PeriodRule.CALENDAR_MONTH
            and self._runtime.engine.dialect.name == "postgresql"
        )

    def _in_statement(self, request: ChargeRequest) -> TeamCharge | None:
        runtime = self._runtime
        now = runtime.now()
        period = period_containing(
            runtime.settings.period_rule, now, now, runtime.settings.period_timezone
        )
        result = self._run(request, period, now)
        if result.is_member and not result.has_member_row and not result.replayed:
            # The member's first charge of the period: its counter row is written, then locked.
            with read_connection(runtime.engine) as connection:
                stored_accounts.ensure_member_counter(
                    connection,
                    request.account_id,
                    request.actor_user_id,
                    request.metric.name,
                    period.start,
                    period.end,
                )
            result = self._run(request, period, now)
        if not result.is_member:
            raise UnknownAccountError("no such account")
        if result.replayed:
            return TeamCharge(
                period,
                Allowance(request.metric.name, None, 0, period.end),
                Allowance(request.metric.name, None, 0, period.end),
                None,
                replayed=True,
            )
        if result.plan_code is None:
            return None
        pool = Allowance(request.metric.name, result.limit, result.used, period.end)
        member = Allowance(request.metric.name, result.member_cap, result.member_used, period.end)
        notice = None
        if result.notice_id is not None:
            kind = NotificationKind.QUOTA_LOW if result.charged else NotificationKind.QUOTA_BLOCKED
            notice = self._notifications.claimed(
                result.notice_id, request.account_id, kind, request.metric.name, period.start, now
            )
        return TeamCharge(
            period,
            pool,
            member,
            result.event_id if result.charged else None,
            refused_by_member_cap=result.refused_by_member_cap,
            notice=notice,
        )

    def _run(self, request: ChargeRequest, period: Period, now: datetime) -> TeamChargeResult:
        with read_connection(self._runtime.engine) as connection:
            return self._statement_for(request.metric.name).run(
                connection,
                StatementCharge(
                    request.account_id,
                    request.actor_user_id,
                    request.metric.name,
                    request.amount,
                    period,
                    now,
                    request.idempotency_key,
                    request.resources,
                    request.metadata,
                    self._notifications.charge_notice_columns(period.start, now),
                ),
            )

    def _statement_for(self, metric: str) -> TeamChargeStatement:
        statement = self._statements.get(metric)
        if statement is None:
            catalog = self._runtime.catalog
            limits = {code: plan.limit_for(metric) for code, plan in catalog.plans.items()}
            statement = TeamChargeStatement(limits, catalog.default_plan.code)
            self._statements[metric] = statement
        return statement

    # -- SQLite, and periods that depend on the subscription: one transaction --------------

    def _in_transaction(self, request: ChargeRequest) -> TeamCharge | None:
        runtime = self._runtime
        now = runtime.now()
        account_id, actor, metric = request.account_id, request.actor_user_id, request.metric.name
        with write_transaction(runtime.engine) as connection:
            is_member, cap = membership_and_cap(connection, account_id, actor, metric)
            if not is_member:
                raise UnknownAccountError("no such account")
            subscription = select_current(connection, account_id)
            if subscription is None or subscription.has_lapsed(now):
                return None
            limit = runtime.catalog.plan(subscription.plan_code).limit_for(metric)
            period = runtime.period(subscription, now)

            def as_it_stands(*, replayed: bool = False, by_member: bool = False) -> TeamCharge:
                used = usage.used_in_period(connection, account_id, metric, period.start)
                member_used = stored_accounts.member_used(
                    connection, account_id, actor, metric, period.start
                )
                return TeamCharge(
                    period,
                    Allowance(metric, limit, used, period.end),
                    Allowance(metric, cap, member_used, period.end),
                    None,
                    replayed=replayed,
                    refused_by_member_cap=by_member,
                )

            def refused_by_pool() -> TeamCharge:
                charge = as_it_stands()
                notice = self._notifications.claim_in(
                    connection,
                    account_id,
                    NotificationKind.QUOTA_BLOCKED,
                    metric,
                    period.start,
                    now,
                )
                return TeamCharge(period, charge.pool, charge.member, None, notice=notice)

            if cap is not None and request.amount > cap:
                return as_it_stands(by_member=True)
            if limit is not None and request.amount > limit:
                return refused_by_pool()
            event_id = usage.insert_usage_event(
                connection,
                {
                    "account_id": account_id,
                    "actor_user_id": actor,
                    "metric": metric,
                    "amount": request.amount,
                    "period_start": period.start,
                    "resources": dict(request.resources) if request.resources else None,
                    "metadata": dict(request.metadata) if request.metadata else None,
                    "idempotency_key": request.idempotency_key,
                    "created_at": now,
                },
            )
            if event_id is None:
                return as_it_stands(replayed=True)
            member_after = charge_member(
                connection,
                account_id=account_id,
                user_id=actor,
                metric=metric,
                period=period,
                amount=request.amount,
                cap=cap,
            )
            if member_after is None:
                connection.rollback()  # drops the event and the counter row written above
                return as_it_stands(by_member=True)
            used_after = usage.consume(
                connection,
                account_id=account_id,
                metric=metric,
                period=period,
                amount=request.amount,
                limit=limit,
            )
            if used_after is None:
                connection.rollback()  # drops the event and the member's charge
                return refused_by_pool()
            usage.add_to_daily(
                connection,
                account_id=account_id,
                metric=metric,
                day=now.astimezone(UTC).date(),
                amount=request.amount,
            )
            notice = None
            threshold = runtime.settings.quota_low_threshold
            if crossed_threshold(used_after - request.amount, used_after, limit, threshold):
                notice = self._notifications.claim_in(
                    connection, account_id, NotificationKind.QUOTA_LOW, metric, period.start, now
                )
        return TeamCharge(
            period,
            Allowance(metric, limit, used_after, period.end),
            Allowance(metric, cap, member_after, period.end),
            event_id,
            notice=notice,
        )
