"""The maintenance scheduler across real OS processes, on SQLite and PostgreSQL.

- Two scheduler processes share one database; the one holding the job's lease is killed (SIGKILL)
  in the middle of a batch, with the batch's transaction open. The other takes the job over once the
  lease has run out, not before, and finishes it: each due subscription is ended once, each
  notification is claimed once and announced once, by the process whose transaction claimed it.
- ``gunicorn --preload`` with two workers: the master builds the app but starts no scheduler; each
  worker starts one with its first request, and the lease lets one of them run each tick.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import Row, func, select

from flask_profile_billing.state import get_state
from flask_profile_billing.store.models import job_leases, notifications
from tests.support.host_app import Clock, billing_of, create_host_app
from tests.support.loopback import HOST, free_port, tail
from tests.support.subscriptions import stored_rows
from tests.support.workers import wait_for as wait_until

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 30.0
"""Seconds any awaited event may take before the test fails."""


# --- helpers ----------------------------------------------------------------------------------------


wait_for = partial(wait_until, timeout=TIMEOUT)
"""Wait for an event of these processes, at most TIMEOUT seconds."""


@dataclass(frozen=True)
class Event:
    pid: int
    kind: str
    details: tuple[str, ...]


def read_events(path: Path) -> list[Event]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        pid, kind, *details = line.split()
        events.append(Event(int(pid), kind, tuple(details)))
    return events


def environment(database_url: str, events: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        BILLING_TEST_DATABASE_URL=database_url,
        BILLING_TEST_EVENTS=str(events),
        **extra,
    )
    return env


def lease_row(app: Flask) -> Row[Any] | None:
    with app.app_context(), get_state(app).runtime.engine.connect() as connection:
        return connection.execute(select(job_leases)).one_or_none()


def holder_pid(holder: str) -> int:
    """The pid in a lease holder's name, ``<host>:<pid>:<nonce>``."""
    return int(holder.split(":")[1])


def notification_rows(app: Flask) -> list[tuple[str, str, str]]:
    with app.app_context(), get_state(app).runtime.engine.connect() as connection:
        query = select(
            func.substr(notifications.c.account_id, 6).label("user_id"),
            notifications.c.kind,
            notifications.c.subject,
        )
        return [(row.user_id, row.kind, row.subject) for row in connection.execute(query)]


def seed(
    database_url: str, clock: Clock, *, lapsed: int, expiring: int
) -> tuple[Flask, dict[str, int]]:
    """``lapsed`` trials that ended an hour ago (each due an ``expired`` notice) and ``expiring``
    paid subscriptions that end in three to four days (each due an ``expiring`` one); the app that
    wrote them (on ``clock``) and the trials' ids by user."""
    app = create_host_app(database_url, {"BILLING_CLOCK": clock})
    billing = billing_of(app)
    now = datetime.now(UTC)
    trials = {}
    with app.app_context():
        clock.set(now - timedelta(days=1, hours=1))
        for index in range(lapsed):
            trials[f"trial-{index}"] = billing.start_trial(f"trial-{index}", "starter", 1).id
        clock.set(now - timedelta(days=27))
        for index in range(expiring):
            billing.change_plan(f"paid-{index}", "starter", 1)
        get_state(app).runtime.engine.dispose()
    return app, trials


# --- the lease holder killed in the middle of a batch -------------------------------------------------

LAPSED = 40
EXPIRING = 6
BATCH = 4
BATCHES_BEFORE_THE_KILL = 3
LEASE_SECONDS = 600
"""Long enough for any batch on a loaded machine: the lease runs out when the test moves the
processes' clock past it, once its holder is dead."""


