"""Fixtures of the adversarial scenarios.

PostgreSQL and Redis come from the session fixtures of tests/support/servers.py (imported by
tests/conftest.py, which pytest loads for this package too): a missing binary skips a scenario on a
developer's machine and fails it under CI=true. The servers a fault scenario breaks are its own,
started by the harness after those fixtures have vouched for the binaries.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from tests.adversarial.harness import (
    DedicatedPostgres,
    DedicatedRedis,
    ServerSpec,
    Traffic,
    dedicated_postgres,
    dedicated_redis,
    gunicorn_servers,
)
from tests.adversarial.host import (
    DATABASE_URL_ENV,
    REDIS_URL_ENV,
    WEBHOOK_SECRET_ENV,
)
from tests.adversarial.report import Figures, record
from tests.adversarial.scenarios import (
    EXAMPLE_APP,
    EXAMPLE_SECRET_KEY,
    HOST_APP,
    WEBHOOK_SECRET,
    Deployment,
)
from tests.support.servers import PostgresServer, RedisServer


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Keep each phase's report on the test item, so the figures fixture can record the outcome.
    report = yield
    setattr(item, f"adversarial_report_{report.when}", report)
    return report


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    """The scenario's figures: the test fills in counts; time and outcome are filled in here and
    the file is written to ADVERSARIAL_REPORT_DIR (when set) after the test."""
    sheet = Figures(scenario=request.node.nodeid)
    started = time.monotonic()
    yield sheet
    sheet.seconds = round(time.monotonic() - started, 1)
    setup: pytest.TestReport | None = getattr(request.node, "adversarial_report_setup", None)
    call: pytest.TestReport | None = getattr(request.node, "adversarial_report_call", None)
    if call is not None:
        sheet.outcome = call.outcome
    elif setup is not None and setup.outcome != "passed":
        sheet.outcome = setup.outcome
    record(sheet)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """Where the scenario's gunicorn servers write their logs (kept by pytest for a failed run)."""
    directory = tmp_path / "logs"
    directory.mkdir()
    return directory


@pytest.fixture
def own_postgres(postgresql_server: PostgresServer) -> Iterator[DedicatedPostgres]:
    """A PostgreSQL cluster the test may stop and start (``postgresql_server`` is only asked
    for its verdict on the binaries: present, skipped, or failed under CI=true)."""
    with dedicated_postgres() as cluster:
        yield cluster


@pytest.fixture
def own_redis(redis_server: RedisServer) -> Iterator[DedicatedRedis]:
    """A Redis the test may kill or freeze (``redis_server`` vouches for the binary)."""
    with dedicated_redis() as server:
        yield server


@pytest.fixture
def traffic(figures: Figures) -> Iterator[Traffic]:
    """Sessions that count the scenario's requests and 5xx answers into its figures."""
    counter = Traffic()
    yield counter
    figures.count += counter.answered
    figures.server_errors += counter.server_errors


@pytest.fixture(scope="module")
def host_app(
    request: pytest.FixtureRequest,
    postgresql_server: PostgresServer,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    """The README-style host app on a new PostgreSQL database, with the cache in Redis (so every
    worker reads what another wrote) and payments through the test provider: two gthread
    workers of two threads."""
    database_url = postgresql_server.new_database(f"adversarial_host_{_module_name(request)}")
    env = {
        DATABASE_URL_ENV: database_url,
        REDIS_URL_ENV: redis_server.url,
        WEBHOOK_SECRET_ENV: WEBHOOK_SECRET,
    }
    spec = ServerSpec(HOST_APP, workers=2, worker_class="gthread", threads=2, ready_path="/health")
    logs = tmp_path_factory.mktemp("host-logs")
    engine = create_engine(database_url)
    try:
        with gunicorn_servers([spec], env, logs) as [server]:
            yield Deployment(server, engine)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def example_app(
    request: pytest.FixtureRequest,
    postgresql_server: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    """The example app as it ships (CSRF on, demo users), two sync workers on a new PostgreSQL
    database."""
    database_url = postgresql_server.new_database(f"adversarial_example_{_module_name(request)}")
    env = {"DATABASE_URL": database_url, "SECRET_KEY": EXAMPLE_SECRET_KEY}
    spec = ServerSpec(EXAMPLE_APP, workers=2, worker_class="sync", ready_path="/login")
    logs = tmp_path_factory.mktemp("example-logs")
    engine = create_engine(database_url)
    try:
        with gunicorn_servers([spec], env, logs) as [server]:
            yield Deployment(server, engine)
    finally:
        engine.dispose()


def _module_name(request: pytest.FixtureRequest) -> str:
    """``test_api_access`` for tests/adversarial/test_api_access.py: one database per module."""
    return str(request.module.__name__).rpartition(".")[2]
