"""The subscription lifecycle: free on first access, plan changes, cancel, resume, trial, expiry.

A subscription's status is derived from its timestamps when read (``Subscription.status_at``), so
guards and pages are right even if no scheduled job ran. Writes here make the stored rows catch up.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Connection

from .. import signals
from ..domain.accounts import personal_user_id
from ..domain.activity import EXPIRED_TITLE, SUBSCRIPTION_EXPIRED, describe_expiry
from ..domain.catalog import Plan
from ..domain.notifications import Notification, NotificationKind
from ..domain.periods import add_months, extend_from_anchor
from ..domain.proration import credited_time
from ..domain.subscriptions import Subscription, SubscriptionStatus
from ..errors import NotCancellable, NotResumable, SubscriptionConflictError
from ..store import subscriptions as stored
from ..store.activity import insert_entry
from ..store.expiry import ExpiredBatch, ExpiryRecords, count_lapsed, end_lapsed_batch
from ..store.transactions import read_connection, write_transaction
from .catalog_sync import CatalogSync
from .notifications import NotificationService
from .runtime import Runtime

ALLOWED_DURATIONS = (1, 12)
_RETRIES = 3


class SubscriptionService:
    def __init__(
        self, runtime: Runtime, plan_store: CatalogSync, notifications: NotificationService
    ) -> None:
        self._runtime = runtime
        self._plans = plan_store
        self._notifications = notifications

    # -- reading -------------------------------------------------------------------------------

    def current(self, account_id: str) -> Subscription:
        """The user's current subscription, created (free) on first access and rolled over to free
        when its paid period is over."""
        now = self._runtime.now()
        subscription = self.find_current(account_id)
        if subscription is None:
            subscription = self._create_default(account_id, now)
        if subscription.has_lapsed(now):
            subscription = self._roll_over(subscription)
        return subscription

    def find_current(self, account_id: str) -> Subscription | None:
        with read_connection(self._runtime.engine) as connection:
            return stored.select_current(connection, account_id)

    def history(self, account_id: str) -> list[Subscription]:
        with read_connection(self._runtime.engine) as connection:
            return stored.history(connection, account_id)

    # -- changing ------------------------------------------------------------------------------

    def change_plan(self, account_id: str, plan_code: str, months: int = 1) -> Subscription:
        """Put the user on ``plan_code`` for ``months`` (1 or 12) from now.

        Granting the plan the user already has extends its paid period instead (a manual
        extension). The default plan never lapses, so ``months`` does not apply to it. This does not
        take payment: it is for the CLI, admins and confirmed payments, never a user's own request.
        """
        if months not in ALLOWED_DURATIONS:
            raise ValueError(f"months must be one of {ALLOWED_DURATIONS}, not {months!r}")
        plan = self._runtime.catalog.plan(plan_code)
        return self._replace(account_id, plan, SubscriptionStatus.ACTIVE, months=months)

    def start_trial(self, account_id: str, plan_code: str, days: int) -> Subscription:
        """Put the user on ``plan_code`` with status ``trial`` for ``days``; then back to free."""
        if days < 1:
            raise ValueError("a trial lasts at least one day")
        plan = self._runtime.catalog.plan(plan_code)
        return self._replace(account_id, plan, SubscriptionStatus.TRIAL, days=days)

    def cancel(self, account_id: str) -> Subscription:
        """Cancel at the end of the paid period: access is kept until ``expires_at``, then free."""
        for _ in range(_RETRIES):
            subscription = self.current(account_id)
            if subscription.expires_at is None:
                raise NotCancellable(
                    "the current plan does not lapse, so there is nothing to cancel"
                )
            if subscription.status is SubscriptionStatus.CANCELLED:
                return subscription
            changed = self._set_status(
                subscription, SubscriptionStatus.CANCELLED, cancelled_at=self._runtime.now()
            )
            if changed is not None:
                return changed
        raise SubscriptionConflictError(
            f"the subscription of account {account_id!r} kept changing; retry"
        )

    def resume(self, account_id: str) -> Subscription:
        """Undo a cancel before the paid period ends."""
        for _ in range(_RETRIES):
            subscription = self.current(account_id)
            if subscription.status is not SubscriptionStatus.CANCELLED:
                raise NotResumable("only a cancelled subscription can be resumed")
            changed = self._set_status(subscription, SubscriptionStatus.ACTIVE, cancelled_at=None)
            if changed is not None:
                return changed
        raise SubscriptionConflictError(
            f"the subscription of account {account_id!r} kept changing; retry"
        )

    def expire_lapsed(
        self,
        batch_size: int = 1000,
        *,
        now: datetime | None = None,
        after_batch: Callable[[], None] | None = None,
    ) -> int:
        """End every current subscription whose period is over and start a free one in its place.

        Set-based, in batches of ``batch_size`` (memory stays flat), idempotent: the catch-up that
        ``current()`` also does lazily per user. Returns how many subscriptions it ended. Runs may
        overlap: on PostgreSQL a batch skips the rows another run has locked (``SKIP LOCKED``), so
        they share the work, and on SQLite they take turns; each subscription is ended once. Each
        batch writes its users' activity entries and claims their ``expired`` notifications in
        its own transaction, in SQL (``store.expiry``); ``after_batch`` runs after each batch is
        announced (maintenance renews its lease there).

        Announcing: ``subscriptions_expired`` once per batch. The ended subscriptions are read
        back as objects, and ``subscription_expired`` and ``notification_due`` sent per user, only
        while a receiver of one of them is connected for this app: without one, a batch costs
        its statement and nothing per user in Python.
        """
        runtime = self._runtime
        self._plans.ensure_seeded()
        now = now or runtime.now()
        app = runtime.app
        records = ExpiryRecords(
            activity_type=SUBSCRIPTION_EXPIRED,
            title_template=EXPIRED_TITLE,
            plan_names={code: plan.name for code, plan in runtime.catalog.plans.items()},
            notify_since=self._notifications.expired_news_since(now),
            notify_pending=self._notifications.emails_enabled,
        )
        default_code = runtime.catalog.default_plan.code
        total = 0
        while True:
            per_user = signals.subscription_expired.has_receivers_for(app)
            notify = signals.notification_due.has_receivers_for(app)
            detailed = per_user or notify or signals.subscriptions_expired.has_receivers_for(app)
            with write_transaction(runtime.engine) as connection:
                batch = end_lapsed_batch(
                    connection,
                    now=now,
                    batch_size=batch_size,
                    default_plan=default_code,
                    records=records,
                    detailed=detailed,
                )
            if not batch.account_ids:
                return total
            total += len(batch.account_ids)
            runtime.cache.forget_accounts(batch.account_ids)
            if per_user:
                for lapsed, current in batch.pairs:
                    self._announce_expiry(lapsed, current, in_batch=True)
            signals.subscriptions_expired.send(
                app,
                user_ids=[
                    user for user in map(personal_user_id, batch.account_ids) if user is not None
                ],
                account_ids=batch.account_ids,
                expired=batch.pairs,
            )
            if notify:
                self._notifications.announce(self._expired_notices(batch, now))
            if after_batch is not None:
                after_batch()

    def count_lapsed(self, now: datetime | None = None) -> dict[SubscriptionStatus, int]:
        """How many current subscriptions ``expire_lapsed`` would end at ``now``, by their status
        (``active``, ``trial``, ``cancelled``): what a dry run reports."""
        with read_connection(self._runtime.engine) as connection:
            return count_lapsed(connection, now or self._runtime.now())

    # -- internals -----------------------------------------------------------------------------

    def _replace(
        self,
        account_id: str,
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
                previous = stored.lock_current(connection, account_id)
                now = self._runtime.now()
                changed = None
                if previous is not None and not previous.has_lapsed(now):
                    changed = self._change_locked(
                        connection, previous, plan, status, now, months=months, days=days
                    )
            if previous is not None and changed is not None:
                self._announce_change(account_id, previous, changed)
                return changed
            # No current subscription yet, one whose paid period is over, or (PostgreSQL) one that
            # a concurrent change replaced while this waited for it. current() creates the free
            # one or rolls the lapsed one over in transactions of its own (they write, and send
            # their signals after committing), then the change is decided again.
            self.current(account_id)
        raise SubscriptionConflictError(
            f"the subscription of account {account_id!r} kept changing; retry"
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
            return stored.extend_current(connection, previous.id, expires_at)
        return stored.replace_current(
            connection,
            previous.id,
            now=now,
            account_id=previous.account_id,
            plan_code=plan.code,
            status=status,
            expires_at=self._new_expiry(previous, plan, now, months=months, days=days),
        )

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
        self,
        subscription: Subscription,
        status: SubscriptionStatus,
        *,
        cancelled_at: datetime | None,
    ) -> Subscription | None:
        """Set the status of ``subscription`` if it is still the current one; None when a
        concurrent change replaced it (the caller decides again from the new one). Only status and
        ``cancelled_at`` change, so a concurrent extension of the same row composes with it."""
        with write_transaction(self._runtime.engine) as connection:
            if not stored.set_status(
                connection, subscription.id, status, cancelled_at=cancelled_at
            ):
                return None
            changed = stored.select_current(connection, subscription.account_id)
        assert changed is not None
        self._announce_change(subscription.account_id, subscription, changed)
        return changed

    def _create_default(self, account_id: str, now: datetime) -> Subscription:
        self._plans.ensure_seeded()
        default_code = self._runtime.catalog.default_plan.code
        with write_transaction(self._runtime.engine) as connection:
            created = stored.insert_default(connection, account_id, now, default_code)
            subscription = created or stored.select_current(connection, account_id)
        assert subscription is not None
        if created is not None:
            self._announce_change(account_id, None, subscription)
        return subscription

    def _roll_over(self, lapsed: Subscription) -> Subscription:
        runtime = self._runtime
        default_code = runtime.catalog.default_plan.code
        now = runtime.now()
        with write_transaction(runtime.engine) as connection:
            ended = stored.end_lapsed(connection, lapsed.id)
            for subscription in ended:
                stored.insert_default(
                    connection, subscription.account_id, subscription.expires_at, default_code
                )
            notices = self._notifications.claim_expired_in(connection, ended, now) if ended else []
            current = stored.select_current(connection, lapsed.account_id)
            # The feed's entry is written with the expiry, as a maintenance batch writes it.
            for subscription in ended:
                if subscription.user_id is None:
                    continue  # a team account has no activity feed
                type_, title, metadata, occurred_at = describe_expiry(
                    subscription, current, runtime.catalog
                )
                insert_entry(
                    connection,
                    user_id=subscription.user_id,
                    type=type_,
                    title=title,
                    metadata=metadata,
                    occurred_at=occurred_at or now,
                )
        assert current is not None
        for subscription in ended:  # empty when a concurrent request rolled it over first
            self._announce_expiry(subscription, current)
        self._notifications.announce(notices)
        return current

    def _expired_notices(self, batch: ExpiredBatch, now: datetime) -> list[Notification]:
        """The ``expired`` notifications a detailed batch claimed, as their signal carries them."""
        notices = []
        for lapsed, _current in batch.pairs:
            notice_id = batch.notice_ids.get(lapsed.account_id)
            if notice_id is not None and lapsed.expires_at is not None:
                notices.append(
                    self._notifications.claimed(
                        notice_id,
                        lapsed.account_id,
                        NotificationKind.EXPIRED,
                        str(lapsed.id),
                        lapsed.expires_at,
                        now,
                    )
                )
        return notices

    def _announce_change(
        self, account_id: str, previous: Subscription | None, current: Subscription
    ) -> None:
        self._runtime.cache.forget_account(account_id)
        signals.subscription_changed.send(
            self._runtime.app,
            user_id=personal_user_id(account_id),
            account_id=account_id,
            previous=previous,
            current=current,
        )

    def _announce_expiry(
        self, lapsed: Subscription, current: Subscription | None, *, in_batch: bool = False
    ) -> None:
        if not in_batch:  # a batch forgets all its users at once
            self._runtime.cache.forget_account(lapsed.account_id)
        signals.subscription_expired.send(
            self._runtime.app,
            user_id=lapsed.user_id,
            account_id=lapsed.account_id,
            subscription=lapsed,
            current=current,
            in_batch=in_batch,
        )
