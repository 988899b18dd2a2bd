"""A database without the extension's tables (a deploy that ran only the host's `flask db upgrade`)
is answered 503 MIGRATIONS_PENDING, logged with the command to run, on SQLite and PostgreSQL; and a
downgrade to base leaves nothing of the extension behind, its version table included."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, create_engine, inspect
from sqlalchemy.exc import OperationalError, ProgrammingError
from werkzeug.test import TestResponse

import flask_profile_billing
from flask_profile_billing import BillingUnavailable, ProfileBilling, migrate
from flask_profile_billing.services.faults import (
    DATABASE_FAULTS,
    is_database_fault,
    missing_table_behind,
)
from tests.support.host_app import AppFactory, as_user, billing_of
from tests.test_migrations import HEAD

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
FAULTS_LOGGER = "flask_profile_billing.services.faults"


def drop_billing_tables(app: Flask, *names: str) -> None:
    """Drop the extension's tables (``names`` only, when given), as if never migrated."""
    metadata = flask_profile_billing.metadata
    tables = [metadata.tables[name] for name in names] if names else None
    with app.app_context():
        metadata.drop_all(app.extensions["sqlalchemy"].engine, tables=tables)


@pytest.fixture
def unmigrated(make_app: AppFactory) -> Iterator[Flask]:
    """A host app whose database has its own tables but none of the extension's."""
    app = make_app()
    drop_billing_tables(app)
    with app.app_context():
        yield app


@pytest.fixture
def unmigrated_client(unmigrated: Flask) -> FlaskClient:
    return unmigrated.test_client()


def migration_hints(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == FAULTS_LOGGER and record.levelno == logging.ERROR
    ]


def assert_migrations_pending(answer: TestResponse, caplog: pytest.LogCaptureFixture) -> None:
    assert answer.status_code == 503, answer.get_data(as_text=True)
    assert answer.headers["Retry-After"] == "5"
    hints = migration_hints(caplog)
    assert hints, "no ERROR line naming the command"
    assert "`flask billing db upgrade`" in hints[-1]
    assert "billing_" in hints[-1]


# --- answers ----------------------------------------------------------------------------------


