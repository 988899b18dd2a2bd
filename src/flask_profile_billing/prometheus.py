"""Prometheus counters, when ``prometheus_client`` is installed (the ``metrics`` extra).

Without it every function here does nothing. The counters are created once per process, on first
use, in ``prometheus_client``'s default registry: a registry refuses a second metric of the same
name, and counters count the process, not one app, so several apps in a process share them.
They are exposed by whatever the host already uses to serve that registry (``/metrics``).
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_counters: dict[str, Any] | None = None
_unavailable = False


def activity_fetched(count: int, *, cached: bool) -> None:
    """One read of a user's activity feed that returned ``count`` events."""
    counters = _get_counters()
    if counters is None:
        return
    counters["fetched"].inc()
    if count:
        counters["events"].inc(count)
    if cached:
        counters["cache_hits"].inc()


def _get_counters() -> dict[str, Any] | None:
    global _counters, _unavailable
    if _counters is not None or _unavailable:
        return _counters
    with _lock:
        if _counters is not None or _unavailable:  # another thread got here first
            return _counters
        try:
            # Imported lazily: the dependency is optional, and importing it costs nothing until
            # a feed is read.
            from prometheus_client import Counter
        except ImportError:
            _unavailable = True
            return None
        _counters = {
            "fetched": Counter(
                "profile_activity_fetched",
                "Reads of users' activity feeds (GET /api/profile/activity)",
            ),
            "events": Counter(
                "profile_activity_events_returned", "Events returned by activity feed reads"
            ),
            "cache_hits": Counter(
                "profile_activity_cache_hits", "Activity feed reads answered from the cache"
            ),
        }
        return _counters
