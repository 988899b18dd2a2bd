"""Maintenance: the one entry point that makes stored state catch up and sends the notifications.

``run`` serves ``billing.run_maintenance()``, ``flask billing maintenance`` and the scheduler. In
order: charge the saved payment methods of the paid periods ending soon (renewals); end the
subscriptions whose paid period, trial or cancelled period is over and start the free ones;
delete expired idempotency keys; delete what is older than BILLING_RETENTION_DAYS; claim the
notifications due (``expiring``, and ``quota_low`` that no charge claimed); send the emails
waiting. Every step works in set-based batches, each its own transaction, so memory stays flat and
an interrupted run leaves nothing half done; a run can be repeated at any time.

Correctness never depends on it: status and quota periods are derived from timestamps whenever
they are read. ``run_if_due`` is the scheduler's: it runs only with the job's lease, so any number
of workers with a scheduler run each tick once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..domain.subscriptions import SubscriptionStatus
from ..store import retention
from ..store.transactions import read_connection, write_transaction
from .idempotency import IdempotencyService
from .leases import JobLeases, LeaseLost
from .mail import MailService
from .notifications import NotificationService, SweepResult
from .recurring import RecurringService
from .runtime import Runtime
from .subscriptions import SubscriptionService

log = logging.getLogger(__name__)

JOB_NAME = "maintenance"
AfterBatch = Callable[[], None]


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    """What one run did, or with ``dry_run`` what it would do."""

    now: datetime
    dry_run: bool
    lapsed: dict[SubscriptionStatus, int]
    """Current subscriptions found over at the start, by stored status: ``active`` (a paid
    period), ``cancelled`` (cancelled at the period's end), ``trial``."""
    ended: int
    """Subscriptions ended, each followed by a free one (a dry run ends none)."""
    idempotency_keys: int
    pruned: dict[str, int] = field(default_factory=dict)
    """Rows older than the retention, by table; empty when BILLING_RETENTION_DAYS is None."""
    notifications: SweepResult = field(default_factory=SweepResult)
    emails_sent: int = 0
    emails_failed: int = 0
    emails_uncertain: int = 0
    """Emails found taken for sending and never recorded (a run died or stalled mid-batch):
    they may or may not have gone out, and are not sent again (``uncertain``)."""
    emails_resent: int = 0
    """The same, due again because BILLING_EMAIL_RESEND_UNCERTAIN is on."""
    renewals_charged: int = 0
    """Saved payment methods charged for the periods ending soon (a dry run: how many are due)."""
    renewals_declined: int = 0


class MaintenanceService:
    def __init__(
        self,
        runtime: Runtime,
        subscriptions: SubscriptionService,
        idempotency: IdempotencyService,
        notifications: NotificationService,
        leases: JobLeases,
        mail: MailService,
        recurring: RecurringService,
    ) -> None:
        self._runtime = runtime
        self._subscriptions = subscriptions
        self._idempotency = idempotency
        self._notifications = notifications
        self._leases = leases
        self._mail = mail
        self._recurring = recurring

    def run(
        self,
        now: datetime | None = None,
        *,
        dry_run: bool = False,
        after_batch: AfterBatch | None = None,
        keep_lease: AfterBatch | None = None,
    ) -> MaintenanceReport:
        """Run every step at ``now`` (the clock's time by default); with ``dry_run``, change
        nothing and report what would change. ``after_batch`` runs after every batch written;
        ``keep_lease`` before every email sent (raising ``LeaseLost`` stops the run there)."""
        now = now or self._runtime.now()
        settings = self._runtime.settings.maintenance
        batch_size = settings.batch_size
        # Before the expiry, so a period renewed now does not lapse in this very run.
        renewed, declined = self._recurring.renew_due(now, batch_size, after_batch, dry_run)
        lapsed = self._subscriptions.count_lapsed(now)
        ended = 0
        if not dry_run and lapsed:
            ended = self._subscriptions.expire_lapsed(batch_size, now=now, after_batch=after_batch)
        keys = self._idempotency.prune_expired(now, dry_run=dry_run)
        pruned = self._prune(now, batch_size, dry_run, after_batch)
        swept = self._notifications.sweep(
            now, batch_size=batch_size, dry_run=dry_run, after_batch=after_batch
        )
        emails = self._mail.send_due(now, after_batch, dry_run, keep_lease)
        report = MaintenanceReport(
            now=now,
            dry_run=dry_run,
            lapsed=lapsed,
            ended=ended,
            idempotency_keys=keys,
            pruned=pruned,
            notifications=swept,
            emails_sent=emails.sent,
            emails_failed=emails.failed,
            emails_uncertain=emails.uncertain,
            emails_resent=emails.resent,
            renewals_charged=renewed,
            renewals_declined=declined,
        )
        log.info(
            "billing maintenance %s",
            "dry run" if dry_run else "run",
            extra={"ended": ended, "notifications": swept.expiring + swept.quota_low},
        )
        return report

    def run_if_due(self) -> MaintenanceReport | None:
        """Run with the maintenance job's lease, if the job is due and nobody else runs it; None
        when skipped. The lease is renewed after every batch, and before an email when a third of it
        has passed; it is released at the end."""
        settings = self._runtime.settings.maintenance
        # Due again a little before the interval is over, so that a worker whose clock or timer
        # runs slightly early does not skip a whole interval.
        every = max(1, settings.interval_seconds - max(1, settings.interval_seconds // 10))
        lease = self._leases.claim(
            JOB_NAME, every_seconds=every, lease_seconds=settings.lease_seconds
        )
        if lease is None:
            return None
        try:
            return self.run(after_batch=lease.renew, keep_lease=lease.keep)
        except LeaseLost:
            log.warning("billing maintenance stopped: its lease ran out and was taken over")
            return None
        finally:
            try:
                lease.release()
            except Exception:  # the lease then runs out on its own
                log.exception("could not release the maintenance lease")

    def _prune(
        self, now: datetime, batch_size: int, dry_run: bool, after_batch: AfterBatch | None
    ) -> dict[str, int]:
        days = self._runtime.settings.maintenance.retention_days
        if days is None:
            return {}
        before = now - timedelta(days=days)
        engine = self._runtime.engine
        pruned: dict[str, int] = {}
        for prunable in retention.PRUNABLE:
            if dry_run:
                with read_connection(engine) as connection:
                    pruned[prunable.name] = retention.count_older(connection, prunable, before)
                continue
            total = 0
            while True:
                with write_transaction(engine) as connection:
                    deleted = retention.prune_batch(connection, prunable, before, batch_size)
                total += deleted
                if deleted and after_batch is not None:
                    after_batch()
                if deleted < batch_size:
                    break
            pruned[prunable.name] = total
        return pruned
