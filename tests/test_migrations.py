"""The extension's own Alembic migrations, on an empty SQLite and PostgreSQL database: upgrade and
downgrade, through the extension and its CLI, and beside a host's own tables."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    inspect,
    select,
)

import flask_profile_billing
from flask_profile_billing import PlanRow, ProfileBilling, migrate
from flask_profile_billing.migrate import exclude_billing_tables, only_billing_tables

HEAD = "0009"
BILLING_TABLES = {
    "billing_plans",
    "billing_profiles",
    "billing_activity",
    "billing_payments",
    "billing_webhook_deliveries",
    "billing_payment_events",
    "billing_recurring",
    "billing_usage_daily",
    "billing_idempotency_keys",
    "billing_job_leases",
    "billing_notifications",
    "billing_subscriptions",
    "billing_usage_counters",
    "billing_usage_events",
    "billing_accounts",
    "billing_account_members",
    "billing_member_caps",
    "billing_member_counters",
    "billing_invitations",
}
VERSION_TABLE = "billing_alembic_version"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A bare engine on the test's empty database: no host app, no create_all()."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def head_revision(engine: Engine) -> str:
    head = ScriptDirectory.from_config(migrate.alembic_config(engine)).get_current_head()
    assert head is not None
    return head


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def schema_snapshot(engine: Engine) -> dict[str, Any]:
    """Tables with their columns and index names, to tell whether anything changed."""
    inspector = inspect(engine)
    return {
        table: (
            [column["name"] for column in inspector.get_columns(table)],
            sorted(index["name"] for index in inspector.get_indexes(table)),
        )
        for table in sorted(inspector.get_table_names())
    }


def schema_diff(engine: Engine, metadata: MetaData, include_object: Any) -> list[Any]:
    """What ``alembic revision --autogenerate`` would write to turn the database into ``metadata``."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": include_object}
        )
        return list(compare_metadata(context, metadata))


def mentions_billing(diff: list[Any]) -> list[Any]:
    return [change for change in diff if "billing_" in repr(change)]


# --- upgrading and downgrading an empty database ----------------------------------------------


def test_upgrade_creates_the_tables_at_head(engine: Engine) -> None:
    assert table_names(engine) == set()
    assert migrate.current_revision(engine) is None

    migrate.upgrade(engine)

    assert table_names(engine) == BILLING_TABLES | {VERSION_TABLE}
    assert migrate.current_revision(engine) == head_revision(engine) == HEAD


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    migrate.upgrade(engine)
    diff = schema_diff(engine, flask_profile_billing.metadata, only_billing_tables)
    assert diff == []


def test_migrated_indexes_match_the_models(engine: Engine) -> None:
    migrate.upgrade(engine)
    inspector = inspect(engine)
    for table in flask_profile_billing.metadata.sorted_tables:
        reflected = {index["name"]: index for index in inspector.get_indexes(table.name)}
        for index in table.indexes:
            assert index.name in reflected, f"{table.name}: index {index.name} missing"
            assert reflected[index.name]["column_names"] == [c.name for c in index.columns]
            assert bool(reflected[index.name]["unique"]) is bool(index.unique)


def test_upgrade_twice_is_a_no_op(engine: Engine) -> None:
    migrate.upgrade(engine)
    before = schema_snapshot(engine)
    with engine.begin() as connection:
        connection.execute(
            PlanRow.__table__.insert(),
            _plan_row_values(),
        )

    migrate.upgrade(engine)

    assert schema_snapshot(engine) == before
    assert migrate.current_revision(engine) == HEAD
    with engine.connect() as connection:
        codes = connection.execute(select(PlanRow.code)).scalars().all()
    assert codes == ["free"]


def test_downgrade_to_base_removes_every_billing_table(engine: Engine) -> None:
    migrate.upgrade(engine)
    migrate.downgrade(engine, "base")

    # Every table of the extension is gone, its version table too.
    assert table_names(engine) == set()
    assert migrate.current_revision(engine) is None

    migrate.upgrade(engine)  # and back up again
    assert table_names(engine) == BILLING_TABLES | {VERSION_TABLE}
    assert schema_diff(engine, flask_profile_billing.metadata, only_billing_tables) == []


def _plan_row_values() -> dict[str, Any]:
    return {
        "code": "free",
        "name": "Free",
        "description": "",
        "price_monthly": 0,
        "price_yearly": 0,
        "currency": "RUB",
        "limits": {"analysis": 20},
        "features": {},
        "sort_order": 0,
        "is_default": True,
        "updated_at": datetime(2025, 10, 13, tzinfo=UTC),
    }