def test_a_guarded_request_answers_migrations_pending_in_json(
    unmigrated_client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    answer = unmigrated_client.post("/analyze", headers=as_user("alice"))

    assert_migrations_pending(answer, caplog)
    assert answer.get_json()["error"] == "MIGRATIONS_PENDING"
    assert answer.get_json()["success"] is False


def test_a_browser_gets_the_page(
    unmigrated_client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    page = unmigrated_client.post("/analyze", headers={"X-User": "alice", **HTML})

    assert_migrations_pending(page, caplog)
    assert page.mimetype == "text/html"
    assert "MIGRATIONS_PENDING" in page.get_data(as_text=True)
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")


def test_a_feature_guard_answers_migrations_pending(
    unmigrated_client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    answer = unmigrated_client.get("/api/data", headers=as_user("alice"))

    assert_migrations_pending(answer, caplog)
    assert answer.get_json()["error"] == "MIGRATIONS_PENDING"


@pytest.mark.parametrize("path", ["/api/subscription/current", "/api/profile/me"])
def test_the_json_api_answers_migrations_pending(
    unmigrated_client: FlaskClient, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    answer = unmigrated_client.get(path, headers=as_user("alice"))

    assert_migrations_pending(answer, caplog)
    assert answer.get_json()["error"] == "MIGRATIONS_PENDING"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_a_table_of_a_newer_revision_missing_is_migrations_pending_too(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    drop_billing_tables(app, "billing_idempotency_keys")
    with app.app_context():
        answer = app.test_client().post(
            "/analyze", headers=as_user("alice", **{"Idempotency-Key": "k1"})
        )

    assert_migrations_pending(answer, caplog)
    assert "billing_idempotency_keys" in migration_hints(caplog)[-1]


def test_the_log_names_the_apps_own_command_group(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(BILLING_CLI_GROUP="plans")
    drop_billing_tables(app)
    with app.app_context():
        answer = app.test_client().post("/analyze", headers=as_user("alice"))

    assert answer.status_code == 503
    assert "`flask plans db upgrade`" in migration_hints(caplog)[-1]


def test_once_migrated_the_same_app_serves_requests(unmigrated: Flask) -> None:
    client = unmigrated.test_client()
    assert client.post("/analyze", headers=as_user("alice")).status_code == 503

    billing = billing_of(unmigrated)
    billing.upgrade_database()

    assert client.post("/analyze", headers=as_user("alice")).status_code == 200


@pytest.mark.parametrize(
    ("path", "service", "method"),
    [
        ("/api/data", "quotas", "require_feature"),
        ("/api/subscription/current", "quotas", "snapshot"),
    ],
)
def test_another_database_error_is_still_a_bug(
    app: Flask, monkeypatch: pytest.MonkeyPatch, path: str, service: str, method: str
) -> None:
    """Only missing tables are a fault: a statement the database refuses stays an error (500)."""
    bug = ProgrammingError("SELEC 1", {}, psycopg.errors.SyntaxError('syntax error at "SELEC"'))

    def fail(*args: object, **kwargs: object) -> None:
        raise bug

    monkeypatch.setattr(getattr(app.extensions["profile_billing"], service), method, fail)

    # The test app propagates what it does not handle, as a production app answers it 500.
    with pytest.raises(ProgrammingError):
        app.test_client().get(path, headers=as_user("alice"))


# --- telling a missing table from other errors -------------------------------------------------


def sqlite_error(message: str) -> OperationalError:
    return OperationalError("SELECT 1", {}, sqlite3.OperationalError(message))


def postgresql_error(kind: type[psycopg.Error], message: str) -> ProgrammingError:
    return ProgrammingError("SELECT 1", {}, kind(message))


@pytest.mark.parametrize(
    ("error", "table"),
    [
        (sqlite_error("no such table: billing_subscriptions"), "billing_subscriptions"),
        (sqlite_error("no such table: main.billing_plans"), "billing_plans"),
        (sqlite_error("no such table: host_notes"), None),
        (sqlite_error("no such table: host_billing_notes"), None),
        (sqlite_error("database is locked"), None),
        (sqlite_error("table billing_plans has no column named x"), None),
        (
            postgresql_error(
                psycopg.errors.UndefinedTable, 'relation "billing_subscriptions" does not exist'
            ),
            "billing_subscriptions",
        ),
        (
            postgresql_error(
                psycopg.errors.UndefinedTable, 'relation "public.billing_plans" does not exist'
            ),
            "billing_plans",
        ),
        (
            # Another table missing, in a statement that also names one of ours.
            postgresql_error(
                psycopg.errors.UndefinedTable,
                'relation "host_notes" does not exist\nLINE 1: SELECT * FROM billing_plans, '
                "host_notes",
            ),
            None,
        ),
        (
            postgresql_error(psycopg.errors.SyntaxError, 'syntax error at or near "billing_plans"'),
            None,
        ),
        (
            postgresql_error(
                psycopg.errors.UndefinedColumn,
                'column "x" of relation "billing_plans" does not exist',
            ),
            None,
        ),
    ],
)
def test_only_a_missing_billing_table_counts(error: Exception, table: str | None) -> None:
    assert missing_table_behind(error) == table


def test_a_face_error_raised_from_a_missing_table_is_a_fault() -> None:
    missing = postgresql_error(
        psycopg.errors.UndefinedTable, 'relation "billing_plans" does not exist'
    )
    answered = BillingUnavailable("retry later")
    answered.__cause__ = missing  # what `raise BillingUnavailable(...) from error` sets

    assert missing_table_behind(answered) == "billing_plans"

    assert isinstance(missing, DATABASE_FAULTS)
    assert is_database_fault(missing)
    bug = postgresql_error(psycopg.errors.SyntaxError, 'syntax error at or near "SELEC"')
    assert isinstance(bug, DATABASE_FAULTS)
    assert not is_database_fault(bug)


# --- a downgrade to base ----------------------------------------------------------------------


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_a_downgrade_to_base_drops_the_version_table_too(engine: Engine) -> None:
    migrate.upgrade(engine)

    migrate.downgrade(engine, "base")

    assert table_names(engine) == set()
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)  # and up again, from nothing
    assert migrate.VERSION_TABLE in table_names(engine)
    assert migrate.current_revision(engine) == HEAD


def test_a_downgrade_short_of_base_keeps_the_version_table(engine: Engine) -> None:
    migrate.upgrade(engine)

    migrate.downgrade(engine, "0003")

    assert migrate.VERSION_TABLE in table_names(engine)
    assert migrate.current_revision(engine) == "0003"


def test_the_cli_downgrade_to_base_leaves_nothing_of_the_extension(database_url: str) -> None:
    app = Flask("bare_host")
    app.config.update(TESTING=True, SQLALCHEMY_DATABASE_URI=database_url)
    db = SQLAlchemy()
    db.init_app(app)
    ProfileBilling(app, db)
    runner = app.test_cli_runner()
    with app.app_context():
        assert runner.invoke(args=["billing", "db", "upgrade"]).exit_code == 0

        result = runner.invoke(args=["billing", "db", "downgrade", "base"])

        assert result.exit_code == 0, result.output
        assert table_names(db.engine) == set()
        assert runner.invoke(args=["billing", "db", "current"]).output.strip() == (
            "none (not migrated)"
        )
