"""Notification emails across real processes, a real SMTP server on loopback, and a database that
goes away: a worker killed mid-batch, or a PostgreSQL stopped mid-batch, leaves at most the one
batch it had taken in ``sending``, every other email is sent exactly once by whoever runs next,
and the stranded ones later become ``uncertain``, counted and never sent twice.

The table holds thousands of sent notifications, ANALYZE'd before the pending ones arrive: the
statistics with which PostgreSQL once planned a "batch" of 10 that took every pending row.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from flask import Flask
from flask_mailman import Mail
from sqlalchemy import func, insert, select, text

from flask_profile_billing.state import get_state
from flask_profile_billing.store.models import job_leases, notifications
from tests.adversarial.harness import dedicated_postgres
from tests.support.host_app import Clock, billing_of, create_host_app
from tests.support.loopback import tail
from tests.support.mail_worker import mail_config
from tests.support.servers import PostgresServer
from tests.support.smtp import SmtpServer
from tests.support.workers import wait_for as wait_until

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60.0
USERS = 60
BATCH = 10
HOLD_AT = 15
"""The message the SMTP server holds: the fifth of the second batch."""
LEFT_SENDING = BATCH - (HOLD_AT - 1 - BATCH)
"""The second batch's emails not recorded: the held one and the five after it."""
SENT_BEFORE = 20_000


wait_for = partial(wait_until, timeout=TIMEOUT)
"""Wait for an event of these processes, at most TIMEOUT seconds."""


def seed(database_url: str, smtp: SmtpServer) -> Flask:
    """SENT_BEFORE old sent notifications, ANALYZE'd; then USERS users at their low mark, each
    with one ``quota_low`` email pending. The app (real time) that wrote them."""
    app = create_host_app(database_url, mail_config(smtp.port))
    Mail(app)
    billing = billing_of(app)
    long_ago = datetime.now(UTC) - timedelta(days=400)
    with app.app_context():
        engine = get_state(app).runtime.engine
        with engine.begin() as connection:
            connection.execute(
                insert(notifications),
                [
                    {
                        "account_id": f"user:old-{index}",
                        "kind": "quota_low",
                        "subject": "analysis",
                        "period_key": "1",
                        "status": "sent",
                        "attempts": 1,
                        "created_at": long_ago,
                        "sent_at": long_ago,
                    }
                    for index in range(SENT_BEFORE)
                ],
            )
        with engine.begin() as connection:
            connection.execute(text("ANALYZE billing_notifications"))
        for index in range(USERS):
            billing.consume(f"user-{index:02d}", "analysis", 16)  # the low mark of 20
        engine.dispose()
    return app


def statuses(app: Flask) -> Counter[str]:
    with app.app_context(), get_state(app).runtime.engine.connect() as connection:
        query = (
            select(notifications.c.status, func.count())
            .where(notifications.c.account_id.like("user:user-%"))
            .group_by(notifications.c.status)
        )
        return Counter(dict(connection.execute(query).all()))


def lease_holder_pid(app: Flask) -> int:
    with app.app_context(), get_state(app).runtime.engine.connect() as connection:
        holder = connection.execute(select(job_leases.c.holder)).scalar_one()
    return int(holder.split(":")[1])


@contextmanager
def workers(
    database_url: str, smtp: SmtpServer, logs: list[Path]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "BILLING_TEST_DATABASE_URL": database_url,
        "BILLING_TEST_SMTP_PORT": str(smtp.port),
        "BILLING_TEST_EMAIL_BATCH": str(BATCH),
        "BILLING_TEST_LEASE_SECONDS": "3",
    }
    processes = []
    try:
        for log in logs:
            with log.open("wb") as output:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "tests.support.mail_worker"],
                        cwd=ROOT,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def settle_later(app_url: str, smtp: SmtpServer) -> tuple[int, Counter[str]]:
    """Two hours on, a maintenance run finds the stranded emails: (how many it reported
    uncertain, the statuses after)."""
    clock = Clock(datetime.now(UTC) + timedelta(hours=2))
    app = create_host_app(app_url, {**mail_config(smtp.port), "BILLING_CLOCK": clock})
    Mail(app)
    with app.app_context():
        report = billing_of(app).run_maintenance()
        get_state(app).runtime.engine.dispose()
    return report.emails_uncertain, statuses(app)


def check_each_email_once(smtp: SmtpServer, after: Counter[str]) -> None:
    delivered = Counter(smtp.recipients)
    assert set(delivered.values()) == {1}, "an email went out twice"
    # Every email went out but the stranded batch's unsent ones; the held one went out too.
    assert len(delivered) == USERS - LEFT_SENDING + 1
    assert after == Counter(sent=USERS - LEFT_SENDING, uncertain=LEFT_SENDING)


def test_a_worker_killed_mid_batch_strands_at_most_that_batch(
    database_url: str, tmp_path: Path
) -> None:
    smtp = SmtpServer(hold_at=HOLD_AT)
    smtp.start()
    try:
        app = seed(database_url, smtp)
        logs = [tmp_path / "worker-0.log", tmp_path / "worker-1.log"]
        with workers(database_url, smtp, logs) as processes:
            if not smtp.holding.wait(TIMEOUT):
                pytest.fail("no email was sent\n" + tail(logs[0]) + tail(logs[1]))
            holder = lease_holder_pid(app)
            (killed,) = [process for process in processes if process.pid == holder]
            killed.send_signal(signal.SIGKILL)
            assert killed.wait(TIMEOUT) == -signal.SIGKILL
            smtp.release()
            (survivor,) = [process for process in processes if process is not killed]
            wait_for(
                lambda: statuses(app)["pending"] == 0,
                "the other worker to take the job over and send the rest",
            )
            survivor.send_signal(signal.SIGTERM)
            assert survivor.wait(TIMEOUT) == 0, tail(logs[0]) + tail(logs[1])

        assert statuses(app) == Counter(sent=USERS - LEFT_SENDING, sending=LEFT_SENDING)
        uncertain, after = settle_later(database_url, smtp)
        assert uncertain == LEFT_SENDING
        check_each_email_once(smtp, after)
    finally:
        smtp.stop()


def test_postgresql_stopped_mid_batch_strands_at_most_that_batch(
    postgresql_server: PostgresServer, tmp_path: Path
) -> None:
    smtp = SmtpServer(hold_at=HOLD_AT)
    smtp.start()
    try:
        with dedicated_postgres() as cluster:
            url = cluster.new_database("emails")
            app = seed(url, smtp)
            log = tmp_path / "worker.log"
            with workers(url, smtp, [log]) as (worker,):
                if not smtp.holding.wait(TIMEOUT):
                    pytest.fail("no email was sent\n" + tail(log))
                cluster.stop("immediate")
                # The server has the message; recording that it went out now fails.
                smtp.release()
                wait_for(
                    lambda: "OperationalError" in log.read_text(errors="replace"),
                    "the worker to find the database gone",
                )
                cluster.start()
                wait_for(lambda: statuses(app)["pending"] == 0, "the worker to send the rest")
                worker.send_signal(signal.SIGTERM)
                assert worker.wait(TIMEOUT) == 0, tail(log)

            assert statuses(app) == Counter(sent=USERS - LEFT_SENDING, sending=LEFT_SENDING)
            uncertain, after = settle_later(url, smtp)
            assert uncertain == LEFT_SENDING
            check_each_email_once(smtp, after)
    finally:
        smtp.stop()
