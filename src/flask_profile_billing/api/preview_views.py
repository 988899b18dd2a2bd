"""``GET /api/billing/quotas/preview``: the quota packages a user could buy (SPEC P3).

Public (no login): it shows the catalog's prices, which ``GET /api/subscription/plans`` shows too.
``data`` is the seed's bare array, one package per paid plan::

    [{"id": "starter", "name": "Starter", "tokens": 200, "price": 2990, "currency": "RUB",
      "status": "coming_soon"}, ...]

``tokens`` is the plan's monthly limit of the primary metric (``BILLING_PRIMARY_METRIC``; null for
unlimited), ``price`` the monthly price (null: on request). ``status`` is ``coming_soon`` while no
payment provider is configured; with one, ``available``, or ``on_request`` for a plan without a price.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from ..domain.catalog import Plan, amount_as_number
from ..extension import get_state
from .common import load_query, ok
from .schemas import NoQuerySchema

COMING_SOON = "coming_soon"
AVAILABLE = "available"
ON_REQUEST = "on_request"


def register(blueprint: Blueprint) -> None:
    """Add this module's routes to ``blueprint``."""
    blueprint.add_url_rule("/quotas/preview", view_func=quota_packages, methods=["GET"])


def quota_packages() -> Response:
    load_query(NoQuerySchema())
    runtime = get_state().runtime
    metric = runtime.settings.primary_metric
    payments_on = runtime.settings.payment_provider is not None
    return ok(
        [
            _package(plan, metric, payments_on)
            for plan in runtime.catalog.plans.values()
            if not plan.is_free
        ]
    )


def _package(plan: Plan, metric: str, payments_on: bool) -> dict[str, Any]:
    if not payments_on:
        status = COMING_SOON
    elif plan.price_monthly is None:
        status = ON_REQUEST
    else:
        status = AVAILABLE
    return {
        "id": plan.code,
        "name": plan.name,
        "tokens": plan.limit_for(metric),
        "price": amount_as_number(plan.price_monthly),
        "currency": plan.currency,
        "status": status,
    }
