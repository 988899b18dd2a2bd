"""What reaches a face when the database cannot serve it now, and what to answer.

Two faults, both a 503 with ``Retry-After``, never a 500:

- **The database is unavailable** (down, restarting, locked past the busy timeout, no pooled
  connection free): ``DATABASE_UNAVAILABLE``, answered ``SERVICE_UNAVAILABLE``.
- **The extension's tables are missing**: its migrations were not applied (a deploy that ran only
  the host's ``flask db upgrade``). Answered ``MIGRATIONS_PENDING``, with a log line at ERROR that
  names the command to run. SQLite raises it as an ``OperationalError`` (so it is among
  ``DATABASE_UNAVAILABLE``), PostgreSQL as a ``ProgrammingError`` (which is not: most of them are
  bugs). A face that catches ``DATABASE_FAULTS`` must therefore ask ``is_database_fault`` and
  re-raise what it says no to.

The exception classes are the store's; faces learn them here.
"""

from __future__ import annotations

import logging

from ..errors import BillingUnavailable
from ..store.transactions import MISSING_TABLE_ERRORS, missing_billing_table
from ..store.transactions import UNAVAILABLE_ERRORS as DATABASE_UNAVAILABLE

__all__ = [
    "DATABASE_FAULTS",
    "DATABASE_UNAVAILABLE",
    "MIGRATIONS_PENDING",
    "database_unavailable",
    "is_database_fault",
    "migrations_pending",
    "missing_table_behind",
]

log = logging.getLogger(__name__)

MIGRATIONS_PENDING = "MIGRATIONS_PENDING"
"""The error code of an answer given while the extension's tables are missing."""

DATABASE_FAULTS: tuple[type[Exception], ...] = tuple(
    dict.fromkeys(DATABASE_UNAVAILABLE + MISSING_TABLE_ERRORS)
)
"""Every class a database fault may be raised as: wider than the faults themselves, so a face
that catches these checks ``is_database_fault`` and re-raises the others (bugs answer 500)."""


def missing_table_behind(error: BaseException | None) -> str | None:
    """The extension's table whose absence caused ``error``, or None: ``error`` itself, or an
    exception it was raised from or while handling (a face answers a fault with an error of its
    own, raised ``from`` the database's)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        table = missing_billing_table(error)
        if table is not None:
            return table
        # The chain Python prints: the explicit cause, else the exception being handled when it
        # was raised (unless ``raise ... from None`` hid it).
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return None


def is_database_fault(error: BaseException) -> bool:
    """Whether ``error`` is a fault to answer with 503 (the database unavailable, or the
    extension's tables missing) rather than a bug."""
    return isinstance(error, DATABASE_UNAVAILABLE) or missing_table_behind(error) is not None


def database_unavailable(error: BaseException, *, retry_after_seconds: int) -> BillingUnavailable:
    """The answer while the database cannot serve (``error`` says why), logged at ERROR."""
    log.error("the billing database is unavailable", exc_info=error)
    return BillingUnavailable(
        "The service is temporarily unavailable; retry later",
        retry_after_seconds=retry_after_seconds,
    )


def migrations_pending(
    table: str, *, retry_after_seconds: int | None, cli_group: str = "billing"
) -> BillingUnavailable:
    """The answer while the extension's table ``table`` is missing, logged at ERROR with the
    command that creates the tables.

    A ``BillingUnavailable`` (a host that catches those catches this one too) with a code of its
    own, so that clients and monitoring can tell a deploy that forgot the extension's migrations
    from a database that is down.
    """
    command = f"flask {cli_group} db upgrade"
    log.error(
        "the billing table %s does not exist: the extension's migrations were not applied; "
        "run `%s` (next to your own `flask db upgrade`) to create its tables",
        table,
        command,
    )
    return BillingUnavailable(
        "The service is not set up yet: its database migrations are pending. Retry later",
        retry_after_seconds=retry_after_seconds,
        error_code="MIGRATIONS_PENDING",
    )
