"""The payments seam: a plan change a user asks for goes through here, never straight to a grant.

Without a provider (``BILLING_PAYMENT_PROVIDER`` is None) payments are "coming soon": a paid plan
answers 402 ``PAYMENT_REQUIRED`` with the notice and the contact address. Moving to the default
(free) plan needs no payment and takes effect at the end of the paid period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..domain.catalog import Plan
from ..domain.subscriptions import Subscription, SubscriptionStatus
from ..errors import ApiError
from .runtime import Runtime
from .subscriptions import SubscriptionService

PAYMENTS_NOTICE = "Payment will be available later; contact us for a manual extension."


@dataclass(frozen=True, slots=True)
class ChangeOutcome:
    """What a user's request to change plan did."""

    subscription: Subscription
    message: str
    payment: dict[str, Any] | None = None
    """Set when a payment was started: the client follows its ``confirmation_url``."""


class PaymentRequired(ApiError):
    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(402, "PAYMENT_REQUIRED", message, details)


class PaymentService:
    def __init__(self, runtime: Runtime, subscriptions: SubscriptionService) -> None:
        self._runtime = runtime
        self._subscriptions = subscriptions

    def request_change(self, user_id: str, plan_code: str, months: int) -> ChangeOutcome:
        plan = self._runtime.catalog.plan(plan_code)
        if plan.is_default:
            return self._downgrade(user_id, plan)
        raise self.payment_required(plan, months)

    def payment_required(self, plan: Plan, months: int) -> PaymentRequired:
        email = self._runtime.settings.payments_cta_email
        return PaymentRequired(
            PAYMENTS_NOTICE,
            {
                "plan_type": plan.code,
                "duration_months": months,
                "contact_email": email,
                "contact_url": f"mailto:{email}" if email else None,
            },
        )

    def _downgrade(self, user_id: str, plan: Plan) -> ChangeOutcome:
        current = self._subscriptions.current(user_id)
        if current.plan_code == plan.code:
            return ChangeOutcome(current, f"You are already on the {plan.name} plan")
        if current.expires_at is None:  # another plan that never lapses: switch at once
            changed = self._subscriptions.change_plan(user_id, plan.code)
            return ChangeOutcome(changed, f"Subscription changed to the {plan.name} plan")
        if current.status is not SubscriptionStatus.CANCELLED:
            current = self._subscriptions.cancel(user_id)
        assert current.expires_at is not None
        return ChangeOutcome(
            current,
            f"Your plan changes to {plan.name} after {format_day(current.expires_at)}",
        )


def format_day(moment: datetime) -> str:
    """The seed's date format: 13.11.2025."""
    return moment.strftime("%d.%m.%Y")
