"""A host whose ``migrations/env.py`` is of the old shape, that does not pass Flask-Migrate's
``configure_args`` to ``context.configure()``: its ``Migrate(include_object=exclude_billing_tables)``
is ignored, and its ``flask db migrate`` would write a revision that drops every billing table.
``flask billing db check`` says so, and so does the ``env.py`` hook, which stops the revision before
it is written; once ``env.py`` passes the arguments, both are satisfied.

Run as a host runs them: the ``flask`` command of this environment, in a folder of the host's own,
on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from flask_profile_billing.migrate import VERSION_TABLE
from flask_profile_billing.store.models import Base
from tests.conftest import BACKENDS
from tests.support.servers import PostgresServer

FLASK = Path(sys.executable).parent / "flask"

APP = """\
import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from flask_profile_billing import ProfileBilling, exclude_billing_tables

db = SQLAlchemy()
migrate = Migrate(include_object=exclude_billing_tables)
billing = ProfileBilling()


class Note(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(200))


def create_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    db.init_app(app)
    migrate.init_app(app, db)
    billing.init_app(app)
    return app
"""

# An env.py as Flask-Migrate wrote them before configure_args, and as hosts still keep them.
ENV_PY = """\
import logging

from alembic import context
from flask import current_app

from flask_profile_billing import upgrade_with_host_migrations

config = context.config
logger = logging.getLogger("alembic.env")
config.set_main_option(
    "sqlalchemy.url",
    current_app.extensions["migrate"].db.engine.url.render_as_string(hide_password=False).replace(
        "%", "%%"
    ),
)
target_metadata = current_app.extensions["migrate"].db.metadata


def run_migrations_online():
    def process_revision_directives(context, revision, directives):
        if getattr(config.cmd_opts, "autogenerate", False):
            if directives[0].upgrade_ops.is_empty():
                directives[:] = []

    with current_app.extensions["migrate"].db.engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            process_revision_directives=process_revision_directives,
            CONFIGURE_ARGS
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
HOOK
"""
OLD_SHAPE = ""
PASSES_CONFIGURE_ARGS = "**current_app.extensions['migrate'].configure_args,"
WITH_HOOK = "upgrade_with_host_migrations(context)"


@dataclass
class Host:
    root: Path
    database_url: str

    def flask(self, *args: str) -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, "FLASK_APP": "notes", "DATABASE_URL": self.database_url}
        environment.pop("FLASK_RUN_FROM_CLI", None)
        return subprocess.run(
            [str(FLASK), *args],
            cwd=self.root,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def ok(self, *args: str) -> str:
        result = self.flask(*args)
        assert result.returncode == 0, f"flask {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout + result.stderr

    def fails(self, *args: str) -> str:
        result = self.flask(*args)
        assert result.returncode == 1, f"flask {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr, result.stderr
        return result.stdout + result.stderr

    def write_env_py(self, configure_args: str, hook: str) -> None:
        text = ENV_PY.replace("CONFIGURE_ARGS", configure_args).replace("HOOK", hook)
        (self.root / "migrations" / "env.py").write_text(text, encoding="utf-8")

    def revisions(self) -> list[str]:
        return [
            path.read_text(encoding="utf-8")
            for path in (self.root / "migrations" / "versions").glob("*.py")
        ]


@pytest.fixture(params=BACKENDS)
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Host:
    """A host with Flask-Migrate set up (``flask db init``) and the billing tables migrated."""
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path}/notes.sqlite3"
    else:
        server: PostgresServer = request.getfixturevalue("postgresql_server")
        database_url = server.new_database(f"notes_{uuid.uuid4().hex[:12]}")
    root = tmp_path / "project"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "__init__.py").write_text(APP, encoding="utf-8")
    host = Host(root, database_url)
    host.ok("db", "init")
    host.ok("billing", "db", "upgrade")
    return host


# The extension's tables and its own version table: all in the database, none in the host's models.
BILLING_TABLES = sorted([VERSION_TABLE, *(table.name for table in Base.metadata.sorted_tables)])


def test_db_check_names_every_billing_table_an_old_env_py_would_drop(host: Host) -> None:
    host.write_env_py(OLD_SHAPE, hook="")

    refused = host.fails("billing", "db", "check")

    assert len(BILLING_TABLES) == 20
    for table in BILLING_TABLES:
        assert f"{table}: drop table" in refused
    assert "configure_args" in refused
    assert "include_object=exclude_billing_tables" in refused


def test_the_env_py_hook_stops_flask_db_migrate_before_it_writes_the_drops(host: Host) -> None:
    host.write_env_py(OLD_SHAPE, hook=WITH_HOOK)

    refused = host.fails("db", "migrate", "-m", "notes")

    assert "billing_plans: drop table" in refused
    assert "configure_args" in refused
    assert host.revisions() == []


def test_once_env_py_passes_configure_args_migrate_and_check_leave_billing_alone(
    host: Host,
) -> None:
    host.write_env_py(PASSES_CONFIGURE_ARGS, hook=WITH_HOOK)

    host.ok("db", "migrate", "-m", "notes")
    host.ok("db", "upgrade")
    checked = host.ok("billing", "db", "check")

    [revision] = host.revisions()
    assert "create_table('note'" in revision
    assert "billing_" not in revision
    assert "leaves the billing tables alone" in checked
