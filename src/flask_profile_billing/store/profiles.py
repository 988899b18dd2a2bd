"""The statements on ``billing_profiles``: one row per user, created empty on first access."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select, update

from .dialect import insert_ignoring_conflict
from .models import profiles

_profile = profiles.c


def find(connection: Connection, user_id: str) -> Row[Any] | None:
    """The user's profile row; None before the first access."""
    return connection.execute(select(profiles).where(_profile.user_id == user_id)).first()


def lock(connection: Connection, user_id: str) -> Row[Any]:
    """The user's profile row, which must exist, locked until the transaction ends.

    ``FOR UPDATE`` on PostgreSQL: a concurrent edit waits. SQLite has no row locks; the caller's
    ``BEGIN IMMEDIATE`` already serialises writers.
    """
    return connection.execute(
        select(profiles).where(_profile.user_id == user_id).with_for_update()
    ).one()


def timezone_name(connection: Connection, user_id: str) -> str | None:
    """The time zone the user chose, as stored (unchecked); None when unset."""
    name: str | None = connection.execute(
        select(_profile.timezone).where(_profile.user_id == user_id)
    ).scalar_one_or_none()
    return name


def insert_if_missing(connection: Connection, user_id: str, now: datetime) -> None:
    """Create the user's empty profile unless it exists. Concurrent first requests race on the
    primary key: one inserts, the others do nothing."""
    insert_ignoring_conflict(
        connection,
        profiles,
        {"user_id": user_id, "created_at": now, "updated_at": now},
        ["user_id"],
    )


def update_fields(
    connection: Connection, user_id: str, values: Mapping[str, Any], now: datetime
) -> None:
    """Set the profile's ``values`` (column name to value) and its ``updated_at``."""
    connection.execute(
        update(profiles).where(_profile.user_id == user_id).values({**values, "updated_at": now})
    )
