"""Upgrading a database with billing data to accounts: every row keyed by a user becomes its
personal account's, usage events remember who acted, each user with a subscription gets the
personal account's row, and the app goes on charging against the old usage."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, inspect, text

from flask_profile_billing import migrate
from flask_profile_billing.errors import QuotaExceeded
from tests.support.host_app import AppFactory, billing_of

MOMENT = datetime(2025, 10, 13, 9, 0, tzinfo=UTC)
PERIOD_START = datetime(2025, 10, 1, tzinfo=UTC)
PERIOD_END = datetime(2025, 11, 1, tzinfo=UTC)
KEYED_TABLES = [
    "billing_subscriptions",
    "billing_usage_counters",
    "billing_usage_events",
    "billing_usage_daily",
    "billing_payments",
    "billing_recurring",
    "billing_notifications",
]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def _moment(engine: Engine, value: datetime) -> Any:
    # What the models' column type writes: naive UTC text on SQLite.
    if engine.dialect.name == "sqlite":
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _insert(engine: Engine, table: str, rows: list[dict[str, Any]]) -> None:
    columns = list(rows[0])
    statement = text(
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join(':' + column for column in columns)})"
    )
    converted = [
        {key: _moment(engine, v) if isinstance(v, datetime) else v for key, v in row.items()}
        for row in rows
    ]
    with engine.begin() as connection:
        connection.execute(statement, converted)


def _data_at_0007(engine: Engine) -> None:
    """Two users as the tables before accounts held them: alice on a paid plan after a free one,
    with usage, an idempotent charge, a payment, a renewal and a notice; bob one short of the
    free plan's limit."""
    plan = {
        "description": "",
        "price_monthly": 0,
        "price_yearly": 0,
        "currency": "RUB",
        "limits": '{"analysis": 20}',
        "features": "{}",
        "sort_order": 0,
        "is_default": False,
        "updated_at": MOMENT,
    }
    _insert(
        engine,
        "billing_plans",
        [
            {**plan, "code": "free", "name": "Free", "is_default": True},
            {**plan, "code": "starter", "name": "Starter", "limits": '{"analysis": 200}'},
        ],
    )
    subscription = {
        "started_at": datetime(2025, 9, 1, tzinfo=UTC),
        "expires_at": None,
        "period_anchor": datetime(2025, 9, 1, tzinfo=UTC),
        "cancelled_at": None,
        "ended_at": None,
        "end_reason": None,
    }
    _insert(
        engine,
        "billing_subscriptions",
        [
            {
                **subscription,
                "user_id": "alice",
                "plan_code": "free",
                "status": "active",
                "ended_at": datetime(2025, 10, 2, tzinfo=UTC),
                "end_reason": "replaced",
            },
            {
                **subscription,
                "user_id": "alice",
                "plan_code": "starter",
                "status": "active",
                "started_at": datetime(2025, 10, 2, tzinfo=UTC),
                "expires_at": datetime(2025, 11, 2, tzinfo=UTC),
                "period_anchor": datetime(2025, 10, 2, tzinfo=UTC),
            },
            {**subscription, "user_id": "bob", "plan_code": "free", "status": "active"},
        ],
    )
    _insert(
        engine,
        "billing_usage_counters",
        [
            {
                "user_id": user,
                "metric": "analysis",
                "period_start": PERIOD_START,
                "period_end": PERIOD_END,
                "used": used,
            }
            for user, used in (("alice", 3), ("bob", 19))
        ],
    )
    event = {
        "metric": "analysis",
        "period_start": PERIOD_START,
        "resources": None,
        "metadata": None,
        "idempotency_key": None,
        "created_at": MOMENT,
    }
    _insert(
        engine,
        "billing_usage_events",
        [
            {**event, "user_id": "alice", "amount": 2, "idempotency_key": "request-1"},
            {**event, "user_id": "alice", "amount": 1},
            {**event, "user_id": "bob", "amount": 19},
        ],
    )
    _insert(
        engine,
        "billing_usage_daily",
        [
            {"user_id": user, "metric": "analysis", "day": date(2025, 10, 13), "total": total}
            for user, total in (("alice", 3), ("bob", 19))
        ],
    )
    _insert(
        engine,
        "billing_recurring",
        [
            {
                "id": "rec-1",
                "user_id": "alice",
                "provider": "yookassa",
                "reference": "pm-1",
                "customer_reference": None,
                "plan_code": "starter",
                "months": 1,
                "amount": 2990,
                "currency": "RUB",
                "status": "active",
                "last_event_at": None,
                "created_at": MOMENT,
                "updated_at": MOMENT,
            }
        ],
    )
    _insert(
        engine,
        "billing_payments",
        [
            {
                "id": "pay-1",
                "user_id": "alice",
                "provider": "yookassa",
                "provider_payment_id": "yk-1",
                "plan_code": "starter",
                "months": 1,
                "amount": 2990,
                "currency": "RUB",
                "status": "succeeded",
                "created_at": MOMENT,
                "settled_at": MOMENT,
                "refund_reference": None,
                "recurring_id": "rec-1",
            }
        ],
    )
    _insert(
        engine,
        "billing_notifications",
        [
            {
                "user_id": "bob",
                "kind": "quota_low",
                "subject": "analysis",
                "period_key": str(int(PERIOD_START.timestamp())),
                "status": "sent",
                "attempts": 0,
                "next_attempt_at": None,
                "created_at": MOMENT,
                "sent_at": MOMENT,
            }
        ],
    )


