"""N concurrent requests against a quota of L allow exactly min(N, L), and concurrent creations
never exceed a gauge's limit.

With threads, and with several processes, each its own app server with its own connection pool, as
under gunicorn, on one SQLite file or one PostgreSQL database; the processes' requests provably
overlap.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from flask import Flask
from sqlalchemy import func, select

from flask_profile_billing import UsageCounterRow, UsageEventRow
from flask_profile_billing.domain.accounts import personal_account_id
from tests.support.concurrency import Answered, fire_at_once, statuses, worker_process
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
            select(func.sum(UsageCounterRow.used)).where(
                UsageCounterRow.account_id == personal_account_id(user)
            )
        )
        events = db.session.scalar(
            select(func.count())
            .select_from(UsageEventRow)
            .where(UsageEventRow.account_id == personal_account_id(user))
        )
    return int(used or 0), int(events or 0)


def test_concurrent_requests_never_overspend_a_quota(make_app: AppFactory) -> None:
    app = make_app(BILLING_PLANS=CATALOG_WITH_LIMIT_50)

    answers = fire_at_once(app, "/analyze", ["hot-user"] * REQUESTS)

    assert statuses(answers) == Counter({200: LIMIT, 429: REQUESTS - LIMIT})
    assert stored_usage(app, "hot-user") == (LIMIT, LIMIT)


def test_concurrent_requests_of_many_users_each_get_their_own_quota(make_app: AppFactory) -> None:
    app = make_app(BILLING_PLANS=CATALOG_WITH_LIMIT_50)
    users = [f"user-{index % 4}" for index in range(REQUESTS)]  # 50 requests each: all allowed

    answers = fire_at_once(app, "/analyze", users)

    assert statuses(answers) == Counter({200: REQUESTS})
    assert [stored_usage(app, f"user-{index}") for index in range(4)] == [(LIMIT, LIMIT)] * 4


def test_concurrent_creations_never_exceed_a_gauge(make_app: AppFactory) -> None:
    app = make_app()  # Free: one active vacancy

    answers = fire_at_once(app, "/vacancies", ["alice"] * 20)

    assert statuses(answers) == Counter({201: 1, 429: 19})
    db = app.extensions["sqlalchemy"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Vacancy)) == 1


def changes_of_process(answers: list[Answered]) -> int:
    """How often the next answer in time comes from another process than the one before."""
    in_time = sorted(answers, key=lambda answer: answer.answered)
    return sum(a.pid != b.pid for a, b in itertools.pairwise(in_time))


def test_app_servers_in_several_processes_never_overspend(
    make_app: AppFactory, database_url: str, clock: Clock
) -> None:
    config: dict[str, Any] = {"BILLING_PLANS": CATALOG_WITH_LIMIT_50, "BILLING_CLOCK": clock}
    app = make_app(**config)  # creates the tables once, before the workers race
    per_process = REQUESTS // PROCESSES
    spawn = multiprocessing.get_context("spawn")

    with spawn.Manager() as manager, ProcessPoolExecutor(PROCESSES, mp_context=spawn) as pool:
        # Each process's burst starts once every process has built its app and started its
        # threads, however long that took on a loaded machine.
        together = manager.Barrier(PROCESSES, timeout=120)
        futures = [
            pool.submit(
                worker_process,
                database_url,
                config,
                "/analyze",
                ["hot-user"] * per_process,
                together.wait,
            )
            for _ in range(PROCESSES)
        ]
        results = [future.result(timeout=180) for future in futures]

    answers = [answer for result in results for answer in result]
    assert statuses(answers) == Counter({200: LIMIT, 429: REQUESTS - LIMIT})
    assert stored_usage(app, "hot-user") == (LIMIT, LIMIT)

    # The race happened: every process was sending while every other one was still waiting for
    # answers, and the charges the quota let through came from several processes, interleaved
    # (not one process's charges after another's).
    assert len({answer.pid for answer in answers}) == PROCESSES
    windows = [(min(a.sent for a in r), max(a.answered for a in r)) for r in results]
    assert max(start for start, _ in windows) < min(end for _, end in windows), windows
    charged = [answer for answer in answers if answer.status == 200]
    assert len({answer.pid for answer in charged}) > 1
    assert changes_of_process(charged) >= PROCESSES, sorted(charged, key=lambda a: a.answered)
