"""The activity feed: a user's latest events, in one shape, for the profile page (SPEC P4).

Two sources, never copied into each other:

- ``billing_activity``: what the host records (``record()``: "training run started", "dataset
  uploaded") and what the extension records from its own signals (plan changes, expiry, refusals);
- ``billing_usage_events``: the usage log of charges, read as ``quota.consumed`` events.

A read is two indexed queries (user, time), each limited, merged by time in Python. The API's read
is cached per user for a short time; every write that concerns the user forgets the cache.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from flask import Flask
from sqlalchemy import and_, exists, insert, literal, select

from .. import metrics, signals
from ..domain.catalog import Catalog
from ..domain.limits import Allowance
from ..domain.subscriptions import Subscription, SubscriptionStatus
from ..store.bulk import insert_rows
from ..store.models import USER_ID, activity, usage_events
from ..store.transactions import read_connection, write_transaction
from ..store.types import UTCDateTime
from .runtime import Runtime

if TYPE_CHECKING:
    from sqlalchemy import Row

    # Rows of any width (SQLAlchemy 2.1 types a row by its columns).
    AnyRow = Row[*tuple[Any, ...]]

logger = logging.getLogger("flask_profile_billing.activity")

FEED_CACHE_SECONDS = 30
"""How long an API read of the feed is served from the cache (the seed: "Redis cache for 30 s")."""
MAX_FEED_LIMIT = 100
"""The most events one read returns; the cache holds this many, so every limit shares one entry."""
REFUSAL_REPEAT_SECONDS = 300
"""A refusal of the same metric already in the feed this recently is not written again: a client
retrying against an exhausted quota would otherwise fill the feed and push everything else out."""

MAX_TYPE_LENGTH = 64
MAX_TITLE_LENGTH = 200

# Types of the events the extension writes itself. A host's own types are free-form.
QUOTA_CONSUMED = "quota.consumed"
QUOTA_EXCEEDED = "quota.exceeded"
PLAN_CHANGED = "plan.changed"
SUBSCRIPTION_CANCELLED = "subscription.cancelled"
SUBSCRIPTION_RESUMED = "subscription.resumed"
SUBSCRIPTION_EXTENDED = "subscription.extended"
SUBSCRIPTION_EXPIRED = "subscription.expired"

_ACTIVITY_PREFIX = "activity-"
_USAGE_PREFIX = "usage-"
# At the same instant, entries of billing_activity sort before charges; any fixed order would do,
# what matters is that the same data always reads in the same order.
_ACTIVITY_RANK = 1
_USAGE_RANK = 0


@dataclass(frozen=True, slots=True)
class ActivityEvent:
    """One entry of the feed, whatever its source. ``id`` is unique across sources."""

    id: str
    type: str
    title: str
    occurred_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The API's shape, JSON-ready; also what the cache holds (plain values survive any
        cache backend and a deploy that changes this class)."""
        return {
            "id": self.id,
            "type": self.type,
            "title": self.title,
            "occurred_at": self.occurred_at.isoformat(),
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ActivityEvent:
        return cls(
            id=data["id"],
            type=data["type"],
            title=data["title"],
            occurred_at=datetime.fromisoformat(data["occurred_at"]),
            metadata=dict(data["metadata"]),
        )


@dataclass(frozen=True, slots=True)
class ActivityFeed:
    events: list[ActivityEvent]
    cached: bool
    """True when the events came from the cache, without a database read."""


class ActivityService:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    # -- writing -------------------------------------------------------------------------------

    def record(
        self,
        user_id: str,
        type: str,
        title: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        occurred_at: datetime | None = None,
    ) -> ActivityEvent:
        """Add an event to the user's feed ("training run started", "dataset uploaded").

        ``metadata`` must be JSON-serialisable; ``occurred_at`` (aware) defaults to now.
        """
        user_id = str(user_id)
        _check_text("type", type, MAX_TYPE_LENGTH)
        _check_text("title", title, MAX_TITLE_LENGTH)
        payload = _json_object(metadata)
        moment = occurred_at or self._runtime.now()
        if moment.tzinfo is None:
            raise ValueError("occurred_at must be an aware datetime")
        with write_transaction(self._runtime.engine) as connection:
            row_id = connection.execute(
                insert(activity)
                .values(
                    user_id=user_id, type=type, title=title, metadata=payload, occurred_at=moment
                )
                .returning(activity.c.id)
            ).scalar_one()
        self._runtime.cache.forget_user(user_id)
        return ActivityEvent(f"{_ACTIVITY_PREFIX}{row_id}", type, title, moment, payload or {})

    # -- reading -------------------------------------------------------------------------------

    def latest(self, user_id: str, limit: int = 10) -> list[ActivityEvent]:
        """The user's ``limit`` latest events within the window, newest first (no cache)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        user_id = str(user_id)
        runtime = self._runtime
        since = runtime.now() - timedelta(days=runtime.settings.activity_window_days)
        entries = activity.c
        charges = usage_events.c
        # Each query walks its (user_id, time) index backwards and stops after ``limit`` rows: the
        # newest ``limit`` of the union are among the newest ``limit`` of each source.
        activity_query = (
            select(entries.id, entries.type, entries.title, entries.metadata, entries.occurred_at)
            .where(entries.user_id == user_id, entries.occurred_at >= since)
            .order_by(entries.occurred_at.desc(), entries.id.desc())
            .limit(limit)
        )
        usage_query = (
            select(
                charges.id, charges.metric, charges.amount, charges.resources, charges.created_at
            )
            .where(charges.user_id == user_id, charges.created_at >= since)
            .order_by(charges.created_at.desc(), charges.id.desc())
            .limit(limit)
        )
        with read_connection(runtime.engine) as connection:
            ranked = [
                ((row.occurred_at, _ACTIVITY_RANK, row.id), _from_activity(row))
                for row in connection.execute(activity_query)
            ]
            ranked += [
                ((row.created_at, _USAGE_RANK, row.id), _from_usage(row))
                for row in connection.execute(usage_query)
            ]
        ranked.sort(key=lambda item: item[0], reverse=True)
        return [event for _, event in ranked[:limit]]

    def feed(self, user_id: str, limit: int = 10) -> ActivityFeed:
        """The API's read: ``latest`` through the per-user cache, logged and counted."""
        if not 1 <= limit <= MAX_FEED_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_FEED_LIMIT}")
        user_id = str(user_id)
        cache = self._runtime.cache
        key = cache.activity_key(user_id)
        stored = cache.get(key)
        cached = stored is not None
        if stored is None:
            # A write landing between this read and the set below leaves the entry stale for at most
            # FEED_CACHE_SECONDS; the seed accepts a 30 s cache, and the next write forgets it again.
            events = self.latest(user_id, MAX_FEED_LIMIT)
            cache.set(key, [event.to_dict() for event in events], timeout=FEED_CACHE_SECONDS)
        else:
            events = [ActivityEvent.from_dict(item) for item in stored]
        events = events[:limit]
        logger.info(
            "profile_activity_fetched",
            extra={"user_id": user_id, "count": len(events), "cached": cached, "limit": limit},
        )
        metrics.activity_fetched(len(events), cached=cached)
        return ActivityFeed(events, cached)

    # -- the extension's own events, from its signals ------------------------------------------

    def connect_receivers(self) -> None:
        """Record plan changes, expiry and refusals of this service's app in the feed.

        Connected for the app as sender, so several apps in one process never record each other's
        events. Blinker keeps weak references to the bound methods: they go away with this service
        (that is, with the app's state). Connecting twice is harmless (blinker deduplicates).
        """
        app = self._runtime.app
        signals.subscription_changed.connect(self._on_subscription_changed, sender=app)
        signals.subscription_expired.connect(self._on_subscription_expired, sender=app)
        signals.subscriptions_expired.connect(self._on_subscriptions_expired, sender=app)
        signals.quota_exceeded.connect(self._on_quota_exceeded, sender=app)

    def _on_subscription_changed(
        self,
        sender: Flask,
        *,
        user_id: str,
        previous: Subscription | None,
        current: Subscription,
        **_: Any,
    ) -> None:
        if previous is None:
            # The free subscription every user gets on first access is not a change they made; it
            # also happens on a user's first guarded request, which should stay as cheap as possible.
            return
        described = _describe_change(previous, current, self._runtime.catalog)
        if described is not None:
            self._record_safely(user_id, *described)

    def _on_subscription_expired(
        self,
        sender: Flask,
        *,
        user_id: str,
        subscription: Subscription,
        current: Subscription | None,
        in_batch: bool = False,
        **_: Any,
    ) -> None:
        if in_batch:
            return  # recorded with its whole batch by _on_subscriptions_expired
        type_, title, metadata, occurred_at = self._expiry_entry(subscription, current)
        self._record_safely(user_id, type_, title, metadata, occurred_at=occurred_at)

    def _on_subscriptions_expired(
        self, sender: Flask, *, expired: list[tuple[Subscription, Subscription | None]], **_: Any
    ) -> None:
        """A maintenance batch: one bulk insert, not one write per user."""
        rows = []
        for subscription, current in expired:
            type_, title, metadata, occurred_at = self._expiry_entry(subscription, current)
            rows.append(
                {
                    "user_id": subscription.user_id,
                    "type": type_,
                    "title": title,
                    "metadata": metadata,
                    "occurred_at": occurred_at,
                }
            )
        if not rows:
            return
        try:
            with write_transaction(self._runtime.engine) as connection:
                insert_rows(connection, activity, rows)
        except Exception:
            logger.exception("profile_activity_record_failed", extra={"count": len(rows)})

    def _expiry_entry(
        self, subscription: Subscription, current: Subscription | None
    ) -> tuple[str, str, dict[str, Any], datetime | None]:
        name = _plan_name(self._runtime.catalog, subscription.plan_code)
        metadata: dict[str, Any] = {
            "plan": subscription.plan_code,
            "expired_at": _iso(subscription.expires_at),
            "now_on": None if current is None else current.plan_code,
        }
        # Dated when the period ended, not when a job or a lazy read noticed it.
        return SUBSCRIPTION_EXPIRED, f"{name} plan expired", metadata, subscription.expires_at

    def _on_quota_exceeded(
        self,
        sender: Flask,
        *,
        user_id: str,
        metric: str,
        amount: int,
        allowance: Allowance,
        **_: Any,
    ) -> None:
        # Runs on the refusal path of a guard, before the 429 is answered: one statement, and any
        # failure is logged, never raised, so the feed can never change what the caller gets.
        try:
            self._record_refusal(user_id, metric, amount, allowance)
        except Exception:
            logger.exception("profile_activity_record_failed", extra={"user_id": user_id})

    def _record_refusal(self, user_id: str, metric: str, amount: int, allowance: Allowance) -> None:
        runtime = self._runtime
        now = runtime.now()
        title = f"{_metric_label(metric)} refused: limit reached"
        metadata: dict[str, Any] = {
            "metric": metric,
            "amount": amount,
            "limit": allowance.limit,
            "used": allowance.used,
        }
        entries = activity.c
        recent_same = exists().where(
            and_(
                entries.user_id == user_id,
                entries.occurred_at >= now - timedelta(seconds=REFUSAL_REPEAT_SECONDS),
                entries.type == QUOTA_EXCEEDED,
                entries.title == title,
            )
        )
        # INSERT ... SELECT ... WHERE NOT EXISTS: the check and the write are one statement.
        values = select(
            literal(user_id, USER_ID),
            literal(QUOTA_EXCEEDED, activity.c.type.type),
            literal(title, activity.c.title.type),
            literal(metadata, activity.c.metadata.type),
            literal(now, UTCDateTime()),
        ).where(~recent_same)
        with write_transaction(runtime.engine) as connection:
            written = connection.execute(
                insert(activity).from_select(
                    ["user_id", "type", "title", "metadata", "occurred_at"], values
                )
            ).rowcount
        if written:
            runtime.cache.forget_user(user_id)

    def _record_safely(
        self,
        user_id: str,
        type: str,
        title: str,
        metadata: dict[str, Any],
        *,
        occurred_at: datetime | None = None,
    ) -> None:
        # Receivers run inside the sender's flow (a plan change, a scheduler batch): a feed entry
        # that cannot be written is logged and dropped rather than failing the change itself.
        try:
            self.record(user_id, type, title, metadata, occurred_at=occurred_at)
        except Exception:
            logger.exception("profile_activity_record_failed", extra={"user_id": user_id})


