"""The payment providers' webhook: ``POST <billing prefix>/webhooks/<provider>``.

Server to server: no login and no CSRF token, since the provider has neither. The signature over the
raw body (``X-Billing-Signature``) is what authenticates a delivery; the webhook service checks it
before it reads anything else.

A host that protects every POST with Flask-WTF's ``CSRFProtect`` would refuse every delivery (no
token), and a paid payment would never grant its plan; so this one view is made exempt in that
``CSRFProtect``, whether the host initialises it before ``init_app`` or after. CSRF defends a
browser's cookies, which a delivery does not use: the signature is its authentication.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, request
from flask.sansio.app import App
from flask.sansio.blueprints import BlueprintSetupState

from ..payments.signatures import SIGNATURE_HEADER
from ..state import get_state
from .common import ok


def register(blueprint: Blueprint) -> None:
    """Add this module's routes to ``blueprint``."""
    blueprint.add_url_rule(
        "/webhooks/<provider>", endpoint="payment_webhook", view_func=webhook, methods=["POST"]
    )
    # CSRFProtect initialised before init_app: it exists now. Initialised after: its check is an
    # app-wide before_request added after this one, so this one runs first and exempts in time.
    blueprint.record_once(_exempt_at_registration)
    blueprint.before_app_request(_exempt_before_csrf_check)


def _exempt_at_registration(state: BlueprintSetupState) -> None:
    exempt_from_csrf_protect(state.app)


def _exempt_before_csrf_check() -> None:
    exempt_from_csrf_protect(current_app)


def exempt_from_csrf_protect(app: App) -> None:
    """Exempt the webhook view, and only it, from the app's Flask-WTF ``CSRFProtect`` if any.

    ``exempt`` records the view by its dotted name and is idempotent, so calling it on every
    request costs a set insertion.
    """
    csrf = app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(webhook)


def webhook(provider: str) -> Response:
    # get_data(): the bytes as sent, which is what was signed; never the parsed and re-dumped JSON.
    result = get_state().webhooks.handle(
        provider, request.get_data(cache=True), request.headers.get(SIGNATURE_HEADER)
    )
    data: dict[str, Any] = {"outcome": result.outcome.value, "event_id": result.event_id}
    if result.reason is not None:
        data["reason"] = result.reason
    return ok(data)
