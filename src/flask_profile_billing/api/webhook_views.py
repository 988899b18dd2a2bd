"""The payment providers' webhook: ``POST <billing prefix>/webhooks/<provider>`` (SPEC S14).

Server to server: no login and no CSRF token, since the provider has neither. The signature over the
raw body (``X-Billing-Signature``) is what authenticates a delivery; the payments service checks it
before it reads anything else.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from ..extension import get_state
from ..payments.signatures import SIGNATURE_HEADER
from .common import ok


def register(blueprint: Blueprint) -> None:
    """Add this module's routes to ``blueprint``."""
    blueprint.add_url_rule(
        "/webhooks/<provider>", endpoint="payment_webhook", view_func=webhook, methods=["POST"]
    )


def webhook(provider: str) -> Response:
    # get_data(): the bytes as sent, which is what was signed; never the parsed and re-dumped JSON.
    result = get_state().payments.handle_webhook(
        provider, request.get_data(cache=True), request.headers.get(SIGNATURE_HEADER)
    )
    data: dict[str, Any] = {"outcome": result.outcome.value, "event_id": result.event_id}
    if result.reason is not None:
        data["reason"] = result.reason
    return ok(data)
