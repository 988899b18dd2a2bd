"""The maintenance scheduler: started by the first request of the serving process (never by
``init_app``, never in the reloader's parent), configured to catch up and never skip, one per app,
and run once per tick across processes by the lease: two OS processes with schedulers against one
database end each due subscription once and send each notification once."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import func, select

from flask_profile_billing import ProfileBilling
from flask_profile_billing.state import get_state
from flask_profile_billing.store.models import job_leases, notifications
from tests.support.host_app import AppFactory, Clock, as_user, billing_of, create_host_app
from tests.support.subscriptions import current_row_count, stored_rows

ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def lease_started(app: Flask) -> datetime | None:
    with app.app_context(), get_state(app).runtime.engine.connect() as connection:
        return connection.execute(select(job_leases.c.last_started_at)).scalar_one_or_none()


def test_the_scheduler_starts_with_the_first_request_not_with_the_app(
    make_app: AppFactory,
) -> None:
    app = make_app(BILLING_SCHEDULER_ENABLED=True, BILLING_SCHEDULER_INTERVAL_SECONDS=3600)
    scheduler = get_state(app).scheduler
    try:
        with app.app_context():
            assert not scheduler.running
        client = app.test_client()
        client.get("/api/subscription/plans")
        assert scheduler.running
        assert not scheduler.start_in_background()  # one per process
        client.post("/analyze", headers=as_user("alice"))
        assert scheduler.running

        # The first tick is at start, so a restart catches up at once.
        assert wait_for(lambda: lease_started(app) is not None)
    finally:
        scheduler.shutdown()
    assert not scheduler.running


def test_the_job_coalesces_and_never_skips_a_late_tick(make_app: AppFactory) -> None:
    app = make_app(
        BILLING_SCHEDULER_ENABLED=True,
        BILLING_SCHEDULER_INTERVAL_SECONDS=120,
        BILLING_SCHEDULER_JITTER_SECONDS=7,
    )
    scheduler = get_state(app).scheduler
    scheduler.start_in_background()
    try:
        (job,) = scheduler._background.get_jobs()
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, None)
        assert job.trigger.interval == timedelta(seconds=120)
        assert job.trigger.jitter == 7
    finally:
        scheduler.shutdown()


def test_the_scheduler_is_off_by_default(app: Flask) -> None:
    app.test_client().get("/api/subscription/plans")
    assert not get_state(app).scheduler.running


def test_each_app_in_a_process_has_its_own_scheduler(database_url: str, tmp_path: Path) -> None:
    config = {"BILLING_SCHEDULER_ENABLED": True, "BILLING_SCHEDULER_INTERVAL_SECONDS": 3600}
    first = create_host_app(database_url, config)
    second = create_host_app(f"sqlite:///{tmp_path}/other.sqlite3", config)
    try:
        first.test_client().get("/api/subscription/plans")
        assert get_state(first).scheduler.running
        assert not get_state(second).scheduler.running
        second.test_client().get("/api/subscription/plans")
        assert get_state(second).scheduler.running
        assert get_state(first).scheduler._background is not get_state(second).scheduler._background
    finally:
        get_state(first).scheduler.shutdown()
        get_state(second).scheduler.shutdown()


def test_a_tick_runs_maintenance_in_an_app_context_once_across_schedulers(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    billing.change_plan("alice", "starter", 1)
    clock.advance(days=40)
    scheduler = get_state(app).scheduler

    # Ticks come from the scheduler's thread, where no app context is pushed.
    reports = []
    for _ in range(3):
        reports.append(scheduler.tick())

    assert reports[0] is not None
    assert reports[0].ended == 1
    assert reports[1:] == [None, None]  # not due again within the interval
    assert billing.subscription("alice").plan_code == "free"


# --- in processes of their own ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(database_url: str, events: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        BILLING_TEST_DATABASE_URL=database_url,
        BILLING_TEST_EVENTS=str(events),
        **extra,
    )
    env.pop("WERKZEUG_RUN_MAIN", None)
    env.pop("WERKZEUG_SERVER_FD", None)
    return env


def read_events(events: Path) -> list[list[str]]:
    if not events.exists():
        return []
    return [line.split() for line in events.read_text().splitlines()]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_reloaders_parent_starts_no_scheduler(database_url: str, tmp_path: Path) -> None:
    events = tmp_path / "events.txt"
    port = free_port()
    flask = Path(sys.executable).with_name("flask")
    parent = subprocess.Popen(
        [
            str(flask),
            "--app",
            "tests.support.scheduler_host:create_app",
            "run",
            "--debug",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=environment(database_url, events, BILLING_TEST_INTERVAL="3600"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        answer: dict[str, Any] = {}

        def served() -> bool:
            try:
                answer.update(requests.get(f"http://127.0.0.1:{port}/pid", timeout=1).json())
            except requests.RequestException:
                return False
            return True

        assert wait_for(served, timeout=30)
        # A scheduler of the parent's would have started before the parent started the child
        # that answered, whose own start is recorded before its answer: all are recorded now.
        started = [
            int(pid) for pid, event, *_ in read_events(events) if event == "scheduler-started"
        ]
    finally:
        parent.send_signal(signal.SIGINT)
        parent.wait(timeout=30)

    assert answer["scheduler"] is True
    assert answer["pid"] != parent.pid  # served by the reloader's child
    assert started == [answer["pid"]]


def seed_busy_users(database_url: str, users: int) -> None:
    """Users at 80 % of their quota: their charges claimed their quota_low notices already."""
    app = create_host_app(database_url, {})
    billing = billing_of(app)
    with app.app_context():
        for index in range(users):
            for _ in range(16):
                billing.consume(f"busy-{index}", "analysis")
        get_state(app).runtime.engine.dispose()


def seed_trials(database_url: str, users: int) -> dict[str, int]:
    """Trials that end one after another, an hour from now and a minute apart (all due an
    ``expiring`` notice at once, and an ``expired`` one once the processes' clock passes their
    end); the trial ids."""
    clock = Clock()
    app = create_host_app(database_url, {"BILLING_CLOCK": clock})
    billing = billing_of(app)
    start = datetime.now(UTC) + timedelta(hours=1)
    trials = {}
    with app.app_context():
        for index in range(users):
            ends = start + timedelta(minutes=index)
            clock.set(ends - timedelta(days=1))
            trials[f"trial-{index}"] = billing.start_trial(f"trial-{index}", "starter", 1).id
        get_state(app).runtime.engine.dispose()
    return trials


LATER = timedelta(days=2)
"""How far the test moves the scheduler processes' clock: past the end of every trial, and less
than their lease (``LEASE``), so that no run in progress loses its lease to the move."""
LEASE = timedelta(days=3)


def test_two_scheduler_processes_end_each_subscription_and_send_each_notice_once(
    database_url: str, tmp_path: Path
) -> None:
    users = 30
    events = tmp_path / "events.txt"
    # The consume() calls claim their quota_low notices; the lines the processes write are
    # compared with what the table holds at the end.
    seed_busy_users(database_url, users // 2)
    offset = tmp_path / "clock-offset"
    env = environment(
        database_url,
        events,
        BILLING_TEST_INTERVAL="1",
        BILLING_TEST_LEASE_SECONDS=str(int(LEASE.total_seconds())),
        BILLING_TEST_CLOCK_OFFSET=str(offset),
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.scheduler_host"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        # The trials are seeded once both processes tick, and end only when the test moves the
        # processes' clock past them, once every expiring notice went out: however slowly the
        # machine runs, each trial is announced as expiring before it ends.
        pids = {str(worker.pid) for worker in workers}
        assert wait_for(
            lambda: {line[0] for line in read_events(events) if line[1] == "tick"} == pids,
            timeout=60,
        )
        trials = seed_trials(database_url, users)

        def notified(kind: str) -> set[str]:
            lines = read_events(events)
            return {line[2] for line in lines if line[1] == "notification" and line[3] == kind}

        assert wait_for(lambda: notified("expiring") == set(trials), timeout=60)
        assert not notified("expired")
        offset.write_text(str(LATER.total_seconds()))
        assert wait_for(
            lambda: (
                {line[2] for line in read_events(events) if line[1] == "expired"} == set(trials)
            ),
            timeout=60,
        )
        # The schedule goes on: more runs, one at a time.
        assert wait_for(
            lambda: sum(line[1] == "run" for line in read_events(events)) >= 10, timeout=60
        )
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        errors = [worker.communicate(timeout=30)[1].decode() for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), errors

    lines = read_events(events)
    expired = Counter(line[2] for line in lines if line[1] == "expired")
    assert expired == Counter(dict.fromkeys(trials, 1))
    sent = Counter(tuple(line[2:]) for line in lines if line[1] == "notification")
    assert all(times == 1 for times in sent.values()), sent
    app = create_host_app(database_url, {})
    with app.app_context(), get_state(app).runtime.engine.connect() as connection:
        rows = connection.execute(
            select(
                func.substr(notifications.c.account_id, 6),
                notifications.c.kind,
                notifications.c.subject,
            )
        ).all()
        claimed_by_workers = {tuple(row) for row in rows if row.kind != "quota_low"}
        assert set(sent) == claimed_by_workers
        assert Counter(kind for _user, kind, _subject in sent) == {
            "expiring": users,
            "expired": users,
        }
        for user, trial_id in trials.items():
            assert current_row_count(app, user) == 1
            ended = [row for row in stored_rows(app, user) if row.id == trial_id]
            assert ended[0].ended_at is not None
    # The lease let one run at a time, and the schedule went on all along.
    runs = sorted((float(line[2]), float(line[3])) for line in lines if line[1] == "run")
    assert len(runs) >= 10
    for (_, end), (begin, _) in itertools.pairwise(runs):
        assert end <= begin
