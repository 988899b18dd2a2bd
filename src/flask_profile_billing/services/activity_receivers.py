"""The activity feed's receivers of the extension's own signals: plan changes and refusals.

Expiry has no receiver here: the transaction that ends a subscription writes its entry itself
(``services.subscriptions``, and in SQL for a maintenance batch: ``store.expiry``), so the feed
misses no expiry, and a maintenance batch reads nothing back into Python to describe it.

Connected for one app as sender, so several apps in one process never record each other's events.
Blinker keeps weak references to the bound methods: they go away with these receivers, which the
app's activity service holds. Receivers run inside the sender's flow (a plan change, a scheduler
batch, a guard's refusal): a feed entry that cannot be written is logged and dropped, never raised,
so the feed can never change what the sender does or answers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from flask import Flask

from .. import signals
from ..domain.activity import describe_change
from ..domain.limits import Allowance
from ..domain.subscriptions import Subscription
from .runtime import Runtime

log = logging.getLogger(__name__)


class ActivityRecorder(Protocol):
    """What the receivers need of the activity service. Named here, so that this module does not
    import the service that imports it (the service builds and holds the receivers)."""

    def record(
        self, user_id: str, type: str, title: str, metadata: Mapping[str, Any]
    ) -> object: ...

    def record_refusal(
        self, user_id: str, metric: str, amount: int, allowance: Allowance
    ) -> None: ...


class ActivityReceivers:
    def __init__(self, runtime: Runtime, activity: ActivityRecorder) -> None:
        self._runtime = runtime
        self._activity = activity

    def connect(self) -> None:
        """Connect to the signals of this runtime's app (blinker deduplicates a second connect)."""
        app = self._runtime.app
        signals.subscription_changed.connect(self._on_subscription_changed, sender=app)
        signals.quota_exceeded.connect(self._on_quota_exceeded, sender=app)

    def _on_subscription_changed(
        self,
        sender: Flask,
        *,
        user_id: str | None,
        previous: Subscription | None,
        current: Subscription,
        **_: Any,
    ) -> None:
        if previous is None or user_id is None:
            # The free subscription every user gets on first access is not a change they made; it
            # also happens on a user's first guarded request, which should stay as cheap as possible.
            # A team account's change (no user) shows in no user's feed.
            return
        described = describe_change(previous, current, self._runtime.catalog)
        if described is not None:
            self._record_safely(user_id, *described)

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
        # Runs on the refusal path of a guard, before the 429 is answered.
        try:
            self._activity.record_refusal(user_id, metric, amount, allowance)
        except Exception:
            log.exception("profile_activity_record_failed", extra={"user_id": user_id})

    def _record_safely(self, user_id: str, type: str, title: str, metadata: dict[str, Any]) -> None:
        try:
            self._activity.record(user_id, type, title, metadata)
        except Exception:
            log.exception("profile_activity_record_failed", extra={"user_id": user_id})
