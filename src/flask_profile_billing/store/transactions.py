"""Transactions the services own, on their own connections, apart from the host's ``db.session``.

The host's session may hold unrelated pending work in the middle of a request; committing a quota
reservation must neither flush nor commit it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
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
