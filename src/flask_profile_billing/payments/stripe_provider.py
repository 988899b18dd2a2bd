"""Stripe through its official library (``pip install flask-profile-billing[stripe]``).

A payment is a Checkout Session: in ``payment`` mode for one period of a plan (one line item priced
in the plan's currency), or in ``subscription`` mode when BILLING_STRIPE_PRICES maps the plan and
cadence (``monthly`` for 1 month, ``yearly`` for 12) to a Stripe price, which Stripe then charges
every period. Our payment id and the user's id are in its metadata (and the subscription's), our
payment id is the session's ``client_reference_id`` and, as ``checkout-<id>``, its idempotency
key, so a retried start never makes a second session. The user pays on Stripe's hosted page and
comes back to the return URL.

Webhooks are checked by the library (``stripe.WebhookSignature.verify_header``, what
``stripe.Webhook.construct_event`` runs): the ``Stripe-Signature`` header's HMAC-SHA256 over the raw
body with the endpoint's signing secret; and here, its timestamp within the tolerance of the
system clock either way (the library checks only its age), so a delivery captured and replayed
later is refused, however it is dated. The events acted on:

- ``checkout.session.completed`` with ``payment_status`` ``paid``, and
  ``checkout.session.async_payment_succeeded``: the payment succeeded (a subscription's first
  period too);
- ``checkout.session.async_payment_failed``: it failed;
- ``checkout.session.expired``: the user never paid, it is cancelled;
- ``invoice.paid``: a subscription's first invoice confirms its first payment (as the completed
  session does: whichever comes first grants), a later one (``subscription_cycle``) is a renewal;
- ``customer.subscription.updated``: a cancel at the period's end scheduled or undone;
  ``customer.subscription.deleted``: the subscription is over;
- ``charge.refunded`` (the whole amount, or what was refunded so far) and
  ``charge.dispute.created``: the payment's money was taken back.

Every other event type is recorded and ignored. Objects are read in the shapes of Stripe's API
versions before and after 2025-03-31 (where an invoice's subscription and payment moved under
``parent`` and ``payments``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import stripe

from .providers import (
    PAYMENT_CANCELLED,
    PAYMENT_CHARGED_BACK,
    PAYMENT_FAILED,
    PAYMENT_REFUNDED,
    PAYMENT_SUCCEEDED,
    RECURRING_CANCEL_SCHEDULED,
    RECURRING_ENDED,
    RECURRING_PAID,
    RECURRING_RESUMED,
    InvalidEvent,
    PaymentIntent,
    ProviderEvent,
    ProviderPayment,
    account_in_metadata,
    account_metadata,
)
from .signatures import InvalidSignature

SIGNATURE_HEADER = "Stripe-Signature"

ZERO_DECIMAL_CURRENCIES = frozenset(
    [
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    ]
)
"""Currencies Stripe counts in whole units (its "zero-decimal" list)."""
THREE_DECIMAL_CURRENCIES = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])

_CHECKOUT_EVENTS = {
    "checkout.session.async_payment_succeeded": PAYMENT_SUCCEEDED,
    "checkout.session.async_payment_failed": PAYMENT_FAILED,
    "checkout.session.expired": PAYMENT_CANCELLED,
}


def minor_units(amount: Decimal, currency: str) -> int:
    """``amount`` in the smallest unit Stripe counts ``currency`` in (kopecks, cents, yen)."""
    scaled = amount.scaleb(_exponent(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} {currency} has more decimals than the currency")
    return int(scaled)


def from_minor_units(value: Any, currency: str) -> Decimal:
    """A Stripe amount (an integer of minor units) as a Decimal of the currency's units."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidEvent("amount_total must be a whole number of minor units")
    return Decimal(value).scaleb(-_exponent(currency))


def _exponent(currency: str) -> int:
    code = currency.upper()
    if code in ZERO_DECIMAL_CURRENCIES:
        return 0
    return 3 if code in THREE_DECIMAL_CURRENCIES else 2


CADENCES = {1: "monthly", 12: "yearly"}
"""The BILLING_STRIPE_PRICES key of a period of 1 or 12 months."""
_ENDED_STATUSES = frozenset(["canceled", "incomplete_expired"])


