"""Applying the extension's own Alembic migrations to a host's database.

They keep their own version table (``billing_alembic_version``), so they live beside the host's
Flask-Migrate history without touching it: ``flask db upgrade`` migrates the host's tables and
``flask billing db upgrade`` the extension's. A host can also have its own ``flask db upgrade`` apply
both, with one call at the end of its ``migrations/env.py``
(``flask_profile_billing.upgrade_with_host_migrations``, which asks ``migrating_to_head`` here).

Upgrades and downgrades run under a database lock, so that processes migrating one database at the
same moment (every worker of a server that runs ``upgrade_database()`` at start) take turns: the
first applies the revisions, the others then find the database at head and do nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy import Engine

SCRIPT_LOCATION = Path(__file__).parent / "migrations"
VERSION_TABLE = "billing_alembic_version"
TABLE_PREFIX = "billing_"
DROP_VERSION_TABLE_AT_BASE = "drop_version_table_at_base"
"""The config attribute that tells ``migrations/env.py`` to drop the version table once a
downgrade has left no revision applied."""


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


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the billing tables to ``revision``; safe to call from many processes at once
    (``migrations/env.py`` runs the revisions under ``store.locks.hold_migration_lock``)."""
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Undo revisions down to ``revision``, under the same lock as ``upgrade``.

    A downgrade that reaches ``base`` also drops ``billing_alembic_version`` (Alembic itself only
    empties it), so that nothing of the extension is left in the database. It is dropped in the
    downgrade's own transaction, under its lock: a process upgrading at the same moment finds
    either every table and the version table, or none.
    """
    config = alembic_config(engine)
    config.attributes[DROP_VERSION_TABLE_AT_BASE] = True
    command.downgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


class AlembicEnvironment(Protocol):
    """What a host's ``env.py`` holds as ``alembic.context`` (the module, or the object behind it)."""

    def is_offline_mode(self) -> bool: ...

    def get_context(self) -> MigrationContext: ...

    def get_revision_argument(self) -> str | tuple[str, ...] | None: ...


def migrating_to_head(context: AlembicEnvironment) -> bool:
    """Whether a host's Alembic command, whose ``env.py`` has configured ``context``, is taking
    the host's own history to its head revision(s).

    True for ``flask db upgrade`` (and ``upgrade heads``, ``stamp head``, or an upgrade naming the
    head revision); false for a downgrade, an upgrade to an older revision, and the commands that
    only read (``migrate``, ``check``, ``current``), which name no destination at all.
    """
    migration = context.get_context()
    destination = migration.opts.get("destination_rev")
    if destination is None:
        return False
    if destination in ("head", "heads"):
        return True
    try:
        resolved = context.get_revision_argument()
    except CommandError:  # a relative target ("-1", "+2"): never the heads by name
        return False
    heads = set(migration.opts["script"].get_heads())
    targets = {resolved} if isinstance(resolved, str) else set(resolved or ())
    return bool(targets) and targets == heads


def upgrade_inside_host_command(context: AlembicEnvironment, engine: Engine) -> None:
    """``upgrade(engine)`` from inside a host's running Alembic command (its ``env.py``).

    An Alembic command publishes its environment as the module ``alembic.context`` while it runs,
    and takes it away when it ends; ours, run inside the host's, takes away the host's too. The
    host's environment is published again afterwards, so that the host's command ends as usual.
    """
    host_environment = context.get_context().environment_context
    try:
        upgrade(engine)
    finally:
        if host_environment is not None:
            host_environment.__enter__()  # publishes it again; the host's command ends it
