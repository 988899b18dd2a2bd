"""docs/testing.md, done as a host does it: its small app with a pytest suite (on the opt-in
plugin's fixtures) and a unittest suite, each run twice in a row in a process of its own, on one
SQLite file and on one PostgreSQL database that outlive the runs. The second run must find the
database as clean as the first: ``db.drop_all()`` alone leaves the billing tables, and with them
the previous run's charges, which failed most of a host's tests on its persistent database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from flask_profile_billing.testing import FrozenClock, frozen_clock
from tests.conftest import BACKENDS
from tests.support.host_app import AppFactory, Clock, billing_of
from tests.support.profile import me, patch
from tests.support.servers import PostgresServer

PAGE = Path(__file__).resolve().parent.parent / "docs" / "testing.md"
_FILE_BLOCK = re.compile(
    r"<!-- file: (?P<name>[^>]+?) -->\n```[a-z]*\n(?P<body>.*?)\n```", re.DOTALL
)


def write_example(root: Path) -> None:
    files = {match["name"]: match["body"] for match in _FILE_BLOCK.finditer(PAGE.read_text())}
    assert set(files) == {
        "reports/__init__.py",
        "pytest.ini",
        "tests/conftest.py",
        "tests/test_reports.py",
        "tests/test_reports_unittest.py",
    }
    for name, body in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body + "\n", encoding="utf-8")


@pytest.fixture(params=BACKENDS)
def project(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    """The page's app and tests in a folder of their own, and the database both runs share."""
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path}/reports.sqlite3"
    else:
        server: PostgresServer = request.getfixturevalue("postgresql_server")
        database_url = server.new_database(f"reports_{uuid.uuid4().hex[:12]}")
    root = tmp_path / "project"
    write_example(root)
    return root, database_url


def run(root: Path, database_url: str, *args: str) -> str:
    environment = {**os.environ, "DATABASE_URL": database_url}
    for name in ("PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST", "FLASK_RUN_FROM_CLI"):
        environment.pop(name, None)
    result = subprocess.run(
        [sys.executable, *args],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)}:\n{output}"
    return output


def billing_tables(database_url: str) -> list[str]:
    engine = sa.create_engine(database_url)
    try:
        return [name for name in sa.inspect(engine).get_table_names() if name.startswith("billing")]
    finally:
        engine.dispose()


def test_the_pages_pytest_suite_passes_twice_on_one_database(project: tuple[Path, str]) -> None:
    root, database_url = project

    for _ in range(2):
        output = run(root, database_url, "-m", "pytest", "-q", "-p", "no:cacheprovider")
        # Its three tests and the three of the unittest module, which pytest runs too.
        assert re.search(r"\b6 passed\b", output), output
        assert billing_tables(database_url) == []


def test_the_pages_unittest_suite_passes_twice_on_one_database(project: tuple[Path, str]) -> None:
    root, database_url = project

    for _ in range(2):
        output = run(root, database_url, "-m", "unittest", "discover", "-s", "tests")
        assert "Ran 3 tests" in output, output
        assert billing_tables(database_url) == []


def test_frozen_clock_moves_the_extensions_time_and_gives_the_apps_back(
    make_app: AppFactory, clock: Clock
) -> None:
    app = make_app()  # the suite's app runs on its own BILLING_CLOCK
    billing = billing_of(app)
    moment = datetime(2030, 1, 1, 12, tzinfo=UTC)

    with app.app_context():
        with frozen_clock(app, at=moment) as frozen:
            first = billing.subscription("early")
            frozen.advance(days=3)
            later = billing.subscription("later")
        after = billing.subscription("after")

    assert first.started_at == moment
    assert later.started_at == moment + timedelta(days=3)
    assert after.started_at == clock.now
    with pytest.raises(ValueError, match="aware"):
        FrozenClock(datetime(2030, 1, 1))


def test_drop_all_forgets_what_the_extension_cached_and_seeded(make_app: AppFactory) -> None:
    # One app for the whole session, as many host suites keep it: the profile read it cached
    # before the tables were dropped must not come back after they are created again, and the
    # plan rows it had written must be written again (PostgreSQL enforces the subscriptions'
    # foreign key to them).
    app = make_app()
    billing = billing_of(app)
    client = app.test_client()
    patch(client, "alice", {"company": "Acme"})
    assert me(client, "alice")["company"] == "Acme"  # read, and cached

    with app.app_context():
        billing.drop_all()
        billing.create_all()

    assert me(client, "alice")["company"] is None
