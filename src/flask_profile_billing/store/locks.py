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
from sqlalchemy.exc import DBAPIError

from .transactions import read_connection

# Advisory lock keys are two int4s: a constant naming this extension's locks, and the key's hash.
_LOCK_CLASS = 0x4249  # "BI"
_process_locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()


@contextmanager
def gauge_lock(engine: Engine, user_id: str, metric: str) -> Iterator[Connection]:
    """Hold a lock on (user, metric) for the block, which gets an autocommit connection to read on.

    PostgreSQL: a session advisory lock on the block's own connection, taken and released by one
    statement each, so it serialises workers and machines without holding a transaction open
    across the view; a process that dies releases it with its connection. SQLite (a single-host,
    usually single-process store): a lock inside this process.
    """
    key = f"{metric}\x00{user_id}"
    if engine.dialect.name != "postgresql":
        with _process_lock(f"{engine.url}\x00{key}"), read_connection(engine) as connection:
            yield connection
        return
    parameters = {"cls": _LOCK_CLASS, "key": zlib.crc32(key.encode()) - 2**31}  # int4's range
    with read_connection(engine) as connection:
        connection.execute(_LOCK, parameters)
        try:
            yield connection
        finally:
            try:
                connection.execute(_UNLOCK, parameters)
            except DBAPIError:
                # Closing a session releases its locks: a connection that cannot unlock is
                # discarded rather than returned to the pool still holding the lock.
                connection.invalidate()


_LOCK = text("SELECT pg_advisory_lock(:cls, :key)")
_UNLOCK = text("SELECT pg_advisory_unlock(:cls, :key)")


def _process_lock(key: str) -> threading.Lock:
    with _registry_lock:
        lock = _process_locks.get(key)
        if lock is None:
            lock = threading.Lock()
            _process_locks[key] = lock
        return lock
