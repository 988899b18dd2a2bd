"""Faults under load, over HTTP to gunicorn: the database stopped and restarted, the cache killed
and frozen, views that fail after their reservation, workers killed mid-request.

Per user, what the clients were told must match what the database charged: every success is
exactly one charge, no refusal or failure is charged (refunds the database could not take when
they were due land once it is back), nobody gets past the limit, and the extension itself answers
no request with a bare 500.

"Lost" in the figures: the gap, summed over users, between the successes the clients saw and the
charges recorded.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from flask_profile_billing.domain.catalog import default_catalog
from tests.adversarial.harness import (
    DedicatedPostgres,
    DedicatedRedis,
    GunicornServer,
    Job,
    LoadResult,
    ServerSpec,
    UsageRecord,
    check_quota_invariants,
    gunicorn_servers,
    http_session,
    interleaved_jobs,
    run_load,
    scaled,
    usage_records,
)
from tests.adversarial.host import (
    DATABASE_URL_ENV,
    DEFAULT_SECRET_KEY,
    IDEMPOTENCY_LOCK_ENV,
    REDIS_URL_ENV,
    token_for,
)
from tests.adversarial.report import Figures
from tests.adversarial.scenarios import (
    CLIENTS,
    EXAMPLE_APP,
    EXAMPLE_SECRET_KEY,
    HOST_APP,
    METRIC,
    planned_requests,
    time_limit,
)
from tests.support.servers import PostgresServer

FREE_LIMIT = default_catalog().plan("free").limit_for(METRIC) or 0
SETTLE_SECONDS = 60.0
"""How long refunds deferred during an outage may take to land once the database is back."""


@pytest.fixture
def postgresql_server_url(postgresql_server: PostgresServer) -> str:
    """A fresh database on the session's PostgreSQL server."""
    return postgresql_server.new_database(f"faults_{uuid.uuid4().hex[:12]}")


def bearer(user: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token_for(DEFAULT_SECRET_KEY, user)}",
        "Accept": "application/json",
    }


def load_with(
    servers: list[GunicornServer],
    sent_per_user: dict[str, int],
    path: str,
    fault: Callable[[], None],
    *,
    fault_after: float,
) -> LoadResult:
    """Run the load, and ``fault`` in another thread ``fault_after`` seconds into it."""
    headers = {user: bearer(user) for user in sent_per_user}
    jobs = interleaved_jobs(sent_per_user, servers, path, headers)
    return run_with_fault(jobs, fault, fault_after=fault_after)


def run_with_fault(jobs: list[Job], fault: Callable[[], None], *, fault_after: float) -> LoadResult:
    """Send ``jobs``, and run ``fault`` in another thread ``fault_after`` seconds into them."""
    errors: list[BaseException] = []

    def strike() -> None:
        time.sleep(fault_after)
        try:
            fault()
        except BaseException as error:
            errors.append(error)

    striker = threading.Thread(target=strike, daemon=True)
    striker.start()
    result = run_load(jobs, clients=CLIENTS, time_limit=time_limit(len(jobs)))
    striker.join(SETTLE_SECONDS)
    assert not errors, errors
    return result


def charged_as_told(
    database_url: str, result: LoadResult, users: list[str]
) -> tuple[dict[str, UsageRecord], list[str]]:
    """Wait until the database agrees with the clients (refunds deferred by an outage land), or
    the time is up; the records and what still disagrees."""
    engine = create_engine(database_url)
    deadline = time.monotonic() + SETTLE_SECONDS
    try:
        while True:
            records = usage_records(engine, METRIC, users)
            problems = []
            for user in users:
                record = records[user]
                told = result.statuses.get(user, Counter())[200]
                charged = (record.counter_used, record.events, record.daily_total)
                if charged != (told, told, told) or told > FREE_LIMIT:
                    problems.append(f"{user}: told {told} successes, charged {charged}")
            if not problems or time.monotonic() > deadline:
                return records, problems
            time.sleep(0.5)
    finally:
        engine.dispose()


def lost(result: LoadResult, records: Mapping[str, UsageRecord]) -> int:
    return sum(
        abs(result.statuses.get(user, Counter())[200] - record.counter_used)
        for user, record in records.items()
    )


