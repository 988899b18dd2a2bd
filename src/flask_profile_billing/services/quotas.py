"""The one source of limits: what guards enforce, what pages show and what jobs check.

A consumption is reserved before the work, in one transaction that reads the plan in force and
writes the usage event (whose unique idempotency key makes a retry free), the conditional counter
upsert (whose returned row decides) and the day's total; on PostgreSQL with calendar months, in one
statement. Work that fails gives its reservation back.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, NoReturn

from .. import signals
from ..domain.accounts import (
    MEMBER_CAP_MESSAGE,
    AccountKind,
    UnknownAccountError,
    account_kind,
    personal_user_id,
)
from ..domain.catalog import Metric, MetricKind, Plan, render
from ..domain.limits import Allowance, crossed_threshold, validate_amount
from ..domain.notifications import Notification, NotificationKind
from ..domain.periods import Period, PeriodRule, period_containing
from ..domain.subscriptions import Subscription
from ..errors import (
    BillingConfigError,
    FeatureNotAvailable,
    QuotaExceeded,
    SubscriptionConflictError,
)
from ..store import usage
from ..store.locks import gauge_lock
from ..store.reservation import OneStatementReservation, StatementCharge
from ..store.subscriptions import select_current
from ..store.transactions import read_connection, write_transaction
from .charge_returns import ChargeReturnService, PendingReturn
from .notifications import NotificationService
from .runtime import Runtime
from .subscriptions import SubscriptionService
from .team_charges import ChargeRequest, TeamCharge, TeamCharges

MAX_IDEMPOTENCY_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Reservation:
    """A charge taken before the work; ``QuotaService.release`` gives it back."""

    account_id: str
    metric: str
    amount: int
    period: Period
    allowance: Allowance
    """The metric after this charge."""
    event_id: int | None
    replayed: bool = False
    """True when the idempotency key was already charged: nothing was taken this time."""
    actor_user_id: str | None = None
    """The user who acted (for a personal account, its user)."""


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """One metric of the limits check: may the user use one more now, and if not, why not."""

    metric: Metric
    allowance: Allowance

    @property
    def allowed(self) -> bool:
        return self.allowance.allows(1)

    @property
    def refusal(self) -> str | None:
        """The message a request would be refused with; None while one more is allowed."""
        return None if self.allowed else self.metric.limit_message(self.allowance.limit)


@dataclass(frozen=True, slots=True)
class _Charge:
    """What one attempt at a charge found: charged when ``event_id`` is set."""

    period: Period
    allowance: Allowance
    event_id: int | None
    replayed: bool = False
    notice: Notification | None = None
    """The ``quota_low`` (charged) or ``quota_blocked`` (refused) notification this attempt
    claimed, in the charge's own transaction."""
    team: TeamCharge | None = None
    """A team member's charge: the pool and the member's own counter and cap."""
    member_notice: Notification | None = None
    """The member's own ``cap_low`` (charged) or ``cap_reached`` (refused by their cap)."""


