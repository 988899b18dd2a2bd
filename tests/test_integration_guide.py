"""docs/integration.md, done as a reader does it: its files written out, its commands run with the
``flask`` command of this environment, and the app it builds driven through the public API.

The host is built the way an existing app is (an app factory, Flask-Migrate, CSRFProtect,
Flask-Babel, a GET+POST form view, a token ``request_loader``), and each thing such a host ran into
is checked on it: the CLI under Flask's test runner, the form view's charges, 401 before CSRF, the
primary metric, one ``flask db upgrade`` for both histories, lazy catalog strings, the refusal page
in the host's layout, token clients, the currency and the CLI's email lookup.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import BACKENDS
from tests.support.servers import PostgresServer
from tests.support.translations import write_translations

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "integration.md"
FLASK = Path(sys.executable).parent / "flask"
RUSSIAN = {"Free": "Бесплатный", "Pro": "Про", "Post limit reached ({limit} a month)": "Лимит"}

_MARKED_BLOCK = re.compile(r"<!-- (?P<mark>[^>]+?) -->\n```[a-z]*\n(?P<body>.*?)\n```", re.DOTALL)


@dataclass
class Guide:
    """The parts of the guide a reader copies: its files, its env.py edit and its commands."""

    files: dict[str, str] = field(default_factory=dict)
    env_import: str = ""
    env_end: str = ""
    commands: list[list[str]] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)


def read_guide() -> Guide:
    guide = Guide()
    for match in _MARKED_BLOCK.finditer(GUIDE.read_text(encoding="utf-8")):
        mark, body = match["mark"], match["body"]
        if mark.startswith("file: "):
            guide.files[mark.removeprefix("file: ")] = body + "\n"
        elif mark == "env.py: import":
            guide.env_import = body
        elif mark == "env.py: end":
            guide.env_end = body
        elif mark == "commands":
            for line in body.splitlines():
                words = shlex.split(line.removeprefix("$ "))
                if words[0] == "export":
                    name, _, value = words[1].partition("=")
                    guide.environment[name] = value
                else:
                    guide.commands.append(words)
    assert guide.files
    assert guide.env_import
    assert guide.env_end
    assert guide.commands
    return guide


def edit_env_py(env_py: Path, guide: Guide) -> None:
    """What the guide tells the reader to do to the env.py that ``flask db init`` wrote."""
    text = env_py.read_text(encoding="utf-8")
    template_end = "if context.is_offline_mode():\n    run_migrations_offline()\nelse:\n"
    template_end += "    run_migrations_online()\n"
    assert text.endswith(template_end), "flask db init wrote another env.py than the guide expects"
    text = text.removesuffix(template_end) + guide.env_end + "\n"
    text = text.replace(
        "from alembic import context\n", f"from alembic import context\n\n{guide.env_import}\n", 1
    )
    env_py.write_text(text, encoding="utf-8")


@dataclass
class Project:
    root: Path
    database_url: str
    guide: Guide
    outputs: dict[str, str] = field(default_factory=dict)

    def run(self, words: list[str]) -> str:
        assert words[0] == "flask"
        environment = {**os.environ, **self.guide.environment, "DATABASE_URL": self.database_url}
        environment.pop("FLASK_RUN_FROM_CLI", None)
        result = subprocess.run(
            [str(FLASK), *words[1:]],
            cwd=self.root,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{shlex.join(words)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout + result.stderr

    def tables(self) -> set[str]:
        engine = sa.create_engine(self.database_url)
        try:
            return set(sa.inspect(engine).get_table_names())
        finally:
            engine.dispose()


@pytest.fixture(scope="module", params=BACKENDS)
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The guide's app, set up by its commands in a folder of its own: once per database, and
    shared by this module's tests (the commands take seconds), which run in the order written."""
    root = tmp_path_factory.mktemp("guide")
    if request.param == "sqlite":
        database_url = f"sqlite:///{root}/jobboard.sqlite3"
    else:
        server: PostgresServer = request.getfixturevalue("postgresql_server")
        database_url = server.new_database(f"guide_{uuid.uuid4().hex[:12]}")
    guide = read_guide()
    write_files(root / "project", guide)
    project = Project(root / "project", database_url, guide)
    for words in guide.commands:
        project.outputs[shlex.join(words)] = project.run(words)
        if words[1:3] == ["db", "init"]:
            edit_env_py(project.root / "migrations" / "env.py", guide)
    return project


