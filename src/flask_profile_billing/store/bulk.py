"""Inserting many rows at once, as fast as each database allows.

On PostgreSQL through psycopg 3 the rows go through ``COPY ... FROM STDIN``, the database's own bulk
load: psycopg's ``executemany`` sends one ``INSERT`` per row, and a multi-row ``VALUES`` with
thousands of parameters costs psycopg more time to parse than the database takes to insert the
rows. Elsewhere (SQLite, whose ``executemany`` loops in C, and other PostgreSQL drivers) the
driver's ``executemany`` serves.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import JSON, Connection, Table, TypeDecorator, insert


def insert_rows(connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys: column names) into ``table``, in the
    connection's transaction. No ``RETURNING``, no ``ON CONFLICT``: for plain appends."""
    if not rows:
        return
    if (connection.dialect.name, connection.dialect.driver) != ("postgresql", "psycopg"):
        connection.execute(insert(table), list(rows))
        return
    names = list(rows[0])
    convert = [_to_copy_value(table.c[name].type, connection) for name in names]
    preparer = connection.dialect.identifier_preparer
    columns = ", ".join(preparer.quote(name) for name in names)
    statement = f"COPY {preparer.format_table(table)} ({columns}) FROM STDIN"
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([fn(row[name]) for fn, name in zip(convert, names, strict=True)])


def _to_copy_value(column_type: Any, connection: Connection) -> Callable[[Any], Any]:
    """What a Python value becomes for COPY: what the column's type would bind it as."""
    if isinstance(column_type, TypeDecorator):
        dialect = connection.dialect

        def decorated(value: Any) -> Any:
            return column_type.process_bind_param(value, dialect)

        return decorated
    if isinstance(column_type, JSON):
        # As the JSON type binds it: None is JSON null unless the type says SQL NULL.
        as_null = column_type.none_as_null

        def serialised(value: Any) -> str | None:
            return None if value is None and as_null else json.dumps(value)

        return serialised
    return _same


def _same(value: Any) -> Any:
    return value
