"""The payment provider seam: what the extension asks of YooKassa, CloudPayments,
Robokassa, Stripe or any other provider, and a deterministic provider for tests.

A provider does two things: it creates a payment and tells us where to send the user to pay, and it
turns a webhook body of its own shape into one ``ProviderEvent``. Everything else (the payment rows,
processing each event once, the plan change) is the extension's, the same for every provider.

Each provider authenticates its own deliveries. One that has a ``verify(headers, raw_body, now)``
method (``WebhookVerifier``) checks its own scheme there (Stripe's ``Stripe-Signature``,
CloudPayments' ``Content-HMAC``, Robokassa's ``SignatureValue``); one without it gets the default,
``HmacWebhookVerifier``: ``X-Billing-Signature`` (see ``payments.signatures``) with
``BILLING_WEBHOOK_SECRET``. A provider that does not sign at all (YooKassa) has a ``verify`` that
accepts every body and a ``confirm(event)`` (``PaymentConfirmer``) that reads the payment back from
the provider's API before anything is granted, and may restrict the addresses deliveries come from
(``accepts_source``, ``SourceChecker``).

Plain Python: no Flask, no database, so adapters are unit-testable with plain values.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Protocol, runtime_checkable

from ..domain.accounts import personal_account_id, personal_user_id
from ..domain.payments import (
    EVENT_TYPES as EVENT_TYPES,
)
from ..domain.payments import (
    PAYMENT_CANCELLED as PAYMENT_CANCELLED,
)
from ..domain.payments import (
    PAYMENT_CHARGED_BACK as PAYMENT_CHARGED_BACK,
)
from ..domain.payments import (
    PAYMENT_FAILED as PAYMENT_FAILED,
)
from ..domain.payments import (
    PAYMENT_REFUNDED as PAYMENT_REFUNDED,
)
from ..domain.payments import (
    PAYMENT_SUCCEEDED as PAYMENT_SUCCEEDED,
)
from ..domain.payments import (
    RECURRING_CANCEL_SCHEDULED as RECURRING_CANCEL_SCHEDULED,
)
from ..domain.payments import (
    RECURRING_ENDED as RECURRING_ENDED,
)
from ..domain.payments import (
    RECURRING_PAID as RECURRING_PAID,
)
from ..domain.payments import (
    RECURRING_RESUMED as RECURRING_RESUMED,
)
from ..domain.payments import (
    RECURRING_TYPES as RECURRING_TYPES,
)
from ..domain.payments import (
    REVERSAL_TYPES as REVERSAL_TYPES,
)
from ..domain.payments import (
    SETTLING_TYPES as SETTLING_TYPES,
)
from ..domain.payments import (
    ProviderEvent as ProviderEvent,
)
from .signatures import SIGNATURE_HEADER
from .signatures import verify as verify_signature


class InvalidEvent(ValueError):
    """A verified webhook body that is not an event the provider can read (answered with a 422)."""


class PaymentNotFound(InvalidEvent):
    """The provider's API knows no payment (or refund) of the id an event names: permanent, so
    the delivery is recorded ``rejected`` and answered 200, and the provider stops sending it."""


@dataclass(frozen=True, slots=True)
class PaymentIntent:
    """What the user is about to pay for, as the provider needs it to create its payment."""

    id: str
    """Our payment id: the provider should echo it back in its events (metadata, order id...)."""
    account_id: str
    plan_code: str
    plan_name: str
    months: int
    amount: Decimal
    currency: str
    return_url: str = ""
    """Where the provider sends the user back after paying (the profile page by default)."""
    cancel_url: str = ""
    """Where the provider sends the user who gives up (the return URL unless configured)."""
    customer_email: str | None = None
    """The user's email when the host's user has one: for receipts and the provider's checkout."""

    @property
    def description(self) -> str:
        """A line for the provider's receipt and dashboard."""
        unit = "month" if self.months == 1 else "months"
        return f"{self.plan_name} plan, {self.months} {unit}"


@dataclass(frozen=True, slots=True)
class ProviderPayment:
    """The provider's side of a payment it created."""

    provider_payment_id: str
    confirmation_url: str
    """Where the user goes to pay (the provider's hosted page)."""


