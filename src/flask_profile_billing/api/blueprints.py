"""Registering the API blueprints under their configured names and URL prefixes."""

from __future__ import annotations

from flask import Blueprint, Flask

from ..errors import BillingConfigError
from ..settings import BlueprintSettings
from ..state import get_state
from . import billing, profile, subscription
from .common import exempt_from_host_csrf_protect


def register_api(app: Flask) -> None:
    """Register the enabled API blueprints, which check login and CSRF themselves (see
    ``exempt_from_host_csrf_protect``)."""
    api = get_state(app).runtime.settings.api
    registered: list[Blueprint] = []
    for settings, build, key in (
        (api.subscription, subscription.build_blueprint, "BILLING_SUBSCRIPTION_API_NAME"),
        (api.profile, profile.build_blueprint, "BILLING_PROFILE_API_NAME"),
        (api.billing, billing.build_blueprint, "BILLING_API_NAME"),
    ):
        if settings.enabled:
            registered.append(_register(app, settings, build(settings.name), key))
    exempt_from_host_csrf_protect(app, registered)


def _register(
    app: Flask, settings: BlueprintSettings, blueprint: Blueprint, name_key: str
) -> Blueprint:
    if settings.name in app.blueprints:
        raise BillingConfigError(
            f"a blueprint named {settings.name!r} is already registered: "
            f"set {name_key} to another name"
        )
    app.register_blueprint(blueprint, url_prefix=settings.prefix)
    return blueprint
