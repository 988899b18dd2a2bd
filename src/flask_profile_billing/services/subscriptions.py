"""The subscription lifecycle: free on first access, plan changes, cancel, resume, trial, expiry.

A subscription's status is derived from its timestamps when read (``Subscription.status_at``), so
guards and pages are right even if no scheduled job ran. Writes here make the stored rows catch up.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, case, select, update

from .. import signals
from ..domain.catalog import Plan
from ..domain.periods import add_months, extend_from_anchor
from ..domain.proration import credited_time
from ..domain.subscriptions import EndReason, Subscription, SubscriptionStatus
from ..errors import BillingError, SubscriptionConflictError
from ..store.expiry import end_lapsed_batch
from ..store.models import subscriptions
from ..store.statements import dialect_insert, insert_ignoring_conflict
from ..store.subscriptions import extend_current, lock_current, replace_current
from ..store.transactions import read_connection, write_transaction
from .plans import PlanStore
from .runtime import Runtime

ALLOWED_DURATIONS = (1, 12)
_CURRENT = subscriptions.c.ended_at.is_(None)
_RETRIES = 3


class SubscriptionService:
    def __init__(self, runtime: Runtime, plan_store: PlanStore) -> None:
        self._runtime = runtime
        self._plans = plan_store

    # -- reading -------------------------------------------------------------------------------

    def current(self, user_id: str) -> Subscription:
        """The user's current subscription, created (free) on first access and rolled over to free
        when its paid period is over."""
        now = self._runtime.now()
        subscription = self.find_current(user_id)
        if subscription is None:
            subscription = self._create_default(user_id, now)
        if subscription.has_lapsed(now):
            subscription = self._roll_over(subscription)
        return subscription

    def find_current(self, user_id: str) -> Subscription | None:
        with read_connection(self._runtime.engine) as connection:
            return select_current(connection, user_id)

    def history(self, user_id: str) -> list[Subscription]:
        with read_connection(self._runtime.engine) as connection:
            rows = connection.execute(
                select(subscriptions)
                .where(subscriptions.c.user_id == user_id)
                .order_by(subscriptions.c.started_at, subscriptions.c.id)
            )
            return [_to_subscription(row) for row in rows]

    def plan_of(self, subscription: Subscription) -> Plan:
        return self._runtime.catalog.plan(subscription.plan_code)

    # -- changing ------------------------------------------------------------------------------

    def change_plan(self, user_id: str, plan_code: str, months: int = 1) -> Subscription:
        """Put the user on ``plan_code`` for ``months`` (1 or 12) from now.

        Granting the plan the user already has extends its paid period instead (the seed's manual
        extension). The default plan never lapses, so ``months`` does not apply to it. This does not
        take payment: it is for the CLI, admins and confirmed payments, never a user's own request.
        """
        if months not in ALLOWED_DURATIONS:
            raise ValueError(f"months must be one of {ALLOWED_DURATIONS}, not {months!r}")
        plan = self._runtime.catalog.plan(plan_code)
        return self._replace(user_id, plan, SubscriptionStatus.ACTIVE, months=months)

    def start_trial(self, user_id: str, plan_code: str, days: int) -> Subscription:
        """Put the user on ``plan_code`` with status ``trial`` for ``days``; then back to free."""
        if days < 1:
            raise ValueError("a trial lasts at least one day")
        plan = self._runtime.catalog.plan(plan_code)
        return self._replace(user_id, plan, SubscriptionStatus.TRIAL, days=days)

    def cancel(self, user_id: str) -> Subscription:
        """Cancel at the end of the paid period: access is kept until ``expires_at``, then free."""
        for _ in range(_RETRIES):
            subscription = self.current(user_id)
            if subscription.expires_at is None:
                raise BillingError("the current plan does not lapse, so there is nothing to cancel")
            if subscription.status is SubscriptionStatus.CANCELLED:
                return subscription
            changed = self._set_status(
                subscription, SubscriptionStatus.CANCELLED, cancelled_at=self._runtime.now()
            )
            if changed is not None:
                return changed
        raise SubscriptionConflictError(
            f"the subscription of user {user_id!r} kept changing; retry"
        )

    def resume(self, user_id: str) -> Subscription:
        """Undo a cancel before the paid period ends."""
        for _ in range(_RETRIES):
            subscription = self.current(user_id)
            if subscription.status is not SubscriptionStatus.CANCELLED:
                raise BillingError("only a cancelled subscription can be resumed")
            changed = self._set_status(subscription, SubscriptionStatus.ACTIVE, cancelled_at=None)
            if changed is not None:
                return changed
        raise SubscriptionConflictError(
            f"the subscription of user {user_id!r} kept changing; retry"
        )

    def expire_lapsed(self, batch_size: int = 1000) -> int:
        """End every current subscription whose period is over and start a free one in its place.

        Set-based, in batches of ``batch_size`` (memory stays flat), idempotent: the catch-up that
        ``current()`` also does lazily per user. Returns how many subscriptions it ended. Runs may
        overlap: on PostgreSQL a batch skips the rows another run has locked (``SKIP LOCKED``), so
        they share the work, and on SQLite they take turns; each subscription is ended once.
        """
        runtime = self._runtime
        self._plans.ensure_seeded()
        now = runtime.now()
        default_code = runtime.catalog.default_plan.code
        total = 0
        while True:
            with write_transaction(runtime.engine) as connection:
                end_batch = (
                    self._end_batch_in_one_statement
                    if connection.dialect.name == "postgresql"
                    else self._end_batch_in_two_statements
                )
                ended, followers = end_batch(connection, now, batch_size, default_code)
                if not ended:
                    return total
            total += len(ended)
            runtime.cache.forget_users([lapsed.user_id for lapsed in ended])
            pairs = [(lapsed, followers.get(lapsed.user_id)) for lapsed in ended]
            for lapsed, current in pairs:
                self._announce_expiry(lapsed, current, in_batch=True)
            signals.subscriptions_expired.send(runtime.app, expired=pairs)

    # -- internals -----------------------------------------------------------------------------

    def _replace(
        self,
        user_id: str,
        plan: Plan,
        status: SubscriptionStatus,
        *,
        months: int | None = None,
        days: int | None = None,
    ) -> Subscription:
        """Extend the current subscription or replace it, deciding from the row as it stands.

        The read that decides and the write happen in one transaction with the row locked
        (``store.subscriptions``), so concurrent changes of one user (payment webhooks, grants,
        admins) each see the one before them: twelve one-month extensions add twelve months.
        """
        for _ in range(_RETRIES):
            with write_transaction(self._runtime.engine) as connection:
                locked = lock_current(connection, user_id)
                previous = None if locked is None else _to_subscription(locked)
                now = self._runtime.now()
                changed = None
                if previous is not None and not previous.has_lapsed(now):
                    changed = self._change_locked(
                        connection, previous, plan, status, now, months=months, days=days
                    )
            if previous is not None and changed is not None:
                self._announce_change(user_id, previous, changed)
                return changed
            # No current subscription yet, one whose paid period is over, or (PostgreSQL) one that
            # a concurrent change replaced while this waited for it. current() creates the free
            # one or rolls the lapsed one over in transactions of its own (they write, and send
            # their signals after committing), then the change is decided again.
            self.current(user_id)
        raise SubscriptionConflictError(
            f"the subscription of user {user_id!r} kept changing; retry"
        )

    def _change_locked(
        self,
        connection: Connection,
        previous: Subscription,
        plan: Plan,
        status: SubscriptionStatus,
        now: datetime,
        *,
        months: int | None,
        days: int | None,
    ) -> Subscription | None:
        """Extend or replace ``previous``, the locked current subscription that has not lapsed at
        ``now``; the subscription as it then stands, or None when ``previous`` was not current."""
        if self._extends(previous, plan, status, now):
            assert previous.expires_at is not None
            assert months is not None
            expires_at = extend_from_anchor(previous.period_anchor, previous.expires_at, months)
            row = extend_current(connection, previous.id, expires_at)
        else:
            row = replace_current(
                connection,
                previous.id,
                now=now,
                user_id=previous.user_id,
                plan_code=plan.code,
                status=status,
                expires_at=self._new_expiry(previous, plan, now, months=months, days=days),
            )
        return None if row is None else _to_subscription(row)

    def _extends(
        self, previous: Subscription, plan: Plan, status: SubscriptionStatus, now: datetime
    ) -> bool:
        return (
            status is SubscriptionStatus.ACTIVE
            and previous.plan_code == plan.code
            and previous.expires_at is not None
            and previous.is_active_at(now)
            and previous.status is not SubscriptionStatus.TRIAL
        )

    def _new_expiry(
        self,
        previous: Subscription,
        plan: Plan,
        now: datetime,
        *,
        months: int | None,
        days: int | None,
    ) -> datetime | None:
        """When the subscription that replaces ``previous`` at ``now`` ends.

        A paid plan bought over another paid plan also gets the old plan's unused paid time,
        converted at the ratio of their monthly prices (``domain.proration``), so the change does
        not forfeit what was paid. The default plan never lapses, so moving to it ends the paid
        period at once, and a trial is given time, so nothing is credited to or from one.
        """
        if plan.is_default:
            return None
        if days is not None:
            return now + timedelta(days=days)
        credit = credited_time(
            previous.unused_paid_time_at(now),
            self._monthly_price_of(previous.plan_code),
            plan.price_monthly,
        )
        return add_months(now, months or 1) + credit

    def _monthly_price_of(self, plan_code: str) -> Decimal | None:
        """The plan's monthly price; None (no ratio) for a plan since removed from the catalog."""
        plan = self._runtime.catalog.plans.get(plan_code)
        return None if plan is None else plan.price_monthly

    def _set_status(
        self, subscription: Subscription, status: SubscriptionStatus, **values: Any
    ) -> Subscription | None:
        """Set the status of ``subscription`` if it is still the current one; None when a
        concurrent change replaced it (the caller decides again from the new one). Only status and
        ``cancelled_at`` change, so a concurrent extension of the same row composes with it."""
        with write_transaction(self._runtime.engine) as connection:
            result = connection.execute(
                update(subscriptions)
                .where(subscriptions.c.id == subscription.id, _CURRENT)
                .values(status=status.value, **values)
            )
            if result.rowcount != 1:
                return None
            changed = select_current(connection, subscription.user_id)
        assert changed is not None
        self._announce_change(subscription.user_id, subscription, changed)
        return changed

    def _create_default(self, user_id: str, now: datetime) -> Subscription:
        self._plans.ensure_seeded()
        default_code = self._runtime.catalog.default_plan.code
        with write_transaction(self._runtime.engine) as connection:
            created = self._insert_default(connection, user_id, now, default_code)
            subscription = created or select_current(connection, user_id)
        assert subscription is not None
        if created is not None:
            self._announce_change(user_id, None, subscription)
        return subscription

    def _roll_over(self, lapsed: Subscription) -> Subscription:
        default_code = self._runtime.catalog.default_plan.code
        with write_transaction(self._runtime.engine) as connection:
            ended = self._end_lapsed(connection, subscriptions.c.id == lapsed.id)
            for subscription in ended:
                self._insert_default(
                    connection, subscription.user_id, subscription.expires_at, default_code
                )
            current = select_current(connection, lapsed.user_id)
        assert current is not None
        for subscription in ended:  # empty when a concurrent request rolled it over first
            self._announce_expiry(subscription, current)
        return current

    @staticmethod
    def _end_lapsed(connection: Connection, where: Any) -> list[Subscription]:
        """End lapsed current subscriptions at their expiry; the ended rows, as stored now."""
        rows = connection.execute(
            _end_statement(where, subscriptions.c.expires_at)
            .values(end_reason=EndReason.EXPIRED.value, status=_lapsed_status())
            .returning(*subscriptions.c)
        )
        return [_to_subscription(row) for row in rows]

    def _announce_change(
        self, user_id: str, previous: Subscription | None, current: Subscription
    ) -> None:
        self._runtime.cache.forget_user(user_id)
        signals.subscription_changed.send(
            self._runtime.app, user_id=user_id, previous=previous, current=current
        )

    def _announce_expiry(
        self, lapsed: Subscription, current: Subscription | None, *, in_batch: bool = False
    ) -> None:
        if not in_batch:  # a batch forgets all its users at once
            self._runtime.cache.forget_user(lapsed.user_id)
        signals.subscription_expired.send(
            self._runtime.app,
            user_id=lapsed.user_id,
            subscription=lapsed,
            current=current,
            in_batch=in_batch,
        )

    def _end_batch_in_two_statements(
        self, connection: Connection, now: datetime, batch_size: int, plan_code: str
    ) -> tuple[list[Subscription], dict[str, Subscription]]:
        """One batch of ``expire_lapsed``: end up to ``batch_size`` lapsed subscriptions, then
        insert their free followers (SQLite: no data-modifying CTEs)."""
        subs = subscriptions.c
        batch = (
            select(subs.id)
            .where(_CURRENT, subs.expires_at <= now)
            .limit(batch_size)
            .scalar_subquery()
        )
        ended = self._end_lapsed(connection, subs.id.in_(batch))
        return ended, (self._insert_defaults(connection, ended, plan_code) if ended else {})

    @staticmethod
    def _end_batch_in_one_statement(
        connection: Connection, now: datetime, batch_size: int, plan_code: str
    ) -> tuple[list[Subscription], dict[str, Subscription]]:
        """``_end_batch_in_two_statements`` in one statement (PostgreSQL: ``store.expiry``)."""
        rows = end_lapsed_batch(connection, now=now, batch_size=batch_size, default_plan=plan_code)
        ended = [_to_subscription(row) for row in rows]
        current = {
            lapsed.user_id: _follower(lapsed, plan_code, row.follower_id)
            for lapsed, row in zip(ended, rows, strict=True)
            if row.follower_id is not None
        }
        _add_others_current(connection, ended, current)
        return ended, current

    @staticmethod
    def _insert_defaults(
        connection: Connection, ended: list[Subscription], plan_code: str
    ) -> dict[str, Subscription]:
        """Free subscriptions for the users of ``ended``, from their expiry, in one multi-row
        insert; users who meanwhile got a current subscription keep it. Returns user id to the
        current subscription."""
        rows = [_free_values(lapsed.user_id, lapsed.expires_at, plan_code) for lapsed in ended]
        statement = (
            dialect_insert(connection, subscriptions)
            .on_conflict_do_nothing(index_elements=["user_id"], index_where=_CURRENT)
            .returning(*subscriptions.c)
        )
        inserted = connection.execute(statement, rows).all()
        current = {row.user_id: _to_subscription(row) for row in inserted}
        _add_others_current(connection, ended, current)
        return current

    @staticmethod
    def _insert_default(
        connection: Connection, user_id: str, starts_at: datetime | None, plan_code: str
    ) -> Subscription | None:
        """Insert a free subscription unless the user already has a current one (the unique index
        decides between concurrent first requests); the inserted subscription, or None."""
        row = insert_ignoring_conflict(
            connection,
            subscriptions,
            _free_values(user_id, starts_at, plan_code),
            ["user_id"],
            conflict_where=_CURRENT,
        )
        return None if row is None else _to_subscription(row)


