"""The statements on ``billing_activity``: the entries of the activity feed, and their reads."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, exists, insert, literal, select

from .models import USER_ID, activity
from .types import UTCDateTime

_entries = activity.c


def insert_entry(
    connection: Connection,
    *,
    user_id: str,
    type: str,
    title: str,
    metadata: Mapping[str, Any] | None,
    occurred_at: datetime,
) -> int:
    """Add one entry; its id."""
    row_id: int = connection.execute(
        insert(activity)
        .values(user_id=user_id, type=type, title=title, metadata=metadata, occurred_at=occurred_at)
        .returning(_entries.id)
    ).scalar_one()
    return row_id


def insert_unless_recent(
    connection: Connection,
    *,
    user_id: str,
    type: str,
    title: str,
    metadata: Mapping[str, Any] | None,
    occurred_at: datetime,
    since: datetime,
) -> bool:
    """Add an entry unless the user has one of the same type and title since ``since``; True when
    it was added. The check and the write are one statement (``INSERT ... SELECT ... WHERE NOT
    EXISTS``)."""
    recent_same = exists().where(
        and_(
            _entries.user_id == user_id,
            _entries.occurred_at >= since,
            _entries.type == type,
            _entries.title == title,
        )
    )
    values = select(
        literal(user_id, USER_ID),
        literal(type, _entries.type.type),
        literal(title, _entries.title.type),
        literal(metadata, _entries.metadata.type),
        literal(occurred_at, UTCDateTime()),
    ).where(~recent_same)
    written = connection.execute(
        insert(activity).from_select(
            ["user_id", "type", "title", "metadata", "occurred_at"], values
        )
    ).rowcount
    return bool(written)


def latest_entries(
    connection: Connection, user_id: str, since: datetime, limit: int
) -> list[Row[Any]]:
    """The user's ``limit`` latest entries since ``since`` (``id``, ``type``, ``title``,
    ``metadata``, ``occurred_at``), newest first.

    Walks the (user_id, occurred_at) index backwards and stops after ``limit`` rows."""
    query = (
        select(_entries.id, _entries.type, _entries.title, _entries.metadata, _entries.occurred_at)
        .where(_entries.user_id == user_id, _entries.occurred_at >= since)
        .order_by(_entries.occurred_at.desc(), _entries.id.desc())
        .limit(limit)
    )
    return list(connection.execute(query))