class QuotaService:
    def __init__(
        self,
        runtime: Runtime,
        subscriptions: SubscriptionService,
        charge_returns: ChargeReturnService,
        notifications: NotificationService,
        team_charges: TeamCharges,
    ) -> None:
        self._runtime = runtime
        self._subscriptions = subscriptions
        self._charge_returns = charge_returns
        self._notifications = notifications
        self._team_charges = team_charges
        self._statements: dict[str, OneStatementReservation] = {}

    def effective_plan(self, account_id: str) -> tuple[Subscription, Plan]:
        subscription = self._subscriptions.current(account_id)
        return subscription, self._runtime.catalog.plan(subscription.plan_code)

    # -- periodic metrics ----------------------------------------------------------------------

    def allowance(self, account_id: str, metric_name: str) -> Allowance:
        """The metric now, without charging anything."""
        return self.allowances(account_id, [metric_name])[metric_name]

    def allowances(
        self, account_id: str, metric_names: list[str] | None = None
    ) -> dict[str, Allowance]:
        """Periodic metrics of the user now (all of the catalog's when ``metric_names`` is None)."""
        return self.snapshot(account_id, metric_names)[2]

    def snapshot(
        self, account_id: str, metric_names: list[str] | None = None
    ) -> tuple[Subscription, Plan, dict[str, Allowance]]:
        """The subscription, the plan in force and the periodic metrics, from one resolution of
        the subscription (pages that show all three need not resolve it twice)."""
        runtime = self._runtime
        names = metric_names or [
            m.name for m in runtime.catalog.metrics.values() if m.kind is MetricKind.PERIODIC
        ]
        metrics = [runtime.metric(name, MetricKind.PERIODIC) for name in names]
        subscription, plan = self.effective_plan(account_id)
        now = runtime.now()
        period = runtime.period(subscription, now)
        with read_connection(runtime.engine) as connection:
            used = usage.used_by_metric(connection, account_id, names, period.start)
        allowances = {
            metric.name: Allowance(
                metric.name, plan.limit_for(metric.name), used.get(metric.name, 0), period.end
            )
            for metric in metrics
        }
        return subscription, plan, allowances

    def reserve(
        self,
        account_id: str,
        metric_name: str,
        amount: int = 1,
        *,
        actor_user_id: str | None = None,
        idempotency_key: str | None = None,
        resources: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Reservation:
        """Charge ``amount`` of a periodic metric to ``account_id``, or raise ``QuotaExceeded``
        having charged nothing. ``actor_user_id`` is the user who acts (the usage log and the
        signals name them); None: the personal account's own user.

        ``SubscriptionConflictError`` (nothing charged) when the user's subscription was replaced
        twice while the charge ran: retrying the request is safe.
        """
        runtime = self._runtime
        metric = runtime.metric(metric_name, MetricKind.PERIODIC)
        validate_amount(amount)
        if (
            idempotency_key is not None
            and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH
        ):
            raise ValueError(f"an idempotency key has 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
        charge_once = (
            self._charge_in_one_statement if self._in_one_statement else self._charge_in_transaction
        )
        actor = acting_user(account_id, actor_user_id)
        team = account_kind(account_id) is AccountKind.TEAM
        if not team and personal_user_id(account_id) != actor:
            raise UnknownAccountError("no such account")
        if team:
            charge_once = self._charge_team_member
        request = ChargeRequest(
            account_id, actor, metric, amount, idempotency_key, resources, metadata
        )
        charge = charge_once(request)
        if charge is None:
            # First access, or a paid period that is over: SubscriptionService creates the free
            # subscription or rolls over to it (writes of its own), then the charge is tried again.
            self._subscriptions.current(account_id)
            charge = charge_once(request)
        if charge is None:  # ended again in between, by a concurrent plan change
            raise SubscriptionConflictError(
                "the subscription changed while the request ran; retry it"
            )
        if charge.replayed:
            return Reservation(
                account_id,
                metric.name,
                0,
                charge.period,
                charge.allowance,
                None,
                replayed=True,
                actor_user_id=actor,
            )
        if charge.event_id is None:
            # Refused outside the transaction: the signal's receivers may write (the activity
            # feed does) and must not wait for the connection or lock the charge held.
            self._refuse(
                metric,
                account_id,
                amount,
                charge.allowance,
                charge.notice,
                actor,
                charge.team,
                charge.member_notice,
            )
        reservation = Reservation(
            account_id,
            metric.name,
            amount,
            charge.period,
            charge.allowance,
            charge.event_id,
            actor_user_id=actor,
        )
        try:
            self._announce_consumption(
                account_id, actor, metric.name, amount, charge.allowance, charge.notice
            )
            if charge.member_notice is not None and charge.team is not None:
                signals.cap_low.send(
                    self._runtime.app,
                    user_id=actor,
                    account_id=account_id,
                    metric=metric.name,
                    allowance=charge.team.member,
                )
                self._notifications.announce([charge.member_notice])
        except BaseException:
            # A signal receiver failed after the charge committed: the caller never gets the
            # reservation to give back, so it is given back here.
            self.release(reservation)
            raise
        return reservation

    def _charge_in_transaction(self, request: ChargeRequest) -> _Charge | None:
        """The general path (SQLite, and periods that depend on the subscription): one write
        transaction of four statements that reads the plan in force and charges against it.

        None when the user has no current subscription or its paid period is over.
        """
        runtime = self._runtime
        now = runtime.now()
        with write_transaction(runtime.engine) as connection:
            subscription = select_current(connection, request.account_id)
            if subscription is None or subscription.has_lapsed(now):
                return None
            limit = runtime.catalog.plan(subscription.plan_code).limit_for(request.metric.name)
            period = runtime.period(subscription, now)

            def as_it_stands(*, replayed: bool = False) -> _Charge:
                used = usage.used_in_period(
                    connection, request.account_id, request.metric.name, period.start
                )
                allowance = Allowance(request.metric.name, limit, used, period.end)
                return _Charge(period, allowance, None, replayed=replayed)

            def refused() -> _Charge:
                charge = as_it_stands()
                notice = self._notifications.claim_in(
                    connection,
                    request.account_id,
                    NotificationKind.QUOTA_BLOCKED,
                    request.metric.name,
                    period.start,
                    now,
                )
                return _Charge(period, charge.allowance, None, notice=notice)

            if limit is not None and request.amount > limit:
                return refused()  # the counter's insert branch could not refuse it
            event_id = usage.insert_usage_event(
                connection,
                {
                    "account_id": request.account_id,
                    "actor_user_id": request.actor_user_id,
                    "metric": request.metric.name,
                    "amount": request.amount,
                    "period_start": period.start,
                    "resources": dict(request.resources) if request.resources else None,
                    "metadata": dict(request.metadata) if request.metadata else None,
                    "idempotency_key": request.idempotency_key,
                    "created_at": now,
                },
            )
            if event_id is None:
                # The key was charged before: report the metric as it stands, take nothing.
                return as_it_stands(replayed=True)
            used_after = usage.consume(
                connection,
                account_id=request.account_id,
                metric=request.metric.name,
                period=period,
                amount=request.amount,
                limit=limit,
            )
            if used_after is None:
                connection.rollback()  # drops the event inserted above
                # The refusal's notice is claimed in a transaction of its own on this connection,
                # committed as write_transaction ends.
                return refused()
            usage.add_to_daily(
                connection,
                account_id=request.account_id,
                metric=request.metric.name,
                day=_utc_day(now),
                amount=request.amount,
            )
            notice = None
            threshold = runtime.settings.quota_low_threshold
            if crossed_threshold(used_after - request.amount, used_after, limit, threshold):
                # Only the charge that crosses the mark pays this statement.
                notice = self._notifications.claim_in(
                    connection,
                    request.account_id,
                    NotificationKind.QUOTA_LOW,
                    request.metric.name,
                    period.start,
                    now,
                )
        allowance = Allowance(request.metric.name, limit, used_after, period.end)
        return _Charge(period, allowance, event_id, notice=notice)

    def _charge_team_member(self, request: ChargeRequest) -> _Charge | None:
        """A team member's charge: the pool and the member's counter, under the plan's limit and
        the member's cap (see ``services.team_charges``)."""
        charge = self._team_charges.charge_once(request)
        if charge is None:
            return None
        if charge.replayed:
            pool = self.allowance(request.account_id, request.metric.name)
            return _Charge(charge.period, pool, None, replayed=True)
        return _Charge(
            charge.period,
            charge.tightest,
            charge.event_id,
            notice=charge.notice,
            team=charge,
            member_notice=self._claim_member_notice(request, charge),
        )

    def _claim_member_notice(
        self, request: ChargeRequest, charge: TeamCharge
    ) -> Notification | None:
        """The member's own notice, to the member alone, once per (account, member, metric,
        period): ``cap_reached`` when their cap refused the charge, ``cap_low`` when this charge
        took their use to the threshold of it. A statement of its own, paid only by a refusal
        and by the one charge that crosses the mark: an uncapped member's charges never pay it."""
        member = charge.member
        if charge.refused_by_member_cap:
            kind = NotificationKind.CAP_REACHED
        elif charge.event_id is not None and crossed_threshold(
            member.used - request.amount,
            member.used,
            member.limit,
            self._runtime.settings.quota_low_threshold,
        ):
            kind = NotificationKind.CAP_LOW
        else:
            return None
        return self._notifications.claim_now(
            request.account_id,
            kind,
            request.metric.name,
            charge.period.start,
            recipient_user_id=request.actor_user_id,
        )

    def _charge_in_one_statement(self, request: ChargeRequest) -> _Charge | None:
        """The hot path on PostgreSQL: one round trip (see ``store.reservation``).

        None when the user has no subscription yet.
        """
        runtime = self._runtime
        statement = self._statement_for(request.metric.name)
        now = runtime.now()
        # Calendar months do not depend on the subscription, so the period is known up front.
        period = period_containing(
            runtime.settings.period_rule, now, now, runtime.settings.period_timezone
        )
        with read_connection(runtime.engine) as connection:
            result = statement.run(
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
        if result.replayed:
            return _Charge(
                period, self.allowance(request.account_id, request.metric.name), None, replayed=True
            )
        if result.plan_code is None:
            return None
        allowance = Allowance(request.metric.name, result.limit, result.used, period.end)
        notice = None
        if result.notice_id is not None:
            kind = NotificationKind.QUOTA_LOW if result.charged else NotificationKind.QUOTA_BLOCKED
            notice = self._notifications.claimed(
                result.notice_id, request.account_id, kind, request.metric.name, period.start, now
            )
        if not result.charged:
            return _Charge(period, allowance, None, notice=notice)
        return _Charge(period, allowance, result.event_id, notice=notice)

    @property
    def _in_one_statement(self) -> bool:
        settings = self._runtime.settings
        return (
            settings.period_rule is PeriodRule.CALENDAR_MONTH
            and self._runtime.engine.dialect.name == "postgresql"
        )

    def _statement_for(self, metric: str) -> OneStatementReservation:
        statement = self._statements.get(metric)
        if statement is None:
            catalog = self._runtime.catalog
            limits = {code: plan.limit_for(metric) for code, plan in catalog.plans.items()}
            statement = OneStatementReservation(limits, catalog.default_plan.code)
            self._statements[metric] = statement
        return statement

    def release(self, reservation: Reservation) -> None:
        """Give a reservation back (the work failed): the counter and the usage log forget it.

        When the database cannot take the return now, it is retried in the background."""
        if reservation.replayed or reservation.event_id is None:
            return
        self._charge_returns.give_back(
            PendingReturn(reservation.account_id, event_id=reservation.event_id)
        )

    def release_failed(self, reservation: Reservation) -> Allowance:
        """Give back the charge of a request whose view failed, within that request; the metric
        as it stands after the refund.

        On SQLite, a view that flushed writes it did not commit still holds the database's only
        write lock through the host's session, and the refund's own connection would wait for it
        until the busy timeout. Those writes are discarded when Flask-SQLAlchemy ends the session
        after the request anyway, so they are rolled back now, before the refund.
        """
        runtime = self._runtime
        if runtime.engine.dialect.name == "sqlite":
            runtime.db.session.rollback()
        self.release(reservation)
        charged = reservation.allowance
        return Allowance(
            charged.metric, charged.limit, charged.used - reservation.amount, charged.resets_at
        )

    def limits_check(self, account_id: str) -> list[LimitCheck]:
        """Whether the user may use one more of each metric now: every periodic metric, then
        every gauge the host counts (a gauge with no capacity loader is left out)."""
        runtime = self._runtime
        allowances = self.allowances(account_id)
        for metric in runtime.catalog.metrics.values():
            if metric.kind is MetricKind.GAUGE and metric.name in runtime.capacity_loaders:
                allowances[metric.name] = self.capacity(account_id, metric.name)
        return [
            LimitCheck(runtime.catalog.metric(name), allowance)
            for name, allowance in allowances.items()
        ]

    # -- features and gauges -------------------------------------------------------------------

    def require_feature(self, account_id: str, feature: str) -> Plan:
        _, plan = self.effective_plan(account_id)
        if not plan.has_feature(feature):
            label = self._runtime.catalog.feature_label(feature)
            message = f"{label} is not available on the {plan.name} plan"
            raise FeatureNotAvailable(message, feature, plan.code)
        return plan

    def has_feature(self, account_id: str, feature: str) -> bool:
        return self.effective_plan(account_id)[1].has_feature(feature)

    def capacity(self, account_id: str, metric_name: str) -> Allowance:
        """A gauge metric now: the plan's cap and the host's current count."""
        metric = self._runtime.metric(metric_name, MetricKind.GAUGE)
        _, plan = self.effective_plan(account_id)
        return self._gauge_allowance(account_id, metric, plan)

    def gauges(self, account_id: str, plan: Plan) -> dict[str, Allowance]:
        """Every gauge the host counts, under ``plan``'s caps (gauges without a capacity loader
        are left out): the plan is the caller's, read once for a page that shows them all."""
        runtime = self._runtime
        return {
            metric.name: self._gauge_allowance(account_id, metric, plan)
            for metric in runtime.catalog.metrics.values()
            if metric.kind is MetricKind.GAUGE and metric.name in runtime.capacity_loaders
        }

    def require_capacity(self, account_id: str, metric_name: str, amount: int = 1) -> Allowance:
        """Raise ``QuotaExceeded`` unless ``amount`` more fits under the gauge's cap."""
        validate_amount(amount)
        allowance = self.capacity(account_id, metric_name)
        if not allowance.allows(amount):
            metric = self._runtime.catalog.metric(metric_name)
            notice = self._claim_gauge_refusal(account_id, metric)
            self._refuse(metric, account_id, amount, allowance, notice)
        return allowance

    @contextmanager
    def capacity_held(
        self, account_id: str, metric_name: str, amount: int = 1
    ) -> Iterator[Allowance]:
        """``require_capacity`` under the gauge's lock, held until the block (the view that
        creates the counted thing) ends: concurrent creators of one user take turns, so they
        cannot all pass the check. On PostgreSQL the plan is read on the lock's connection."""
        validate_amount(amount)
        metric = self._runtime.metric(metric_name, MetricKind.GAUGE)
        with gauge_lock(self._runtime.engine, account_id, metric.name) as connection:
            subscription = None if connection is None else select_current(connection, account_id)
            if subscription is None or subscription.has_lapsed(self._runtime.now()):
                subscription = self._subscriptions.current(account_id)
            plan = self._runtime.catalog.plan(subscription.plan_code)
            allowance = self._gauge_allowance(account_id, metric, plan)
            if allowance.allows(amount):
                yield allowance
                return
        # Refused after the lock is released: the signal's receivers may write (the activity
        # feed does) and must not wait for the lock's connection.
        self._refuse(
            metric, account_id, amount, allowance, self._claim_gauge_refusal(account_id, metric)
        )

    # -- internals -----------------------------------------------------------------------------

    def _gauge_allowance(self, account_id: str, metric: Metric, plan: Plan) -> Allowance:
        return Allowance(metric.name, plan.limit_for(metric.name), self._count(account_id, metric))

    def _count(self, account_id: str, metric: Metric) -> int:
        loader = self._runtime.capacity_loaders.get(metric.name)
        if loader is None:
            raise BillingConfigError(
                f"no capacity loader for gauge {metric.name!r}: register one with "
                f"@billing.capacity_loader({metric.name!r})"
            )
        # The host counts its own rows, which name its users: a personal account is its user's.
        return int(loader(personal_user_id(account_id) or account_id))

    def _claim_gauge_refusal(self, account_id: str, metric: Metric) -> Notification | None:
        """Claim ``quota_blocked`` for a gauge's refusal, once per billing period of the user."""
        subscription = self._subscriptions.current(account_id)
        period = self._runtime.period(subscription, self._runtime.now())
        return self._notifications.claim_now(
            account_id, NotificationKind.QUOTA_BLOCKED, metric.name, period.start
        )

    def _refuse(
        self,
        metric: Metric,
        account_id: str,
        amount: int,
        allowance: Allowance,
        notice: Notification | None = None,
        actor_user_id: str | None = None,
        team: TeamCharge | None = None,
        member_notice: Notification | None = None,
    ) -> NoReturn:
        scope = None
        if team is not None:
            scope = "member" if team.refused_by_member_cap else "pool"
        signals.quota_exceeded.send(
            self._runtime.app,
            user_id=actor_user_id or personal_user_id(account_id),
            account_id=account_id,
            metric=metric.name,
            amount=amount,
            allowance=allowance,
            scope=scope,
        )
        claimed = [n for n in (notice, member_notice) if n is not None]
        if claimed:
            self._notifications.announce(claimed)
        now = self._runtime.now()
        if team is None:
            raise QuotaExceeded(metric.limit_message(allowance.limit), allowance, now)
        if team.refused_by_member_cap:
            message = render(MEMBER_CAP_MESSAGE).format(
                amount=metric.amount(team.member.limit or 0)
            )
            raise QuotaExceeded(
                message, team.member, now, scope="member", pool=team.pool, member=team.member
            )
        raise QuotaExceeded(
            metric.limit_message(team.pool.limit),
            team.pool,
            now,
            scope="pool",
            pool=team.pool,
            member=team.member,
        )

    def _announce_consumption(
        self,
        account_id: str,
        actor_user_id: str,
        metric: str,
        amount: int,
        allowance: Allowance,
        notice: Notification | None,
    ) -> None:
        self._runtime.cache.forget_account(account_id)
        app = self._runtime.app
        signals.quota_consumed.send(
            app,
            user_id=actor_user_id,
            account_id=account_id,
            metric=metric,
            amount=amount,
            allowance=allowance,
        )
        if notice is not None:
            # Once per user, metric and period: only the charge that claimed the notice sends it.
            signals.quota_low.send(
                app,
                user_id=actor_user_id,
                account_id=account_id,
                metric=metric,
                allowance=allowance,
            )
            self._notifications.announce([notice])


def _utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def acting_user(account_id: str, actor_user_id: str | None) -> str:
    """The user who acts on ``account_id``: ``actor_user_id``, else the personal account's user."""
    if actor_user_id is not None:
        return actor_user_id
    user_id = personal_user_id(account_id)
    if user_id is None:
        raise ValueError(f"a charge to the team account {account_id!r} needs the acting user")
    return user_id