def _rows(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def test_upgrade_keys_every_row_by_the_personal_account(
    engine: Engine, make_app: AppFactory
) -> None:
    migrate.upgrade(engine, "0007")
    _data_at_0007(engine)

    migrate.upgrade(engine)

    inspector = inspect(engine)
    for table in KEYED_TABLES:
        columns = {column["name"] for column in inspector.get_columns(table)}
        assert "user_id" not in columns, table
        keys = {row[0] for row in _rows(engine, f"SELECT DISTINCT account_id FROM {table}")}
        assert keys, table
        assert keys <= {"user:alice", "user:bob"}, (table, keys)
    assert sorted(_rows(engine, "SELECT account_id, plan_code FROM billing_subscriptions")) == [
        ("user:alice", "free"),
        ("user:alice", "starter"),
        ("user:bob", "free"),
    ]
    assert sorted(
        _rows(engine, "SELECT account_id, actor_user_id, amount FROM billing_usage_events")
    ) == [("user:alice", "alice", 1), ("user:alice", "alice", 2), ("user:bob", "bob", 19)]
    # The account's own recipients: empty, never NULL, so that the recipient is in the unique key.
    assert _rows(engine, "SELECT account_id, recipient_user_id FROM billing_notifications") == [
        ("user:bob", "")
    ]
    assert sorted(_rows(engine, "SELECT id, kind, name, created_by FROM billing_accounts")) == [
        ("user:alice", "personal", None, "alice"),
        ("user:bob", "personal", None, "bob"),
    ]

    # The app works on the migrated data: charges count the old usage, old keys still replay.
    app = make_app()
    billing = billing_of(app)
    with app.app_context():
        assert billing.subscription("alice").plan_code == "starter"
        assert billing.consume("alice", "analysis", idempotency_key="request-1").replayed
        assert billing.consume("alice", "analysis").allowance.used == 4
        assert billing.consume("bob", "analysis").allowance.used == 20
        with pytest.raises(QuotaExceeded):
            billing.consume("bob", "analysis")


def test_downgrade_gives_the_rows_back_to_their_users(engine: Engine) -> None:
    migrate.upgrade(engine, "0007")
    _data_at_0007(engine)
    migrate.upgrade(engine)

    migrate.downgrade(engine, "0007")

    assert sorted(_rows(engine, "SELECT user_id, amount FROM billing_usage_events")) == [
        ("alice", 1),
        ("alice", 2),
        ("bob", 19),
    ]
    assert sorted(_rows(engine, "SELECT DISTINCT user_id FROM billing_subscriptions")) == [
        ("alice",),
        ("bob",),
    ]
    assert "billing_accounts" not in inspect(engine).get_table_names()
    migrate.upgrade(engine)  # and up again
    assert sorted(_rows(engine, "SELECT id FROM billing_accounts")) == [
        ("user:alice",),
        ("user:bob",),
    ]
