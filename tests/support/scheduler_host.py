"""A host app with the maintenance scheduler, for tests that run it in processes of their own.

Configured by environment variables:

- ``BILLING_TEST_DATABASE_URL``;
- ``BILLING_TEST_EVENTS``: a file every process appends one line to per event,
  ``<pid> <event> <details>``;
- optionally ``BILLING_TEST_INTERVAL`` (seconds, 1), ``BILLING_TEST_LEASE_SECONDS`` (10) and
  ``BILLING_TEST_BATCH_SIZE`` (5);
- optionally ``BILLING_TEST_CLOCK_OFFSET``: a file holding a number of seconds, re-read at every
  reading of the app's clock (BILLING_CLOCK), which is the wall clock moved by that many seconds
  (none while the file does not exist): a test moves every process's time forward at once, without
  waiting for it;
- optionally ``BILLING_TEST_FREEZE_AFTER_BATCHES`` (a number n) with ``BILLING_TEST_FREEZE_MARKER``
  (a path): the first process whose maintenance run completes n batches creates the marker, records
  ``frozen``, and then hangs inside the next transaction it writes, before its commit, until it is
  killed. The marker makes it one process only: the one that takes the job over runs normally.

Events: ``app-created`` (the process that built the app: with ``gunicorn --preload``, the master),
``scheduler-started``, ``tick`` (``ran``, or ``skipped`` when it got no lease or failed),
``claimed`` (the start, on the app's clock, that the maintenance job's lease it just claimed
records; Unix time), ``run`` (start and end of a maintenance run, on the app's clock), ``batch``
(the number of batches of the current run done, each committed and announced), ``frozen``,
``notification`` (user, kind, subject) and ``expired`` (user, subscription id).

``python -m tests.support.scheduler_host`` runs ``flask billing scheduler``'s loop in the foreground;
``flask --app tests.support.scheduler_host:create_app run`` and
``gunicorn 'tests.support.scheduler_host:create_app()'`` serve the app (``GET /pid?hold=<seconds>``
answers the serving process's pid, after holding the worker that long).
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask, jsonify, request
from sqlalchemy import Engine, event, select

from flask_profile_billing import signals
from flask_profile_billing.services.leases import Lease
from flask_profile_billing.services.maintenance import MaintenanceReport
from flask_profile_billing.state import get_state
from flask_profile_billing.store.models import job_leases
from tests.support.host_app import create_host_app


def _record(line: str) -> None:
    # One write of a whole line in append mode: lines of several processes never interleave, and a
    # process killed at any moment leaves whole lines only.
    descriptor = os.open(os.environ["BILLING_TEST_EVENTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, f"{os.getpid()} {line}\n".encode())
    finally:
        os.close(descriptor)


def _claim_marker(path: str) -> bool:
    """True for the first process to ask, across processes."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


class _Freezer:
    """Hangs the first write transaction after it is armed, before its commit: the process stops
    in the middle of a batch, holding its locks, as if the machine had stalled there."""

    def __init__(self, engine: Engine) -> None:
        self.armed = threading.Event()
        event.listen(engine, "commit", self._before_commit)

    def _before_commit(self, connection: Any) -> None:
        if self.armed.is_set():
            _record("frozen -")
            threading.Event().wait()  # until SIGKILL


