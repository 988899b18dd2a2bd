"""``GET /api/billing/quotas/preview``: the quota packages a user could buy.

Public (no login): it shows the catalog's prices, which ``GET /api/subscription/plans`` shows too.
``data`` is a bare array, one package per paid plan::

    [{"id": "starter", "name": "Starter", "tokens": 200, "price": 2990, "currency": "RUB",
      "status": "coming_soon"}, ...]

``tokens`` is the plan's monthly limit of the primary metric (``BILLING_PRIMARY_METRIC``; null for
unlimited), ``price`` the monthly price (null: on request). ``status`` is ``coming_soon`` while no
payment provider is configured; with one, ``available``, or ``on_request`` for a plan without a price.
"""

from __future__ import annotations

from flask import Blueprint, Response

from ..presenters import package_dict
from ..state import get_state
from .common import load_query, ok
from .schemas import NoQuerySchema


def register(blueprint: Blueprint) -> None:
    """Add this module's routes to ``blueprint``."""
    blueprint.add_url_rule("/quotas/preview", view_func=quota_packages, methods=["GET"])


def quota_packages() -> Response:
    load_query(NoQuerySchema())
    runtime = get_state().runtime
    metric = runtime.settings.primary_metric
    payments_on = runtime.settings.payments.provider is not None
    return ok(
        [
            package_dict(plan, metric, payments_on)
            for plan in runtime.catalog.plans.values()
            if not plan.is_free
        ]
    )
