"""What happens to a user's plan after a payment: the grant, the end of a refunded period, and the
recurring arrangements that renew it.

- **Grant**: a confirmed payment puts the user on its plan for its months (extending the plan
  they are on), then the payment is ``succeeded``.
- **Refunds and chargebacks** end the paid period the payment bought, as
  BILLING_REFUND_ENDS_PERIOD says: ``immediately`` (back to the default plan now, through a plan
  change) or ``at_period_end`` (the subscription is cancelled: kept until its end, then the
  default plan). Only while the user is still on the payment's plan: a user who moved to another
  plan since keeps it (the refund is logged). The payment's arrangement renews no more.
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
from typing import Any
from uuid import uuid4

from sqlalchemy import Connection, Row

from .. import signals
from ..domain.notifications import Notification, NotificationKind
from ..domain.subscriptions import Subscription, SubscriptionStatus
from ..errors import BillingError
from ..payments.providers import (
    PAYMENT_CANCELLED,
    PAYMENT_SUCCEEDED,
    PaymentIntent,
    ProviderEvent,
    RecurringCanceller,
    SavedMethodCharger,
)
from ..store import payments as stored_payments
from ..store import recurring as stored
from ..store import subscriptions as stored_subscriptions
from ..store.transactions import read_connection, write_transaction
from .notifications import NotificationService
from .payments import PaymentService, PaymentStatus
from .runtime import Runtime
from .subscriptions import SubscriptionService

log = logging.getLogger(__name__)

AfterBatch = Callable[[], None]
REFUND_IMMEDIATELY = "immediately"
REFUND_AT_PERIOD_END = "at_period_end"
_MAX_IDEMPOTENCE_KEY = 64  # YooKassa's limit on an Idempotence-Key
REVERSED_STATUSES = frozenset([PaymentStatus.REFUNDED.value, PaymentStatus.CHARGED_BACK.value])


def renewal_key(user_id: str, period_end: datetime) -> str:
    """The idempotence key of the renewal of ``user_id``'s period ending at ``period_end``:
    ``renewal-<user>-<period end in Unix seconds>`` (the user id hashed when the key would be
    longer than providers accept)."""
    seconds = int(period_end.timestamp())
    key = f"renewal-{user_id}-{seconds}"
    if len(key) > _MAX_IDEMPOTENCE_KEY:
        key = f"renewal-{hashlib.sha256(user_id.encode()).hexdigest()[:32]}-{seconds}"
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
    ) -> None:
        self._runtime = runtime
        self._subscriptions = subscriptions
        self._payments = payments
        self._notifications = notifications

    @property
    def renews_at_providers(self) -> bool:
        """Whether a configured provider renews arrangements on its side (Stripe)."""
        return any(
            isinstance(self._payments.provider_named(name), RecurringCanceller)
            for name in self._payments.provider_names
        )

    # -- inside a webhook's transaction --------------------------------------------------------

    def remember(
        self, connection: Connection, provider_name: str, payment: Row[Any], event: ProviderEvent
    ) -> list[Row[Any]]:
        """Keep what a confirmation of our ``payment`` tells about its references: the id its
        refunds will name, and the recurring arrangement it set up (a Stripe subscription, a
        saved YooKassa method), recorded with the payment's plan, months, amount and currency.
        The user's earlier arrangements with the provider end: the arrangements this replaced,
        for ``end_replaced`` once the transaction is committed."""
        now = self._runtime.now()
        recurring_id = None
        replaced: list[Row[Any]] = []
        if event.recurring_reference is not None:
            row = stored.insert_once(
                connection,
                {
                    "id": uuid4().hex,
                    "user_id": payment.user_id,
                    "provider": provider_name,
                    "reference": event.recurring_reference,
                    "customer_reference": event.customer_reference,
                    "plan_code": payment.plan_code,
                    "months": payment.months,
                    "amount": payment.amount,
                    "currency": payment.currency,
                    "status": stored.ACTIVE,
                    "last_event_at": None,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            if row.user_id == payment.user_id:
                recurring_id = row.id
                replaced = stored.end_others(
                    connection, payment.user_id, provider_name, row.id, now
                )
        stored_payments.set_references(
            connection,
            payment.id,
            refund_reference=event.refund_reference,
            recurring_id=recurring_id,
        )
        return replaced

    def end_replaced(self, replaced: list[Row[Any]]) -> None:
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

    # -- after a webhook's transaction ---------------------------------------------------------

    def grant(self, payment: Row[Any]) -> Subscription:
        """Give the paid plan, after the claim (delivery 'processed', payment pending -> paid) is
        committed.

        ``change_plan`` runs its own transactions (with retries and signals), so it cannot share the
        claim's. Claim first, grant second: once the claim is committed nothing else can reach
        this line for the payment, so a plan is granted at most once even if the process dies
        anywhere. The opposite order could grant twice (a crash after the grant, then a retry). The
        price of this order is a payment left ``paid`` by a crash in between: confirmed, not yet
        granted, visible in ``billing_payments``, and granted by hand. A refund that arrived while
        the grant ran (the payment is no longer ``paid``) ends the period just granted.
        """
        subscription = self._subscriptions.change_plan(
            payment.user_id, payment.plan_code, payment.months
        )
        with write_transaction(self._runtime.engine) as connection:
            settled = stored_payments.move(
                connection,
                payment.id,
                PaymentStatus.PAID.value,
                PaymentStatus.SUCCEEDED.value,
                self._runtime.now(),
                reason=f"{payment.plan_code} granted for {payment.months} months",
            )
            current = stored_payments.get_payment(connection, payment.id) if not settled else None
        if current is not None and current.status in REVERSED_STATUSES:
            log.warning("payment %s was %s while its plan was granted", payment.id, current.status)
            return self.end_paid_period(current)
        log.info(
            "payment %s settled: user %r is on %r for %s months",
            payment.id,
            payment.user_id,
            payment.plan_code,
            payment.months,
        )
        return subscription

    def end_paid_period(self, payment: Row[Any]) -> Subscription:
        """End the paid period a refunded or charged-back ``payment`` bought, as
        BILLING_REFUND_ENDS_PERIOD says, and stop its arrangement renewing."""
        at_period_end = self._runtime.settings.payments.refund_ends_period == REFUND_AT_PERIOD_END
        self._stop_recurring_of(payment, at_period_end)
        user_id = payment.user_id
        current = self._subscriptions.current(user_id)
        if current.plan_code != payment.plan_code or current.expires_at is None:
            log.warning(
                "payment %s was %s but user %r is no longer on %r: the plan is left alone",
                payment.id,
                payment.status,
                user_id,
                payment.plan_code,
            )
            return current
        if at_period_end:
            if current.status is SubscriptionStatus.CANCELLED:
                return current
            return self._subscriptions.cancel(user_id)
        return self._subscriptions.change_plan(user_id, self._runtime.catalog.default_plan.code)

    def renewal_failed(self, payment: Row[Any]) -> Notification | None:
        """A renewal ``payment`` was declined (it just left ``pending``): extend the period by the
        grace, once, stop charging the method, and notify the user."""
        now = self._runtime.now()
        grace = timedelta(days=self._runtime.settings.payments.renewal_grace_days)
        previous = changed = None
        with write_transaction(self._runtime.engine) as connection:
            if payment.recurring_id is not None:
                stored.set_status(connection, payment.recurring_id, stored.FAILED, now)
            current = stored_subscriptions.lock_current(connection, payment.user_id)
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
                payment.user_id,
                NotificationKind.RENEWAL_FAILED,
                payment.id,
                period_end,
                now,
            )
        if changed is not None:
            self._runtime.cache.forget_user(payment.user_id)
            signals.subscription_changed.send(
                self._runtime.app, user_id=payment.user_id, previous=previous, current=changed
            )
        log.warning(
            "renewal %s of user %r was declined: %s",
            payment.id,
            payment.user_id,
            "the period is extended by the grace" if changed else "no grace given",
        )
        self._notifications.announce([notice] if notice else [])
        return notice

    # -- recurring events (Stripe subscriptions) -----------------------------------------------

    def follow_schedule(self, recurring: Row[Any], status: str) -> Subscription | None:
        """Make the user's subscription follow the arrangement's new ``status`` (already stored):
        ``cancelling`` and ``ended`` cancel it (kept until its period ends), ``active`` resumes a
        cancelled one. Only while the user is on the arrangement's plan."""
        user_id = recurring.user_id
        current = self._subscriptions.current(user_id)
        if current.plan_code != recurring.plan_code or current.expires_at is None:
            return None
        try:
            if status in (stored.CANCELLING, stored.ENDED):
                if current.status is SubscriptionStatus.CANCELLED:
                    return current
                return self._subscriptions.cancel(user_id)
            if current.status is SubscriptionStatus.CANCELLED:
                return self._subscriptions.resume(user_id)
        except BillingError:  # lapsed or changed meanwhile: nothing left to follow
            log.info("subscription of user %r did not follow arrangement %s", user_id, recurring.id)
            return None
        return current

    def on_subscription_changed(
        self, user_id: str, previous: Subscription | None, current: Subscription
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
        source, target = (
            (stored.ACTIVE, stored.CANCELLING) if cancelled else (stored.CANCELLING, stored.ACTIVE)
        )
        now = self._runtime.now()
        with write_transaction(self._runtime.engine) as connection:
            moved: list[tuple[RecurringCanceller, Row[Any]]] = []
            for row in stored.of_user(connection, user_id, [source]):
                canceller = self._payments.provider_named(row.provider)
                if row.plan_code != current.plan_code or not isinstance(
                    canceller, RecurringCanceller
                ):
                    continue
                if stored.set_status(connection, row.id, target, now, only_from=[source]):
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

    def _stop_recurring_of(self, payment: Row[Any], at_period_end: bool) -> None:
        if payment.recurring_id is None:
            return
        now = self._runtime.now()
        with write_transaction(self._runtime.engine) as connection:
            row = stored.get(connection, payment.recurring_id)
            if row is None or not stored.set_status(connection, row.id, stored.ENDED, now):
                return
        provider = self._payments.provider_named(row.provider)
        if not isinstance(provider, RecurringCanceller):
            return  # a saved method: maintenance no longer charges an ended arrangement
        try:
            if at_period_end:
                provider.schedule_recurring_end(row.reference, at_period_end=True)
            else:
                provider.end_recurring_now(row.reference)
        except Exception:
            log.exception("could not end arrangement %s with %r", row.id, row.provider)

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
                outcome = self._renew(candidate, chargers[candidate.provider], now)
                charged += outcome == PAYMENT_SUCCEEDED
                declined += outcome == PAYMENT_CANCELLED
            if after_batch is not None and not dry_run:
                after_batch()

    def _renew(
        self, candidate: Row[Any], provider: SavedMethodCharger, now: datetime
    ) -> str | None:
        """Charge one renewal, unless another run has it; what came of it (a payment event
        type), or None when it is not this run's or the provider will say later."""
        key = renewal_key(candidate.user_id, candidate.expires_at)
        payment_id = renewal_payment_id(key)
        values = {
            "id": payment_id,
            "user_id": candidate.user_id,
            "provider": candidate.provider,
            "provider_payment_id": None,
            "plan_code": candidate.plan_code,
            "months": candidate.months,
            "amount": candidate.amount,
            "currency": candidate.currency,
            "status": PaymentStatus.PENDING.value,
            "created_at": now,
            "settled_at": None,
            "recurring_id": candidate.recurring_id,
        }
        with write_transaction(self._runtime.engine) as connection:
            if not stored_payments.insert_payment_once(connection, values):
                return None  # charged (or being charged) by another run
        plan = self._runtime.catalog.plans.get(candidate.plan_code)
        intent = PaymentIntent(
            id=payment_id,
            user_id=candidate.user_id,
            plan_code=candidate.plan_code,
            plan_name=plan.name if plan is not None else candidate.plan_code,
            months=candidate.months,
            amount=candidate.amount,
            currency=candidate.currency,
            customer_email=self._payments.email_of(candidate.user_id),
        )
        try:
            charge = provider.charge_saved_method(intent, candidate.reference, key)
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
                PaymentStatus.PENDING.value,
                target.value,
                now,
                settle=True,
                provider_event_id=event_id,
                reason="renewal",
            )
        if not moved:
            return None  # the provider's notification settled it first
        if target is PaymentStatus.PAID:
            self.grant(payment)
            return PAYMENT_SUCCEEDED
        self.renewal_failed(payment)
        return PAYMENT_CANCELLED
