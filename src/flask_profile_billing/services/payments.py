"""Starting a payment with the provider, and checking the configured providers.

Without a provider (``BILLING_PAYMENT_PROVIDER`` is None) payments are "coming soon"
(``PAYMENTS_NOTICE``). ``BILLING_PAYMENT_PROVIDER`` takes the payments; it and the providers of
``BILLING_PAYMENT_PROVIDERS`` accept webhooks, each at the URL of its name. A provider is an object
of the host's, or the name of a built-in one (``stripe``, ``yookassa``) built from its settings
block. A user has at most ``BILLING_MAX_PENDING_PAYMENTS`` payments pending; one more answers 429
``TOO_MANY_PENDING_PAYMENTS``.

A payment moves ``pending`` -> ``paid`` -> ``succeeded``, or ``pending`` -> ``failed`` /
``cancelled``; a refund or a chargeback moves it on to ``refunded`` / ``charged_back``
(``domain.payments.PAYMENT_MOVES``). Every move is a conditional UPDATE from the state it expects,
so a late, repeated or out-of-order webhook changes nothing (``services.webhooks`` makes the moves
a provider reports).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

from ..domain.accounts import personal_user_id
from ..domain.catalog import Catalog, Plan, amount_as_number
from ..domain.payments import Payment, PaymentStatus
from ..errors import BillingConfigError, PaymentProviderError, TooManyPendingPayments
from ..payments.providers import (
    PaymentIntent,
    PaymentProvider,
    ProviderPayment,
    SubscriptionPrices,
)
from ..settings import PaymentSettings, check_stripe_prices
from ..store import payments as stored
from ..store.transactions import read_connection, write_transaction
from .runtime import Runtime
from .users import load_host_user

log = logging.getLogger(__name__)

ABANDONED_AFTER = timedelta(hours=24)
"""A payment still pending after this long is abandoned (providers' checkouts expire sooner): it
no longer counts against ``BILLING_MAX_PENDING_PAYMENTS``, so abandoned checkouts never lock a
user out of paying."""

PAYMENTS_NOTICE = "Payment will be available later; contact us for a manual extension."
"""What a user who asks for a paid plan is told while no payment provider is configured."""

MAX_PROVIDER_PAYMENT_ID = 255
"""The longest provider payment id ``billing_payments`` holds."""
_PROVIDER_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """One payment of a user, as their payment history shows it."""

    id: str
    plan_code: str
    months: int
    amount: Decimal
    currency: str
    status: str
    created_at: datetime
    settled_at: datetime | None


class PaymentService:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        settings = runtime.settings.payments
        # Checked here, which init_app reaches, so a wrong setting fails at start-up, not at the
        # first customer's payment.
        self._provider = _checked_provider(_built(settings.provider, settings))
        self._providers: dict[str, PaymentProvider] = {}
        for value in (self._provider, *settings.more_providers):
            provider = _checked_provider(_built(value, settings))
            if provider is None:
                continue
            if isinstance(provider, SubscriptionPrices):
                _check_prices(provider, settings, runtime.catalog)
            if provider.name in self._providers and self._providers[provider.name] is not provider:
                raise BillingConfigError(f"two payment providers are named {provider.name!r}")
            self._providers[provider.name] = provider

    @property
    def provider(self) -> PaymentProvider | None:
        """The provider that takes payments; None while payments are not available."""
        return self._provider

    def provider_named(self, name: str) -> PaymentProvider | None:
        """The configured provider of that name (whose webhooks are accepted), or None."""
        return self._providers.get(name)

    @property
    def provider_names(self) -> list[str]:
        """The names of every configured provider."""
        return list(self._providers)

    def events(self, payment_id: str) -> list[dict[str, Any]]:
        """The payment's history, oldest first: every status it took, and every confirmation
        refused (``from_status == to_status``, with the reason)."""
        with read_connection(self._runtime.engine) as connection:
            rows = stored.payment_history(connection, payment_id)
        return [
            {
                "from_status": row.from_status,
                "to_status": row.to_status,
                "provider_event_id": row.provider_event_id,
                "reason": row.reason,
                "occurred_at": row.occurred_at,
            }
            for row in rows
        ]

    def history(self, account_id: str, limit: int = 10) -> list[PaymentRecord]:
        """The user's ``limit`` latest payments, newest first, whatever their status."""
        with read_connection(self._runtime.engine) as connection:
            payments = stored.latest_payments(connection, account_id, limit)
        return [
            PaymentRecord(
                id=payment.id,
                plan_code=payment.plan_code,
                months=payment.months,
                amount=payment.amount,
                currency=payment.currency,
                status=payment.status.value,
                created_at=payment.created_at,
                settled_at=payment.settled_at,
            )
            for payment in payments
        ]

    def start(
        self, account_id: str, plan: Plan, months: int, price: Decimal, return_url: str = ""
    ) -> dict[str, Any]:
        """Start a payment of ``price`` for ``months`` of ``plan`` with the provider; the pending
        payment as the client sees it (it follows its ``confirmation_url``). The provider sends
        the user back to ``BILLING_PAYMENT_RETURN_URL``, else to ``return_url`` (the face's page).

        The plan rows the payment refers to must exist (the user's subscription was read first).
        """
        provider = self._provider
        if provider is None:
            raise BillingConfigError("no payment provider is configured (BILLING_PAYMENT_PROVIDER)")
        settings = self._runtime.settings.payments
        back = settings.return_url or return_url
        intent = PaymentIntent(
            id=uuid4().hex,
            account_id=account_id,
            plan_code=plan.code,
            plan_name=plan.name,
            months=months,
            amount=price,
            currency=plan.currency,
            return_url=back,
            cancel_url=settings.cancel_url or back,
            customer_email=self.email_of(account_id),
        )
        engine = self._runtime.engine
        cap = self._runtime.settings.payments.max_pending
        # The row exists before the provider hears of the payment, so no webhook can ever name a
        # payment we do not know; the provider is called outside any transaction, because a network
        # call must not hold database locks (on SQLite, the one write lock).
        with write_transaction(engine) as connection:
            # Count and insert under the user's lock: concurrent starts take turns, so each counts
            # the payments the others inserted and together they never pass the cap.
            stored.lock_payments_of(connection, account_id)
            since = self._runtime.now() - ABANDONED_AFTER
            pending = stored.count_payments(connection, account_id, PaymentStatus.PENDING, since)
            if pending >= cap:
                raise TooManyPendingPayments(
                    f"You have {pending} payments in progress: finish one of them, or wait until "
                    "the payment provider settles or cancels them, then try again",
                    {"pending_payments": pending, "max_pending_payments": cap},
                )
            stored.insert_payment(
                connection,
                Payment(
                    id=intent.id,
                    account_id=account_id,
                    provider=provider.name,
                    provider_payment_id=None,
                    plan_code=plan.code,
                    months=months,
                    amount=price,
                    currency=plan.currency,
                    status=PaymentStatus.PENDING,
                    created_at=self._runtime.now(),
                ),
            )
        try:
            started = _checked_start(provider.start(intent))
        except Exception as error:
            log.exception(
                "payment provider %r could not start payment %s", provider.name, intent.id
            )
            with write_transaction(engine) as connection:
                stored.move(
                    connection,
                    intent.id,
                    PaymentStatus.PENDING,
                    PaymentStatus.FAILED,
                    self._runtime.now(),
                    settle=True,
                    reason=f"the provider refused to start it: {type(error).__name__}",
                )
            raise PaymentProviderError(
                "The payment provider could not start the payment; try again later"
            ) from error
        with write_transaction(engine) as connection:
            stored.set_provider_payment_id(connection, intent.id, started.provider_payment_id)
        return {
            "id": intent.id,
            "status": PaymentStatus.PENDING.value,
            "amount": amount_as_number(price),
            "currency": plan.currency,
            "plan_type": plan.code,
            "duration_months": months,
            "confirmation_url": started.confirmation_url,
        }

    def email_of(self, account_id: str) -> str | None:
        """The email of the account's host user (for receipts and the provider's checkout), if it
        has one; a team account has no user of its own."""
        user_id = personal_user_id(account_id)
        if user_id is None:
            return None
        try:
            user = load_host_user(self._runtime, user_id)
            user_info = self._runtime.settings.user_info
            email = (user_info(user) or {}).get("email") if user_info else None
            email = email or getattr(user, "email", None)
        except Exception:
            # No email is no receipt: the provider refuses if it needs one, and the user is told.
            log.debug("no email for user %r", user_id, exc_info=True)
            return None
        return email if isinstance(email, str) and "@" in email else None


def _built(value: Any, settings: PaymentSettings) -> Any:
    """The built-in provider a name stands for, set up from its settings block; anything else as
    it is (``_checked_provider`` judges it)."""
    if not isinstance(value, str):
        return value
    try:
        if value == "stripe":
            from ..payments.stripe_provider import StripeProvider

            stripe_settings = settings.stripe
            return StripeProvider(
                stripe_settings.secret_key,
                stripe_settings.webhook_secret or "",
                tolerance_seconds=stripe_settings.webhook_tolerance_seconds,
                prices=stripe_settings.prices,
            )
        if value == "yookassa":
            from ..payments.yookassa_provider import YooKassaProvider

            yookassa = settings.yookassa
            return YooKassaProvider(
                yookassa.shop_id or "",
                yookassa.secret_key or "",
                receipt_vat_code=yookassa.receipt_vat_code,
                trusted_networks_only=yookassa.trusted_networks_only,
                save_payment_method=yookassa.save_payment_method,
            )
    except ImportError as error:
        raise BillingConfigError(
            f"the {value} provider needs its library: pip install 'flask-profile-billing[{value}]'"
            f" ({error.name} is missing)"
        ) from None
    except ValueError as error:
        key = "BILLING_STRIPE_*" if value == "stripe" else "BILLING_YOOKASSA_*"
        raise BillingConfigError(f"the {value} provider is not set up ({key}): {error}") from None
    raise BillingConfigError(
        f"BILLING_PAYMENT_PROVIDER: unknown payment provider {value!r}; the built-in ones are "
        "'stripe' and 'yookassa'"
    )


def _check_prices(
    provider: SubscriptionPrices, settings: PaymentSettings, catalog: Catalog
) -> None:
    """A provider object's subscription prices must fit the catalog, and agree with
    BILLING_STRIPE_PRICES when that is set too: otherwise the plans the config maps would quietly
    be sold as one-off payments (or at prices the config does not show)."""
    try:
        own = check_stripe_prices(provider.prices, catalog)
    except BillingConfigError as error:
        raise BillingConfigError(
            f"the prices of {provider!r} do not fit the catalog: {error}"
        ) from None
    if settings.stripe.prices and own != settings.stripe.prices:
        raise BillingConfigError(
            f"BILLING_STRIPE_PRICES is set, but {provider!r} was built with other prices "
            f"({own or 'none'}), and they are what it sells: build it with "
            "prices=app.config['BILLING_STRIPE_PRICES'], or leave BILLING_STRIPE_PRICES out of "
            "the config"
        )


def _checked_start(started: ProviderPayment) -> ProviderPayment:
    """What the provider answered, if we can store it and send a user to it safely."""
    payment_id = started.provider_payment_id
    if not isinstance(payment_id, str) or not 0 < len(payment_id) <= MAX_PROVIDER_PAYMENT_ID:
        raise ValueError(f"unusable provider payment id {payment_id!r}")
    # The client redirects the user there: only a web address, never javascript: or data:.
    if not isinstance(started.confirmation_url, str) or not started.confirmation_url.startswith(
        ("https://", "http://")
    ):
        raise ValueError(f"unusable confirmation URL {started.confirmation_url!r}")
    return started


def _checked_provider(provider: Any) -> PaymentProvider | None:
    if provider is None:
        return None
    if not isinstance(provider, PaymentProvider):
        raise BillingConfigError(
            "BILLING_PAYMENT_PROVIDER(S) take PaymentProvider objects (name, start, parse_event) "
            "or a built-in provider's name, "
            f"not {provider!r}"
        )
    if not isinstance(provider.name, str) or not _PROVIDER_NAME.fullmatch(provider.name):
        raise BillingConfigError(
            "a payment provider's name must be 1 to 32 letters, digits, '-' or '_' "
            f"(it is part of the webhook URL), not {provider.name!r}"
        )
    return provider
