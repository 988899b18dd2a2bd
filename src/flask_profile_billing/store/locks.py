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

from sqlalchemy import Engine, text

# Advisory lock keys are two int4s: a constant naming this extension's locks, and the key's hash.
_LOCK_CLASS = 0x4249  # "BI"
_process_locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()


@contextmanager
def gauge_lock(engine: Engine, user_id: str, metric: str) -> Iterator[None]:
    """Hold a lock on (user, metric) for the block.

    PostgreSQL: a transaction-scoped advisory lock on a connection of its own, so it serialises
    workers and machines and is released even if the process dies. SQLite (a single-host, usually
    single-process store): a lock inside this process.
    """
    key = f"{metric}\x00{user_id}"
    if engine.dialect.name == "postgresql":
        digest = zlib.crc32(key.encode()) - 2**31  # into int4's range
        with engine.connect() as connection:
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:cls, :key)"),
                {"cls": _LOCK_CLASS, "key": digest},
            )
            try:
                yield
            finally:
                connection.rollback()
        return
    lock = _process_lock(f"{engine.url}\x00{key}")
    with lock:
        yield


def _process_lock(key: str) -> threading.Lock:
    with _registry_lock:
        lock = _process_locks.get(key)
        if lock is None:
            lock = threading.Lock()
            _process_locks[key] = lock
        return lock