def write_files(root: Path, guide: Guide) -> None:
    for name, text in guide.files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


@contextmanager
def imported_jobboard(root: Path, database_url: str) -> Iterator[ModuleType]:
    """The guide's package, imported from ``root`` (and forgotten afterwards)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(root))
        patch.setenv("DATABASE_URL", database_url)
        try:
            yield importlib.import_module("jobboard")
        finally:
            sys.modules.pop("jobboard", None)


def output_of(project: Project, command_start: str) -> str:
    matches = [out for command, out in project.outputs.items() if command.startswith(command_start)]
    assert len(matches) == 1, command_start
    return matches[0]


@pytest.fixture(scope="module")
def jobboard(project: Project) -> Iterator[ModuleType]:
    write_translations(project.root / "jobboard" / "translations", "ru", RUSSIAN)
    with imported_jobboard(project.root, project.database_url) as module:
        yield module


# Not named `app`: pytest-flask would push a request context around each test that uses it, and
# its `g` (where Flask-Login keeps the user) would then outlive each request of the test client.
@pytest.fixture(scope="module")
def jobboard_app(jobboard: ModuleType) -> Iterator[Flask]:
    app: Flask = jobboard.create_app({"TESTING": True})
    yield app
    with app.app_context():
        jobboard.db.engine.dispose()


def token_of(project: Project, email: str) -> str:
    return output_of(project, f"flask add-user {email}").strip().splitlines()[-1]


def log_in(client: FlaskClient, app: Flask, jobboard: ModuleType, email: str) -> None:
    with app.app_context():
        user_id = jobboard.find_user(email).id
    with client.session_transaction() as session:
        session["_user_id"] = str(user_id)
        session["_fresh"] = True


def csrf_token_of(page: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert match, page
    return match[1]


def posts_used(client: FlaskClient, headers: dict[str, str] | None = None) -> int:
    response = client.get("/api/profile/me", headers=headers or {})
    assert response.status_code == 200, response.get_data(as_text=True)
    used: int = response.get_json()["data"]["quota"]["used"]
    return used


# --- the commands -------------------------------------------------------------------------------


def test_one_flask_db_upgrade_applies_the_apps_revisions_and_the_extensions(
    project: Project,
) -> None:
    revision = next((project.root / "migrations" / "versions").glob("*.py")).read_text()
    assert "'user'" in revision
    assert "'job'" in revision
    assert "billing_" not in revision  # exclude_billing_tables kept the extension's tables out

    tables = project.tables()
    assert {"user", "job", "alembic_version"} <= tables
    assert {"billing_subscriptions", "billing_usage_events", "billing_alembic_version"} <= tables

    # The app's autogenerate, with every table in the database, finds nothing to do.
    assert "No changes in schema detected" in project.run(["flask", "db", "migrate", "-m", "again"])


def test_the_cli_finds_users_by_email_and_reports_on_the_primary_metric(project: Project) -> None:
    assert "Pro" in output_of(project, "flask billing grant alice@example.com pro")
    report = output_of(project, "flask billing report plans").splitlines()
    users_by_plan = {line.split()[0]: line.split()[2] for line in report[1:]}
    # Alice; Bob has no subscription until the extension first sees him (then Free).
    assert users_by_plan == {"free": "0", "pro": "1"}


def test_billing_commands_run_under_flasks_test_runner_without_an_app_context(
    jobboard_app: Flask,
) -> None:
    result = jobboard_app.test_cli_runner().invoke(args=["billing", "report", "top-users"])
    assert result.exit_code == 0, result.output


# --- the app ------------------------------------------------------------------------------------


def test_a_token_client_reads_its_profile_with_the_primary_metrics_quota(
    project: Project, jobboard_app: Flask
) -> None:
    client = jobboard_app.test_client()
    alice = {"Authorization": f"Bearer {token_of(project, 'alice@example.com')}"}
    body = client.get("/api/profile/me", headers=alice).get_json()["data"]
    assert body["email"] == "alice@example.com"
    assert body["plan"]["id"] == "pro"
    assert body["quota"] == body["quotas"]["post"]  # `post`: the catalog's first periodic metric
    assert body["quota"]["limit"] is None

    # A token client writes without a CSRF token; an anonymous one learns it must log in.
    assert client.post("/api/subscription/cancel", headers=alice).status_code == 200
    anonymous = client.post("/api/subscription/cancel")
    assert anonymous.status_code == 401
    assert anonymous.get_json()["error"] == "UNAUTHORIZED"
    assert (
        client.get("/api/profile/me", headers={"Authorization": "Bearer nope"}).status_code == 401
    )


def test_the_form_view_charges_valid_posts_only_and_refuses_in_the_apps_layout(
    jobboard_app: Flask, jobboard: ModuleType
) -> None:
    client = jobboard_app.test_client()
    log_in(client, jobboard_app, jobboard, "bob@example.com")
    for _ in range(3):  # showing the form is free
        page = client.get("/jobs/new")
        assert page.status_code == 200
    assert posts_used(client) == 0
    token = csrf_token_of(page.get_data(as_text=True))

    invalid = client.post("/jobs/new", data={"csrf_token": token, "title": ""})
    assert invalid.status_code == 200
    assert 'class="error"' in invalid.get_data(as_text=True)
    assert posts_used(client) == 0  # the form with its errors: not charged

    for number in range(3):
        posted = client.post("/jobs/new", data={"csrf_token": token, "title": f"Job {number}"})
        assert posted.status_code == 303
    assert posts_used(client) == 3

    refused = client.post(
        "/jobs/new",
        data={"csrf_token": token, "title": "One too many"},
        headers={"Accept": "text/html", "Referer": "http://localhost/jobs/new"},
    )
    page = refused.get_data(as_text=True)
    assert refused.status_code == 429
    assert "Post a job" in page  # the app's layout.html around the refusal
    assert 'href="http://localhost/jobs/new"' in page or 'href="/jobs/new"' in page
    assert "Post limit reached (3 a month)" in page
    with jobboard_app.app_context():
        assert jobboard.db.session.scalar(sa.select(sa.func.count()).select_from(jobboard.Job)) == 3


def test_the_catalog_speaks_the_requests_language_and_prices_in_the_configured_currency(
    project: Project, jobboard_app: Flask
) -> None:
    client = jobboard_app.test_client()
    plans = client.get("/api/subscription/plans", headers={"Accept-Language": "ru"}).get_json()
    by_id = {plan["id"]: plan for plan in plans["data"]["plans"]}
    assert by_id["free"]["name"] == "Бесплатный"
    assert by_id["pro"]["name"] == "Про"
    assert by_id["pro"]["pricing"]["currency"] == "EUR"
    bob = {"Authorization": f"Bearer {token_of(project, 'bob@example.com')}"}
    english = client.get("/api/profile/me", headers={**bob, "Accept-Language": "en"}).get_json()
    russian = client.get("/api/profile/me", headers={**bob, "Accept-Language": "ru"}).get_json()
    assert english["data"]["plan"]["name"] == "Free"
    assert russian["data"]["plan"]["name"] == "Бесплатный"


def test_the_guides_app_answers_503_naming_the_command_until_its_migrations_ran(
    tmp_path: Path, database_url: str
) -> None:
    """Before any `flask db upgrade`, the extension's routes answer 503 and say what to run."""
    write_files(tmp_path / "bare", read_guide())
    with imported_jobboard(tmp_path / "bare", database_url) as jobboard:
        bare: Flask = jobboard.create_app({"TESTING": True})
        with bare.app_context():
            jobboard.db.create_all()  # the app's own tables, none of the extension's
            jobboard.db.session.add(jobboard.User(email="carol@example.com"))
            jobboard.db.session.commit()
        client = bare.test_client()
        log_in(client, bare, jobboard, "carol@example.com")
        response = client.get("/api/profile/me")
        assert response.status_code == 503
        assert response.get_json()["error"] == "MIGRATIONS_PENDING"
        assert "Retry-After" in response.headers
        with bare.app_context():
            jobboard.db.engine.dispose()


# --- last: the app's downgrade ------------------------------------------------------------------


def test_the_apps_downgrade_leaves_the_extensions_tables_alone(project: Project) -> None:
    project.run(["flask", "db", "downgrade", "base"])
    tables = project.tables()
    assert "user" not in tables
    assert "job" not in tables
    assert {"billing_subscriptions", "billing_alembic_version"} <= tables
