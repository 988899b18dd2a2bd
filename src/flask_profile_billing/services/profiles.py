"""Profiles: the editable fields a user keeps with the extension."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select

from ..store.models import profiles
from ..store.transactions import read_connection
from .runtime import Runtime

UTC = ZoneInfo("UTC")


class ProfileService:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def timezone_of(self, user_id: str) -> ZoneInfo:
        """The user's time zone for dates shown to them; UTC when unset."""
        with read_connection(self._runtime.engine) as connection:
            name = connection.execute(
                select(profiles.c.timezone).where(profiles.c.user_id == user_id)
            ).scalar_one_or_none()
        try:
            return ZoneInfo(name) if name else UTC
        except (ZoneInfoNotFoundError, ValueError):
            return UTC
