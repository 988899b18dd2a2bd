"""N concurrent requests against a quota of L allow exactly min(N, L), and concurrent creations
never exceed a gauge's limit.

On SQLite with threads; on PostgreSQL with threads and with several processes, each its own app
server with its own connection pool, as under gunicorn.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from flask_profile_billing import UsageCounterRow, UsageEventRow
from tests.support.concurrency import fire_at_once, worker_process
from tests.support.host_app import AppFactory, Clock, Vacancy

LIMIT = 50
REQUESTS = 200
PROCESSES = 4

CATALOG_WITH_LIMIT_50 = {
    "metrics": {"analysis": {"kind": "periodic", "limit_key": "analyses_per_month"}},
    "plans": [{"code": "free", "name": "Free", "default": True, "limits": {"analysis": LIMIT}}],
}


def stored_usage(app: Flask, user: str) -> tuple[int, int]:
    """The counter and the number of usage events, read straight from the database."""
    db = app.extensions["sqlalchemy"]
    with app.app_context():
        used = db.session.scalar(
            select(func.sum(UsageCounterRow.used)).where(UsageCounterRow.user_id == user)
        )
        events = db.session.scalar(
            select(func.count()).select_from(UsageEventRow).where(UsageEventRow.user_id == user)
        )
    return int(used or 0), int(events or 0)


def test_concurrent_requests_never_overspend_a_quota(make_app: AppFactory) -> None:
    app = make_app(BILLING_PLANS=CATALOG_WITH_LIMIT_50)

    statuses = fire_at_once(app, "/analyze", ["hot-user"] * REQUESTS)

    assert statuses == Counter({200: LIMIT, 429: REQUESTS - LIMIT})
    assert stored_usage(app, "hot-user") == (LIMIT, LIMIT)


def test_concurrent_requests_of_many_users_each_get_their_own_quota(make_app: AppFactory) -> None:
    app = make_app(BILLING_PLANS=CATALOG_WITH_LIMIT_50)
    users = [f"user-{index % 4}" for index in range(REQUESTS)]  # 50 requests each: all allowed

    statuses = fire_at_once(app, "/analyze", users)

    assert statuses == Counter({200: REQUESTS})
    assert [stored_usage(app, f"user-{index}") for index in range(4)] == [(LIMIT, LIMIT)] * 4


def test_concurrent_creations_never_exceed_a_gauge(make_app: AppFactory) -> None:
    app = make_app()  # Free: one active vacancy

    statuses = fire_at_once(app, "/vacancies", ["alice"] * 20)

    assert statuses == Counter({201: 1, 429: 19})
    db = app.extensions["sqlalchemy"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Vacancy)) == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_app_servers_in_several_processes_never_overspend(
    make_app: AppFactory, database_url: str, clock: Clock
) -> None:
    config: dict[str, Any] = {"BILLING_PLANS": CATALOG_WITH_LIMIT_50, "BILLING_CLOCK": clock}
    app = make_app(**config)  # creates the tables once, before the workers race
    per_process = REQUESTS // PROCESSES
    start_at = time.time() + 8  # every process has imported and built its app by then

    with ProcessPoolExecutor(PROCESSES, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            pool.submit(
                worker_process,
                database_url,
                config,
                "/analyze",
                ["hot-user"] * per_process,
                start_at,
            )
            for _ in range(PROCESSES)
        ]
        results = [future.result(timeout=120) for future in futures]

    total: Counter[int] = Counter()
    for result in results:
        total.update(result)
    assert total == Counter({200: LIMIT, 429: REQUESTS - LIMIT})
    assert all(result for result in results)  # every process took part
    assert stored_usage(app, "hot-user") == (LIMIT, LIMIT)