def select_current(connection: Connection, user_id: str) -> Subscription | None:
    """The user's current subscription row as it stands, on ``connection`` (no creation and no
    rollover: inside a caller's transaction)."""
    row = connection.execute(_SELECT_CURRENT, {"user_id": user_id}).one_or_none()
    return None if row is None else _to_subscription(row)


# Built once: the guards read it on every request.
_SELECT_CURRENT = select(subscriptions).where(
    subscriptions.c.user_id == bindparam("user_id"), _CURRENT
)


def _free_values(user_id: str, starts_at: datetime | None, plan_code: str) -> dict[str, Any]:
    """The columns of a free subscription from ``starts_at`` (a first access, or the expiry of the
    paid one it follows)."""
    return {
        "user_id": user_id,
        "plan_code": plan_code,
        "status": SubscriptionStatus.ACTIVE.value,
        "started_at": starts_at,
        "expires_at": None,
        "period_anchor": starts_at,
    }


def _follower(lapsed: Subscription, plan_code: str, follower_id: int) -> Subscription:
    """The free subscription inserted as ``follower_id`` after ``lapsed``."""
    values = _free_values(lapsed.user_id, lapsed.expires_at, plan_code)
    values["status"] = SubscriptionStatus.ACTIVE
    return Subscription(id=follower_id, cancelled_at=None, **values)