def test_a_database_stopped_and_restarted_mid_load_charges_only_what_succeeded(
    own_postgres: DedicatedPostgres, log_dir: Path, figures: Figures
) -> None:
    database_url = own_postgres.new_database("outage")
    env = {DATABASE_URL_ENV: database_url}
    specs = [
        ServerSpec(HOST_APP, workers=2, worker_class="sync", ready_path="/health"),
        ServerSpec(HOST_APP, workers=2, worker_class="gthread", threads=4, ready_path="/health"),
    ]
    sent_per_user = planned_requests(scaled(1500), "outage-user")

    def outage() -> None:
        own_postgres.stop("fast")
        time.sleep(2)
        own_postgres.start()

    with gunicorn_servers(specs, env, log_dir) as servers:
        result = load_with(servers, sent_per_user, "/analyze/outage", outage, fault_after=1.5)
        records, problems = charged_as_told(database_url, result, list(sent_per_user))

    statuses = Counter[int]()
    for counts in result.statuses.values():
        statuses.update(counts)
    figures.count, figures.lost = result.sent, lost(result, records)
    figures.server_errors = result.server_errors
    # Every answer other than a success or the quota's refusal is a 503 that says when to retry.
    assert set(statuses) <= {200, 429, 503}, statuses
    assert result.without_retry_after == 0
    assert statuses[503] > 0, "the outage did not reach any request"
    assert problems == []
    assert sum(result.unanswered.values()) == 0


def test_a_cache_killed_then_frozen_mid_load_changes_nothing_for_the_clients(
    postgresql_server_url: str, own_redis: DedicatedRedis, log_dir: Path, figures: Figures
) -> None:
    env = {DATABASE_URL_ENV: postgresql_server_url, REDIS_URL_ENV: own_redis.url}
    specs = [
        ServerSpec(HOST_APP, workers=2, worker_class="gthread", threads=4, ready_path="/health")
    ]
    sent_per_user = planned_requests(scaled(1500), "cache-user")

    def kill_then_freeze() -> None:
        own_redis.kill()
        time.sleep(1.5)
        own_redis.start()
        time.sleep(0.5)
        own_redis.freeze()
        time.sleep(2)
        own_redis.thaw()

    with gunicorn_servers(specs, env, log_dir) as servers:
        result = load_with(
            servers, sent_per_user, "/analyze/cache", kill_then_freeze, fault_after=1.0
        )
    engine = create_engine(postgresql_server_url)
    try:
        records = usage_records(engine, METRIC, list(sent_per_user))
    finally:
        engine.dispose()
    check = check_quota_invariants(result, sent_per_user, FREE_LIMIT, records)

    figures.count, figures.lost, figures.server_errors = (
        result.sent,
        check.lost,
        result.server_errors,
    )
    assert check.violations == []


def test_views_that_fail_after_their_reservation_are_never_charged(
    postgresql_server_url: str, log_dir: Path, figures: Figures
) -> None:
    env = {DATABASE_URL_ENV: postgresql_server_url}
    specs = [ServerSpec(HOST_APP, workers=2, worker_class="sync", ready_path="/health")]
    users = [f"failing-user-{n}" for n in range(1, 6)]
    outcomes = ("ok", "raise", "refuse")
    told: Counter[tuple[str, str]] = Counter()
    count = scaled(60)

    with gunicorn_servers(specs, env, log_dir) as servers, http_session() as session:
        for n in range(count):
            user, outcome = users[n % len(users)], outcomes[n % len(outcomes)]
            headers = {**bearer(user), "X-Fail": outcome}
            url = servers[0].url(f"/analyze-or-fail/{n}")
            response = session.post(url, headers=headers, timeout=30)
            told[(user, str(response.status_code))] += 1
    engine = create_engine(postgresql_server_url)
    try:
        records = usage_records(engine, METRIC, users)
    finally:
        engine.dispose()

    figures.count = count
    figures.server_errors = sum(n for (_, status), n in told.items() if status.startswith("5"))
    figures.lost = sum(abs(told[(user, "200")] - records[user].counter_used) for user in users)
    assert figures.lost == 0
    for user in users:
        record = records[user]
        assert (record.counter_used, record.events, record.daily_total) == (
            told[(user, "200")],
        ) * 3
    # The view's own crash is the host's 500; the refusal is its 409.
    assert {status for (_, status) in told} == {"200", "409", "500"}


def test_a_worker_killed_mid_request_is_charged_once_and_a_keyed_retry_gets_it_back(
    postgresql_server_url: str, log_dir: Path, figures: Figures
) -> None:
    env = {DATABASE_URL_ENV: postgresql_server_url, IDEMPOTENCY_LOCK_ENV: "3"}
    specs = [ServerSpec(HOST_APP, workers=2, worker_class="sync", ready_path="/health")]
    keyed, keyless = "killed-keyed", "killed-keyless"

    with gunicorn_servers(specs, env, log_dir) as servers:
        server = servers[0]
        answers: dict[str, str] = {}

        def send(user: str, key: str | None) -> None:
            headers = {**bearer(user), "X-Seconds": "3"}
            if key is not None:
                headers["Idempotency-Key"] = key
            try:
                with http_session() as session:
                    response = session.post(server.url("/slow-analyze/a"), headers=headers)
                answers[user] = str(response.status_code)
            except requests.RequestException:
                answers[user] = "no answer"

        threads = [
            threading.Thread(target=send, args=(keyed, "job-1")),
            threading.Thread(target=send, args=(keyless, None)),
        ]
        for thread in threads:
            thread.start()
        time.sleep(1.5)  # both are in their views, charged, on the two workers
        for pid in worker_pids(server):
            os.kill(pid, signal.SIGKILL)
        for thread in threads:
            thread.join(30)
        time.sleep(3)  # past the key's lock: its holder is dead
        with http_session() as session:
            retry = session.post(
                server.url("/slow-analyze/a"),
                headers={**bearer(keyed), "X-Seconds": "0", "Idempotency-Key": "job-1"},
                timeout=30,
            )
    engine = create_engine(postgresql_server_url)
    try:
        records = usage_records(engine, METRIC, [keyed, keyless])
    finally:
        engine.dispose()

    figures.count = 3
    figures.lost = records[keyless].counter_used  # charged for a request nobody answered
    assert answers == {keyed: "no answer", keyless: "no answer"}
    assert retry.status_code == 200
    # The retry took the dead request's key over: its charge was given back, one charge remains.
    assert (records[keyed].counter_used, records[keyed].events) == (1, 1)
    # Without a key, the charge of the killed request stays: at most one per request killed.
    assert records[keyless].counter_used <= 1


