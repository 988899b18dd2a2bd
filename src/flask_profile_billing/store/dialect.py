"""What the two supported databases need said their own way: ``INSERT ... ON CONFLICT``.

Only SQLite (3.35+) and PostgreSQL are supported: both have ``INSERT ... ON CONFLICT`` with a
``WHERE`` on the update and ``RETURNING``, which is what makes a consumption one statement, but
SQLAlchemy builds that insert from each dialect's own construct.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Connection, Row, Table, bindparam
from sqlalchemy.dialects import postgresql, sqlite

from ..errors import BillingConfigError


def dialect_insert(connection: Connection, table: Table) -> Any:
    """``INSERT`` with the ``ON CONFLICT`` clauses of the connection's dialect."""
    return insert_for(connection.dialect.name, table)


def insert_for(dialect: str, table: Table) -> Any:
    """``INSERT`` with the ``ON CONFLICT`` clauses of ``dialect`` (for statements built once per
    dialect and cached)."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise BillingConfigError(f"unsupported database {dialect!r}: use SQLite or PostgreSQL")


def param(column: Column[Any], name: str | None = None) -> Any:
    """A bound parameter typed like ``column`` (so its type's conversions apply), named ``p_*``:
    a name of the table's own columns is reserved by ``values()``."""
    return bindparam(f"p_{name or column.name}", type_=column.type)


def insert_ignoring_conflict(
    connection: Connection,
    table: Table,
    values: dict[str, Any],
    conflict_columns: Sequence[str],
    conflict_where: Any = None,
) -> Row[Any] | None:
    """Insert a row unless one with the same key exists; the inserted row, or None.

    The answer comes from ``RETURNING``: a row count is not reliable here (PostgreSQL drivers
    report -1 for an insert that returns its generated key).
    """
    statement = (
        dialect_insert(connection, table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=list(conflict_columns), index_where=conflict_where)
        .returning(*table.c)
    )
    return connection.execute(statement).first()