def _add_others_current(
    connection: Connection, ended: list[Subscription], current: dict[str, Subscription]
) -> None:
    """Add to ``current`` the subscriptions that users of ``ended`` got meanwhile instead of a
    free follower."""
    missing = [lapsed.user_id for lapsed in ended if lapsed.user_id not in current]
    if missing:
        others = connection.execute(
            select(subscriptions).where(subscriptions.c.user_id.in_(missing), _CURRENT)
        )
        current.update({row.user_id: _to_subscription(row) for row in others})


def _end_statement(where: Any, ended_at: Any) -> Any:
    return update(subscriptions).where(and_(where, _CURRENT)).values(ended_at=ended_at)


def _lapsed_status() -> Any:
    """A cancelled subscription stays ``cancelled`` when it lapses; any other becomes ``expired``.

    ``store.expiry`` says the same in its SQL."""
    cancelled = SubscriptionStatus.CANCELLED.value
    return case(
        (subscriptions.c.status == cancelled, cancelled),
        else_=SubscriptionStatus.EXPIRED.value,
    )


def _to_subscription(row: Row[Any]) -> Subscription:
    return Subscription(
        id=row.id,
        user_id=row.user_id,
        plan_code=row.plan_code,
        status=SubscriptionStatus(row.status),
        started_at=row.started_at,
        expires_at=row.expires_at,
        period_anchor=row.period_anchor,
        cancelled_at=row.cancelled_at,
    )
