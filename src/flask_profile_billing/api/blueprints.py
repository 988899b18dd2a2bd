"""Registering the API blueprints under their configured names and URL prefixes."""

from __future__ import annotations

from flask import Blueprint, Flask

from ..errors import BillingConfigError
from ..settings import BlueprintSettings
from ..state import get_state
from . import billing, profile, subscription


def register_api(app: Flask) -> None:
    api = get_state(app).runtime.settings.api
    for settings, build, key in (
        (api.subscription, subscription.build_blueprint, "BILLING_SUBSCRIPTION_API_NAME"),
        (api.profile, profile.build_blueprint, "BILLING_PROFILE_API_NAME"),
        (api.billing, billing.build_blueprint, "BILLING_API_NAME"),
    ):
        _register(app, settings, build(settings.name), key)


def _register(app: Flask, settings: BlueprintSettings, blueprint: Blueprint, name_key: str) -> None:
    if not settings.enabled:
        return
    if settings.name in app.blueprints:
        raise BillingConfigError(
            f"a blueprint named {settings.name!r} is already registered: "
            f"set {name_key} to another name"
        )
    app.register_blueprint(blueprint, url_prefix=settings.prefix)