# --- through the extension and its CLI --------------------------------------------------------


def bare_app(database_url: str) -> tuple[Flask, ProfileBilling]:
    """A tiny host app that has never run create_all()."""
    app = Flask("bare_host")
    app.config.update(TESTING=True, SQLALCHEMY_DATABASE_URI=database_url)
    db = SQLAlchemy()
    db.init_app(app)
    return app, ProfileBilling(app, db)


def test_upgrade_database_migrates_the_apps_database(database_url: str) -> None:
    app, billing = bare_app(database_url)
    with app.app_context():
        engine = app.extensions["sqlalchemy"].engine
        assert table_names(engine) == set()

        billing.upgrade_database()

        assert table_names(engine) == BILLING_TABLES | {VERSION_TABLE}
        assert migrate.current_revision(engine) == HEAD
        assert schema_diff(engine, flask_profile_billing.metadata, only_billing_tables) == []
        # The migrated tables serve the extension.
        billing.change_plan("u1", "starter")
        billing.consume("u1", "analysis", 3)
        assert billing.allowance("u1", "analysis").used == 3


def test_cli_db_upgrade_current_and_downgrade(database_url: str) -> None:
    app, _ = bare_app(database_url)
    runner = app.test_cli_runner()
    with app.app_context():
        engine = app.extensions["sqlalchemy"].engine

        def invoke(*args: str) -> str:
            result = runner.invoke(args=["billing", "db", *args])
            assert result.exit_code == 0, result.output
            return result.output.strip()

        assert invoke("current") == "none (not migrated)"
        assert invoke("upgrade") == f"Billing tables at revision {HEAD}."
        assert invoke("current") == HEAD
        assert table_names(engine) == BILLING_TABLES | {VERSION_TABLE}
        assert invoke("upgrade") == f"Billing tables at revision {HEAD}."

        assert invoke("downgrade", "base").startswith("Billing tables at revision")
        assert invoke("current") == "none (not migrated)"
        assert table_names(engine) - {VERSION_TABLE} == set()


# --- living beside a host's own tables --------------------------------------------------------


def host_metadata() -> MetaData:
    metadata = MetaData()
    Table(
        "host_notes",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("body", String(200), nullable=False),
    )
    return metadata


@pytest.fixture
def host_engine(engine: Engine) -> Engine:
    """The empty database with one host table holding one row."""
    metadata = host_metadata()
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(metadata.tables["host_notes"].insert(), {"id": 1, "body": "keep me"})
    return engine


def host_rows(engine: Engine) -> list[tuple[Any, ...]]:
    notes = host_metadata().tables["host_notes"]
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(select(notes))]


def test_migrations_leave_the_hosts_tables_alone(host_engine: Engine) -> None:
    before = schema_snapshot(host_engine)["host_notes"]

    migrate.upgrade(host_engine)
    assert table_names(host_engine) == BILLING_TABLES | {VERSION_TABLE, "host_notes"}
    assert schema_snapshot(host_engine)["host_notes"] == before
    assert host_rows(host_engine) == [(1, "keep me")]
    # The extension's autogenerate does not want to drop the host's table either.
    assert schema_diff(host_engine, flask_profile_billing.metadata, only_billing_tables) == []

    migrate.downgrade(host_engine, "base")
    assert schema_snapshot(host_engine)["host_notes"] == before
    assert host_rows(host_engine) == [(1, "keep me")]


def test_exclude_billing_tables_hides_them_from_the_hosts_autogenerate(
    host_engine: Engine,
) -> None:
    migrate.upgrade(host_engine)

    # Without the hook, the host's migration would drop the extension's tables...
    unhooked = mentions_billing(schema_diff(host_engine, host_metadata(), None))
    dropped = {change[1].name for change in unhooked if change[0] == "remove_table"}
    assert dropped == BILLING_TABLES | {VERSION_TABLE}

    # ... with it, the host's autogenerate sees nothing to do.
    assert schema_diff(host_engine, host_metadata(), exclude_billing_tables) == []


def test_exclude_billing_tables_still_reports_the_hosts_own_changes(host_engine: Engine) -> None:
    migrate.upgrade(host_engine)
    metadata = host_metadata()
    Table("host_tags", metadata, Column("id", Integer, primary_key=True))

    diff = schema_diff(host_engine, metadata, exclude_billing_tables)

    assert [(change[0], change[1].name) for change in diff] == [("add_table", "host_tags")]
