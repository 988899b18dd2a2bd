"""View models: domain values in the shapes the faces show.

The JSON API and any page of the extension present plans, subscriptions, quotas and quota packages
through these functions, so a page can never show another number than an answer of the API, nor
either of them disagree with what a guard enforces (both read the quota service).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .domain.catalog import Catalog, Plan, amount_as_number, render
from .domain.limits import Allowance
from .domain.subscriptions import Subscription

COMING_SOON = "coming_soon"
AVAILABLE = "available"
ON_REQUEST = "on_request"


def moment(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def plan_dict(plan: Plan, catalog: Catalog) -> dict[str, Any]:
    return {
        "id": plan.code,
        "plan_type": plan.code,
        # Rendered now, in the request's locale: a host may give translated (lazy) texts.
        "name": render(plan.name),
        "description": render(plan.description),
        "pricing": {
            "monthly": amount_as_number(plan.price_monthly),
            "yearly": amount_as_number(plan.price_yearly),
            "currency": plan.currency,
            "yearly_discount": plan.yearly_discount,
        },
        "limits": {
            metric.limit_key: plan.limit_for(metric.name) for metric in catalog.metrics.values()
        },
        "features": {name: plan.has_feature(name) for name in catalog.feature_names},
    }


def usage_dict(allowance: Allowance) -> dict[str, Any]:
    return {"used": allowance.used, "limit": allowance.limit, "percentage": allowance.percentage}


def subscription_dict(
    subscription: Subscription,
    plan: Plan,
    catalog: Catalog,
    allowances: Mapping[str, Allowance],
    now: datetime,
) -> dict[str, Any]:
    return {
        "id": str(subscription.id),
        "user_id": subscription.user_id,
        "plan": plan_dict(plan, catalog),
        "status": subscription.status_at(now).value,
        "is_active": subscription.is_active_at(now),
        "period": {
            "started_at": moment(subscription.started_at),
            "expires_at": moment(subscription.expires_at),
            "days_remaining": subscription.days_remaining_at(now),
        },
        "usage": {
            catalog.metric(name).usage_key: usage_dict(allowance)
            for name, allowance in allowances.items()
        },
    }


def package_dict(plan: Plan, metric: str, payments_on: bool) -> dict[str, Any]:
    """A paid plan as a quota package one could buy: "coming soon" until a payment provider is
    configured, "on request" without a price."""
    if not payments_on:
        status = COMING_SOON
    elif plan.price_monthly is None:
        status = ON_REQUEST
    else:
        status = AVAILABLE
    return {
        "id": plan.code,
        "name": render(plan.name),
        "tokens": plan.limit_for(metric),
        "price": amount_as_number(plan.price_monthly),
        "currency": plan.currency,
        "status": status,
    }
