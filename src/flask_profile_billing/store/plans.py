"""The statements on ``billing_plans``: the configured catalog's mirror in the database."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Row, select, update

from .dialect import insert_ignoring_conflict
from .models import plans


def stored_plans(connection: Connection) -> dict[str, Row[Any]]:
    """Every stored plan, by code."""
    return {row.code: row for row in connection.execute(select(plans))}


def insert_plan(connection: Connection, values: Mapping[str, Any]) -> None:
    connection.execute(plans.insert().values(**values))


def insert_plan_if_missing(connection: Connection, values: Mapping[str, Any]) -> None:
    """Insert the plan unless one with its code is stored (concurrent inserts race on the key)."""
    insert_ignoring_conflict(connection, plans, dict(values), ["code"])


def update_plan(connection: Connection, code: str, values: Mapping[str, Any]) -> None:
    connection.execute(update(plans).where(plans.c.code == code).values(**values))
