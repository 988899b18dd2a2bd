"""Applying the extension's own Alembic migrations to a host's database.

They keep their own version table (``billing_alembic_version``), so they live beside the host's
Flask-Migrate history without touching it: ``flask db upgrade`` migrates the host's tables and
``flask billing db upgrade`` the extension's.

Upgrades and downgrades run under a database lock, so that processes migrating one database at the
same moment (every worker of a server that runs ``upgrade_database()`` at start) take turns: the
first applies the revisions, the others then find the database at head and do nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Connection, Engine, text

SCRIPT_LOCATION = Path(__file__).parent / "migrations"
VERSION_TABLE = "billing_alembic_version"
TABLE_PREFIX = "billing_"
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


def exclude_billing_tables(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """An Alembic ``include_object`` hook for the host's migrations that leaves our tables out.

    Without it, ``flask db migrate`` in the host app would see the ``billing_*`` tables in the
    database but not in the host's models and write a migration that drops them::

        Migrate(app, db, include_object=exclude_billing_tables)
    """
    table_name = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    return not (table_name or "").startswith(TABLE_PREFIX)


def only_billing_tables(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """The opposite hook, used by the extension's own migrations in a shared database."""
    if type_ == "table" and name == VERSION_TABLE:
        return False
    return not exclude_billing_tables(obj, name, type_, reflected, compare_to)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["engine"] = engine
    return config


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


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the billing tables to ``revision``; safe to call from many processes at once
    (``migrations/env.py`` runs the revisions under ``hold_migration_lock``)."""
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Undo revisions down to ``revision``, under the same lock as ``upgrade``."""
    command.downgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()
