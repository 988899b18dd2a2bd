"""What the subscription test modules share: the test clock's timeline, the subscription rows
read straight from the table, recorded signals, threads released together, and guarded requests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from blinker import Signal
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Row, func, select

from flask_profile_billing import SubscriptionRow, SubscriptionStatus
from tests.support.host_app import as_user

NOW = datetime(2025, 10, 13, 10, 0, tzinfo=UTC)
ONE_MONTH_LATER = datetime(2025, 11, 13, 10, 0, tzinfo=UTC)
ONE_YEAR_LATER = datetime(2026, 10, 13, 10, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
FREE_ANALYSES = 20
CONCURRENT_USERS = 50

ACTIVE = SubscriptionStatus.ACTIVE
TRIAL = SubscriptionStatus.TRIAL
EXPIRED = SubscriptionStatus.EXPIRED
CANCELLED = SubscriptionStatus.CANCELLED

subscriptions_table = SubscriptionRow.__table__


def stored_rows(app: Flask, user_id: str) -> list[Row[Any]]:
    """Every subscription row of the user, oldest first, read straight from the table."""
    engine = app.extensions["sqlalchemy"].engine
    query = (
        select(subscriptions_table)
        .where(subscriptions_table.c.account_id == "user:" + user_id)
        .order_by(subscriptions_table.c.id)
    )
    with engine.connect() as connection:
        return list(connection.execute(query))


def current_row_count(app: Flask, user_id: str) -> int:
    engine = app.extensions["sqlalchemy"].engine
    query = (
        select(func.count())
        .select_from(subscriptions_table)
        .where(
            subscriptions_table.c.account_id == "user:" + user_id,
            subscriptions_table.c.ended_at.is_(None),
        )
    )
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def row_of(app: Flask, user_id: str, subscription_id: int) -> Row[Any]:
    return next(row for row in stored_rows(app, user_id) if row.id == subscription_id)


@contextmanager
def recorded(signal: Signal, app: Flask) -> Iterator[list[dict[str, Any]]]:
    """The keyword arguments of every ``signal`` the app sends inside the block."""
    calls: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append(kwargs)

    with signal.connected_to(receiver, sender=app):
        yield calls


def run_together(count: int, task: Callable[[], Any]) -> list[Any]:
    """Run ``task`` in ``count`` threads released at once; re-raises the first thread's error."""
    barrier = threading.Barrier(count)

    def start_together() -> Any:
        barrier.wait(timeout=30)
        return task()

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(start_together) for _ in range(count)]
        return [future.result() for future in futures]


def api_data(client: FlaskClient, user_id: str) -> Any:
    return client.get("/api/data", headers=as_user(user_id))


def analyze(client: FlaskClient, user_id: str) -> Any:
    return client.post("/analyze", headers=as_user(user_id))


def assert_feature_refused(response: Any) -> None:
    assert response.status_code == 403
    assert response.get_json()["error"] == "FEATURE_NOT_AVAILABLE"
