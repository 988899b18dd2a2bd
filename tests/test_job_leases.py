"""The job lease: one conditional statement decides who runs a tick, on SQLite and PostgreSQL;
racing claimers get one winner, a live lease keeps others out, an expired one is taken over."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select

from flask_profile_billing import OutgoingEmail
from flask_profile_billing.services.leases import JobLeases, Lease, LeaseLost
from flask_profile_billing.state import get_state
from flask_profile_billing.store.models import notifications
from tests.support.host_app import AppFactory, Clock, billing_of
from tests.support.subscriptions import run_together

EVERY = 60
LEASE = 30


@pytest.fixture
def leases(app: Flask) -> JobLeases:
    return get_state().leases


def test_the_first_claim_wins_and_the_job_is_not_due_again_before_its_interval(
    leases: JobLeases, clock: Clock
) -> None:
    first = leases.claim("job", every_seconds=EVERY, lease_seconds=LEASE)
    assert first is not None
    first.release()

    clock.advance(seconds=EVERY - 1)
    assert leases.claim("job", every_seconds=EVERY, lease_seconds=LEASE) is None
    clock.advance(seconds=1)
    assert leases.claim("job", every_seconds=EVERY, lease_seconds=LEASE) is not None


def test_a_live_lease_keeps_others_out_even_when_the_job_is_due(
    leases: JobLeases, clock: Clock
) -> None:
    holder = leases.claim("job", every_seconds=1, lease_seconds=LEASE)
    assert holder is not None

    clock.advance(seconds=LEASE - 1)  # due again, but the lease is live
    assert leases.claim("job", every_seconds=1, lease_seconds=LEASE) is None
    holder.renew()  # the holder finished a batch: live for LEASE more seconds
    clock.advance(seconds=LEASE - 1)
    assert leases.claim("job", every_seconds=1, lease_seconds=LEASE) is None


def test_an_expired_lease_is_taken_over_and_its_old_holder_learns_it(
    leases: JobLeases, clock: Clock
) -> None:
    dead = leases.claim("job", every_seconds=1, lease_seconds=LEASE)
    assert dead is not None

    clock.advance(seconds=LEASE + 1)  # the holder stopped renewing: it died
    successor = leases.claim("job", every_seconds=1, lease_seconds=LEASE)

    assert successor is not None
    with pytest.raises(LeaseLost):
        dead.renew()
    dead.release()  # changes nothing: the successor still holds it
    clock.advance(seconds=2)
    assert leases.claim("job", every_seconds=1, lease_seconds=LEASE) is None
    successor.release()
    assert leases.claim("job", every_seconds=1, lease_seconds=LEASE) is not None


def test_jobs_have_leases_of_their_own(leases: JobLeases) -> None:
    assert leases.claim("one", every_seconds=EVERY, lease_seconds=LEASE) is not None
    assert leases.claim("other", every_seconds=EVERY, lease_seconds=LEASE) is not None


@pytest.mark.parametrize("existing_row", [False, True], ids=["first-tick", "later-tick"])
def test_racing_claimers_get_exactly_one_winner(
    app: Flask, leases: JobLeases, clock: Clock, existing_row: bool
) -> None:
    if existing_row:
        previous = leases.claim("job", every_seconds=EVERY, lease_seconds=LEASE)
        assert previous is not None
        previous.release()
        clock.advance(seconds=EVERY)

    def claim() -> bool:
        with app.app_context():
            return leases.claim("job", every_seconds=EVERY, lease_seconds=LEASE) is not None

    for _ in range(3):
        won = run_together(12, claim)
        assert won.count(True) == 1
        clock.advance(seconds=EVERY)


def test_maintenance_runs_once_per_tick_across_schedulers(app: Flask, clock: Clock) -> None:
    maintenance = get_state().maintenance
    interval = get_state().runtime.settings.maintenance.interval_seconds

    def tick() -> bool:
        with app.app_context():
            return maintenance.run_if_due() is not None

    assert run_together(6, tick).count(True) == 1
    assert run_together(6, tick).count(True) == 0
    clock.advance(seconds=interval)
    assert run_together(6, tick).count(True) == 1
    clock.advance(seconds=timedelta(days=90).total_seconds())  # a scheduler off for months
    assert run_together(6, tick).count(True) == 1


def test_a_run_that_lost_its_lease_stops_before_its_next_email(
    make_app: AppFactory, clock: Clock
) -> None:
    """The holder stalls inside its first email for longer than its lease (a paused process); a
    second scheduler takes the job over. The stalled one, when it wakes, sends nothing more: the
    rest of its batch is given back, due, for the new holder."""
    users = ["alice", "bob", "carol"]
    sent: list[str] = []
    successor: list[Lease] = []

    def stalling_sender(email: OutgoingEmail) -> None:
        sent.append(email.to)
        if len(sent) == 1:
            clock.advance(seconds=LEASE + 1)
            taken = get_state().leases.claim("maintenance", every_seconds=1, lease_seconds=LEASE)
            assert taken is not None
            successor.append(taken)

    app = make_app(
        BILLING_EMAIL_SENDER=stalling_sender,
        BILLING_EMAIL_BATCH_SIZE=10,
        BILLING_SCHEDULER_LEASE_SECONDS=LEASE,
        BILLING_SCHEDULER_INTERVAL_SECONDS=10,
        BILLING_USER_INFO=lambda user: {"email": f"{user.id}@example.com"},
    )
    with app.app_context():
        billing = billing_of(app)
        for user in users:
            billing.consume(user, "analysis", 16)  # the low mark: one email each
        report = get_state().maintenance.run_if_due()

    assert report is None  # stopped: the run was no longer its own
    assert sent == ["alice@example.com"]
    assert len(successor) == 1
    with app.app_context(), get_state(app).runtime.engine.connect() as connection:
        rows = connection.execute(
            select(
                func.substr(notifications.c.account_id, 6),
                notifications.c.status,
                notifications.c.attempts,
            ).order_by(func.substr(notifications.c.account_id, 6))
        ).all()
    assert [tuple(row) for row in rows] == [
        ("alice", "sent", 1),
        ("bob", "pending", 0),
        ("carol", "pending", 0),
    ]
