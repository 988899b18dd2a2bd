"""Registering the API blueprints under their configured names and URL prefixes."""

from __future__ import annotations

from flask import Blueprint, Flask

from ..responses import register_face
from ..state import get_state
from . import accounts, billing, profile, subscription
from .common import exempt_from_host_csrf_protect


def register_api(app: Flask) -> None:
    """Register the enabled API blueprints, which answer in JSON and check login and CSRF
    themselves (see ``exempt_from_host_csrf_protect``)."""
    api = get_state(app).runtime.settings.api
    registered: list[Blueprint] = []
    for settings, build, key in (
        (api.subscription, subscription.build_blueprint, "BILLING_SUBSCRIPTION_API_NAME"),
        (api.profile, profile.build_blueprint, "BILLING_PROFILE_API_NAME"),
        (api.billing, billing.build_blueprint, "BILLING_API_NAME"),
        (api.accounts, accounts.build_blueprint, "BILLING_ACCOUNTS_API_NAME"),
    ):
        blueprint = register_face(app, settings, build, name_key=key, page=False)
        if blueprint is not None:
            registered.append(blueprint)
    exempt_from_host_csrf_protect(app, registered)
