"""Registering the API blueprints under their configured names and URL prefixes."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Flask

from ..errors import BillingConfigError
from . import billing, profile, subscription

# (config key prefix, blueprint factory)
BLUEPRINTS: list[tuple[str, Callable[[str], Blueprint]]] = [
    ("BILLING_SUBSCRIPTION_API", subscription.build_blueprint),
    ("BILLING_PROFILE_API", profile.build_blueprint),
    ("BILLING_BILLING_API", billing.build_blueprint),
]


def register_api(app: Flask) -> None:
    for key, build in BLUEPRINTS:
        if not app.config[f"{key}_ENABLED"]:
            continue
        name = app.config[f"{key}_NAME"]
        if name in app.blueprints:
            raise BillingConfigError(
                f"a blueprint named {name!r} is already registered: set {key}_NAME to another name"
            )
        app.register_blueprint(build(name), url_prefix=app.config[f"{key}_PREFIX"])
