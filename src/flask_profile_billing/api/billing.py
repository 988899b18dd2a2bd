"""The billing API (``/api/billing/...``): quota packages, payment webhooks, the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint

from . import openapi_views, preview_views, webhook_views


def build_blueprint(name: str) -> Blueprint:
    blueprint = Blueprint(name, __name__)
    preview_views.register(blueprint)
    webhook_views.register(blueprint)
    openapi_views.register(blueprint)
    return blueprint
