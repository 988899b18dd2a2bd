"""Loopback fakes of Stripe's and YooKassa's HTTP APIs, for the providers' official libraries.

Each serves the few endpoints the extension calls, answering with the objects of the providers'
API references (the documented examples, with our values filled in), and records every request so
a test can assert what the library sent: the body, the idempotency header and the credentials.
Webhook bodies are built the same way, and signed as Stripe signs them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]
    json: Any


def _record(request: Request) -> RecordedRequest:
    body = request.get_data()
    is_json = request.mimetype == "application/json" and body
    return RecordedRequest(
        method=request.method,
        path=request.path,
        headers={key.lower(): value for key, value in request.headers.items()},
        form=request.form.to_dict(),
        json=json.loads(body) if is_json else None,
    )


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")


# --- Stripe ---------------------------------------------------------------------------------------


@dataclass
class FakeStripe:
    """Stripe's ``POST /v1/checkout/sessions`` (one-off prices and, with ``prices``, subscriptions),
    with its idempotency: the same ``Idempotency-Key`` answers the session it created first, as
    Stripe does for 24 hours; and ``POST``/``DELETE /v1/subscriptions/<id>`` (a cancel at the
    period's end, or at once)."""

    server: HTTPServer
    requests: list[RecordedRequest] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_idempotency_key: dict[str, str] = field(default_factory=dict)
    prices: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Price id -> (unit amount in minor units, currency): the recurring prices of the account."""
    failure: tuple[int, dict[str, Any]] | None = None
    """When set, the status and error body every creation answers (a declined key, an outage)."""
    local_checkout: bool = False
    """Sessions' ``url`` is a page this fake serves on loopback (for a browser to follow),
    rather than checkout.stripe.com."""

    def install(self) -> None:
        self.server.expect_request("/v1/checkout/sessions", method="POST").respond_with_handler(
            self._create_session
        )
        self.server.expect_request(
            re.compile(r"^/c/pay/[^/]+$"), method="GET"
        ).respond_with_handler(self._checkout_page)
        self.server.expect_request(
            re.compile(r"^/v1/subscriptions/[^/]+$"), method="POST"
        ).respond_with_handler(self._update_subscription)
        self.server.expect_request(
            re.compile(r"^/v1/subscriptions/[^/]+$"), method="DELETE"
        ).respond_with_handler(self._cancel_subscription)

    @property
    def api_base(self) -> str:
        return self.server.url_for("/").rstrip("/")

    def _create_session(self, request: Request) -> Response:
        recorded = _record(request)
        self.requests.append(recorded)
        if self.failure is not None:
            status, error = self.failure
            return _json({"error": error}, status)
        key = recorded.headers.get("idempotency-key", "")
        if key in self.by_idempotency_key:
            return _json(self.sessions[self.by_idempotency_key[key]])
        form = recorded.form
        session_id = f"cs_test_{uuid.uuid4().hex}"
        quantity = int(form["line_items[0][quantity]"])
        if form["mode"] == "subscription":
            unit_amount, currency = self.prices[form["line_items[0][price]"]]
        else:
            unit_amount = int(form["line_items[0][price_data][unit_amount]"])
            currency = form["line_items[0][price_data][currency]"]
        session = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": unit_amount * quantity,
            "amount_total": unit_amount * quantity,
            "cancel_url": form.get("cancel_url"),
            "client_reference_id": form.get("client_reference_id"),
            "created": int(time.time()),
            "currency": currency,
            "customer": None,
            "customer_email": form.get("customer_email"),
            "invoice": None,
            "livemode": False,
            "metadata": _form_dict(form, "metadata"),
            "mode": form["mode"],
            "payment_intent": None,
            "payment_status": "unpaid",
            "status": "open",
            "subscription": None,
            "success_url": form.get("success_url"),
            "url": (
                self.server.url_for(f"/c/pay/{session_id}")
                if self.local_checkout
                else f"https://checkout.stripe.com/c/pay/{session_id}"
            ),
        }
        if form["mode"] == "subscription":
            session["price"] = form["line_items[0][price]"]
            session["subscription_metadata"] = _form_dict(form, "subscription_data[metadata]")
        self.sessions[session_id] = session
        self.by_idempotency_key[key] = session_id
        return _json(session)

    def _checkout_page(self, request: Request) -> Response:
        """Stripe's hosted checkout page, as far as a browser test needs it: which session it is."""
        self.requests.append(_record(request))
        session_id = request.path.rsplit("/", 1)[1]
        if session_id not in self.sessions:
            return Response("No such checkout session", status=404, content_type="text/plain")
        page = (
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<title>Checkout (fake Stripe)</title><link rel=icon href=data:,></head>"
            f"<body><h1>Pay with the fake Stripe</h1><p id=session>{session_id}</p></body></html>"
        )
        return Response(page, content_type="text/html; charset=utf-8")

    def complete(self, session_id: str) -> dict[str, Any]:
        """The user paid: the session gets its PaymentIntent, or its customer, subscription and
        first invoice (each once)."""
        session = self.sessions[session_id]
        if session["mode"] == "payment":
            session["payment_intent"] = session["payment_intent"] or f"pi_{uuid.uuid4().hex}"
        elif session["subscription"] is None:
            subscription_id = f"sub_{uuid.uuid4().hex}"
            session["customer"] = f"cus_{uuid.uuid4().hex[:14]}"
            session["subscription"] = subscription_id
            session["invoice"] = f"in_{uuid.uuid4().hex}"
            self.subscriptions[subscription_id] = {
                "id": subscription_id,
                "object": "subscription",
                "cancel_at": None,
                "cancel_at_period_end": False,
                "customer": session["customer"],
                "metadata": session["subscription_metadata"],
                "status": "active",
                "price": session["price"],
                "first_invoice": session["invoice"],
            }
        return session

    def event(
        self,
        session_id: str,
        event_type: str = "checkout.session.completed",
        event_id: str | None = None,
        **changes: Any,
    ) -> bytes:
        """The webhook body of an event about the session (paid, unless ``changes`` say else)."""
        self.complete(session_id)
        session = {**self.sessions[session_id], "status": "complete", "payment_status": "paid"}
        session.pop("price", None)
        session.pop("subscription_metadata", None)
        session.update(changes)
        return self.webhook(event_type, session, event_id=event_id)

    def webhook(
        self,
        event_type: str,
        data_object: dict[str, Any],
        event_id: str | None = None,
        created: int | None = None,
    ) -> bytes:
        """A webhook body (Stripe's event object) about ``data_object``."""
        body = {
            "id": event_id or f"evt_{uuid.uuid4().hex}",
            "object": "event",
            "api_version": "2025-09-30.clover",
            "created": int(time.time()) if created is None else created,
            "data": {"object": data_object},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        return json.dumps(body).encode()

    def invoice_paid(
        self,
        subscription_id: str,
        billing_reason: str = "subscription_cycle",
        amount_paid: int | None = None,
        invoice_id: str | None = None,
        event_id: str | None = None,
    ) -> bytes:
        """``invoice.paid`` of the subscription (in the 2025-03-31+ shape: its subscription under
        ``parent``, its PaymentIntent under ``payments``)."""
        subscription = self.subscriptions[subscription_id]
        unit_amount, currency = self.prices[subscription["price"]]
        first = billing_reason == "subscription_create"
        invoice = {
            "id": invoice_id
            or (subscription["first_invoice"] if first else f"in_{uuid.uuid4().hex}"),
            "object": "invoice",
            "amount_due": unit_amount,
            "amount_paid": unit_amount if amount_paid is None else amount_paid,
            "billing_reason": billing_reason,
            "currency": currency,
            "customer": subscription["customer"],
            "parent": {
                "type": "subscription_details",
                "subscription_details": {
                    "metadata": subscription["metadata"],
                    "subscription": subscription_id,
                },
            },
            "payments": {
                "object": "list",
                "data": [
                    {
                        "object": "invoice_payment",
                        "payment": {
                            "type": "payment_intent",
                            "payment_intent": f"pi_{uuid.uuid4().hex}",
                        },
                        "status": "paid",
                    }
                ],
            },
            "status": "paid",
        }
        return self.webhook("invoice.paid", invoice, event_id=event_id)

    def subscription_event(
        self,
        subscription_id: str,
        event_type: str = "customer.subscription.updated",
        created: int | None = None,
        **changes: Any,
    ) -> bytes:
        """``customer.subscription.updated`` / ``.deleted`` about the subscription as it is, with
        ``changes`` (``cancel_at_period_end=True``, ``status="canceled"``)."""
        subscription = {**self.subscriptions[subscription_id], **changes}
        subscription.pop("price", None)
        subscription.pop("first_invoice", None)
        return self.webhook(event_type, subscription, created=created)

    def charge_refunded(
        self, payment_intent: str, amount: int, currency: str, amount_refunded: int | None = None
    ) -> bytes:
        """``charge.refunded``: the charge of ``payment_intent``, refunded by ``amount_refunded``
        in all (the whole ``amount`` by default)."""
        refunded = amount if amount_refunded is None else amount_refunded
        charge = {
            "id": f"ch_{uuid.uuid4().hex}",
            "object": "charge",
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": refunded,
            "currency": currency,
            "metadata": {},
            "paid": True,
            "payment_intent": payment_intent,
            "refunded": refunded == amount,
            "status": "succeeded",
        }
        return self.webhook("charge.refunded", charge)

    def dispute_created(self, payment_intent: str, amount: int, currency: str) -> bytes:
        """``charge.dispute.created`` about the charge of ``payment_intent``."""
        dispute = {
            "id": f"dp_{uuid.uuid4().hex}",
            "object": "dispute",
            "amount": amount,
            "charge": f"ch_{uuid.uuid4().hex}",
            "currency": currency,
            "payment_intent": payment_intent,
            "reason": "fraudulent",
            "status": "needs_response",
        }
        return self.webhook("charge.dispute.created", dispute)

    def _update_subscription(self, request: Request) -> Response:
        recorded = _record(request)
        self.requests.append(recorded)
        subscription = self.subscriptions[request.path.rsplit("/", 1)[1]]
        if "cancel_at_period_end" in recorded.form:
            subscription["cancel_at_period_end"] = recorded.form["cancel_at_period_end"] == "true"
        return _json(subscription)

    def _cancel_subscription(self, request: Request) -> Response:
        self.requests.append(_record(request))
        subscription = self.subscriptions[request.path.rsplit("/", 1)[1]]
        subscription["status"] = "canceled"
        return _json(subscription)


def _form_dict(form: dict[str, str], prefix: str) -> dict[str, str]:
    """The ``prefix[key]`` fields of a form-encoded body as a dict."""
    start = f"{prefix}["
    return {
        name[len(start) : -1]: value
        for name, value in form.items()
        if name.startswith(start) and name.count("[") == prefix.count("[") + 1
    }


def stripe_signature(secret: str, raw_body: bytes, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header as Stripe computes it: ``t=<unix>,v1=<hex HMAC-SHA256 of
    "<t>." + the body, keyed with the endpoint's signing secret>``."""
    moment = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{moment}.".encode() + raw_body, hashlib.sha256).hexdigest()
    return f"t={moment},v1={mac}"


# --- YooKassa -------------------------------------------------------------------------------------


@dataclass
class FakeYooKassa:
    """YooKassa's ``POST /v3/payments`` (with its ``Idempotence-Key``; with ``payment_method_id``
    an autopayment, answered at once with ``renewal_status``), ``GET /v3/payments/<id>`` and
    ``GET /v3/refunds/<id>``; a test moves a payment on with ``settle`` and refunds it with
    ``refund``."""

    server: HTTPServer
    requests: list[RecordedRequest] = field(default_factory=list)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_idempotence_key: dict[str, str] = field(default_factory=dict)
    renewal_status: str = "succeeded"
    """What an autopayment (a charge of a saved method) comes out as: ``succeeded``,
    ``canceled`` (declined) or ``pending``."""
    outage: bool = False
    """When set, reading a payment answers 503, as YooKassa does when it cannot say."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self) -> None:
        self.server.expect_request("/v3/payments", method="POST").respond_with_handler(self._create)
        self.server.expect_request(
            re.compile(r"^/v3/payments/[^/]+$"), method="GET"
        ).respond_with_handler(self._find)
        self.server.expect_request(
            re.compile(r"^/v3/refunds/[^/]+$"), method="GET"
        ).respond_with_handler(self._find_refund)

    @property
    def api_url(self) -> str:
        return self.server.url_for("/v3")

    def creations(self) -> list[RecordedRequest]:
        """Every ``POST /v3/payments`` received."""
        return [r for r in self.requests if (r.method, r.path) == ("POST", "/v3/payments")]

    def _create(self, request: Request) -> Response:
        recorded = _record(request)
        with self._lock:
            self.requests.append(recorded)
            key = recorded.headers.get("idempotence-key", "")
            if key in self.by_idempotence_key:
                return _json(self.payments[self.by_idempotence_key[key]])
            body = recorded.json
            payment_id = str(uuid.uuid4())
            payment: dict[str, Any] = {
                "id": payment_id,
                "status": "pending",
                "paid": False,
                "amount": body["amount"],
                "created_at": "2025-10-13T10:00:00.000Z",
                "description": body.get("description"),
                "metadata": body.get("metadata", {}),
                "recipient": {"account_id": "100001", "gateway_id": "1000001"},
                "refundable": False,
                "test": True,
            }
            if "payment_method_id" in body:
                payment["payment_method"] = {
                    "type": "bank_card",
                    "id": body["payment_method_id"],
                    "saved": True,
                    "title": "Bank card *4444",
                }
            else:
                payment["confirmation"] = {
                    "type": "redirect",
                    "return_url": body["confirmation"]["return_url"],
                    "confirmation_url": "https://yoomoney.ru/checkout/payments/v2/contract"
                    f"?orderId={payment_id}",
                }
                payment["payment_method"] = {
                    "type": "bank_card",
                    "id": payment_id,
                    "saved": False,
                }
                payment["save_payment_method"] = bool(body.get("save_payment_method"))
            self.payments[payment_id] = payment
            self.by_idempotence_key[key] = payment_id
            if "payment_method_id" in body and self.renewal_status != "pending":
                self.settle(payment_id, self.renewal_status)
        return _json(payment)

    def _find(self, request: Request) -> Response:
        self.requests.append(_record(request))
        if self.outage:
            return _json({"type": "error", "code": "internal_server_error"}, 503)
        return self._found(self.payments.get(request.path.rsplit("/", 1)[1]), "Payment")

    def _find_refund(self, request: Request) -> Response:
        self.requests.append(_record(request))
        return self._found(self.refunds.get(request.path.rsplit("/", 1)[1]), "Refund")

    @staticmethod
    def _found(item: dict[str, Any] | None, what: str) -> Response:
        if item is None:
            return _json(
                {
                    "type": "error",
                    "id": str(uuid.uuid4()),
                    "code": "not_found",
                    "description": f"{what} not found",
                },
                404,
            )
        return _json(item)

    def settle(self, payment_id: str, status: str = "succeeded", **changes: Any) -> None:
        """What the API reports from now on: ``succeeded`` (paid), ``canceled``, ``pending``...
        A succeeded payment asked to save its method reports it saved."""
        payment = self.payments[payment_id]
        payment.update(status=status, paid=status in {"succeeded", "waiting_for_capture"})
        if status == "succeeded":
            payment.update(captured_at="2025-10-13T10:01:00.000Z", refundable=True)
            if payment.get("save_payment_method"):
                payment["payment_method"]["saved"] = True
        if status == "canceled":
            payment["cancellation_details"] = {"party": "payment_network", "reason": "card_expired"}
        payment.update(changes)

    def refund(self, payment_id: str, value: str | None = None) -> str:
        """Refund the payment (all of it by default); the refund's id."""
        payment = self.payments[payment_id]
        amount = {
            "value": value or payment["amount"]["value"],
            "currency": payment["amount"]["currency"],
        }
        refund_id = str(uuid.uuid4())
        self.refunds[refund_id] = {
            "id": refund_id,
            "payment_id": payment_id,
            "status": "succeeded",
            "created_at": "2025-10-20T10:00:00.000Z",
            "amount": amount,
        }
        before = float(payment.get("refunded_amount", {}).get("value", "0"))
        payment["refunded_amount"] = {
            "value": f"{before + float(amount['value']):.2f}",
            "currency": amount["currency"],
        }
        return refund_id

    def refund_notification(self, refund_id: str) -> bytes:
        """The ``refund.succeeded`` notification about the refund."""
        body = {
            "type": "notification",
            "event": "refund.succeeded",
            "object": self.refunds[refund_id],
        }
        return json.dumps(body).encode()

    def notification(self, payment_id: str, event: str = "payment.succeeded") -> bytes:
        """The notification YooKassa posts (its documented shape), about the payment as it is."""
        payment = {**self.payments[payment_id]}
        payment.pop("confirmation", None)
        payment.pop("save_payment_method", None)
        body = {"type": "notification", "event": event, "object": payment}
        return json.dumps(body).encode()


STRIPE_WEBHOOK_SECRET = "whsec_test_secret"
"""The endpoint secret the tests' Stripe providers are configured with."""


def deliver_to_stripe_webhook(
    client: FlaskClient, raw_body: bytes, secret: str = STRIPE_WEBHOOK_SECRET
) -> str:
    """POST an event signed as Stripe signs it; the outcome the extension answered (200)."""
    response = client.post(
        "/api/billing/webhooks/stripe",
        data=raw_body,
        headers={
            "Stripe-Signature": stripe_signature(secret, raw_body),
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 200, response.get_json()
    outcome: str = response.get_json()["data"]["outcome"]
    return outcome


def deliver_to_yookassa_webhook(client: FlaskClient, raw_body: bytes) -> str:
    """POST a YooKassa notification (unsigned: the extension asks the API about it); the outcome
    the extension answered (200)."""
    response = client.post(
        "/api/billing/webhooks/yookassa",
        data=raw_body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.get_json()
    outcome: str = response.get_json()["data"]["outcome"]
    return outcome