class StripeProvider:
    """Stripe Checkout for one-off periods and subscriptions; its webhook is
    ``<billing prefix>/webhooks/stripe``.

    ``prices`` maps plan codes to ``{"monthly": price id, "yearly": price id}``: those periods are
    sold as subscriptions. ``client`` replaces the ``StripeClient`` built from ``secret_key``
    (``api_base`` points that one at another address, such as a local fake of Stripe's API in
    tests).
    """

    def __init__(
        self,
        secret_key: str | None,
        webhook_secret: str,
        *,
        tolerance_seconds: int = stripe.Webhook.DEFAULT_TOLERANCE,
        name: str = "stripe",
        api_base: str | None = None,
        client: stripe.StripeClient | None = None,
        prices: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        if client is None:
            if not secret_key:
                raise ValueError("Stripe needs its secret API key")
            client = stripe.StripeClient(
                secret_key,
                base_addresses={"api": api_base} if api_base else None,
                max_network_retries=2,
            )
        if not webhook_secret:
            raise ValueError("Stripe needs the webhook endpoint's signing secret")
        self.name = name
        self._client = client
        self._webhook_secret = webhook_secret
        self._tolerance_seconds = tolerance_seconds
        self._prices = {plan: dict(cadences) for plan, cadences in (prices or {}).items()}

    def __repr__(self) -> str:  # the keys never reach a log line
        return f"StripeProvider(name={self.name!r})"

    def start(self, payment: PaymentIntent) -> ProviderPayment:
        metadata = {
            "payment_id": payment.id,
            **account_metadata(payment.account_id),
            "plan": payment.plan_code,
            "months": str(payment.months),
        }
        price_id = self.price_for(payment.plan_code, payment.months)
        params: dict[str, Any] = {
            "success_url": payment.return_url,
            "cancel_url": payment.cancel_url or payment.return_url,
            "client_reference_id": payment.id,
            "metadata": metadata,
        }
        if price_id is not None:
            # Stripe charges every period; the subscription carries our ids into its invoices.
            params["mode"] = "subscription"
            params["line_items"] = [{"price": price_id, "quantity": 1}]
            params["subscription_data"] = {"metadata": metadata}
        else:
            params["mode"] = "payment"
            params["line_items"] = [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": payment.currency.lower(),
                        "unit_amount": minor_units(payment.amount, payment.currency),
                        "product_data": {"name": payment.description},
                    },
                }
            ]
            params["payment_intent_data"] = {"metadata": metadata}
        if payment.customer_email:
            params["customer_email"] = payment.customer_email
        session = self._client.v1.checkout.sessions.create(
            params,  # type: ignore[arg-type]  # a plain dict of the documented parameters
            {"idempotency_key": f"checkout-{payment.id}"},
        )
        return ProviderPayment(str(session.id), str(session.url))

    @property
    def prices(self) -> Mapping[str, Mapping[str, str]]:
        """The plans and cadences sold as Stripe subscriptions (the ``prices`` given)."""
        return {plan: dict(cadences) for plan, cadences in self._prices.items()}

    def price_for(self, plan_code: str, months: int) -> str | None:
        """The Stripe price of ``months`` of the plan, when it is sold as a subscription."""
        cadence = CADENCES.get(months)
        return None if cadence is None else self._prices.get(plan_code, {}).get(cadence)

    def schedule_recurring_end(self, recurring_reference: str, at_period_end: bool) -> None:
        self._client.v1.subscriptions.update(
            recurring_reference, {"cancel_at_period_end": at_period_end}
        )

    def end_recurring_now(self, recurring_reference: str) -> None:
        self._client.v1.subscriptions.cancel(recurring_reference)

    def verify(self, headers: Mapping[str, str], raw_body: bytes, now: datetime) -> None:
        """The library checks the MAC; the time is checked here, both ways: the library refuses
        only a signature older than the tolerance, and one dated in the future would stay
        replayable until long after it was captured. Against the system clock, as Stripe dates
        its signatures by its own (``now``, the extension's clock, may be a test's or a
        simulation's)."""
        header = headers.get(SIGNATURE_HEADER)
        try:
            stripe.WebhookSignature.verify_header(
                raw_body.decode("utf-8"), header, self._webhook_secret, tolerance=None
            )
        except stripe.SignatureVerificationError as error:
            raise InvalidSignature(str(error).split(". ")[0]) from None
        except UnicodeDecodeError:
            raise InvalidSignature("the body is not UTF-8 text, which Stripe signs") from None
        assert header is not None  # verify_header refuses a missing one
        if abs(time.time() - _signed_at(header)) > self._tolerance_seconds:
            raise InvalidSignature("the signature's timestamp is too far from now")

    def parse_event(self, payload: Mapping[str, Any]) -> ProviderEvent:
        event_id = payload.get("id")
        event_type = payload.get("type")
        if not isinstance(event_id, str) or not isinstance(event_type, str):
            raise InvalidEvent("a Stripe event has a string id and type")
        data = payload.get("data")
        item = data.get("object") if isinstance(data, Mapping) else None
        if not isinstance(item, Mapping):
            raise InvalidEvent("a Stripe event has data.object")
        occurred_at = _created(payload.get("created"))
        if event_type.startswith("checkout.session."):
            return _session_event(event_id, event_type, item)
        if event_type == "invoice.paid":
            return _invoice_event(event_id, item, occurred_at)
        if event_type in ("customer.subscription.updated", "customer.subscription.deleted"):
            return _subscription_event(event_id, event_type, item, occurred_at)
        if event_type in ("charge.refunded", "charge.dispute.created"):
            return _reversal_event(event_id, event_type, item)
        return _ignored(event_id, event_type)


