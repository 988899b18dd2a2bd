"""Notifications: claimed once per (account, kind, subject, period, recipient), announced after
commit.

Eight kinds (``domain.notifications.NotificationKind``). ``quota_low`` and ``quota_blocked`` are
claimed by the charge or the refusal itself, in its own transaction (``services.quotas``);
``expired`` by the transaction that ends the subscription (``services.subscriptions``);
``renewal_failed`` by the declined renewal (``services.recurring``); ``cap_low`` and
``cap_reached`` by a team member's charge or refusal, for that member (``services.quotas``);
``seats_full`` by the invitation or new member that takes a team's last seat
(``services.accounts``); ``expiring`` only by the maintenance sweep. The sweeps also claim
``quota_low`` for usage that
reached the mark without a charge crossing it (a plan change lowered the limit). They look at
windows, not at exact days: whatever is relevant now and not yet claimed, so a maintenance that
did not run for months sends each notice that still applies once, and none that no longer does.

After the claiming transaction commits, each claimed notification is announced with the
``notification_due`` signal; when emails are on, its email is sent by the next maintenance run
(``services.mail``), with retries.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from .. import signals
from ..domain.catalog import MetricKind
from ..domain.notifications import Notification, NotificationKind, period_key
from ..domain.subscriptions import Subscription
from ..store import notifications as stored
from ..store.reservation import NoticeColumns
from ..store.transactions import read_connection, write_transaction
from .email_senders import EmailSenders
from .runtime import Runtime

AfterBatch = Callable[[], None]


@dataclass(frozen=True, slots=True)
class SweepResult:
    expiring: int = 0
    quota_low: int = 0


class NotificationService:
    def __init__(self, runtime: Runtime, senders: EmailSenders) -> None:
        self._runtime = runtime
        self._senders = senders

    @property
    def emails_enabled(self) -> bool:
        """Whether claimed notifications wait for an email (``pending``) or are done (``sent``):
        whether a sender is there at this claim."""
        return self._senders.enabled

    # -- claiming inside a caller's transaction ------------------------------------------------

    def claim_in(
        self,
        connection: Connection,
        account_id: str,
        kind: NotificationKind,
        subject: str,
        period: datetime,
        now: datetime,
        recipient_user_id: str | None = None,
    ) -> Notification | None:
        """Claim one notification in the caller's transaction; None when it was claimed before.
        ``recipient_user_id``: the one member it tells (a member's own cap), else the account's
        own recipients."""
        row = self.row(account_id, kind, subject, period, now, recipient_user_id)
        claimed = stored.claim_rows(connection, [row])
        return claimed[0] if claimed else None

    def claim_expired_in(
        self, connection: Connection, ended: Sequence[Subscription], now: datetime
    ) -> list[Notification]:
        """Claim ``expired`` for the subscriptions just ended in the caller's transaction, except
        those whose period ended too long ago to be news (``expired_news_since``)."""
        since = self.expired_news_since(now)
        rows = [
            self.row(
                subscription.account_id,
                NotificationKind.EXPIRED,
                str(subscription.id),
                subscription.expires_at,
                now,
            )
            for subscription in ended
            if subscription.expires_at is not None and subscription.expires_at >= since
        ]
        return stored.claim_rows(connection, rows)

    def expired_news_since(self, now: datetime) -> datetime:
        """``expired`` is claimed only for periods that ended at or after this moment: an expiry
        found long after the end is not news (BILLING_NOTIFY_EXPIRED_WITHIN_DAYS)."""
        return now - timedelta(days=self._runtime.settings.maintenance.notify_expired_within_days)

    def row(
        self,
        account_id: str,
        kind: NotificationKind,
        subject: str,
        period: datetime,
        now: datetime,
        recipient_user_id: str | None = None,
    ) -> dict[str, object]:
        return stored.new_row(
            account_id=account_id,
            kind=kind,
            subject=subject,
            period_key=period_key(period),
            now=now,
            pending=self.emails_enabled,
            recipient_user_id=recipient_user_id,
        )

    def charge_notice_columns(self, period_start: datetime, now: datetime) -> NoticeColumns:
        """What a one-statement charge writes into a ``quota_low`` or ``quota_blocked`` notice it
        claims for the usage period starting at ``period_start``."""
        row = self.row("", NotificationKind.QUOTA_LOW, "", period_start, now)
        return NoticeColumns(
            ratio=self._runtime.settings.quota_low_threshold,
            period_key=str(row["period_key"]),
            status=str(row["status"]),
            next_attempt_at=row["next_attempt_at"],  # type: ignore[arg-type]
            sent_at=row["sent_at"],  # type: ignore[arg-type]
        )

    def claimed(
        self,
        notification_id: int,
        account_id: str,
        kind: NotificationKind,
        subject: str,
        period: datetime,
        now: datetime,
    ) -> Notification:
        """A notification that a statement of its own claimed (the one-statement charge)."""
        values = self.row(account_id, kind, subject, period, now)
        return stored.to_notification_values(notification_id, values)

    def claim_now(
        self,
        account_id: str,
        kind: NotificationKind,
        subject: str,
        period: datetime,
        recipient_user_id: str | None = None,
    ) -> Notification | None:
        """Claim one notification in a transaction of its own (a gauge's refusal, a member's
        cap)."""
        now = self._runtime.now()
        with write_transaction(self._runtime.engine) as connection:
            return self.claim_in(
                connection, account_id, kind, subject, period, now, recipient_user_id
            )

    # -- announcing ----------------------------------------------------------------------------

    def announce(self, claimed: Sequence[Notification]) -> None:
        """Send ``notification_due`` for each notification claimed by a committed transaction."""
        if not claimed or not signals.notification_due.receivers:
            return
        app = self._runtime.app
        for notification in claimed:
            signals.notification_due.send(app, **notification.as_signal_arguments())

    # -- the sweeps ----------------------------------------------------------------------------

    def sweep(
        self,
        now: datetime,
        *,
        batch_size: int,
        dry_run: bool = False,
        after_batch: AfterBatch | None = None,
    ) -> SweepResult:
        """Claim and announce the ``expiring`` and ``quota_low`` notifications due at ``now`` that
        nobody claimed yet, in batches; with ``dry_run``, only count them."""
        maintenance = self._runtime.settings.maintenance
        until = now + timedelta(days=maintenance.notify_expiring_days)
        pending = self.emails_enabled
        # Each batch of the expiring sweep starts behind the last subscription claimed before it.
        claimed_up_to: list[tuple[datetime, int]] = []

        def expiring(connection: Connection) -> object:
            return stored.expiring_candidates(
                connection,
                now=now,
                until=until,
                pending=pending,
                batch_size=batch_size,
                after=claimed_up_to[-1] if claimed_up_to else None,
            )

        def expiring_claimed(claimed: Sequence[Notification]) -> None:
            claimed_up_to.append(max((n.period_moment, int(n.subject)) for n in claimed))

        def quota_low(connection: Connection) -> object:
            return stored.quota_low_candidates(
                connection,
                now=now,
                marks=self._marks(),
                default_plan=self._runtime.catalog.default_plan.code,
                pending=pending,
                batch_size=batch_size,
            )

        return SweepResult(
            expiring=self._sweep_one(expiring, dry_run, after_batch, expiring_claimed),
            quota_low=self._sweep_one(quota_low, dry_run, after_batch),
        )

    def _sweep_one(
        self,
        candidates: Callable[[Connection], object],
        dry_run: bool,
        after_batch: AfterBatch | None,
        on_claimed: Callable[[Sequence[Notification]], None] | None = None,
    ) -> int:
        engine = self._runtime.engine
        if dry_run:
            with read_connection(engine) as connection:
                selected = candidates(connection)
                return 0 if selected is None else stored.count_selected(connection, selected)
        total = 0
        while True:
            with write_transaction(engine) as connection:
                selected = candidates(connection)
                claimed = [] if selected is None else stored.claim_selected(connection, selected)
            if not claimed:
                return total
            total += len(claimed)
            if on_claimed is not None:
                on_claimed(claimed)
            self.announce(claimed)
            if after_batch is not None:
                after_batch()

    def _marks(self) -> dict[tuple[str, str], int]:
        """(plan, metric) -> the usage at which ``quota_low`` is due, for every limited periodic
        metric of every plan (the rule of ``domain.limits.crossed_threshold``)."""
        catalog = self._runtime.catalog
        ratio = self._runtime.settings.quota_low_threshold
        marks: dict[tuple[str, str], int] = {}
        for plan in catalog.plans.values():
            for metric in catalog.metrics.values():
                if metric.kind is not MetricKind.PERIODIC:
                    continue
                limit = plan.limit_for(metric.name)
                if limit is not None and limit > 0:
                    marks[(plan.code, metric.name)] = math.ceil(limit * ratio)
        return marks