class _OffsetClock:
    """The wall clock, moved forward by the seconds the test writes to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self) -> datetime:
        try:
            offset = float(self.path.read_text() or 0)
        except FileNotFoundError:
            offset = 0.0
        return datetime.now(UTC) + timedelta(seconds=offset)


def _unix(moment: datetime) -> float:
    # SQLite hands back naive UTC.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _record_background_scheduler_starts() -> None:
    """Record every start of an APScheduler background thread in this process, whoever starts
    it: the extension's first request, or anything that would start one earlier (``init_app`` in
    a preloading master)."""
    start = BackgroundScheduler.start
    if getattr(start, "records_starts", False):
        return

    def start_and_record(self: BackgroundScheduler, *args: Any, **kwargs: Any) -> None:
        start(self, *args, **kwargs)
        _record("scheduler-started -")

    start_and_record.records_starts = True  # type: ignore[attr-defined]
    BackgroundScheduler.start = start_and_record


def create_app() -> Flask:
    _record("app-created -")
    _record_background_scheduler_starts()
    offset_file = os.environ.get("BILLING_TEST_CLOCK_OFFSET")
    clock = _OffsetClock(Path(offset_file)) if offset_file else (lambda: datetime.now(UTC))
    app = create_host_app(
        os.environ["BILLING_TEST_DATABASE_URL"],
        {
            "BILLING_CLOCK": clock,
            "BILLING_SCHEDULER_ENABLED": True,
            "BILLING_SCHEDULER_INTERVAL_SECONDS": int(os.environ.get("BILLING_TEST_INTERVAL", "1")),
            "BILLING_SCHEDULER_JITTER_SECONDS": 0,
            "BILLING_SCHEDULER_LEASE_SECONDS": int(
                os.environ.get("BILLING_TEST_LEASE_SECONDS", "10")
            ),
            "BILLING_MAINTENANCE_BATCH_SIZE": int(os.environ.get("BILLING_TEST_BATCH_SIZE", "5")),
        },
    )
    state = get_state(app)
    with app.app_context():
        engine = state.runtime.engine
    # A host served by `gunicorn --preload` builds its engine in the master: each forked worker
    # must open connections of its own instead of sharing the master's pooled sockets.
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))

    scheduler = state.scheduler
    # Wrapped before the scheduler is built: its job calls whatever `scheduler.tick` is then.
    tick = scheduler.tick

    def tick_and_record() -> MaintenanceReport | None:
        report = tick()
        _record(f"tick {'skipped' if report is None else 'ran'}")
        return report

    scheduler.tick = tick_and_record  # type: ignore[method-assign]

    freeze_after = int(os.environ.get("BILLING_TEST_FREEZE_AFTER_BATCHES", "0"))
    freezer = _Freezer(engine) if freeze_after else None

    maintenance = state.maintenance
    leases = state.leases
    claim = leases.claim

    def claim_and_record(name: str, **kwargs: Any) -> Lease | None:
        lease = claim(name, **kwargs)
        if lease is not None:
            # The start the claim wrote: nobody else writes the row while this lease is live.
            with engine.connect() as connection:
                started = connection.execute(
                    select(job_leases.c.last_started_at).where(job_leases.c.name == name)
                ).scalar_one()
            _record(f"claimed {_unix(started)!r}")
        return lease

    leases.claim = claim_and_record  # type: ignore[method-assign]

    run = maintenance.run

    def run_and_record(*args: Any, after_batch: Any = None, **kwargs: Any) -> MaintenanceReport:
        batches = 0

        def after_each_batch() -> None:
            nonlocal batches
            if after_batch is not None:
                after_batch()  # the lease's renewal
            batches += 1
            _record(f"batch {batches}")
            if (
                freezer is not None
                and batches == freeze_after
                and _claim_marker(os.environ["BILLING_TEST_FREEZE_MARKER"])
            ):
                freezer.armed.set()

        started = clock().timestamp()
        report = run(*args, after_batch=after_each_batch, **kwargs)
        _record(f"run {started!r} {clock().timestamp()!r}")
        return report

    maintenance.run = run_and_record  # type: ignore[method-assign]

    def on_notification(sender: Flask, *, user_id: str, kind: str, subject: str, **_: Any) -> None:
        _record(f"notification {user_id} {kind} {subject}")

    def on_expired(sender: Flask, *, user_id: str, subscription: Any, **_: Any) -> None:
        _record(f"expired {user_id} {subscription.id}")

    signals.notification_due.connect(on_notification, sender=app, weak=False)
    signals.subscription_expired.connect(on_expired, sender=app, weak=False)

    @app.get("/pid")
    def pid() -> Any:
        # Holding a sync worker busy sends a concurrent request to another worker.
        time.sleep(float(request.args.get("hold", "0")))
        return jsonify(pid=os.getpid(), scheduler=get_state(app).scheduler.running)

    return app


if __name__ == "__main__":
    application = create_app()
    with application.app_context():
        get_state(application).scheduler.run_forever()
