"""An email batch never takes more rows than BILLING_EMAIL_BATCH_SIZE, whatever plan the database
picks.

On PostgreSQL, ``UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)`` does not
bound the rows it updates: with statistics that say few rows are pending (the table was ANALYZE'd
when they were all sent, then a sweep made hundreds pending) the planner puts the subquery on the
inner side of a nested loop and runs it again for each outer row, each run skipping the rows the
update already changed and finding ``n`` more. The table here is built so that it does, and the
test first shows that the statement of that shape takes far more than ``n``: the bound then
proven holds against the plan that broke it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Flask
from sqlalchemy import Connection, func, insert, select, text

from flask_profile_billing.state import get_state
from flask_profile_billing.store import notifications as stored
from flask_profile_billing.store.models import notifications
from tests.support.host_app import create_host_app

ROWS = 20_000
PENDING_EVERY = 50  # 400 pending among 20,000
BATCH = 10

# The statement of the shape that broke, as it was: kept here to prove the planner still breaks it.
UNBOUNDED = text(
    """
UPDATE billing_notifications
SET status = 'sending', attempts = attempts + 1, next_attempt_at = NULL
WHERE id IN (
    SELECT id FROM billing_notifications
    WHERE status = 'pending' AND next_attempt_at <= :now
    ORDER BY next_attempt_at, id
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
)
AND status = 'pending' AND next_attempt_at <= :now
RETURNING id
"""
)


def fill(app: Flask, now: datetime) -> None:
    """ROWS sent notifications, ANALYZE'd as such, then every PENDING_EVERY-th made pending and
    due: the statistics say nothing is pending, as after a sweep that just claimed a burst."""
    with app.app_context(), get_state(app).runtime.engine.begin() as connection:
        connection.execute(
            insert(notifications),
            [
                {
                    "account_id": f"user:user-{index}",
                    "kind": "quota_low",
                    "subject": "analyses",
                    "period_key": "1",
                    "status": "sent",
                    "attempts": 0,
                    "next_attempt_at": None,
                    "created_at": now - timedelta(days=400),
                    "sent_at": now - timedelta(days=400),
                }
                for index in range(ROWS)
            ],
        )
    with app.app_context(), get_state(app).runtime.engine.begin() as connection:
        connection.execute(text("ANALYZE billing_notifications"))
        connection.execute(
            text(
                "UPDATE billing_notifications SET status = 'pending', next_attempt_at = :due "
                "WHERE id % :every = 0"
            ),
            {"due": now - timedelta(seconds=1), "every": PENDING_EVERY},
        )


def postgresql(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def test_an_email_batch_takes_at_most_its_size(database_url: str) -> None:
    app = create_host_app(database_url, {})
    now = datetime.now(UTC)
    fill(app, now)
    with app.app_context():
        engine = get_state(app).runtime.engine
    uncertain_at = now + timedelta(hours=1)

    with engine.connect() as connection:
        if postgresql(connection):
            # The adversarial plan is in place: the old shape takes far more than its limit.
            with connection.begin() as transaction:
                naive = {"now": now.replace(tzinfo=None), "batch": BATCH}
                unbounded = len(connection.execute(UNBOUNDED, naive).all())
                transaction.rollback()
            assert unbounded > 3 * BATCH

    sizes = []
    while True:
        with engine.begin() as connection:
            taken = stored.take_due_emails(
                connection, now=now, batch_size=BATCH, uncertain_at=uncertain_at
            )
        if not taken:
            break
        sizes.append(len(taken))

    assert sizes == [BATCH] * (ROWS // PENDING_EVERY // BATCH)
    with engine.connect() as connection:
        sending = select(func.count()).where(notifications.c.status == "sending")
        assert connection.execute(sending).scalar_one() == ROWS // PENDING_EVERY
