"""Transactions the services own, on their own connections, apart from the host's ``db.session``.

The host's session may hold unrelated pending work in the middle of a request; committing a quota
reservation must neither flush nor commit it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, scoped_session

from ..errors import BillingConfigError

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
    "database is locked" when it upgrades its lock. A wait that could only end with the request
    (the app's own ``db.session`` holds an uncommitted write) is refused at once instead
    (``refuse_to_wait_on_host``).
    """
    if engine.dialect.name == "sqlite":
        _refuse_to_wait_on_this_apps_session(engine)
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


SELF_WAIT_MESSAGE = (
    "The request's db.session holds an uncommitted write to the SQLite database, and SQLite lets "
    "one connection write at a time: the extension's own transaction would wait for that write "
    "until the busy timeout, and fail. Commit the session (db.session.commit()) before the guard "
    "or the billing call runs, or put the guard outermost, above the decorator that writes "
    "(a 'last seen' update in a permission check, for instance)."
)


def refuse_to_wait_on_host(host_session: Session | scoped_session[Any], engine: Engine) -> None:
    """Raise ``BillingConfigError`` at once when a write transaction on ``engine`` could only wait
    for the host's own uncommitted write in this same request.

    SQLite has one writer at a time. A host session that flushed a write (and did not commit)
    holds the write lock until the request ends, and the extension's transaction, on a connection
    of its own, would wait on it until the busy timeout: seconds, then a 503 that no retry can
    cure. PostgreSQL locks rows, not the database, so there is nothing to detect there.

    The cost is nil unless the host's session is in a transaction. No connection is begun for the
    host: only those the session already holds are looked at, and pysqlite's ``in_transaction`` is
    true only once one has written (its reads begin no transaction).
    """
    if engine.dialect.name != "sqlite":
        return
    session: Session
    if isinstance(host_session, scoped_session):
        if not host_session.registry.has():
            return  # the host did not use its session in this request
        session = host_session()
    else:
        session = host_session
    if not session.in_transaction():
        return
    if _in_memory(engine):
        return  # a memory database has one shared connection: nothing of another to wait for
    transaction = session.get_transaction()
    # The session's connections, which it exposes only through this attribute; read defensively
    # so that a change of SQLAlchemy's internals skips the check rather than failing requests.
    held = getattr(transaction, "_connections", None) or {}
    for entry in list(held.values()):
        connection = entry[0] if isinstance(entry, tuple) and entry else None
        if not isinstance(connection, Connection) or connection.closed or connection.invalidated:
            continue
        if connection.engine.url.database != engine.url.database:
            continue
        dbapi_connection = connection.connection.dbapi_connection
        if getattr(dbapi_connection, "in_transaction", False):
            raise BillingConfigError(SELF_WAIT_MESSAGE)


def _refuse_to_wait_on_this_apps_session(engine: Engine) -> None:
    """``refuse_to_wait_on_host`` with the current app's Flask-SQLAlchemy session, when there is
    an app (a request, a CLI command); the scheduler's jobs have an app context and a session of
    their own, which never holds a write here."""
    if not has_app_context():
        return
    db = current_app.extensions.get("sqlalchemy")
    session = getattr(db, "session", None)
    if isinstance(session, (Session, scoped_session)):
        refuse_to_wait_on_host(session, engine)


def _in_memory(engine: Engine) -> bool:
    database = engine.url.database or ""
    return (
        database in ("", ":memory:")
        or "mode=memory" in database
        or (engine.url.query.get("mode") == "memory")
    )
