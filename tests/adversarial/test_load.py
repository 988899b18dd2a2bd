"""Load without loss: many clients charge ``@requires_quota("analysis")`` on several gunicorn
servers and workers sharing one database, some users far past their Free plan's limit.

After the run the billing tables are read directly. Per user, the successes the clients saw, the
counter, the usage events and the daily totals must all equal min(requests sent, limit): nothing
charged twice or lost, nothing overspent under races between processes, threads and servers;
every request answered, with 200 or 429 and never a 5xx.

"Lost" in the figures: unanswered requests plus the gap between the successes seen and the charges
recorded.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine

from flask_profile_billing.domain.catalog import default_catalog
from tests.adversarial.harness import (
    GunicornServer,
    LoadResult,
    QuotaCheck,
    ServerSpec,
    check_quota_invariants,
    gunicorn_servers,
    interleaved_jobs,
    run_load,
    scaled,
    usage_records,
)
from tests.adversarial.host import (
    DATABASE_URL_ENV,
    DEFAULT_SECRET_KEY,
    REDIS_URL_ENV,
    token_for,
)
from tests.adversarial.report import Figures
from tests.adversarial.scenarios import CLIENTS, HOST_APP, METRIC, planned_requests, time_limit
from tests.support.servers import PostgresServer, RedisServer

FREE_LIMIT = default_catalog().plan("free").limit_for(METRIC)
REQUESTS_ON_POSTGRESQL = scaled(2000)
REQUESTS_ON_SQLITE = scaled(1000)


def charge_everyone(
    servers: list[GunicornServer], database_url: str, sent_per_user: dict[str, int]
) -> tuple[LoadResult, QuotaCheck]:
    headers = {
        user: {
            "Authorization": f"Bearer {token_for(DEFAULT_SECRET_KEY, user)}",
            "Accept": "application/json",
        }
        for user in sent_per_user
    }
    jobs = interleaved_jobs(sent_per_user, servers, "/analyze/load-test", headers)
    result = run_load(jobs, clients=CLIENTS, time_limit=time_limit(len(jobs)))
    engine = create_engine(database_url)
    try:
        records = usage_records(engine, METRIC, list(sent_per_user))
    finally:
        engine.dispose()
    assert FREE_LIMIT is not None
    return result, check_quota_invariants(result, sent_per_user, FREE_LIMIT, records)


def test_two_servers_on_one_postgresql_database_lose_nothing_and_overspend_nothing(
    postgresql_server: PostgresServer,
    redis_server: RedisServer,
    log_dir: Path,
    figures: Figures,
) -> None:
    # A brand-new database: the four workers also race to migrate it as they start.
    database_url = postgresql_server.new_database("adversarial_load")
    env = {DATABASE_URL_ENV: database_url, REDIS_URL_ENV: redis_server.url}
    specs = [
        ServerSpec(HOST_APP, workers=2, worker_class="sync", ready_path="/health"),
        ServerSpec(HOST_APP, workers=2, worker_class="gthread", threads=4, ready_path="/health"),
    ]
    sent_per_user = planned_requests(REQUESTS_ON_POSTGRESQL, "pg-user")

    with gunicorn_servers(specs, env, log_dir) as servers:
        result, check = charge_everyone(servers, database_url, sent_per_user)

    figures.count, figures.lost, figures.server_errors = (
        result.sent,
        check.lost,
        result.server_errors,
    )
    assert check.violations == []
    assert sum(sent_per_user.values()) == result.sent == REQUESTS_ON_POSTGRESQL


def test_one_server_on_a_sqlite_file_loses_nothing_and_overspends_nothing(
    tmp_path: Path, log_dir: Path, figures: Figures
) -> None:
    database_url = f"sqlite:///{tmp_path}/load.sqlite3"
    env = {DATABASE_URL_ENV: database_url}
    specs = [
        ServerSpec(HOST_APP, workers=2, worker_class="gthread", threads=2, ready_path="/health")
    ]
    sent_per_user = planned_requests(REQUESTS_ON_SQLITE, "sqlite-user")

    with gunicorn_servers(specs, env, log_dir) as servers:
        result, check = charge_everyone(servers, database_url, sent_per_user)

    figures.count, figures.lost, figures.server_errors = (
        result.sent,
        check.lost,
        result.server_errors,
    )
    assert check.violations == []
    assert sum(sent_per_user.values()) == result.sent == REQUESTS_ON_SQLITE