@dataclass(frozen=True, slots=True)
class RenewalCharge:
    """The outcome of charging a saved payment method (``SavedMethodCharger``)."""

    provider_payment_id: str
    status: str
    """``payment.succeeded``, ``payment.cancelled`` (declined), or ``payment.pending`` (the
    provider's notification says later)."""
    amount: Decimal
    currency: str


@runtime_checkable
class SavedMethodCharger(Protocol):
    """A provider that can charge a payment method it saved at the first payment (renewals)."""

    def charge_saved_method(
        self, payment: PaymentIntent, method_reference: str, idempotence_key: str
    ) -> RenewalCharge:
        """Charge ``method_reference`` for ``payment`` without the user, at most once per
        ``idempotence_key`` (the provider's own idempotency); raise when the provider cannot say."""
        ...


@runtime_checkable
class SubscriptionPrices(Protocol):
    """A provider that sells some plans as subscriptions renewed on its side, each plan and
    cadence at a price of the provider's (Stripe: ``prices``, as BILLING_STRIPE_PRICES)."""

    @property
    def prices(self) -> Mapping[str, Mapping[str, str]]:
        """Plan code -> ``{"monthly": price id, "yearly": price id}``."""
        ...


@runtime_checkable
class RecurringCanceller(Protocol):
    """A provider whose recurring arrangements renew on its side (Stripe subscriptions): told
    when the user cancels or resumes here, or when a refund ends the period."""

    def schedule_recurring_end(self, recurring_reference: str, at_period_end: bool) -> None:
        """End the arrangement at the end of its period (``at_period_end``), or undo that
        (``False``)."""
        ...

    def end_recurring_now(self, recurring_reference: str) -> None:
        """End the arrangement at once: nothing is charged again."""
        ...


@runtime_checkable
class PaymentProvider(Protocol):
    """A payment provider, set as ``BILLING_PAYMENT_PROVIDER``.

    ``start`` may call the provider's API: it runs outside any database transaction. Raise any
    exception when the provider refuses or is unreachable; the payment is then marked failed and the
    user gets a 502. ``parse_event`` must raise ``InvalidEvent`` for a body it cannot read.
    """

    name: str
    """The provider's name in the webhook URL (``/api/billing/webhooks/<name>``) and in stored rows."""

    def start(self, payment: PaymentIntent) -> ProviderPayment: ...

    def parse_event(self, payload: Mapping[str, Any]) -> ProviderEvent: ...


class DeliveryHeaders(Mapping[str, str]):
    """A delivery's HTTP headers, looked up whatever their case (``Stripe-Signature`` is
    ``stripe-signature``); the first value of a repeated header."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, str] = {}
        for key, value in items:
            self._values.setdefault(key.lower(), value)

    def __getitem__(self, key: str) -> str:
        return self._values[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@runtime_checkable
class WebhookVerifier(Protocol):
    """A provider that authenticates its own webhook deliveries."""

    def verify(self, headers: Mapping[str, str], raw_body: bytes, now: datetime) -> None:
        """Raise ``InvalidSignature`` unless the delivery (its headers and the bytes as received)
        comes from the provider; ``now`` is the extension's clock."""
        ...


@runtime_checkable
class PaymentConfirmer(Protocol):
    """A provider whose webhook bodies cannot be trusted on their own (they are not signed)."""

    def confirm(self, event: ProviderEvent) -> ProviderEvent:
        """The event as the provider's API reports the payment now (its status, amount and
        currency), read by the provider's own id; ``PaymentNotFound`` when the API knows no such
        payment (permanent: rejected); any other exception when the API cannot say, and the
        delivery is answered 502, so the provider delivers it again later.

        It is only asked about payments we started with the provider: an event whose
        ``provider_payment_id`` no payment row of ours has is rejected without asking, so an
        anonymous sender cannot make us call the API for ids of its choosing."""
        ...


@runtime_checkable
class SourceChecker(Protocol):
    """A provider that only accepts deliveries from its own networks."""

    def accepts_source(self, address: str | None) -> bool:
        """Whether a delivery from ``address`` (the peer's IP address) may be processed."""
        ...


