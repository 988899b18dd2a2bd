"""The activity feed's vocabulary: the types of the events the extension writes, and their titles.

A host's own event types are free-form; these are the extension's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .catalog import Catalog
from .subscriptions import Subscription, SubscriptionStatus

QUOTA_CONSUMED = "quota.consumed"
QUOTA_EXCEEDED = "quota.exceeded"
PLAN_CHANGED = "plan.changed"
SUBSCRIPTION_CANCELLED = "subscription.cancelled"
SUBSCRIPTION_RESUMED = "subscription.resumed"
SUBSCRIPTION_EXTENDED = "subscription.extended"
SUBSCRIPTION_EXPIRED = "subscription.expired"

EXPIRED_TITLE = "{plan} plan expired"
"""The title of an expiry's entry, ``{plan}`` standing for the plan's name: the maintenance batch
fills it in SQL (``store.expiry``), a single expiry here (``describe_expiry``)."""

Entry = tuple[str, str, dict[str, Any]]
"""An entry to record: (type, title, metadata)."""


def describe_change(
    previous: Subscription, current: Subscription, catalog: Catalog
) -> Entry | None:
    """The entry of a subscription change, or None when nothing a user would see changed."""
    metadata: dict[str, Any] = {
        "from_plan": previous.plan_code,
        "to_plan": current.plan_code,
        "status": current.status.value,
        "expires_at": _iso(current.expires_at),
    }
    name = plan_name(catalog, current.plan_code)
    if previous.plan_code != current.plan_code:
        if current.status is SubscriptionStatus.TRIAL:
            return PLAN_CHANGED, f"{name} trial started", metadata
        before = plan_name(catalog, previous.plan_code)
        return PLAN_CHANGED, f"Plan changed: {before} → {name}", metadata
    if current.status is SubscriptionStatus.CANCELLED and previous.status is not current.status:
        return SUBSCRIPTION_CANCELLED, f"{name} subscription cancelled", metadata
    if previous.status is SubscriptionStatus.CANCELLED and current.status is not previous.status:
        return SUBSCRIPTION_RESUMED, f"{name} subscription resumed", metadata
    if current.expires_at != previous.expires_at:
        return SUBSCRIPTION_EXTENDED, f"{name} plan extended", metadata
    return None


def describe_expiry(
    lapsed: Subscription, current: Subscription | None, catalog: Catalog
) -> tuple[str, str, dict[str, Any], datetime | None]:
    """The entry of a subscription whose paid period ended, and when it happened: when the
    period ended, not when a job or a lazy read noticed it."""
    metadata: dict[str, Any] = {
        "plan": lapsed.plan_code,
        "expired_at": _iso(lapsed.expires_at),
        "now_on": None if current is None else current.plan_code,
    }
    title = EXPIRED_TITLE.format(plan=plan_name(catalog, lapsed.plan_code))
    return SUBSCRIPTION_EXPIRED, title, metadata, lapsed.expires_at


def refusal_title(metric: str) -> str:
    """The title of a refused use of ``metric`` (repeats of one title are written once a while)."""
    return f"{metric_label(metric)} refused: limit reached"


def consumption_title(metric: str, amount: int) -> str:
    label = metric_label(metric)
    return f"{label} used" if amount == 1 else f"{label} used ({amount})"


def metric_label(metric: str) -> str:
    # Metrics have no display name of their own; their name reads well enough ("Export").
    return metric.replace("_", " ").capitalize()


def plan_name(catalog: Catalog, code: str) -> str:
    """The plan's name; its code for a plan since removed from the catalog."""
    plan = catalog.plans.get(code)
    return code if plan is None else plan.name


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
