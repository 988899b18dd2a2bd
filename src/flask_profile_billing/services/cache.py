"""The extension's cache (Flask-Caching): profile reads and activity feeds, per user, forgotten
per user or per account (a personal account's reads are its user's).

Every write that changes what those reads show (a charge, a refund, a plan change, a profile edit,
a new activity entry) forgets the user's entries, so a read never shows stale quota. With
``RedisCache`` the forgetting reaches every process at once; ``SimpleCache`` is per process.

The cache is an accelerator, never a dependency: a cache that fails or hangs must not fail a
request, and above all must not fail one that was already charged. Every call is bounded by short
socket timeouts and any error degrades to the database: a read becomes a miss, a write is skipped.
After a failure the cache is bypassed for ``BILLING_CACHE_RETRY_SECONDS``, so a dead Redis costs
one timeout per interval rather than one per request. Entries that could not be forgotten are
remembered and forgotten as soon as the cache answers again, so a cache that comes back with its
old contents (a frozen server resumed) serves nothing stale after that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask
from flask_caching import Cache

from ..domain.accounts import personal_user_id
from ..settings import BillingSettings

log = logging.getLogger(__name__)


class BillingCache:
    def __init__(self, app: Flask, settings: BillingSettings) -> None:
        cache = settings.cache
        cache_config: dict[str, Any] = {
            "CACHE_TYPE": cache.type,
            "CACHE_KEY_PREFIX": cache.key_prefix,
            "CACHE_DEFAULT_TIMEOUT": settings.profile_cache_seconds,
        }
        if cache.redis_url:
            cache_config["CACHE_REDIS_URL"] = cache.redis_url
            cache_config["CACHE_OPTIONS"] = {
                "socket_timeout": cache.socket_timeout,
                "socket_connect_timeout": cache.socket_timeout,
            }
        # A Cache object of its own, so the host's Flask-Caching settings stay the host's.
        self._cache = Cache(app, config=cache_config)
        self._retry_seconds = cache.retry_seconds
        self._bypass_until = 0.0
        self._unforgotten: set[str] = set()
        self._lock = threading.Lock()

    @staticmethod
    def profile_key(user_id: str) -> str:
        return f"profile:{user_id}"

    @staticmethod
    def activity_key(user_id: str) -> str:
        return f"activity:{user_id}"

    @property
    def available(self) -> bool:
        """False while the cache is bypassed after a failure."""
        return time.monotonic() >= self._bypass_until

    def get(self, key: str) -> Any:
        """The cached value, or None (a miss) when absent or when the cache fails."""
        return self._call(lambda: self._cache.get(key))[1]

    def set(self, key: str, value: Any, timeout: int | None = None) -> None:
        self._call(lambda: self._cache.set(key, value, timeout=timeout))

    def forget_user(self, user_id: str) -> None:
        """Drop every cached read of the user: called after each write that concerns them."""
        self.forget_users([user_id])

    def forget_users(self, user_ids: list[str]) -> None:
        """The same for many users at once (one round trip to Redis for a maintenance batch)."""
        keys = [
            key for user in user_ids for key in (self.profile_key(user), self.activity_key(user))
        ]
        if keys and not self._call(lambda: self._cache.delete_many(*keys))[0]:
            with self._lock:
                self._unforgotten.update(keys)

    def forget_account(self, account_id: str) -> None:
        """Drop every cached read that shows the account's billing: after a charge, a refund, a
        plan change of the account."""
        self.forget_accounts([account_id])

    def forget_accounts(self, account_ids: list[str]) -> None:
        """The same for many accounts at once. A read shows the billing of the account it was
        made for, and is cached under that read's user: a personal account's reads are its
        user's."""
        self.forget_users([user for user in map(personal_user_id, account_ids) if user is not None])

    def clear(self) -> None:
        """Forget every cached read (the tables they were read from were dropped)."""
        with self._lock:
            self._unforgotten.clear()
        self._call(self._cache.clear)

    def _call(self, operation: Callable[[], Any]) -> tuple[bool, Any]:
        """Run one cache operation: (True, its result), or (False, None) when the cache is
        bypassed or fails. Never raises; a failure is logged and starts a bypass."""
        if not self.available:
            return False, None
        try:
            if self._unforgotten:
                self._forget_remembered()
            return True, operation()
        except Exception as error:  # any backend, any failure: the database answers instead
            self._bypass_until = time.monotonic() + self._retry_seconds
            log.warning(
                "cache unavailable, bypassed for %ss: %s: %s",
                self._retry_seconds,
                type(error).__name__,
                error,
            )
            return False, None

    def _forget_remembered(self) -> None:
        with self._lock:
            keys, self._unforgotten = self._unforgotten, set()
        try:
            self._cache.delete_many(*keys)
        except Exception:
            with self._lock:
                self._unforgotten.update(keys)
            raise
