"""The extension's cache (Flask-Caching): profile reads and activity feeds, per user.

Every write that changes what those reads show (a charge, a refund, a plan change, a profile edit,
a new activity entry) forgets the user's entries, so a read never shows stale quota. With
``RedisCache`` the forgetting reaches every process at once; ``SimpleCache`` is per process.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask_caching import Cache


class BillingCache:
    def __init__(self, app: Flask) -> None:
        config = app.config
        cache_config: dict[str, Any] = {
            "CACHE_TYPE": config["BILLING_CACHE_TYPE"],
            "CACHE_KEY_PREFIX": config["BILLING_CACHE_KEY_PREFIX"],
            "CACHE_DEFAULT_TIMEOUT": config["BILLING_PROFILE_CACHE_SECONDS"],
        }
        if config["BILLING_CACHE_REDIS_URL"]:
            cache_config["CACHE_REDIS_URL"] = config["BILLING_CACHE_REDIS_URL"]
        # A Cache object of its own, so the host's Flask-Caching settings stay the host's.
        self._cache = Cache(app, config=cache_config)

    @staticmethod
    def profile_key(user_id: str) -> str:
        return f"profile:{user_id}"

    @staticmethod
    def activity_key(user_id: str) -> str:
        return f"activity:{user_id}"

    def get(self, key: str) -> Any:
        return self._cache.get(key)

    def set(self, key: str, value: Any, timeout: int | None = None) -> None:
        self._cache.set(key, value, timeout=timeout)

    def forget_user(self, user_id: str) -> None:
        """Drop every cached read of the user: called after each write that concerns them."""
        self.forget_users([user_id])

    def forget_users(self, user_ids: list[str]) -> None:
        """The same for many users at once (one round trip to Redis for a maintenance batch)."""
        keys = [
            key for user in user_ids for key in (self.profile_key(user), self.activity_key(user))
        ]
        if keys:
            self._cache.delete_many(*keys)
