"""What a payment does to the user's plan: every confirmed payment is granted here, and every
refunded or charged-back one has its paid period ended here.

- **Grant**: a confirmed (``paid``) payment puts the user on its plan for its months (extending
  the plan they are on), then the payment is ``succeeded``. First payments and renewals alike,
  whether a webhook or maintenance confirmed them.
- **Refunds and chargebacks** end the paid period the payment bought, as
  BILLING_REFUND_ENDS_PERIOD says: ``immediately`` (back to the default plan now, through a plan
  change) or ``at_period_end`` (the subscription is cancelled: kept until its end, then the
  default plan). Only while the user is still on the payment's plan: a user who moved to another
  plan since keeps it (the refund is logged). The payment's arrangement renews no more.
"""

from __future__ import annotations

import logging

from ..domain.payments import (
    REVERSED_STATUSES,
    ArrangementStatus,
    Payment,
    PaymentStatus,
    arrangement_sources,
)
from ..domain.subscriptions import Subscription, SubscriptionStatus
from ..payments.providers import RecurringCanceller
from ..store import payments as stored_payments
from ..store import recurring as stored_recurring
from ..store.transactions import write_transaction
from .payments import PaymentService
from .runtime import Runtime
from .subscriptions import SubscriptionService

log = logging.getLogger(__name__)

REFUND_AT_PERIOD_END = "at_period_end"


class PaymentGrantService:
    def __init__(
        self, runtime: Runtime, subscriptions: SubscriptionService, payments: PaymentService
    ) -> None:
        self._runtime = runtime
        self._subscriptions = subscriptions
        self._payments = payments

    def grant(self, payment: Payment) -> Subscription:
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
            payment.account_id, payment.plan_code, payment.months
        )
        with write_transaction(self._runtime.engine) as connection:
            settled = stored_payments.move(
                connection,
                payment.id,
                PaymentStatus.PAID,
                PaymentStatus.SUCCEEDED,
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
            payment.account_id,
            payment.plan_code,
            payment.months,
        )
        return subscription

    def end_paid_period(self, payment: Payment) -> Subscription:
        """End the paid period a refunded or charged-back ``payment`` bought, as
        BILLING_REFUND_ENDS_PERIOD says, and stop its arrangement renewing."""
        at_period_end = self._runtime.settings.payments.refund_ends_period == REFUND_AT_PERIOD_END
        self._stop_recurring_of(payment, at_period_end)
        account_id = payment.account_id
        current = self._subscriptions.current(account_id)
        if current.plan_code != payment.plan_code or current.expires_at is None:
            log.warning(
                "payment %s was %s but user %r is no longer on %r: the plan is left alone",
                payment.id,
                payment.status,
                account_id,
                payment.plan_code,
            )
            return current
        if at_period_end:
            if current.status is SubscriptionStatus.CANCELLED:
                return current
            return self._subscriptions.cancel(account_id)
        return self._subscriptions.change_plan(account_id, self._runtime.catalog.default_plan.code)

    def _stop_recurring_of(self, payment: Payment, at_period_end: bool) -> None:
        if payment.recurring_id is None:
            return
        now = self._runtime.now()
        ended = ArrangementStatus.ENDED
        with write_transaction(self._runtime.engine) as connection:
            row = stored_recurring.get(connection, payment.recurring_id)
            if row is None or not stored_recurring.move(
                connection, row.id, arrangement_sources(ended), ended, now
            ):
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
