"""``quota_low`` and ``quota_blocked`` are claimed once per user, metric and period, also when the
charges that cross the mark and the refusals at the limit come at once from several app server
processes, each with its own engine and pool, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from flask import Flask
from sqlalchemy import func, select

from flask_profile_billing.state import get_state
from flask_profile_billing.store.models import notifications
from tests.support.concurrency import worker_process
from tests.support.host_app import AppFactory, Clock

LIMIT = 20  # the free plan's analyses; its low mark is 16
PROCESSES = 4
PER_PROCESS = 12
USERS = ["alice", "bob"]


def claimed(app: Flask) -> Counter[tuple[str, str, str, str]]:
    columns = notifications.c
    query = select(
        func.substr(columns.account_id, 6), columns.kind, columns.subject, columns.period_key
    )
    with app.app_context(), get_state(app).runtime.engine.connect() as connection:
        return Counter(tuple(row) for row in connection.execute(query))


def test_charges_and_refusals_from_several_processes_claim_each_notice_once(
    make_app: AppFactory, database_url: str, clock: Clock
) -> None:
    config: dict[str, Any] = {"BILLING_CLOCK": clock}
    app = make_app(**config)  # creates the tables once, before the workers race
    # Each process sends both users' requests, interleaved: 48 each against a limit of 20.
    users = [user for _ in range(PER_PROCESS) for user in USERS]
    spawn = multiprocessing.get_context("spawn")

    with spawn.Manager() as manager, ProcessPoolExecutor(PROCESSES, mp_context=spawn) as pool:
        # The bursts start once every process has built its app and started its threads.
        together = manager.Barrier(PROCESSES, timeout=120)
        futures = [
            pool.submit(worker_process, database_url, config, "/analyze", users, together.wait)
            for _ in range(PROCESSES)
        ]
        statuses: Counter[int] = Counter()
        for future in futures:
            statuses.update(answer.status for answer in future.result(timeout=180))

    assert statuses == Counter({200: LIMIT * len(USERS), 429: (48 - LIMIT) * len(USERS)})
    notices = claimed(app)
    assert set(notices.values()) == {1}
    assert Counter((user, kind) for user, kind, _metric, _period in notices) == Counter(
        {(user, kind): 1 for user in USERS for kind in ("quota_low", "quota_blocked")}
    )
    with app.app_context():
        period = get_state(app).runtime.period(
            get_state(app).subscriptions.current("user:alice"), clock()
        )
    assert {period_key for *_rest, period_key in notices} == {str(int(period.start.timestamp()))}
