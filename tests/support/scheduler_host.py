"""A host app with the maintenance scheduler, for tests that run it in processes of their own.

Configured by environment variables: ``BILLING_TEST_DATABASE_URL``, ``BILLING_TEST_EVENTS`` (a file
every process appends one line to per event: ``<pid> <event> <details>``), and optionally
``BILLING_TEST_INTERVAL``. Events: ``scheduler-started``, ``run`` (start and end of a maintenance
run, Unix time), ``notification`` (user, kind, subject) and ``expired`` (user, subscription id).

``python -m tests.support.scheduler_host`` runs ``flask billing scheduler``'s loop in the foreground;
``flask --app tests.support.scheduler_host:create_app run`` serves the app.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, jsonify

from flask_profile_billing import signals
from flask_profile_billing.state import get_state
from tests.support.host_app import create_host_app


def _record(line: str) -> None:
    # One write of a whole line in append mode: lines of several processes never interleave.
    descriptor = os.open(os.environ["BILLING_TEST_EVENTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, f"{os.getpid()} {line}\n".encode())
    finally:
        os.close(descriptor)


def create_app() -> Flask:
    interval = int(os.environ.get("BILLING_TEST_INTERVAL", "1"))
    app = create_host_app(
        os.environ["BILLING_TEST_DATABASE_URL"],
        {
            "BILLING_SCHEDULER_ENABLED": True,
            "BILLING_SCHEDULER_INTERVAL_SECONDS": interval,
            "BILLING_SCHEDULER_JITTER_SECONDS": 0,
            "BILLING_SCHEDULER_LEASE_SECONDS": 10,
            "BILLING_MAINTENANCE_BATCH_SIZE": 5,
        },
    )
    scheduler = get_state(app).scheduler
    start = scheduler.start_in_background

    def start_and_record() -> bool:
        started = start()
        if started:
            _record("scheduler-started -")
        return started

    scheduler.start_in_background = start_and_record  # type: ignore[method-assign]

    maintenance = get_state(app).maintenance
    run = maintenance.run

    def run_and_record(*args: Any, **kwargs: Any) -> Any:
        started = time.time()
        report = run(*args, **kwargs)
        _record(f"run {started!r} {time.time()!r}")
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
        return jsonify(pid=os.getpid(), scheduler=get_state(app).scheduler.running)

    return app


if __name__ == "__main__":
    application = create_app()
    with application.app_context():
        get_state(application).scheduler.run_forever()
