"""Applying the extension's own Alembic migrations to a host's database.

They keep their own version table (``billing_alembic_version``), so they live beside the host's
Flask-Migrate history without touching it: ``flask db upgrade`` migrates the host's tables and
``flask billing db upgrade`` the extension's. A host can also have its own ``flask db upgrade`` apply
both, with one call at the end of its ``migrations/env.py``
(``flask_profile_billing.upgrade_with_host_migrations``, which asks ``migrating_to_head`` here).

Upgrades and downgrades run under a database lock, so that processes migrating one database at the
same moment (every worker of a server that runs ``upgrade_database()`` at start) take turns: the
first applies the revisions, the others then find the database at head and do nothing.

The host's own autogenerate must leave the ``billing_*`` tables alone (``exclude_billing_tables``).
An ``env.py`` that does not hand Flask-Migrate's ``configure_args`` to ``context.configure()``
loses that hook without a word; ``host_autogenerate_touches`` (``flask billing db check``) and
``refuse_billing_changes_in_host_autogenerate`` (inside ``upgrade_with_host_migrations``) say so.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from alembic import command
from alembic.autogenerate import RevisionContext
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations import ops
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, MetaData, Table

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


def drop_version_table(engine: Engine) -> None:
    """Drop ``billing_alembic_version`` if it is there, so that the migrations start afresh."""
    Table(VERSION_TABLE, MetaData()).drop(engine, checkfirst=True)


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


CHECKING_HOST_AUTOGENERATE = "billing_checking_host_autogenerate"
"""The config attribute ``host_autogenerate_touches`` sets, so that the hook in the host's
``env.py`` leaves the answer to it instead of refusing."""

ENV_PY_FIX = (
    "The host's migrations/env.py does not hand Flask-Migrate's configure_args to "
    "context.configure(), so Migrate(include_object=exclude_billing_tables) is ignored. "
    "Pass them in run_migrations_online(): context.configure(connection=connection, "
    "target_metadata=get_metadata(), **current_app.extensions['migrate'].configure_args), "
    "or give include_object=exclude_billing_tables to context.configure() yourself."
)


def billing_changes(migration_scripts: Iterable[ops.MigrationScript]) -> list[str]:
    """What autogenerated revisions would do to the extension's tables, one "table: operation"
    line each (empty when they leave them alone)."""
    found: dict[str, set[str]] = {}

    def visit(operation: ops.MigrateOperation, table: str | None) -> None:
        name = getattr(operation, "table_name", None) or table
        if isinstance(operation, ops.ModifyTableOps):  # a table's column and index changes
            for inner in operation.ops:
                visit(inner, name)
            return
        if isinstance(name, str) and name.startswith(TABLE_PREFIX):
            found.setdefault(name, set()).add(_describe_operation(operation))

    for script in migration_scripts:
        for upgrade_ops in script.upgrade_ops_list:
            for operation in upgrade_ops.ops:
                visit(operation, None)
    # Dropping a table drops its indexes and constraints: the drop says it all.
    return [
        f"{name}: {'drop table' if 'drop table' in kinds else ', '.join(sorted(kinds))}"
        for name, kinds in sorted(found.items())
    ]


def _describe_operation(operation: ops.MigrateOperation) -> str:
    words = {
        ops.DropTableOp: "drop table",
        ops.CreateTableOp: "create table",
        ops.DropColumnOp: "drop column",
        ops.AddColumnOp: "add column",
        ops.AlterColumnOp: "alter column",
        ops.DropIndexOp: "drop index",
        ops.CreateIndexOp: "create index",
    }
    for kind, text in words.items():
        if isinstance(operation, kind):
            return text
    return type(operation).__name__.removesuffix("Op").lower()


def refusal(changes: list[str]) -> str:
    """The error for a host autogenerate that touches our tables: what it would do, and the fix."""
    listed = "".join(f"\n  {change}" for change in changes)
    return (
        f"the app's autogenerate would change {len(changes)} of the extension's tables, which "
        f"only 'flask billing db upgrade' migrates:{listed}\n{ENV_PY_FIX}"
    )


def refuse_billing_changes_in_host_autogenerate(context: AlembicEnvironment) -> None:
    """Fail a host's ``flask db migrate`` (or ``check``) whose autogenerate, run by the ``env.py``
    that calls this, touched the extension's tables, before a revision that drops them is written.

    Alembic writes the revision file only after ``env.py`` returns, so an error raised here leaves
    nothing behind; Flask-Migrate prints a ``CommandError`` as one line and exits 1.
    """
    environment = context.get_context().environment_context
    if environment is None or environment.config.attributes.get(CHECKING_HOST_AUTOGENERATE):
        return
    revision_context = environment.context_opts.get("revision_context")
    if not isinstance(revision_context, RevisionContext):
        return  # not an autogenerate command
    changes = billing_changes(revision_context.generated_revisions)
    if changes:
        raise CommandError(refusal(changes))


def host_autogenerate_touches(config: Config) -> list[str]:
    """Run the host's ``env.py`` (its Alembic ``config``) as ``flask db check`` does, and return
    what its autogenerate would do to the extension's tables (``billing_changes``)."""
    script = ScriptDirectory.from_config(config)
    revision_context = RevisionContext(
        config,
        script,
        {
            "message": None,
            "autogenerate": True,
            "sql": False,
            "head": "head",
            "splice": False,
            "branch_label": None,
            "version_path": None,
            "rev_id": None,
            "depends_on": None,
        },
    )

    def autogenerate(revision: Any, context: MigrationContext) -> list[Any]:
        revision_context.run_autogenerate(revision, context)
        return []

    config.attributes[CHECKING_HOST_AUTOGENERATE] = True
    with EnvironmentContext(
        config,
        script,
        fn=autogenerate,
        as_sql=False,
        template_args=revision_context.template_args,
        revision_context=revision_context,
    ):
        script.run_env()
    return billing_changes(revision_context.generated_revisions)