def worker_pids(server: GunicornServer) -> list[int]:
    """The gunicorn workers of ``server`` (children of its master process)."""
    listing = subprocess.run(
        ["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in listing.stdout.split()]


CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def example_session_headers(server: GunicornServer, email: str, password: str) -> dict[str, str]:
    """Log a demo user in with the example app's form; the headers of a JSON client that
    carries that session: its cookie and its CSRF token."""
    with http_session() as session:
        form = session.get(server.url("/login"), timeout=30)
        field = CSRF_FIELD.search(form.text)
        assert field is not None, form.text
        login = session.post(
            server.url("/login"),
            data={"email": email, "password": password, "csrf_token": field[1]},
            timeout=30,
        )
        meta = CSRF_META.search(login.text)
        assert meta is not None, login.text
        cookie = "; ".join(f"{name}={value}" for name, value in session.cookies.items())
    return {"Cookie": cookie, "X-CSRFToken": meta[1], "Accept": "application/json"}


def test_the_example_app_answers_a_database_restart_under_load_with_503_only(
    own_postgres: DedicatedPostgres, log_dir: Path, figures: Figures
) -> None:
    """The example app as it ships: its users come from its own table through Flask-Login's
    user_loader, read on every request, and its view reads the quota after the charge. Every
    answer during a PostgreSQL restart is a success, the quota's refusal, or a 503 with
    Retry-After; and each user is charged exactly the successes they were told of."""
    database_url = own_postgres.new_database("example_outage")
    env = {"DATABASE_URL": database_url, "SECRET_KEY": EXAMPLE_SECRET_KEY}
    specs = [
        ServerSpec(EXAMPLE_APP, workers=2, worker_class="sync", ready_path="/login"),
        ServerSpec(EXAMPLE_APP, workers=2, worker_class="gthread", threads=4, ready_path="/login"),
    ]
    demo = {"alice@example.com": "alice", "bob@example.com": "bob"}
    total = scaled(1500)
    planned = {"alice@example.com": total // 5, "bob@example.com": total - total // 5}

    def outage() -> None:
        own_postgres.stop("fast")
        time.sleep(2)
        own_postgres.start()

    with gunicorn_servers(specs, env, log_dir) as servers:
        # One session per user and server, as a browser keeps one per site.
        headers = {
            (email, index): example_session_headers(server, email, password)
            for email, password in demo.items()
            for index, server in enumerate(servers)
        }
        jobs = [
            Job(email, "POST", servers[n % len(servers)].url("/analyze"), headers[(email, n % 2)])
            for email, count in planned.items()
            for n in range(count)
        ]
        random.Random(0).shuffle(jobs)
        result = run_with_fault(jobs, outage, fault_after=1.5)
        engine = create_engine(database_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(text("SELECT email, id FROM users")).all()
            ids = {row.email: row.id for row in rows}
            user_ids = {email: str(ids[email]) for email in demo}
            deadline = time.monotonic() + SETTLE_SECONDS
            while True:
                records = usage_records(engine, METRIC, list(user_ids.values()))
                told = {e: result.statuses.get(e, Counter())[200] for e in demo}
                charged = {e: records[user_ids[e]].counter_used for e in demo}
                if charged == told or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        finally:
            engine.dispose()

    statuses = Counter[int]()
    for counts in result.statuses.values():
        statuses.update(counts)
    figures.count = result.sent
    figures.lost = sum(abs(told[e] - charged[e]) for e in demo)
    figures.server_errors = result.server_errors
    assert set(statuses) <= {200, 429, 503}, statuses
    assert result.without_retry_after == 0
    assert statuses[503] > 0, "the outage did not reach any request"
    assert sum(result.unanswered.values()) == 0
    assert charged == told
    for email in demo:
        record = records[user_ids[email]]
        assert (record.events, record.daily_total) == (told[email], told[email])
