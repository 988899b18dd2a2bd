"""Serialising gauge checks of one user and metric while the host creates the counted thing.

A gauge (active vacancies) is counted by the host, so its check cannot be one statement of ours:
the count is read, compared, and the view then creates the row. Holding a lock for that user and
metric across the view makes concurrent creators take turns, so they cannot all pass the check.
"""

from __future__ import annotations

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
def gauge_lock(engine: Engine, user_id: str, metric: str) -> Iterator[Connection | None]:
    """Hold a lock on (user, metric) for the block.

    PostgreSQL: a transaction-scoped advisory lock on a connection of its own, which the block gets
    to read on: it serialises workers and machines, and it goes with the transaction, so a process
    that dies releases it, and a pooler in transaction mode (PgBouncer) keeps the lock and its
    release on one server connection (a session lock could be released on another and stay held).
    SQLite (a single-host, usually single-process store): a lock inside this process, and no
    connection (None): holding one across the view would share it with the view's own session
    where the pool has a single connection (in-memory databases).
    """
    key = f"{metric}\x00{user_id}"
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
