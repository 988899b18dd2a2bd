"""Serialising gauge checks of one user and metric while the host creates the counted thing.

A gauge (active vacancies) is counted by the host, so its check cannot be one statement of ours:
the count is read, compared, and the view then creates the row. Holding a lock for that user and
metric across the view makes concurrent creators take turns, so they cannot all pass the check.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text

# Advisory lock keys are two int4s: a constant naming this extension's locks, and the key's hash.
_LOCK_CLASS = 0x4249  # "BI"
_LOCK = text("SELECT pg_advisory_xact_lock(:cls, :key)")
_process_locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()


@contextmanager
def gauge_lock(engine: Engine, account_id: str, metric: str) -> Iterator[Connection | None]:
    """Hold a lock on (user, metric) for the block.

    PostgreSQL: a transaction-scoped advisory lock on a connection of its own, which the block gets
    to read on: it serialises workers and machines, and it goes with the transaction, so a process
    that dies releases it, and a pooler in transaction mode (PgBouncer) keeps the lock and its
    release on one server connection (a session lock could be released on another and stay held).
    SQLite (a single-host, usually single-process store): a lock inside this process, and no
    connection (None): holding one across the view would share it with the view's own session
    where the pool has a single connection (in-memory databases).
    """
    key = f"{metric}\x00{account_id}"
    if engine.dialect.name != "postgresql":
        with _process_lock(f"{engine.url}\x00{key}"):
            yield None
        return
    digest = zlib.crc32(key.encode()) - 2**31  # into int4's range
    with engine.connect() as connection:
        connection.execute(_LOCK, {"cls": _LOCK_CLASS, "key": digest})
        try:
            yield connection
        finally:
            connection.rollback()  # ends the transaction, and the lock with it


def _process_lock(key: str) -> threading.Lock:
    with _registry_lock:
        lock = _process_locks.get(key)
        if lock is None:
            lock = threading.Lock()
            _process_locks[key] = lock
        return lock


# PostgreSQL advisory locks take one bigint key or two int4 keys, and the two key spaces never
# overlap: the migrations take a bigint, derived from a name so that no other user of advisory
# locks picks it by chance; the gauge locks (store/locks.py) take pairs of int4s.
MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"flask_profile_billing.migrations").digest()[:8], "big", signed=True
)
# How long a migration waits on SQLite for another process's migration to end. Longer than a
# connection's usual busy timeout (which is sized for one short write), since a whole migration
# may run first.
SQLITE_LOCK_WAIT_MS = 120_000
_PG_MIGRATION_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


def hold_migration_lock(connection: Connection) -> None:
    """Take the lock that serialises migrations of this database, until the connection's current
    transaction ends; call it first in that transaction, before the current revision is read.

    PostgreSQL: a transaction-level advisory lock. It goes with the transaction (commit, rollback,
    or a process that dies and drops its connection), and it is taken in the same transaction as
    the DDL, which PostgreSQL runs transactionally: whoever waited for it reads the version table
    after the first migration committed.

    SQLite: ``BEGIN IMMEDIATE``, the database's own write lock, which works across processes; the
    whole migration then runs in that one transaction (SQLite's DDL is transactional too). The
    wait is SQLITE_LOCK_WAIT_MS, restored to the connection's own busy timeout once the lock is held.

    Other databases are not supported by the extension and get no lock.
    """
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(_PG_MIGRATION_LOCK, {"key": MIGRATION_LOCK_KEY})
    elif dialect == "sqlite":
        usual_wait = connection.exec_driver_sql("PRAGMA busy_timeout").scalar_one()
        connection.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_LOCK_WAIT_MS}")
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        finally:
            connection.exec_driver_sql(f"PRAGMA busy_timeout = {int(usual_wait)}")
