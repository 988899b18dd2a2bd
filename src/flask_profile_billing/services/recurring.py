"""The recurring arrangements that renew a user's plan (the grant of each payment, first or
renewal, is ``services.payment_grants``).

- **Recurring arrangements** (``billing_recurring``): a Stripe subscription renews on Stripe's
  side, and its paid invoices extend the period (``services.webhooks``); a payment method YooKassa
  saved is charged by maintenance (``renew_due``) BILLING_RENEWAL_LEAD_HOURS before the period
  ends. Plan, months, amount and currency of a renewal are the arrangement's, copied from the
  first payment, never a webhook's.
- **Renewals are charged at most once** per user and period end: the renewal's payment row has an
  id derived from the key ``renewal-<user>-<period end>``, and only the run whose insert wins
  calls the provider, with that key as the provider's idempotence key.
- **A declined renewal** gives BILLING_RENEWAL_GRACE_DAYS more days, once (the payment leaves
  ``pending`` once), claims a ``renewal_failed`` notification, and the method is not charged
  again: when the grace is over the subscription lapses to the default plan as usual.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from .. import signals
from ..domain.accounts import personal_user_id
from ..domain.notifications import Notification, NotificationKind
from ..domain.payments import (
    Arrangement,
    ArrangementStatus,
    Payment,
    PaymentStatus,
    arrangement_sources,
    renewal_of,
)
from ..domain.subscriptions import Subscription, SubscriptionStatus
from ..errors import BillingError
from ..payments.providers import (
    PAYMENT_CANCELLED,
    PAYMENT_SUCCEEDED,
    PaymentIntent,
    RecurringCanceller,
    SavedMethodCharger,
)
from ..store import payments as stored_payments
from ..store import recurring as stored
from ..store import subscriptions as stored_subscriptions
from ..store.recurring import RenewalCandidate
from ..store.transactions import read_connection, write_transaction
from .notifications import NotificationService
from .payment_grants import PaymentGrantService
from .payments import PaymentService
from .runtime import Runtime
from .subscriptions import SubscriptionService

log = logging.getLogger(__name__)

AfterBatch = Callable[[], None]
_MAX_IDEMPOTENCE_KEY = 64  # YooKassa's limit on an Idempotence-Key


def renewal_key(account_id: str, period_end: datetime) -> str:
    """The idempotence key of the renewal of ``account_id``'s period ending at ``period_end``:
    ``renewal-<user>-<period end in Unix seconds>`` (the user id hashed when the key would be
    longer than providers accept)."""
    seconds = int(period_end.timestamp())
    key = f"renewal-{account_id}-{seconds}"
    if len(key) > _MAX_IDEMPOTENCE_KEY:
        key = f"renewal-{hashlib.sha256(account_id.encode()).hexdigest()[:32]}-{seconds}"
    return key


def renewal_payment_id(key: str) -> str:
    """Our payment id of the renewal of ``key``: the same for every run, so one insert wins."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class RecurringService:
    def __init__(
        self,
        runtime: Runtime,
        subscriptions: SubscriptionService,
        payments: PaymentService,
        notifications: NotificationService,
        grants: PaymentGrantService,
    ) -> None:
        self._runtime = runtime
        self._subscriptions = subscriptions
        self._payments = payments
        self._notifications = notifications
        self._grants = grants

    @property
    def renews_at_providers(self) -> bool:
        """Whether a configured provider renews arrangements on its side (Stripe)."""
        return any(
            isinstance(self._payments.provider_named(name), RecurringCanceller)
            for name in self._payments.provider_names
        )

    # -- after a webhook's transaction ---------------------------------------------------------

    def end_replaced(self, replaced: list[Arrangement]) -> None:
        """Stop the provider renewing arrangements a newer one replaced (a user who subscribed
        to another plan is not charged for the old one as well)."""
        for row in replaced:
            provider = self._payments.provider_named(row.provider)
            if not isinstance(provider, RecurringCanceller):
                continue  # a saved method: nothing renews it but maintenance
            try:
                provider.end_recurring_now(row.reference)
            except Exception:
                log.exception("could not end replaced arrangement %s with %r", row.id, row.provider)

    def renewal_failed(self, payment: Payment) -> Notification | None:
        """A renewal ``payment`` was declined (it just left ``pending``): extend the period by the
        grace, once, stop charging the method, and notify the user."""
        now = self._runtime.now()
        grace = timedelta(days=self._runtime.settings.payments.renewal_grace_days)
        previous = changed = None
        with write_transaction(self._runtime.engine) as connection:
            if payment.recurring_id is not None:
                failed = ArrangementStatus.FAILED
                stored.move(
                    connection, payment.recurring_id, arrangement_sources(failed), failed, now
                )
            current = stored_subscriptions.lock_current(connection, payment.account_id)
            period_end = now
            if (
                current is not None
                and current.plan_code == payment.plan_code
                and current.expires_at is not None
                and not current.has_lapsed(now)
            ):
                period_end = current.expires_at
                if grace:
                    previous = current
                    changed = stored_subscriptions.extend_current(
                        connection, current.id, current.expires_at + grace
                    )
            notice = self._notifications.claim_in(
                connection,
                payment.account_id,
                NotificationKind.RENEWAL_FAILED,
                payment.id,
                period_end,
                now,
            )
        if changed is not None:
            self._runtime.cache.forget_account(payment.account_id)
            signals.subscription_changed.send(
                self._runtime.app,
                user_id=personal_user_id(payment.account_id),
                account_id=payment.account_id,
                previous=previous,
                current=changed,
            )
        log.warning(
            "renewal %s of account %r was declined: %s",
            payment.id,
            payment.account_id,
            "the period is extended by the grace" if changed else "no grace given",
        )
        self._notifications.announce([notice] if notice else [])
        return notice

    # -- recurring events (Stripe subscriptions) -----------------------------------------------

    def follow_schedule(
        self, recurring: Arrangement, status: ArrangementStatus
    ) -> Subscription | None:
        """Make the user's subscription follow the arrangement's new ``status`` (already stored):
        ``cancelling`` and ``ended`` cancel it (kept until its period ends), ``active`` resumes a
        cancelled one. Only while the user is on the arrangement's plan."""
        account_id = recurring.account_id
        current = self._subscriptions.current(account_id)
        if current.plan_code != recurring.plan_code or current.expires_at is None:
            return None
        try:
            if status in (ArrangementStatus.CANCELLING, ArrangementStatus.ENDED):
                if current.status is SubscriptionStatus.CANCELLED:
                    return current
                return self._subscriptions.cancel(account_id)
            if current.status is SubscriptionStatus.CANCELLED:
                return self._subscriptions.resume(account_id)
        except BillingError:  # lapsed or changed meanwhile: nothing left to follow
            log.info(
                "subscription of user %r did not follow arrangement %s", account_id, recurring.id
            )
            return None
        return current

    def on_subscription_changed(
        self, account_id: str, previous: Subscription | None, current: Subscription
    ) -> None:
        """Tell the provider when the user cancels or resumes here, so that a Stripe subscription
        stops (or goes on) renewing: without it Stripe would charge a user who cancelled."""
        if previous is None or previous.id != current.id:
            return
        cancelled = (
            previous.status is not SubscriptionStatus.CANCELLED
            and current.status is SubscriptionStatus.CANCELLED
        )
        resumed = (
            previous.status is SubscriptionStatus.CANCELLED
            and current.status is SubscriptionStatus.ACTIVE
        )
        if not (cancelled or resumed):
            return
        active, cancelling = ArrangementStatus.ACTIVE, ArrangementStatus.CANCELLING
        source, target = (active, cancelling) if cancelled else (cancelling, active)
        now = self._runtime.now()
        with write_transaction(self._runtime.engine) as connection:
            moved: list[tuple[RecurringCanceller, Arrangement]] = []
            for row in stored.of_account(connection, account_id, [source]):
                canceller = self._payments.provider_named(row.provider)
                if row.plan_code != current.plan_code or not isinstance(
                    canceller, RecurringCanceller
                ):
                    continue
                if stored.move(connection, row.id, [source], target, now):
                    moved.append((canceller, row))
        for provider, row in moved:
            try:
                provider.schedule_recurring_end(row.reference, at_period_end=cancelled)
            except Exception:
                log.exception(
                    "could not tell %r that arrangement %s is %s",
                    row.provider,
                    row.id,
                    "cancelled" if cancelled else "resumed",
                )

    # -- the maintenance step: charging saved methods ------------------------------------------

    def renew_due(
        self,
        now: datetime,
        batch_size: int,
        after_batch: AfterBatch | None,
        dry_run: bool,
    ) -> tuple[int, int]:
        """Charge the saved payment methods of the active subscriptions whose period ends within
        BILLING_RENEWAL_LEAD_HOURS; (renewals charged, renewals declined). With ``dry_run``, (how
        many are due, 0)."""
        chargers: dict[str, SavedMethodCharger] = {}
        for name in self._payments.provider_names:
            provider = self._payments.provider_named(name)
            if isinstance(provider, SavedMethodCharger):
                chargers[name] = provider
        if not chargers:
            return 0, 0
        until = now + timedelta(hours=self._runtime.settings.payments.renewal_lead_hours)
        charged = declined = 0
        after_id = 0
        while True:
            with read_connection(self._runtime.engine) as connection:
                due = stored.renewal_candidates(
                    connection,
                    providers=list(chargers),
                    now=now,
                    until=until,
                    after_subscription_id=after_id,
                    batch_size=batch_size,
                )
            if not due:
                return charged, declined
            after_id = due[-1].subscription_id
            for candidate in due:
                if dry_run:
                    charged += 1
                    continue
                outcome = self._renew(candidate, chargers[candidate.arrangement.provider], now)
                charged += outcome == PAYMENT_SUCCEEDED
                declined += outcome == PAYMENT_CANCELLED
            if after_batch is not None and not dry_run:
                after_batch()

    def _renew(
        self, candidate: RenewalCandidate, provider: SavedMethodCharger, now: datetime
    ) -> str | None:
        """Charge one renewal, unless another run has it; what came of it (a payment event
        type), or None when it is not this run's or the provider will say later."""
        arrangement = candidate.arrangement
        key = renewal_key(arrangement.account_id, candidate.expires_at)
        payment_id = renewal_payment_id(key)
        renewal = renewal_of(arrangement, payment_id, now)
        with write_transaction(self._runtime.engine) as connection:
            if not stored_payments.insert_payment_once(connection, renewal):
                return None  # charged (or being charged) by another run
        plan = self._runtime.catalog.plans.get(renewal.plan_code)
        intent = PaymentIntent(
            id=payment_id,
            account_id=renewal.account_id,
            plan_code=renewal.plan_code,
            plan_name=plan.name if plan is not None else renewal.plan_code,
            months=renewal.months,
            amount=renewal.amount,
            currency=renewal.currency,
            customer_email=self._payments.email_of(renewal.account_id),
        )
        try:
            charge = provider.charge_saved_method(intent, arrangement.reference, key)
        except Exception:
            # Whether the provider charged is unknown: the payment stays pending, and the
            # provider's notification settles it if it did (its idempotence key made it once).
            log.exception("renewal %s of user %r could not be charged", payment_id, key)
            return None
        with write_transaction(self._runtime.engine) as connection:
            stored_payments.set_provider_payment_id(
                connection, payment_id, charge.provider_payment_id
            )
            payment = stored_payments.get_payment(connection, payment_id)
            assert payment is not None
            event_id = f"{charge.provider_payment_id}:{charge.status}"
            if charge.status == PAYMENT_SUCCEEDED:
                if (charge.amount, charge.currency) != (payment.amount, payment.currency):
                    stored_payments.record_event(
                        connection,
                        payment_id,
                        payment.status,
                        payment.status,
                        now,
                        provider_event_id=event_id,
                        reason=f"rejected: paid {charge.amount} {charge.currency}, expected "
                        f"{payment.amount} {payment.currency}",
                    )
                    log.warning("renewal %s: the provider charged another amount", payment_id)
                    return None
                target = PaymentStatus.PAID
            elif charge.status == PAYMENT_CANCELLED:
                target = PaymentStatus.CANCELLED
            else:
                return None  # pending at the provider: its notification settles it
            moved = stored_payments.move(
                connection,
                payment_id,
                PaymentStatus.PENDING,
                target,
                now,
                settle=True,
                provider_event_id=event_id,
                reason="renewal",
            )
        if not moved:
            return None  # the provider's notification settled it first
        if target is PaymentStatus.PAID:
            self._grants.grant(payment)
            return PAYMENT_SUCCEEDED
        self.renewal_failed(payment)
        return PAYMENT_CANCELLED