class HmacWebhookVerifier:
    """The default verification: ``X-Billing-Signature`` over the raw body with a shared secret."""

    def __init__(self, secret: str, tolerance_seconds: int) -> None:
        self._secret = secret
        self._tolerance_seconds = tolerance_seconds

    def __repr__(self) -> str:
        return "HmacWebhookVerifier(secret=<hidden>)"

    def verify(self, headers: Mapping[str, str], raw_body: bytes, now: datetime) -> None:
        verify_signature(
            headers.get(SIGNATURE_HEADER),
            raw_body,
            self._secret,
            now,
            self._tolerance_seconds,
        )


class TestPaymentProvider:
    """A provider that needs no network, for host apps' tests and the extension's own.

    Deterministic: the provider id of our payment ``<id>`` is ``test_<id>`` and the user is sent to
    ``https://payments.example.test/pay/test_<id>``. Its events are flat JSON objects::

        {"event_id": "evt_1", "event_type": "payment.succeeded", "payment_id": "<our id>",
         "provider_payment_id": "test_<our id>", "amount": "59900.00", "currency": "RUB"}

    ``event()`` builds one. Amounts are strings or integers: a JSON float is not money.
    """

    __test__ = False  # not a pytest test class, whatever its name says
    name: str = "test"
    BASE_URL: ClassVar[str] = "https://payments.example.test/pay/"

    def __init__(self, name: str = "test") -> None:
        self.name = name
        self.started: list[PaymentIntent] = []
        """Every payment started, oldest first: what a test can assert the provider was asked."""

    def start(self, payment: PaymentIntent) -> ProviderPayment:
        self.started.append(payment)
        provider_id = self.provider_payment_id(payment.id)
        return ProviderPayment(provider_id, f"{self.BASE_URL}{provider_id}")

    @staticmethod
    def provider_payment_id(payment_id: str) -> str:
        return f"test_{payment_id}"

    def event(
        self,
        event_type: str,
        payment_id: str,
        amount: Decimal | int | str,
        currency: str,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """A webhook body for our payment ``payment_id`` (the ``id`` of an upgrade's ``payment``)."""
        return {
            "event_id": event_id or f"evt_{event_type}_{payment_id}",
            "event_type": event_type,
            "payment_id": payment_id,
            "provider_payment_id": self.provider_payment_id(payment_id),
            "amount": str(amount),
            "currency": currency,
        }

    def parse_event(self, payload: Mapping[str, Any]) -> ProviderEvent:
        return ProviderEvent(
            event_id=_text(payload, "event_id"),
            event_type=_text(payload, "event_type"),
            payment_id=_optional_text(payload, "payment_id"),
            provider_payment_id=_optional_text(payload, "provider_payment_id"),
            amount=parse_amount(payload.get("amount")),
            currency=_text(payload, "currency").upper(),
        )


def parse_amount(value: Any) -> Decimal:
    """A provider's amount as a Decimal: a string or an integer, finite and not negative."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidEvent("amount must be a decimal string or a number")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise InvalidEvent(f"amount {value!r} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise InvalidEvent(f"amount {value!r} is not a valid amount")
    return amount


def account_metadata(account_id: str) -> dict[str, str]:
    """What a payment's provider metadata says of the account it is for: the account, and for a
    personal account also its user (as payments started before accounts said)."""
    metadata = {"account_id": account_id}
    user_id = personal_user_id(account_id)
    if user_id is not None:
        metadata["user_id"] = user_id
    return metadata


def account_in_metadata(metadata: Mapping[str, Any]) -> str | None:
    """The account echoed metadata says a payment is for: ``account_id``, else the personal
    account of ``user_id`` (payments started before accounts); None when it says neither."""
    account_id = metadata.get("account_id")
    if isinstance(account_id, str) and account_id:
        return account_id
    user_id = metadata.get("user_id")
    if isinstance(user_id, str) and user_id:
        return personal_account_id(user_id)
    return None


def _text(payload: Mapping[str, Any], key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent(f"{key} must be a non-empty string")
    return value.strip()


def _optional_text(payload: Mapping[str, Any], key: str) -> str | None:
    return None if payload.get(key) is None else _text(payload, key)
