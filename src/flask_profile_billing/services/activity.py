"""The activity feed: a user's latest events, in one shape, for the profile page.

Two sources, never copied into each other:

- ``billing_activity``: what the host records (``record()``: "training run started", "dataset
  uploaded") and what the extension records from its own signals (plan changes, refusals:
  ``services.activity_receivers``) and with each expiry (``services.subscriptions``);
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

from .. import prometheus
from ..domain.accounts import personal_account_id
from ..domain.activity import QUOTA_CONSUMED, QUOTA_EXCEEDED, consumption_title, refusal_title
from ..domain.limits import Allowance
from ..store import activity as entries
from ..store.transactions import read_connection, write_transaction
from ..store.usage import latest_charges
from .activity_receivers import ActivityReceivers
from .runtime import Runtime

if TYPE_CHECKING:
    from sqlalchemy import Row

    # Rows of any width (SQLAlchemy 2.1 types a row by its columns).
    AnyRow = Row[*tuple[Any, ...]]

feed_log = logging.getLogger("flask_profile_billing.activity")
"""Where each API read of the feed is logged (``profile_activity_fetched``): a name of its own,
documented for hosts that collect these lines."""

FEED_CACHE_SECONDS = 30
"""How long an API read of the feed is served from the cache."""
MAX_FEED_LIMIT = 100
"""The most events one read returns; the cache holds this many, so every limit shares one entry."""
REFUSAL_REPEAT_SECONDS = 300
"""A refusal of the same metric already in the feed this recently is not written again: a client
retrying against an exhausted quota would otherwise fill the feed and push everything else out."""

MAX_TYPE_LENGTH = 64
MAX_TITLE_LENGTH = 200

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
        self._receivers: ActivityReceivers | None = None

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
            row_id = entries.insert_entry(
                connection,
                user_id=user_id,
                type=type,
                title=title,
                metadata=payload,
                occurred_at=moment,
            )
        self._runtime.cache.forget_user(user_id)
        return ActivityEvent(f"{_ACTIVITY_PREFIX}{row_id}", type, title, moment, payload or {})

    def record_refusal(self, user_id: str, metric: str, amount: int, allowance: Allowance) -> None:
        """Add a refused use of ``metric`` to the user's feed, unless the same refusal is there
        from the last ``REFUSAL_REPEAT_SECONDS``."""
        metadata: dict[str, Any] = {
            "metric": metric,
            "amount": amount,
            "limit": allowance.limit,
            "used": allowance.used,
        }
        self._record_refusal(user_id, refusal_title(metric), metadata)

    # -- reading -------------------------------------------------------------------------------

    def latest(self, user_id: str, limit: int = 10) -> list[ActivityEvent]:
        """The user's ``limit`` latest events within the window, newest first (no cache)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        user_id = str(user_id)
        runtime = self._runtime
        since = runtime.now() - timedelta(days=runtime.settings.activity_window_days)
        # Each query walks its (user_id, time) index backwards and stops after ``limit`` rows: the
        # newest ``limit`` of the union are among the newest ``limit`` of each source.
        with read_connection(runtime.engine) as connection:
            ranked = [
                ((row.occurred_at, _ACTIVITY_RANK, row.id), _from_activity(row))
                for row in entries.latest_entries(connection, user_id, since, limit)
            ]
            ranked += [
                ((row.created_at, _USAGE_RANK, row.id), _from_usage(row))
                for row in latest_charges(connection, personal_account_id(user_id), since, limit)
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
            # A write landing between this read and the set below leaves the entry stale for at
            # most FEED_CACHE_SECONDS, which the feed accepts; the next write forgets it again.
            events = self.latest(user_id, MAX_FEED_LIMIT)
            cache.set(key, [event.to_dict() for event in events], timeout=FEED_CACHE_SECONDS)
        else:
            events = [ActivityEvent.from_dict(item) for item in stored]
        events = events[:limit]
        feed_log.info(
            "profile_activity_fetched",
            extra={"user_id": user_id, "count": len(events), "cached": cached, "limit": limit},
        )
        prometheus.activity_fetched(len(events), cached=cached)
        return ActivityFeed(events, cached)

    # -- the extension's own events, from its signals ------------------------------------------

    def connect_receivers(self) -> None:
        """Record plan changes, expiry and refusals of this service's app in the feed
        (``services.activity_receivers``). The receivers live as long as this service, that is,
        as the app's state. Connecting twice is harmless."""
        if self._receivers is None:
            self._receivers = ActivityReceivers(self._runtime, self)
        self._receivers.connect()

    # -- internals -----------------------------------------------------------------------------

    def _record_refusal(self, user_id: str, title: str, metadata: dict[str, Any]) -> None:
        # Runs on the refusal path of a guard, before the 429 is answered: one statement that
        # checks for a recent repeat and writes.
        runtime = self._runtime
        now = runtime.now()
        with write_transaction(runtime.engine) as connection:
            written = entries.insert_unless_recent(
                connection,
                user_id=user_id,
                type=QUOTA_EXCEEDED,
                title=title,
                metadata=metadata,
                occurred_at=now,
                since=now - timedelta(seconds=REFUSAL_REPEAT_SECONDS),
            )
        if written:
            runtime.cache.forget_user(user_id)


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
    return ActivityEvent(
        f"{_USAGE_PREFIX}{row.id}",
        QUOTA_CONSUMED,
        consumption_title(row.metric, row.amount),
        row.created_at,
        {"metric": row.metric, "amount": row.amount, "resources": dict(row.resources or {})},
    )


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