def unix(moment: datetime) -> float:
    # SQLite hands back naive UTC.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def test_a_lease_holder_killed_mid_batch_is_taken_over_after_its_lease_runs_out(
    database_url: str, tmp_path: Path
) -> None:
    app, trials = seed(database_url, Clock(), lapsed=LAPSED, expiring=EXPIRING)
    events = tmp_path / "events.txt"
    offset = tmp_path / "clock-offset"
    env = environment(
        database_url,
        events,
        BILLING_TEST_CLOCK_OFFSET=str(offset),
        BILLING_TEST_INTERVAL="1",
        BILLING_TEST_LEASE_SECONDS=str(LEASE_SECONDS),
        BILLING_TEST_BATCH_SIZE=str(BATCH),
        BILLING_TEST_FREEZE_AFTER_BATCHES=str(BATCHES_BEFORE_THE_KILL),
        BILLING_TEST_FREEZE_MARKER=str(tmp_path / "frozen"),
    )
    logs = [tmp_path / f"scheduler-{index}.log" for index in range(2)]
    processes: dict[int, subprocess.Popen[bytes]] = {}
    try:
        for log in logs:
            with log.open("wb") as output:
                process = subprocess.Popen(
                    [sys.executable, "-m", "tests.support.scheduler_host"],
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            processes[process.pid] = process

        # The holder completed its batches and hangs inside the next one, its transaction open.
        wait_for(
            lambda: any(event.kind == "frozen" for event in read_events(events)),
            "the lease holder to stop in the middle of a batch",
        )
        (frozen,) = [event.pid for event in read_events(events) if event.kind == "frozen"]
        lease = lease_row(app)
        assert lease is not None
        assert holder_pid(lease.holder) == frozen  # the frozen process holds the lease
        processes[frozen].kill()
        assert processes[frozen].wait(timeout=TIMEOUT) == -signal.SIGKILL
        (survivor,) = set(processes) - {frozen}
        # The survivor keeps skipping while the dead holder's lease is live ...
        wait_for(
            lambda: [e for e in read_events(events) if e.pid == survivor and e.kind == "tick"],
            "the surviving process to tick while the lease is live",
        )
        # ... and takes the job over once the lease has run out on the processes' clock.
        offset.write_text(str(LEASE_SECONDS + 1))

        def survivor_finished_a_run() -> bool:
            return any(e.pid == survivor and e.kind == "run" for e in read_events(events))

        wait_for(survivor_finished_a_run, "the surviving process to take the job over and finish")
        processes[survivor].send_signal(signal.SIGTERM)
        assert processes[survivor].wait(timeout=TIMEOUT) == 0, tail(logs[1]) + tail(logs[0])
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()

    recorded = read_events(events)
    by = {pid: [event for event in recorded if event.pid == pid] for pid in (frozen, survivor)}

    # The killed process did its batches and nothing after them: the batch it was killed in,
    # uncommitted, was rolled back and done again by the survivor.
    assert [e.details for e in by[frozen] if e.kind == "batch"] == [
        (str(number),) for number in range(1, BATCHES_BEFORE_THE_KILL + 1)
    ]
    assert not [e for e in by[frozen] if e.kind == "run"]
    ended_by_killed = {e.details[0] for e in by[frozen] if e.kind == "expired"}
    assert len(ended_by_killed) == BATCHES_BEFORE_THE_KILL * BATCH

    # The survivor skipped its ticks while the lease was live, and took the job over only once
    # the lease had run out.
    survivor_ticks = [e.details[0] for e in by[survivor] if e.kind == "tick"]
    assert survivor_ticks[0] == "skipped"
    assert "ran" in survivor_ticks
    survivor_claims = [float(e.details[0]) for e in by[survivor] if e.kind == "claimed"]
    assert min(survivor_claims) > unix(lease.lease_until)

    # Each subscription ended once: one ended row and one free row per user, announced once, by
    # the process that committed its end.
    expired = Counter(e.details[0] for e in recorded if e.kind == "expired")
    assert expired == Counter(dict.fromkeys(trials, 1))
    assert {e.details[0] for e in by[survivor] if e.kind == "expired"} == (
        set(trials) - ended_by_killed
    )
    with app.app_context():
        for user, trial_id in trials.items():
            rows = stored_rows(app, user)
            (trial,) = [row for row in rows if row.id == trial_id]
            assert (trial.status, trial.ended_at is not None) == ("expired", True)
            after = [(row.plan_code, row.ended_at) for row in rows if row.id > trial_id]
            assert after == [("free", None)]
        for index in range(EXPIRING):
            (paid,) = [row for row in stored_rows(app, f"paid-{index}") if row.ended_at is None]
            assert paid.plan_code == "starter"

    # Each notification claimed once, and its signal received once, in the process that claimed it.
    announced = Counter(e.details for e in recorded if e.kind == "notification")
    assert set(announced.values()) == {1}
    stored = notification_rows(app)
    assert Counter(stored) == announced
    assert Counter(kind for _user, kind, _subject in stored) == {
        "expired": LAPSED,
        "expiring": EXPIRING,
    }
    assert {e.details for e in by[frozen] if e.kind == "notification"} == {
        (user, "expired", str(trials[user])) for user in ended_by_killed
    }


# --- gunicorn --preload -----------------------------------------------------------------------------

INTERVAL = 3
EVERY = INTERVAL - 1
"""How soon the job is due again after a run (``run_if_due``: a tenth of the interval, at least a
second, early)."""


@contextmanager
def gunicorn(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``gunicorn --preload --workers 2`` serving the scheduler host on a free loopback port; the
    master process and the base URL. Stopped (its whole process group) at the end."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--preload",
        "--workers",
        "2",
        "--worker-class",
        "sync",
        "--bind",
        f"{HOST}:{port}",
        "--timeout",
        "30",
        "--graceful-timeout",
        "5",
        "--error-logfile",
        str(log),
        "--chdir",
        str(ROOT),
        "tests.support.scheduler_host:create_app()",
    ]
    master = subprocess.Popen(
        command,
        # gunicorn 25.1+ opens a control socket, by default one path for every gunicorn of the
        # user: a directory of this server's own keeps servers started at once apart.
        env={**env, "XDG_RUNTIME_DIR": str(log.parent)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a process group of its own: the stop reaches every worker
    )
    try:
        yield master, f"http://{HOST}:{port}"
    finally:
        if master.poll() is None:
            os.killpg(master.pid, signal.SIGTERM)
            try:
                master.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(master.pid, signal.SIGKILL)
                master.wait()


def pids_serving(base_url: str, master: subprocess.Popen[bytes], log: Path) -> set[int]:
    """The pids of the workers that answered: two requests at a time, each holding its sync
    worker half a second, so the second one is served by the other worker."""
    seen: set[int] = set()

    def ask() -> None:
        with suppress(requests.RequestException):
            answer = requests.get(f"{base_url}/pid", params={"hold": "0.5"}, timeout=10)
            if answer.ok:
                seen.add(int(answer.json()["pid"]))

    def both_served() -> bool:
        if master.poll() is not None:
            pytest.fail(f"gunicorn exited with {master.returncode}\n{tail(log)}")
        pair = [threading.Thread(target=ask) for _ in range(2)]
        for thread in pair:
            thread.start()
        for thread in pair:
            thread.join()
        return len(seen) == 2

    wait_for(both_served, "both gunicorn workers to answer")
    return seen


def test_gunicorn_preload_with_two_workers_runs_each_tick_once_in_a_worker(
    database_url: str, tmp_path: Path
) -> None:
    clock = Clock()
    app, trials = seed(database_url, clock, lapsed=1, expiring=0)
    billing = billing_of(app)
    events, log = tmp_path / "events.txt", tmp_path / "gunicorn.log"
    env = environment(database_url, events, BILLING_TEST_INTERVAL=str(INTERVAL))

    with gunicorn(env, log) as (master, base_url):
        workers = pids_serving(base_url, master, log)
        assert master.pid not in workers
        # Preloaded: the master built the app, and the workers it forked did not build it again;
        # the master started no scheduler before forking, each worker started one.
        recorded = read_events(events)
        assert [e.pid for e in recorded if e.kind == "app-created"] == [master.pid]
        assert master.pid not in {e.pid for e in recorded if e.kind == "scheduler-started"}

        # The first tick, at the schedulers' start, ended the trial that had lapsed already.
        def ended(user: str) -> Callable[[], bool]:
            return lambda: stored_rows(app, user)[-1].plan_code == "free"

        with app.app_context():
            wait_for(ended("trial-0"), "the first tick to end the lapsed trial")
        first = lease_row(app)
        assert first is not None
        assert first.last_finished_at is not None

        # A trial that ends now is ended by a later tick, and the lease records that run.
        with app.app_context():
            clock.set(datetime.now(UTC) - timedelta(days=1))
            later = billing.start_trial("later", "starter", 1).id
        with app.app_context():
            wait_for(ended("later"), "a later tick to end a trial that lapsed since")

        def runs() -> list[tuple[float, float]]:
            return sorted(
                (float(e.details[0]), float(e.details[1]))
                for e in read_events(events)
                if e.kind == "run"
            )

        def ticked_in_both_workers() -> bool:
            ticks = {e.pid for e in read_events(events) if e.kind == "tick"}
            return ticks == workers and len(runs()) >= 3

        wait_for(ticked_in_both_workers, "three runs and ticks in both workers")
        last = lease_row(app)
        assert last is not None
        assert last.last_finished_at > first.last_finished_at
        assert holder_pid(last.holder) in workers

    recorded = read_events(events)
    assert [e.pid for e in recorded if e.kind == "app-created"] == [master.pid]
    # Each worker started its own scheduler, once; only workers ticked and ran maintenance.
    started = [e.pid for e in recorded if e.kind == "scheduler-started"]
    assert sorted(started) == sorted(workers)
    assert {e.pid for e in recorded if e.kind in {"tick", "run", "expired"}} <= workers

    # Each tick ran once: of the two schedulers ticking every INTERVAL seconds, one ran each round
    # and the other skipped it; the runs came one at a time, never sooner than the job was due
    # again after the previous one (as the claims recorded their starts).
    ticks = Counter(e.details[0] for e in recorded if e.kind == "tick")
    assert ticks["ran"] >= 3
    assert ticks["skipped"] >= ticks["ran"] - 2
    for (_, end), (next_start, _) in itertools.pairwise(runs()):
        assert end <= next_start
    claims = sorted(float(e.details[0]) for e in recorded if e.kind == "claimed")
    for claim, next_claim in itertools.pairwise(claims):
        assert round(next_claim - claim, 3) >= EVERY
    expired = Counter(e.details[1] for e in recorded if e.kind == "expired")
    assert expired == {str(trials["trial-0"]): 1, str(later): 1}
