"""What a user's own request to change plan does: never a paid grant without a confirmed payment.

- The default (free) plan needs no payment: it takes effect at the end of the paid period (the
  current subscription is cancelled), or at once from another plan that never lapses.
- A paid plan starts a pending payment the user completes at the provider; the provider's signed
  webhook confirms it and only then is the plan granted (``services.webhooks``).
- Without a provider, a paid plan answers 402 ``PAYMENT_REQUIRED`` with ``PAYMENTS_NOTICE`` and the
  contact address. A plan priced "on request" (no price, or a zero price, that is not the default
  plan) answers the same way with a provider too: it goes to a human.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..domain.accounts import personal_user_id
from ..domain.catalog import Plan
from ..domain.dates import format_day
from ..domain.subscriptions import Subscription, SubscriptionStatus
from ..errors import PaymentRequired
from .payments import PAYMENTS_NOTICE, PaymentService
from .profiles import ProfileService
from .runtime import Runtime
from .subscriptions import SubscriptionService


@dataclass(frozen=True, slots=True)
class ChangeOutcome:
    """What a user's request to change plan did."""

    subscription: Subscription
    message: str
    payment: dict[str, Any] | None = None
    """Set when a payment was started: the client follows its ``confirmation_url``."""


class PlanChangeService:
    def __init__(
        self,
        runtime: Runtime,
        subscriptions: SubscriptionService,
        payments: PaymentService,
        profiles: ProfileService,
    ) -> None:
        self._runtime = runtime
        self._subscriptions = subscriptions
        self._payments = payments
        self._profiles = profiles

    def request_change(
        self, account_id: str, plan_code: str, months: int, return_url: str = ""
    ) -> ChangeOutcome:
        """Start what a user's own request to move to ``plan_code`` may start; never a paid grant.

        The default plan: at the end of the paid period. A paid plan: a pending payment the user
        completes at the provider (who sends them back to ``return_url`` unless
        ``BILLING_PAYMENT_RETURN_URL`` is set), or 402 when there is no provider or the price is on
        request.
        """
        plan = self._runtime.catalog.plan(plan_code)
        if plan.is_default:
            return self._downgrade(account_id, plan)
        price = plan.price_for(months)
        # A plan with no price, or a zero price, that is not the default one is not for sale by
        # self-service: granting it on request would be a free upgrade, so it goes to a human.
        if self._payments.provider is None or price is None or price <= 0:
            raise self.payment_required(plan, months)
        # Also creates the free subscription (and the plan rows the payment refers to) on first use.
        current = self._subscriptions.current(account_id)
        payment = self._payments.start(account_id, plan, months, price, return_url)
        return ChangeOutcome(
            current, f"Complete the payment to move to the {plan.name} plan", payment=payment
        )

    def payment_required(self, plan: Plan, months: int) -> PaymentRequired:
        email = self._runtime.settings.payments_cta_email
        price = plan.price_for(months)
        on_request = price is None or price <= 0
        message = (
            f"The {plan.name} plan is priced on request: contact us."
            if on_request and self._payments.provider is not None
            else PAYMENTS_NOTICE
        )
        return PaymentRequired(
            message,
            {
                "plan_type": plan.code,
                "duration_months": months,
                "reason": "price_on_request" if on_request else "coming_soon",
                "contact_email": email,
                "contact_url": f"mailto:{email}" if email else None,
            },
        )

    def _downgrade(self, account_id: str, plan: Plan) -> ChangeOutcome:
        current = self._subscriptions.current(account_id)
        if current.plan_code == plan.code:
            return ChangeOutcome(current, f"You are already on the {plan.name} plan")
        if current.expires_at is None:  # another plan that never lapses: switch at once
            changed = self._subscriptions.change_plan(account_id, plan.code)
            return ChangeOutcome(changed, f"Subscription changed to the {plan.name} plan")
        if current.status is not SubscriptionStatus.CANCELLED:
            current = self._subscriptions.cancel(account_id)
        assert current.expires_at is not None
        # Said in the user's time zone; a team's (no user's profile) in the default one.
        zone = self._profiles.timezone_of(personal_user_id(account_id) or account_id)
        return ChangeOutcome(
            current,
            f"Your plan changes to {plan.name} after "
            f"{format_day(current.expires_at.astimezone(zone))}",
        )
