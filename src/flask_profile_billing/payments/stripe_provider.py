"""Stripe through its official library (``pip install flask-profile-billing[stripe]``).

A payment is a Checkout Session in ``payment`` mode for one period of a plan: one line item priced
in the plan's currency, our payment id and the user's id in its metadata (and as the session's
``client_reference_id``), and our payment id as the idempotency key, so a retried start never makes
a second session. The user pays on Stripe's hosted page and comes back to the return URL.

Webhooks are checked by the library (``stripe.WebhookSignature.verify_header``, what
``stripe.Webhook.construct_event`` runs): the ``Stripe-Signature`` header's HMAC-SHA256 over the raw
body with the endpoint's signing secret, and the library's tolerance against the system clock, so a
delivery captured and replayed later is refused. The events acted on:

- ``checkout.session.completed`` with ``payment_status`` ``paid``, and
  ``checkout.session.async_payment_succeeded``: the payment succeeded;
- ``checkout.session.async_payment_failed``: it failed;
- ``checkout.session.expired``: the user never paid, it is cancelled.

Every other event type is recorded and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import stripe

from .providers import (
    PAYMENT_CANCELLED,
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
    InvalidEvent,
    PaymentIntent,
    ProviderEvent,
    ProviderPayment,
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


class StripeProvider:
    """Stripe Checkout for one-off periods; its webhook is ``<billing prefix>/webhooks/stripe``.

    ``client`` replaces the ``StripeClient`` built from ``secret_key`` (``api_base`` points that
    one at another address, such as a local fake of Stripe's API in tests).
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

    def __repr__(self) -> str:  # the keys never reach a log line
        return f"StripeProvider(name={self.name!r})"

    def start(self, payment: PaymentIntent) -> ProviderPayment:
        metadata = {
            "payment_id": payment.id,
            "user_id": payment.user_id,
            "plan": payment.plan_code,
            "months": str(payment.months),
        }
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": payment.currency.lower(),
                        "unit_amount": minor_units(payment.amount, payment.currency),
                        "product_data": {"name": payment.description},
                    },
                }
            ],
            "success_url": payment.return_url,
            "cancel_url": payment.cancel_url or payment.return_url,
            "client_reference_id": payment.id,
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
        }
        if payment.customer_email:
            params["customer_email"] = payment.customer_email
        session = self._client.v1.checkout.sessions.create(
            params,  # type: ignore[arg-type]  # a plain dict of the documented parameters
            {"idempotency_key": f"checkout-{payment.id}"},
        )
        return ProviderPayment(str(session.id), str(session.url))

    def verify(self, headers: Mapping[str, str], raw_body: bytes, now: datetime) -> None:
        try:
            stripe.WebhookSignature.verify_header(
                raw_body.decode("utf-8"),
                headers.get(SIGNATURE_HEADER),
                self._webhook_secret,
                self._tolerance_seconds,
            )
        except stripe.SignatureVerificationError as error:
            raise InvalidSignature(str(error).split(". ")[0]) from None
        except UnicodeDecodeError:
            raise InvalidSignature("the body is not UTF-8 text, which Stripe signs") from None

    def parse_event(self, payload: Mapping[str, Any]) -> ProviderEvent:
        event_id = payload.get("id")
        event_type = payload.get("type")
        if not isinstance(event_id, str) or not isinstance(event_type, str):
            raise InvalidEvent("a Stripe event has a string id and type")
        data = payload.get("data")
        session = data.get("object") if isinstance(data, Mapping) else None
        if not isinstance(session, Mapping):
            raise InvalidEvent("a Stripe event has data.object")
        if event_type == "checkout.session.completed":
            # Paid now, or (bank debits, vouchers) later: async_payment_succeeded then follows.
            paid = session.get("payment_status") in {"paid", "no_payment_required"}
            kind = PAYMENT_SUCCEEDED if paid else "checkout.session.completed.unpaid"
        else:
            kind = _CHECKOUT_EVENTS.get(event_type, event_type)
        if not event_type.startswith("checkout.session.") or session.get("mode") != "payment":
            # Not a one-off checkout of ours: recorded and ignored.
            return ProviderEvent(event_id, event_type, None, None, Decimal(0), "")
        metadata = session.get("metadata")
        metadata = metadata if isinstance(metadata, Mapping) else {}
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
            user_id=_optional_text(metadata.get("user_id")),
        )


def _optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
