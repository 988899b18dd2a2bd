"""The store's building blocks that services rely on, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from flask import Flask
from sqlalchemy import select

from flask_profile_billing.state import get_state
from flask_profile_billing.store.bulk import insert_rows
from flask_profile_billing.store.models import activity
from flask_profile_billing.store.transactions import read_connection, write_transaction


def test_bulk_insert_stores_rows_as_single_inserts_would(app: Flask) -> None:
    moscow = timezone(timedelta(hours=3))
    rows = [
        {
            "user_id": f"u{n}",
            "type": "subscription.expired",
            "title": 'Pro plan "expired"\tat\\night\n',  # what COPY's text format must escape
            "metadata": {"plan": "pro", "n": n, "nested": [None, "é"]},
            "occurred_at": datetime(2025, 11, 13, 23, 30, tzinfo=moscow) + timedelta(minutes=n),
        }
        for n in range(3)
    ]
    rows.append({**rows[0], "user_id": "u-none", "metadata": None})

    with app.app_context():
        engine = get_state().runtime.engine
        with write_transaction(engine) as connection:
            insert_rows(connection, activity, rows)
        with read_connection(engine) as connection:
            stored = connection.execute(
                select(activity.c.user_id, activity.c.title, activity.c.metadata)
                .add_columns(activity.c.occurred_at)
                .order_by(activity.c.user_id)
            ).all()

    by_user = {row.user_id: row for row in stored}
    assert set(by_user) == {"u0", "u1", "u2", "u-none"}
    for row in rows[:3]:
        got = by_user[row["user_id"]]
        assert got.title == row["title"]
        assert got.metadata == row["metadata"]
        assert got.occurred_at == row["occurred_at"]
        assert got.occurred_at.tzinfo is not None
        assert got.occurred_at.utcoffset() == timedelta(0)  # stored and read back in UTC
    assert by_user["u-none"].metadata is None


def test_bulk_insert_commits_with_the_transaction_and_rolls_back_with_it(app: Flask) -> None:
    row = {
        "user_id": "u1",
        "type": "note",
        "title": "kept",
        "metadata": None,
        "occurred_at": datetime(2025, 11, 1, tzinfo=UTC),
    }
    with app.app_context():
        engine = get_state().runtime.engine
        try:
            with write_transaction(engine) as connection:
                insert_rows(connection, activity, [{**row, "title": "dropped"}])
                raise RuntimeError("the batch failed")
        except RuntimeError:
            pass
        with write_transaction(engine) as connection:
            insert_rows(connection, activity, [row])
        with read_connection(engine) as connection:
            titles = connection.execute(select(activity.c.title)).scalars().all()

    assert titles == ["kept"]
