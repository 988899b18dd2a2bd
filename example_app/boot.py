"""Start-up work that must happen once even when several processes start at the same moment.

``gunicorn --workers 4 'example_app:create_app()'`` runs ``create_app()`` in four processes at
once, and each creates the host's tables, migrates the billing tables and adds the demo users.
Without a lock, two of them both find a table missing and both create it (the second fails, and
gunicorn halts when a worker fails to boot), or both find bob on the free plan and both grant him
a year. ``boot_lock`` makes them take turns: each one after the first finds the work done.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text

# A bigint advisory lock key of its own: the billing migrations, which run inside the boot, take
# another one on another connection, so the two must differ.
BOOT_LOCK_KEY = int.from_bytes(hashlib.sha256(b"example_app.boot").digest()[:8], "big", signed=True)
_PG_BOOT_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_IN_MEMORY = {"", ":memory:"}


@contextmanager
def boot_lock(engine: Engine) -> Iterator[None]:
    """Hold, for the block, a lock that every process starting on this database takes.

    PostgreSQL: a transaction-level advisory lock on a connection of its own, left idle in its
    transaction while the block works on other connections; it goes when that transaction ends,
    also when the process dies, so a crashed worker never leaves it held.

    SQLite file: an exclusive ``flock`` on a file beside the database. The database's own write
    lock (``BEGIN IMMEDIATE``) would not do here: the block writes through other connections,
    which would wait for it. An in-memory database lives in one process and needs no lock.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(_PG_BOOT_LOCK, {"key": BOOT_LOCK_KEY})
            try:
                yield
            finally:
                connection.rollback()  # ends the transaction, and the lock with it
        return
    database = engine.url.database or ""
    if engine.dialect.name == "sqlite" and database not in _IN_MEMORY:
        with _file_lock(Path(f"{database}.boot-lock")):
            yield
        return
    yield


if sys.platform == "win32":

    @contextmanager
    def _file_lock(path: Path) -> Iterator[None]:
        # gunicorn does not run on Windows, and the development server is one process.
        yield

else:
    import fcntl

    @contextmanager
    def _file_lock(path: Path) -> Iterator[None]:
        """An exclusive lock on ``path`` (created if missing) between processes of this host;
        the kernel releases it when the file is closed, or when the process dies."""
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