# -- normalising ---------------------------------------------------------------------------------


def _from_activity(row: AnyRow) -> ActivityEvent:
    return ActivityEvent(
        f"{_ACTIVITY_PREFIX}{row.id}",
        row.type,
        row.title,
        row.occurred_at,
        dict(row.metadata or {}),
    )


def _from_usage(row: AnyRow) -> ActivityEvent:
    label = _metric_label(row.metric)
    title = f"{label} used" if row.amount == 1 else f"{label} used ({row.amount})"
    return ActivityEvent(
        f"{_USAGE_PREFIX}{row.id}",
        QUOTA_CONSUMED,
        title,
        row.created_at,
        {"metric": row.metric, "amount": row.amount, "resources": dict(row.resources or {})},
    )


def _describe_change(
    previous: Subscription, current: Subscription, catalog: Catalog
) -> tuple[str, str, dict[str, Any]] | None:
    """(type, title, metadata) of a subscription change, or None when nothing visible changed."""
    metadata: dict[str, Any] = {
        "from_plan": previous.plan_code,
        "to_plan": current.plan_code,
        "status": current.status.value,
        "expires_at": _iso(current.expires_at),
    }
    name = _plan_name(catalog, current.plan_code)
    if previous.plan_code != current.plan_code:
        if current.status is SubscriptionStatus.TRIAL:
            return PLAN_CHANGED, f"{name} trial started", metadata
        before = _plan_name(catalog, previous.plan_code)
        return PLAN_CHANGED, f"Plan changed: {before} → {name}", metadata
    if current.status is SubscriptionStatus.CANCELLED and previous.status is not current.status:
        return SUBSCRIPTION_CANCELLED, f"{name} subscription cancelled", metadata
    if previous.status is SubscriptionStatus.CANCELLED and current.status is not previous.status:
        return SUBSCRIPTION_RESUMED, f"{name} subscription resumed", metadata
    if current.expires_at != previous.expires_at:
        return SUBSCRIPTION_EXTENDED, f"{name} plan extended", metadata
    return None


def _metric_label(metric: str) -> str:
    # Metrics have no display name of their own; their name reads well enough ("Export").
    return metric.replace("_", " ").capitalize()


def _plan_name(catalog: Catalog, code: str) -> str:
    plan = catalog.plans.get(code)
    return code if plan is None else plan.name


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _check_text(name: str, value: str, limit: int) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    if len(value) > limit:
        raise ValueError(f"{name} has at most {limit} characters")


def _json_object(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise ValueError("metadata must be a mapping")
    payload = dict(metadata)
    try:
        # Checked here so a host gets a clear error at the call, not a driver error at the insert.
        json.dumps(payload)
    except (TypeError, ValueError) as error:
        raise ValueError(f"metadata must be JSON-serialisable: {error}") from None
    return payload


__all__ = [
    "FEED_CACHE_SECONDS",
    "MAX_FEED_LIMIT",
    "ActivityEvent",
    "ActivityFeed",
    "ActivityService",
]
