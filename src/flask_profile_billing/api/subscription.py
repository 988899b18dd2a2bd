"""The subscription API (``/api/subscription/...``): plans, the current subscription, changes, usage."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request, url_for

from ..account_context import request_account_id
from ..domain.dates import format_day
from ..presenters import plan_dict, subscription_dict
from ..state import BillingState, get_state
from .common import authenticated, current_user_id, load_json, load_query, ok
from .schemas import NoQuerySchema, UpgradeSchema, UsageQuerySchema


def build_blueprint(name: str) -> Blueprint:
    blueprint = Blueprint(name, __name__)
    blueprint.add_url_rule("/plans", view_func=plans, methods=["GET"])
    blueprint.add_url_rule("/current", view_func=current, methods=["GET"])
    blueprint.add_url_rule("/upgrade", view_func=upgrade, methods=["POST"])
    blueprint.add_url_rule("/usage", view_func=usage, methods=["GET"])
    blueprint.add_url_rule("/limits/check", view_func=limits_check, methods=["GET"])
    blueprint.add_url_rule("/cancel", view_func=cancel, methods=["POST"])
    return blueprint


def plans() -> Response:
    load_query(NoQuerySchema())
    catalog = get_state().runtime.catalog
    return ok({"plans": [plan_dict(plan, catalog) for plan in catalog.plans.values()]})


@authenticated
def current() -> Response:
    load_query(NoQuerySchema())
    state = get_state()
    return ok({"subscription": _subscription(state, request_account_id(state, current_user_id()))})


@authenticated
def upgrade() -> Response:
    body = load_json(UpgradeSchema())
    state = get_state()
    account_id = request_account_id(state, current_user_id())
    outcome = state.plan_changes.request_change(
        account_id, body["plan_type"], body["duration_months"], _return_url(state)
    )
    data: dict[str, Any] = {
        "subscription": _subscription(state, account_id),
        "message": outcome.message,
    }
    if outcome.payment is not None:
        data["payment"] = outcome.payment
        return ok(data, 202)
    return ok(data)


@authenticated
def usage() -> Response:
    query = load_query(UsageQuerySchema())
    state = get_state()
    account_id = request_account_id(state, current_user_id())
    stats = state.usage.usage(account_id, query["days"])
    return ok(
        {
            "period_days": stats.days,
            "subscription": _subscription(state, account_id),
            "total_usage": stats.totals,
            "daily_usage": {day.isoformat(): totals for day, totals in stats.daily.items()},
        }
    )


@authenticated
def limits_check() -> Response:
    load_query(NoQuerySchema())
    state = get_state()
    checks = state.quotas.limits_check(request_account_id(state, current_user_id()))
    data: dict[str, Any] = {check.metric.check_key: check.allowed for check in checks}
    data["messages"] = {check.metric.message_key: check.refusal for check in checks}
    return ok(data)


@authenticated
def cancel() -> Response:
    state = get_state()
    user_id = current_user_id()
    account_id = request_account_id(state, user_id)
    # NOT_CANCELLABLE for a plan that never lapses
    subscription = state.subscriptions.cancel(account_id)
    assert subscription.expires_at is not None  # cancel refuses subscriptions that never lapse
    until = format_day(subscription.expires_at.astimezone(state.profiles.timezone_of(user_id)))
    return ok(
        {
            "subscription": _subscription(state, account_id),
            "message": f"Subscription cancelled. Access is kept until {until}",
        }
    )


def _subscription(state: BillingState, account_id: str) -> dict[str, Any]:
    subscription, plan, allowances = state.quotas.snapshot(account_id)
    return subscription_dict(
        subscription, plan, state.runtime.catalog, allowances, state.runtime.now()
    )


def _return_url(state: BillingState) -> str:
    """Where a provider sends the user back after paying: the profile page when it is on, else
    the site's root (``BILLING_PAYMENT_RETURN_URL`` overrides both)."""
    page = state.runtime.settings.page.blueprint
    if page.enabled:
        return url_for(f"{page.name}.profile", _external=True)
    return request.url_root
