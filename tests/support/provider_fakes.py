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
    """Stripe's ``POST /v1/checkout/sessions``, with its idempotency: the same ``Idempotency-Key``
    answers the session it created first, as Stripe does for 24 hours."""

    server: HTTPServer
    requests: list[RecordedRequest] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_idempotency_key: dict[str, str] = field(default_factory=dict)
    failure: tuple[int, dict[str, Any]] | None = None
    """When set, the status and error body every creation answers (a declined key, an outage)."""

    def install(self) -> None:
        self.server.expect_request("/v1/checkout/sessions", method="POST").respond_with_handler(
            self._create_session
        )

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
        amount = int(form["line_items[0][price_data][unit_amount]"]) * int(
            form["line_items[0][quantity]"]
        )
        session = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": amount,
            "amount_total": amount,
            "cancel_url": form.get("cancel_url"),
            "client_reference_id": form.get("client_reference_id"),
            "created": int(time.time()),
            "currency": form["line_items[0][price_data][currency]"],
            "customer": None,
            "customer_email": form.get("customer_email"),
            "livemode": False,
            "metadata": {
                name[len("metadata[") : -1]: value
                for name, value in form.items()
                if name.startswith("metadata[")
            },
            "mode": form["mode"],
            "payment_intent": None,
            "payment_status": "unpaid",
            "status": "open",
            "success_url": form.get("success_url"),
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
        }
        self.sessions[session_id] = session
        self.by_idempotency_key[key] = session_id
        return _json(session)

    def event(
        self,
        session_id: str,
        event_type: str = "checkout.session.completed",
        event_id: str | None = None,
        **changes: Any,
    ) -> bytes:
        """The webhook body of an event about the session (paid, unless ``changes`` say else)."""
        session = {**self.sessions[session_id], "status": "complete", "payment_status": "paid"}
        session.update(changes)
        body = {
            "id": event_id or f"evt_{uuid.uuid4().hex}",
            "object": "event",
            "api_version": "2025-09-30.clover",
            "created": int(time.time()),
            "data": {"object": session},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        return json.dumps(body).encode()


def stripe_signature(secret: str, raw_body: bytes, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header as Stripe computes it: ``t=<unix>,v1=<hex HMAC-SHA256 of
    "<t>." + the body, keyed with the endpoint's signing secret>``."""
    moment = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{moment}.".encode() + raw_body, hashlib.sha256).hexdigest()
    return f"t={moment},v1={mac}"


# --- YooKassa -------------------------------------------------------------------------------------


@dataclass
class FakeYooKassa:
    """YooKassa's ``POST /v3/payments`` (with its ``Idempotence-Key``) and ``GET
    /v3/payments/<id>``; a test moves a payment on with ``settle``."""

    server: HTTPServer
    requests: list[RecordedRequest] = field(default_factory=list)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_idempotence_key: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self) -> None:
        self.server.expect_request("/v3/payments", method="POST").respond_with_handler(self._create)
        self.server.expect_request(
            re.compile(r"^/v3/payments/[^/]+$"), method="GET"
        ).respond_with_handler(self._find)

    @property
    def api_url(self) -> str:
        return self.server.url_for("/v3")

    def _create(self, request: Request) -> Response:
        recorded = _record(request)
        with self._lock:
            self.requests.append(recorded)
            key = recorded.headers.get("idempotence-key", "")
            if key in self.by_idempotence_key:
                return _json(self.payments[self.by_idempotence_key[key]])
            body = recorded.json
            payment_id = str(uuid.uuid4())
            payment = {
                "id": payment_id,
                "status": "pending",
                "paid": False,
                "amount": body["amount"],
                "confirmation": {
                    "type": "redirect",
                    "return_url": body["confirmation"]["return_url"],
                    "confirmation_url": "https://yoomoney.ru/checkout/payments/v2/contract"
                    f"?orderId={payment_id}",
                },
                "created_at": "2025-10-13T10:00:00.000Z",
                "description": body.get("description"),
                "metadata": body.get("metadata", {}),
                "recipient": {"account_id": "100001", "gateway_id": "1000001"},
                "refundable": False,
                "test": True,
            }
            self.payments[payment_id] = payment
            self.by_idempotence_key[key] = payment_id
        return _json(payment)

    def _find(self, request: Request) -> Response:
        self.requests.append(_record(request))
        payment = self.payments.get(request.path.rsplit("/", 1)[1])
        if payment is None:
            return _json(
                {
                    "type": "error",
                    "id": str(uuid.uuid4()),
                    "code": "not_found",
                    "description": "Payment not found",
                },
                404,
            )
        return _json(payment)

    def settle(self, payment_id: str, status: str = "succeeded", **changes: Any) -> None:
        """What the API reports from now on: ``succeeded`` (paid), ``canceled``, ``pending``..."""
        payment = self.payments[payment_id]
        payment.update(status=status, paid=status in {"succeeded", "waiting_for_capture"})
        if status == "succeeded":
            payment.update(captured_at="2025-10-13T10:01:00.000Z", refundable=True)
        payment.update(changes)

    def notification(self, payment_id: str, event: str = "payment.succeeded") -> bytes:
        """The notification YooKassa posts (its documented shape), about the payment as it is."""
        payment = {**self.payments[payment_id]}
        payment.pop("confirmation", None)
        body = {"type": "notification", "event": event, "object": payment}
        return json.dumps(body).encode()