def _signed_at(header: str) -> int:
    """The ``t=`` of a ``Stripe-Signature`` header the library accepted (the first one, which is
    the one it checked the MAC with)."""
    for item in header.split(","):
        parts = item.split("=", 2)  # as the library splits it
        if parts[0] == "t" and len(parts) > 1:
            try:
                return int(parts[1])
            except ValueError:
                break
    raise InvalidSignature("the signature has no timestamp")


def _created(value: Any) -> datetime | None:
    """The event's ``created`` (Unix seconds) as a time; None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent("a Stripe event's created is a whole number of seconds")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, ValueError, OSError):
        raise InvalidEvent("a Stripe event's created is not a time") from None


def _ignored(event_id: str, event_type: str) -> ProviderEvent:
    """An event that is not about a payment of ours: recorded and ignored."""
    return ProviderEvent(event_id, event_type, None, None, Decimal(0), "")


def _session_event(event_id: str, event_type: str, session: Mapping[str, Any]) -> ProviderEvent:
    mode = session.get("mode")
    if mode not in ("payment", "subscription"):
        return _ignored(event_id, event_type)
    if event_type == "checkout.session.completed":
        # Paid now, or (bank debits, vouchers) later: async_payment_succeeded then follows.
        payment_status = session.get("payment_status")
        if not isinstance(payment_status, str):
            raise InvalidEvent("a completed checkout session has a payment_status")
        paid = payment_status in {"paid", "no_payment_required"}
        kind = PAYMENT_SUCCEEDED if paid else "checkout.session.completed.unpaid"
    else:
        kind = _CHECKOUT_EVENTS.get(event_type, event_type)
    metadata = _metadata(session.get("metadata"))
    currency = session.get("currency")
    if not isinstance(currency, str):
        raise InvalidEvent("a checkout session has a currency")
    return ProviderEvent(
        event_id=event_id,
        event_type=kind,
        payment_id=_optional_text(metadata.get("payment_id")),
        provider_payment_id=_optional_text(session.get("id")),
        amount=from_minor_units(session.get("amount_total"), currency),
        currency=currency.upper(),
        account_id=account_in_metadata(metadata),
        refund_reference=_id_of(session.get("payment_intent")),
        recurring_reference=_id_of(session.get("subscription")),
        customer_reference=_id_of(session.get("customer")),
    )


def _invoice_event(
    event_id: str, invoice: Mapping[str, Any], occurred_at: datetime | None
) -> ProviderEvent:
    """A paid invoice: of a subscription of ours, its first payment or a renewal."""
    parent = _mapping(invoice.get("parent"))
    details = _mapping(parent.get("subscription_details") or invoice.get("subscription_details"))
    subscription = _id_of(details.get("subscription") or invoice.get("subscription"))
    metadata = _metadata(details.get("metadata"))
    reason = _optional_text(invoice.get("billing_reason"))
    currency = invoice.get("currency")
    if subscription is None or not metadata.get("payment_id") or not isinstance(currency, str):
        return _ignored(event_id, "invoice.paid")
    if reason not in ("subscription_create", "subscription_cycle"):
        # A proration or a manual invoice: not a period of ours.
        return _ignored(event_id, f"invoice.paid.{reason}")
    first = reason == "subscription_create"
    return ProviderEvent(
        event_id=event_id,
        event_type=PAYMENT_SUCCEEDED if first else RECURRING_PAID,
        payment_id=_optional_text(metadata.get("payment_id")),
        provider_payment_id=None if first else _optional_text(invoice.get("id")),
        amount=from_minor_units(invoice.get("amount_paid"), currency),
        currency=currency.upper(),
        account_id=account_in_metadata(metadata),
        refund_reference=_invoice_payment_intent(invoice),
        recurring_reference=subscription,
        customer_reference=_id_of(invoice.get("customer")),
        occurred_at=occurred_at,
    )


def _invoice_payment_intent(invoice: Mapping[str, Any]) -> str | None:
    found = _id_of(invoice.get("payment_intent"))
    if found is not None:
        return found
    payments = _mapping(invoice.get("payments")).get("data")
    for item in payments if isinstance(payments, list) else []:
        payment = _mapping(_mapping(item).get("payment"))
        found = _id_of(payment.get("payment_intent"))
        if found is not None:
            return found
    return None


def _subscription_event(
    event_id: str, event_type: str, subscription: Mapping[str, Any], occurred_at: datetime | None
) -> ProviderEvent:
    status = _optional_text(subscription.get("status"))
    if event_type == "customer.subscription.deleted" or status in _ENDED_STATUSES:
        kind = RECURRING_ENDED
    elif subscription.get("cancel_at_period_end") or subscription.get("cancel_at"):
        kind = RECURRING_CANCEL_SCHEDULED
    else:
        kind = RECURRING_RESUMED
    metadata = _metadata(subscription.get("metadata"))
    reference = _optional_text(subscription.get("id"))
    if reference is None:
        raise InvalidEvent("a subscription has an id")
    return ProviderEvent(
        event_id=event_id,
        event_type=kind,
        payment_id=_optional_text(metadata.get("payment_id")),
        provider_payment_id=None,
        amount=Decimal(0),
        currency="",
        account_id=account_in_metadata(metadata),
        recurring_reference=reference,
        customer_reference=_id_of(subscription.get("customer")),
        occurred_at=occurred_at,
    )


def _reversal_event(event_id: str, event_type: str, item: Mapping[str, Any]) -> ProviderEvent:
    """A refunded charge (``amount_refunded``: all refunds so far) or a dispute (``amount``)."""
    currency = item.get("currency")
    if not isinstance(currency, str):
        raise InvalidEvent("a charge or dispute has a currency")
    refunded = event_type == "charge.refunded"
    metadata = _metadata(item.get("metadata")) if refunded else {}
    intent = _id_of(item.get("payment_intent"))
    if intent is None and not metadata.get("payment_id"):
        return _ignored(event_id, event_type)
    return ProviderEvent(
        event_id=event_id,
        event_type=PAYMENT_REFUNDED if refunded else PAYMENT_CHARGED_BACK,
        payment_id=_optional_text(metadata.get("payment_id")),
        provider_payment_id=None,
        amount=from_minor_units(item.get("amount_refunded" if refunded else "amount"), currency),
        currency=currency.upper(),
        account_id=account_in_metadata(metadata),
        refund_reference=intent,
    )


def _metadata(value: Any) -> Mapping[str, Any]:
    """An object's metadata: where our ids travel, so one that is not an object is a malformed
    event rather than an event without ids."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidEvent("a Stripe object's metadata is an object")
    return value


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _id_of(value: Any) -> str | None:
    """An object's id, whether Stripe sent the id or (expanded) the object."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return _optional_text(value)


def _optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
