"""Transactions the services own, on their own connections, apart from the host's ``db.session``.

The host's session may hold unrelated pending work in the middle of a request; committing a quota
reservation must neither flush nor commit it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeoutError,
)
"""What the database raises when it cannot serve a request now (down, restarting, unreachable,
locked past the busy timeout, no pooled connection free): a fault to answer with 503 and retry,
not a bug."""

MISSING_TABLE_ERRORS: tuple[type[Exception], ...] = (OperationalError, ProgrammingError)
"""The classes a missing table is raised as: SQLite's ``OperationalError`` ("no such table"),
PostgreSQL's ``ProgrammingError`` (``UndefinedTable``). Most errors of these classes are something
else (a ``ProgrammingError`` is usually a bug): ``missing_billing_table`` tells them apart."""

_UNDEFINED_TABLE_SQLSTATE = "42P01"
# SQLite names the table it lacks, schema-qualified when the statement was ("main.billing_plans").
_SQLITE_NO_SUCH_TABLE = re.compile(r"^no such table: (?:\w+\.)?(billing_\w+)")
# PostgreSQL quotes the relation, in a message that may be translated (lc_messages), so only the
# quoted name is read; the SQLSTATE says what happened.
_QUOTED_BILLING_TABLE = re.compile(r"(?<![\w.])(?:\w+\.)?(billing_\w+)\b")


def missing_billing_table(error: BaseException) -> str | None:
    """The name of the extension's table whose absence ``error`` reports, or None.

    A table of ours that is missing means the extension's migrations were not applied (a deploy
    that ran only the host's ``flask db upgrade``): not the database being down, and not a bug in
    a statement. Only these are recognised: SQLite's "no such table: billing_..." and PostgreSQL's
    ``UndefinedTable`` (SQLSTATE 42P01) naming a ``billing_`` relation.
    """
    if not isinstance(error, DBAPIError) or not isinstance(error, MISSING_TABLE_ERRORS):
        return None
    driver_error = error.orig
    # The primary message only: PostgreSQL's full text goes on with the statement ("LINE 1: ..."),
    # which may name other tables.
    diagnostics = getattr(driver_error, "diag", None)
    message = getattr(diagnostics, "message_primary", None) or str(driver_error).split("\n")[0]
    sqlstate = getattr(driver_error, "sqlstate", None) or getattr(driver_error, "pgcode", None)
    if sqlstate == _UNDEFINED_TABLE_SQLSTATE:
        found = _QUOTED_BILLING_TABLE.search(message)
    elif sqlstate is None and isinstance(error, OperationalError):
        found = _SQLITE_NO_SUCH_TABLE.match(message)
    else:
        return None
    return found.group(1) if found else None


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that commits on success and rolls back on any exception.

    On SQLite it starts with ``BEGIN IMMEDIATE``: the write lock is taken up front, so a transaction
    that reads before it writes waits for other writers (busy timeout) instead of failing with
    "database is locked" when it upgrades its lock.
    """
    with engine.connect() as connection:
        # Begun explicitly, so that the commit below also covers work sent to the driver directly
        # (COPY): SQLAlchemy would otherwise see no transaction of its own and commit nothing.
        connection.begin()
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.rollback()
            raise
        connection.commit()


@contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in autocommit mode, for reads and for single statements that are their own
    transaction: no BEGIN and no ROLLBACK round trips around them."""
    with engine.connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")
