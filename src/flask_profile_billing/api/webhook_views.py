"""The payment providers' webhook: ``POST <billing prefix>/webhooks/<provider>``.

Server to server: no login and no CSRF token, since the provider has neither. Each configured
provider has its own URL (``/webhooks/stripe``, ``/webhooks/yookassa``, ...), and authenticates its
own deliveries over the raw body and headers (``X-Billing-Signature`` by default,
``Stripe-Signature`` for Stripe; YooKassa's are read back from its API); the webhook service checks
that before it reads anything else.

A host that protects every POST with Flask-WTF's ``CSRFProtect`` would refuse every delivery (no
token), and a paid payment would never grant its plan; the blueprint this view is registered on is
exempt from that ``CSRFProtect``, like every API blueprint (``common.exempt_from_host_csrf_protect``).
CSRF defends a browser's cookies, which a delivery does not use: the signature is its
authentication.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from ..payments.providers import DeliveryHeaders
from ..state import get_state
from .common import ok


def register(blueprint: Blueprint) -> None:
    """Add this module's routes to ``blueprint``."""
    blueprint.add_url_rule(
        "/webhooks/<provider>", endpoint="payment_webhook", view_func=webhook, methods=["POST"]
    )


def webhook(provider: str) -> Response:
    # get_data(): the bytes as sent, which is what was signed; never the parsed and re-dumped JSON.
    result = get_state().webhooks.handle(
        provider,
        request.get_data(cache=True),
        DeliveryHeaders(request.headers.items()),
        source_address=request.remote_addr,
    )
    data: dict[str, Any] = {"outcome": result.outcome.value, "event_id": result.event_id}
    if result.reason is not None:
        data["reason"] = result.reason
    return ok(data)
