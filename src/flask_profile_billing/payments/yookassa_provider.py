"""YooKassa through its official library (``pip install flask-profile-billing[yookassa]``).

A payment is created with a redirect confirmation (the user pays on YooKassa's page and comes back
to the return URL), captured at once, with our payment id and the user's id in its metadata and our
payment id as the ``Idempotence-Key``, so a retried start never makes a second payment. With a VAT
code configured it carries a receipt (54-FZ): the customer's email and one item, the plan's period.

YooKassa does not sign its notifications. So a notification is only a hint: only its ``type``,
``event`` and its object's ``id`` (and a refund's ``payment_id``) are read, and the payment it names
is fetched again from the API by its id (``Payment.find_one``); what the API says (status, amount,
currency, metadata) is what the extension acts on. The webhook service asks only about payments it
started (a row of ours has that YooKassa id), so a forged notification can at most make us read a
payment we already know, and an id YooKassa does not know is refused for good (``PaymentNotFound``).
The deliveries can also be limited to YooKassa's published networks (the library's
``SecurityHelper``).

With ``save_payment_method`` each payment asks YooKassa to save the payment method (the shop needs
autopayments enabled by YooKassa); when the API reports it saved, its id comes with the confirmed
event, and maintenance later charges it for a renewal (``charge_saved_method``, with the renewal's
own idempotence key). A ``refund.succeeded`` notification is confirmed the same way: the refund is
read back (``Refund.find_one``), then its payment, whose ``refunded_amount`` (all refunds so far)
is what the event reports.

The library keeps its configuration (shop id, key, API address) process-wide, in
``yookassa.Configuration``: one YooKassa shop per process.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from yookassa import Configuration, Payment, Refund
from yookassa.domain.common import SecurityHelper
from yookassa.domain.exceptions import NotFoundError

from .providers import (
    PAYMENT_CANCELLED,
    PAYMENT_REFUNDED,
    PAYMENT_SUCCEEDED,
    InvalidEvent,
    PaymentIntent,
    PaymentNotFound,
    ProviderEvent,
    ProviderPayment,
    RenewalCharge,
    account_in_metadata,
    account_metadata,
)

DEFAULT_API_URL = "https://api.yookassa.ru/v3"
_PAYMENT_EVENTS = {"payment.succeeded", "payment.canceled", "payment.waiting_for_capture"}
_STATUS_EVENTS = {"succeeded": PAYMENT_SUCCEEDED, "canceled": PAYMENT_CANCELLED}
_REFUND_SUCCEEDED = "refund.succeeded"
_MAX_DESCRIPTION = 128  # YooKassa's limit on a payment's description


class YooKassaProvider:
    """YooKassa payments for one-off periods; its webhook is ``<billing prefix>/webhooks/yookassa``.

    ``receipt_vat_code`` (YooKassa's ``vat_code``, 1 to 12) sends a receipt with every payment,
    which then needs the user's email. ``trusted_networks_only`` refuses notifications from
    addresses outside YooKassa's networks (behind a proxy, the app must see the client's address:
    Werkzeug's ``ProxyFix``). ``save_payment_method`` saves each payment's method for renewals.
    ``api_url`` points the library at another address (a local fake of the API in tests): the
    API's root with its version, ending in ``/v3``; anything else is a ``ValueError``.
    """

    def __init__(
        self,
        shop_id: str,
        secret_key: str,
        *,
        receipt_vat_code: int | None = None,
        trusted_networks_only: bool = False,
        save_payment_method: bool = False,
        name: str = "yookassa",
        api_url: str | None = None,
    ) -> None:
        if not shop_id or not secret_key:
            raise ValueError("YooKassa needs the shop id and the secret key")
        self.name = name
        self._receipt_vat_code = receipt_vat_code
        self._trusted_networks_only = trusted_networks_only
        self._save_payment_method = save_payment_method
        Configuration.configure(shop_id, secret_key, api_url=_checked_api_url(api_url))

    def __repr__(self) -> str:  # the key never reaches a log line
        return f"YooKassaProvider(name={self.name!r})"

    def start(self, payment: PaymentIntent) -> ProviderPayment:
        params = self._payment_params(payment)
        params["confirmation"] = {"type": "redirect", "return_url": payment.return_url}
        if self._save_payment_method:
            params["save_payment_method"] = True
        created = Payment.create(params, payment.id)
        return ProviderPayment(str(created.id), str(created.confirmation.confirmation_url))

    def charge_saved_method(
        self, payment: PaymentIntent, method_reference: str, idempotence_key: str
    ) -> RenewalCharge:
        """Charge a saved payment method without the user (an autopayment)."""
        params = self._payment_params(payment)
        params["payment_method_id"] = method_reference
        created = Payment.create(params, idempotence_key)
        status = str(created.status)
        return RenewalCharge(
            provider_payment_id=str(created.id),
            status=_STATUS_EVENTS.get(status, f"payment.{status}"),
            amount=Decimal(str(created.amount.value)),
            currency=str(created.amount.currency).upper(),
        )

    def _payment_params(self, payment: PaymentIntent) -> dict[str, Any]:
        amount = {"value": f"{payment.amount:.2f}", "currency": payment.currency}
        description = payment.description[:_MAX_DESCRIPTION]
        params: dict[str, Any] = {
            "amount": amount,
            "capture": True,
            "description": description,
            "metadata": {"payment_id": payment.id, **account_metadata(payment.account_id)},
        }
        if self._receipt_vat_code is not None:
            if not payment.customer_email:
                raise ValueError("a YooKassa receipt needs the customer's email")
            params["receipt"] = {
                "customer": {"email": payment.customer_email},
                "items": [
                    {
                        "description": description,
                        "quantity": "1.00",
                        "amount": amount,
                        "vat_code": self._receipt_vat_code,
                        "payment_mode": "full_payment",
                        "payment_subject": "service",
                    }
                ],
            }
        return params

    def verify(self, headers: Mapping[str, str], raw_body: bytes, now: datetime) -> None:
        """Nothing to check: YooKassa does not sign; ``confirm`` asks its API instead."""

    def accepts_source(self, address: str | None) -> bool:
        if not self._trusted_networks_only:
            return True
        if not address:
            return False
        try:
            return bool(SecurityHelper().is_ip_trusted(address))
        except Exception:  # not an IP address at all
            return False

    def parse_event(self, payload: Mapping[str, Any]) -> ProviderEvent:
        """The notification's event and the id of its object, nothing more: every other field is
        read back from the API (``confirm``). The shape is checked here rather than by the
        library's ``WebhookNotificationFactory``, which accepts a notification without an
        ``object`` and fails on odd values with exceptions of its own choosing."""
        if payload.get("type") != "notification":
            raise InvalidEvent('a YooKassa notification has "type": "notification"')
        event_type = _text(payload.get("event"))
        if event_type is None:
            raise InvalidEvent("a YooKassa notification names its event")
        item = payload.get("object")
        if not isinstance(item, Mapping):
            raise InvalidEvent("a YooKassa notification carries its object")
        object_id = _text(item.get("id"))
        if object_id is None:
            raise InvalidEvent("a YooKassa notification's object has a string id")
        if event_type == _REFUND_SUCCEEDED:
            payment_id = _text(item.get("payment_id"))
            if payment_id is None:
                raise InvalidEvent("a refund notification names its payment")
            # Only a hint, as for payments: ``confirm`` reads the refund (its id travels in
            # ``refund_reference`` until then) and its payment back from the API.
            return ProviderEvent(
                event_id=f"{object_id}:{event_type}",
                event_type=PAYMENT_REFUNDED,
                payment_id=None,
                provider_payment_id=payment_id,
                amount=Decimal(0),
                currency="",
                refund_reference=object_id,
            )
        if event_type not in _PAYMENT_EVENTS:
            # Payouts, deals, saved payment methods: recorded and ignored.
            return ProviderEvent(
                f"{event_type}:{object_id}", event_type, None, None, Decimal(0), ""
            )
        # Only a hint: ``confirm`` replaces everything but the payment's id with what the API says.
        return ProviderEvent(
            event_id=f"{object_id}:{event_type}",
            event_type=event_type,
            payment_id=None,
            provider_payment_id=object_id,
            amount=Decimal(0),
            currency="",
        )

    def confirm(self, event: ProviderEvent) -> ProviderEvent:
        if event.event_type == PAYMENT_REFUNDED:
            return self._confirm_refund(event)
        if event.provider_payment_id is None:
            return event
        payment = _find_payment(event.provider_payment_id)
        status = str(payment.status)
        metadata = payment.metadata if isinstance(payment.metadata, Mapping) else {}
        amount = _amount(payment.amount)
        provider_payment_id = _text(payment.id)
        if provider_payment_id != event.provider_payment_id:
            raise InvalidEvent("the API reported another payment than the one asked for")
        method = getattr(payment, "payment_method", None)
        saved_method = (
            _text(getattr(method, "id", None)) if getattr(method, "saved", False) else None
        )
        return ProviderEvent(
            # One event per status the API reports: a payment succeeds once, however many
            # notifications (true or forged) say so.
            event_id=f"{provider_payment_id}:payment.{status}",
            event_type=_STATUS_EVENTS.get(status, f"payment.{status}"),
            payment_id=_text(metadata.get("payment_id")),
            provider_payment_id=provider_payment_id,
            amount=amount,
            currency=str(payment.amount.currency).upper(),
            account_id=account_in_metadata(metadata),
            recurring_reference=saved_method if status == "succeeded" else None,
        )

    def _confirm_refund(self, event: ProviderEvent) -> ProviderEvent:
        if event.refund_reference is None:
            raise InvalidEvent("a refund notification names its refund")
        try:
            refund = Refund.find_one(event.refund_reference)
        except NotFoundError:
            raise PaymentNotFound(f"YooKassa knows no refund {event.refund_reference}") from None
        refund_id = _text(refund.id)
        payment_id = _text(refund.payment_id)
        if refund_id != event.refund_reference or payment_id is None:
            raise InvalidEvent("the API reported another refund than the one asked for")
        if str(refund.status) != "succeeded":
            return ProviderEvent(
                f"{refund_id}:refund.{refund.status}",
                f"refund.{refund.status}",
                None,
                None,
                Decimal(0),
                "",
            )
        payment = _find_payment(payment_id)
        metadata = payment.metadata if isinstance(payment.metadata, Mapping) else {}
        refunded = getattr(payment, "refunded_amount", None) or refund.amount
        return ProviderEvent(
            event_id=f"{refund_id}:refund.succeeded",
            event_type=PAYMENT_REFUNDED,
            payment_id=_text(metadata.get("payment_id")),
            provider_payment_id=payment_id,
            amount=_amount(refunded),
            currency=str(refunded.currency).upper(),
            account_id=account_in_metadata(metadata),
        )


def _checked_api_url(api_url: str | None) -> str:
    """The API's address as the library wants it: with the version, ``.../v3``, to which it adds
    ``/payments``. Without it every call would be a 404, found at the first customer's payment."""
    if api_url is None:
        return DEFAULT_API_URL
    url = api_url.rstrip("/")
    if not url.startswith(("https://", "http://")) or not url.endswith("/v3"):
        raise ValueError(
            "api_url is the address of YooKassa's API with its version, ending in /v3 (such as "
            f"{DEFAULT_API_URL}), not {api_url!r}"
        )
    return url


def _find_payment(provider_payment_id: str) -> Any:
    """The payment as the API reports it; ``PaymentNotFound`` when it knows no such payment (a
    404 is an answer, not an outage: asking again changes nothing)."""
    try:
        return Payment.find_one(provider_payment_id)
    except NotFoundError:
        raise PaymentNotFound(f"YooKassa knows no payment {provider_payment_id}") from None


def _amount(value: Any) -> Decimal:
    try:
        return Decimal(str(value.value))
    except (InvalidOperation, AttributeError):
        raise InvalidEvent("the API reported an object without an amount") from None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
