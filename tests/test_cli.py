"""``flask billing ...``: seeding the plan catalog, manual plan grants, cancel and resume,
maintenance and reports."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from flask_profile_billing import (
    Catalog,
    PlanRow,
    ProfileBilling,
    SubscriptionRow,
    SubscriptionStatus,
)
from flask_profile_billing.domain.catalog import default_catalog
from tests.support.host_app import AppFactory, Clock, as_user, db

ALL_PLANS = "free, starter, professional, enterprise"
START = datetime(2025, 10, 13, 10, 0, tzinfo=UTC)  # the Clock fixture's starting time


def run(app: Flask, *args: str, group: str = "billing") -> Result:
    """Invoke ``flask <group> ARGS`` on ``app`` inside its app context."""
    with app.app_context():
        return app.test_cli_runner().invoke(args=[group, *args])


def succeeded(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def failed(result: Result) -> str:
    """The output of a refused command: a non-zero exit and a one-line error, no traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result.output


def count(model: type, **where: Any) -> int:
    query = select(func.count()).select_from(model).filter_by(**where)
    try:
        return int(db.session.execute(query).scalar_one())
    finally:
        db.session.remove()


def catalog_as_config(catalog: Catalog) -> dict[str, Any]:
    """A BILLING_PLANS dict describing ``catalog``, so that a test can change one value of it."""
    return {
        "metrics": {
            name: {
                "kind": metric.kind.value,
                "limit_key": metric.limit_key,
                "message": metric.message,
            }
            for name, metric in catalog.metrics.items()
        },
        "plans": [
            {
                "code": plan.code,
                "name": plan.name,
                "description": plan.description,
                "price_monthly": plan.price_monthly,
                "price_yearly": plan.price_yearly,
                "currency": plan.currency,
                "limits": dict(plan.limits),
                "features": dict(plan.features),
                "default": plan.is_default,
            }
            for plan in catalog.plans.values()
        ],
        "feature_labels": dict(catalog.feature_labels),
    }


# --- seed-plans -------------------------------------------------------------------------------


def test_seed_plans_is_idempotent(app: Flask) -> None:
    first = succeeded(run(app, "seed-plans"))
    assert first.strip() == f"Plans created: {ALL_PLANS}; updated: none; unchanged: none."

    second = succeeded(run(app, "seed-plans"))
    assert second.strip() == f"Plans created: none; updated: none; unchanged: {ALL_PLANS}."
    assert count(PlanRow) == 4


def test_seed_plans_updates_a_changed_price(make_app: AppFactory) -> None:
    succeeded(run(make_app(), "seed-plans"))

    config = catalog_as_config(default_catalog())
    starter = next(plan for plan in config["plans"] if plan["code"] == "starter")
    starter["price_monthly"] = Decimal("3490.50")
    repriced = make_app(BILLING_PLANS=config)

    output = succeeded(run(repriced, "seed-plans"))
    assert output.strip() == (
        "Plans created: none; updated: starter; unchanged: free, professional, enterprise."
    )
    with repriced.app_context():
        assert count(PlanRow) == 4
        row = db.session.get(PlanRow, "starter")
        assert row is not None
        assert row.price_monthly == Decimal("3490.50")
        assert row.price_yearly == Decimal(29900)
        db.session.remove()
    assert "unchanged: " + ALL_PLANS in succeeded(run(repriced, "seed-plans"))


def test_the_cli_group_name_is_configurable(make_app: AppFactory) -> None:
    app = make_app(BILLING_CLI_GROUP="plans")
    output = succeeded(run(app, "seed-plans", group="plans"))
    assert output.startswith(f"Plans created: {ALL_PLANS};")
    assert "No such command 'billing'" in run(app, "seed-plans").output


# --- grant ------------------------------------------------------------------------------------


def test_grant_puts_the_user_on_the_plan_for_a_year(app: Flask, billing: ProfileBilling) -> None:
    output = succeeded(run(app, "grant", "u1", "starter", "--months", "12"))
    assert output.strip() == "User u1 is on Starter (active) until 2026-10-13 10:00 UTC."

    subscription = billing.subscription("u1")
    assert subscription.plan_code == "starter"
    assert subscription.status is SubscriptionStatus.ACTIVE
    assert subscription.expires_at == START.replace(year=2026)
    assert billing.plan("u1").code == "starter"


def test_grant_defaults_to_one_month(app: Flask, billing: ProfileBilling) -> None:
    succeeded(run(app, "grant", "u1", "professional"))
    assert billing.subscription("u1").expires_at == START.replace(month=11)


def test_granting_the_same_plan_again_extends_it(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    succeeded(run(app, "grant", "u1", "starter", "--months", "12"))
    first = billing.subscription("u1")
    clock.advance(days=10)

    output = succeeded(run(app, "grant", "u1", "starter", "--months", "12"))
    assert "until 2027-10-13 10:00 UTC" in output
    extended = billing.subscription("u1")
    assert extended.id == first.id
    assert extended.started_at == START
    assert extended.expires_at == START.replace(year=2027)

    succeeded(run(app, "grant", "u1", "starter"))
    assert billing.subscription("u1").expires_at == START.replace(year=2027, month=11)


def test_grant_of_an_unknown_plan_names_the_known_plans(app: Flask) -> None:
    output = failed(run(app, "grant", "u1", "platinum"))
    assert f"unknown plan 'platinum'; known plans: {ALL_PLANS}" in output
    assert count(SubscriptionRow) == 0


def test_grant_to_an_unknown_user_writes_nothing(app: Flask) -> None:
    output = failed(run(app, "grant", "ghost-1", "starter", "--months", "12"))
    assert count(SubscriptionRow) == 0
    assert count(PlanRow) == 0
    assert output == "Error: no user with id 'ghost-1'\n"


def test_grant_allows_only_one_or_twelve_months(app: Flask) -> None:
    result = run(app, "grant", "u1", "starter", "--months", "3")
    assert result.exit_code == 2
    assert "Invalid value for '--months'" in result.output
    assert "'3' is not one of '1', '12'" in result.output
    assert count(SubscriptionRow) == 0


# --- cancel and resume ------------------------------------------------------------------------


def test_cancel_and_resume(app: Flask, billing: ProfileBilling) -> None:
    succeeded(run(app, "grant", "u1", "starter"))

    output = succeeded(run(app, "cancel", "u1"))
    assert output.strip() == (
        "Cancelled: user u1 keeps Starter (cancelled) until 2025-11-13 10:00 UTC, "
        "then moves to free."
    )
    cancelled = billing.subscription("u1")
    assert (cancelled.plan_code, cancelled.status) == ("starter", SubscriptionStatus.CANCELLED)
    assert cancelled.cancelled_at == START
    assert billing.plan("u1").code == "starter"  # access is kept until the period ends

    output = succeeded(run(app, "resume", "u1"))
    assert output.strip() == "Resumed: user u1 is on Starter (active) until 2025-11-13 10:00 UTC."
    resumed = billing.subscription("u1")
    assert (resumed.status, resumed.cancelled_at) == (SubscriptionStatus.ACTIVE, None)
    assert resumed.expires_at == START.replace(month=11)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cancel", "u1"], "Error: the current plan does not lapse, so there is nothing to cancel"),
        (["resume", "u1"], "Error: only a cancelled subscription can be resumed"),
        (["cancel", "ghost-1"], "Error: no user with id 'ghost-1'"),
        (["resume", "ghost-1"], "Error: no user with id 'ghost-1'"),
    ],
    ids=["cancel-free-user", "resume-active-user", "cancel-unknown-user", "resume-unknown-user"],
)
def test_cancel_and_resume_refusals_are_clear(
    app: Flask, billing: ProfileBilling, args: list[str], message: str
) -> None:
    output = failed(run(app, *args))
    assert count(SubscriptionRow, account_id="user:ghost-1") == 0
    assert billing.subscription("u1").plan_code == "free"
    assert output == message + "\n"


# --- maintenance ------------------------------------------------------------------------------


def test_maintenance_ends_lapsed_subscriptions(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    succeeded(run(app, "grant", "u1", "starter"))
    succeeded(run(app, "grant", "u2", "professional"))
    succeeded(run(app, "grant", "u3", "professional", "--months", "12"))
    succeeded(run(app, "cancel", "u2"))
    clock.advance(days=31)

    output = succeeded(run(app, "maintenance"))
    assert output.splitlines() == [
        "Expired subscriptions moved to the free plan: 2 (paid periods: 1, cancelled at the "
        "period's end: 1, trials: 0).",
        "Expired idempotency keys deleted: 0.",
        "Notifications claimed: expiring 0, quota_low 0.",
    ]

    ended = {row.account_id.removeprefix("user:"): row for row in _ended_subscriptions()}
    assert sorted(ended) == ["u1", "u2"]
    assert ended["u1"].status == SubscriptionStatus.EXPIRED
    assert ended["u2"].status == SubscriptionStatus.CANCELLED
    assert billing.subscription("u1").plan_code == "free"
    assert billing.subscription("u1").started_at == START.replace(month=11)
    assert billing.subscription("u2").plan_code == "free"
    assert billing.subscription("u3").plan_code == "professional"

    assert succeeded(run(app, "maintenance")).splitlines()[0] == (
        "Expired subscriptions moved to the free plan: 0 (paid periods: 0, cancelled at the "
        "period's end: 0, trials: 0)."
    )


def _ended_subscriptions() -> list[SubscriptionRow]:
    query = select(SubscriptionRow).where(
        SubscriptionRow.ended_at.is_not(None), SubscriptionRow.plan_code != "free"
    )
    try:
        return list(db.session.scalars(query))
    finally:
        db.session.remove()


# --- reports ----------------------------------------------------------------------------------


def analyze(client: FlaskClient, user_id: str, times: int) -> None:
    for _ in range(times):
        response = client.post("/analyze", headers=as_user(user_id))
        assert response.status_code == 200, response.get_json()


def report(app: Flask, *args: str) -> list[dict[str, Any]]:
    return json.loads(succeeded(run(app, "report", *args, "--format", "json")))


def test_report_top_users_ranks_users_by_their_analyses(app: Flask, client: FlaskClient) -> None:
    analyze(client, "u1", 3)
    analyze(client, "u2", 5)
    analyze(client, "u3", 1)
    analyze(client, "u0", 3)  # ties are ordered by user id

    assert report(app, "top-users", "--days", "30") == [
        {"user_id": "u2", "total": 5},
        {"user_id": "u0", "total": 3},
        {"user_id": "u1", "total": 3},
        {"user_id": "u3", "total": 1},
    ]
    assert report(app, "top-users", "--limit", "2") == [
        {"user_id": "u2", "total": 5},
        {"user_id": "u0", "total": 3},
    ]
    assert report(app, "top-users", "--metric", "export") == []

    table = succeeded(run(app, "report", "top-users", "--days", "30")).splitlines()
    assert [line.split() for line in table] == [
        ["user_id", "total"],
        ["u2", "5"],
        ["u0", "3"],
        ["u1", "3"],
        ["u3", "1"],
    ]


def test_report_top_users_counts_only_charged_requests(app: Flask, client: FlaskClient) -> None:
    analyze(client, "u1", 1)
    assert client.post("/analyze/refused", headers=as_user("u1")).status_code == 422
    retry = as_user("u1", **{"Idempotency-Key": "job-7"})
    assert client.post("/analyze", headers=retry).status_code == 200
    assert client.post("/analyze", headers=retry).status_code == 200  # a retry: not charged again
    analyze(client, "u2", 20)  # the free plan's whole allowance
    assert client.post("/analyze", headers=as_user("u2")).status_code == 429

    assert report(app, "top-users") == [
        {"user_id": "u2", "total": 20},
        {"user_id": "u1", "total": 2},
    ]


def test_report_top_users_leaves_out_events_older_than_the_window(
    app: Flask, client: FlaskClient, clock: Clock
) -> None:
    analyze(client, "old-timer", 8)
    clock.advance(days=20)
    analyze(client, "u1", 2)
    clock.advance(days=15)  # old-timer's events are now 35 days old, u1's 15
    analyze(client, "u2", 1)

    assert report(app, "top-users", "--days", "30") == [
        {"user_id": "u1", "total": 2},
        {"user_id": "u2", "total": 1},
    ]
    assert report(app, "top-users", "--days", "40")[0] == {"user_id": "old-timer", "total": 8}
    assert report(app, "top-users", "--days", "1") == [{"user_id": "u2", "total": 1}]


def test_report_plans_shows_users_and_mean_use_per_plan(
    app: Flask, client: FlaskClient, billing: ProfileBilling
) -> None:
    analyze(client, "u1", 2)
    analyze(client, "u2", 4)
    billing.change_plan("pro", "professional")
    analyze(client, "pro", 7)

    assert report(app, "plans") == [
        {"plan_code": "free", "plan_name": "Free", "users": 2, "average_used": 3.0},
        {"plan_code": "starter", "plan_name": "Starter", "users": 0, "average_used": 0.0},
        {"plan_code": "professional", "plan_name": "Professional", "users": 1, "average_used": 7.0},
        {"plan_code": "enterprise", "plan_name": "Enterprise", "users": 0, "average_used": 0.0},
    ]
    exports = report(app, "plans", "--metric", "export")
    assert [(row["users"], row["average_used"]) for row in exports] == [
        (2, 0.0),
        (0, 0.0),
        (1, 0.0),
        (0, 0.0),
    ]

    table = succeeded(run(app, "report", "plans")).splitlines()
    assert table[0].split() == ["plan_code", "plan_name", "users", "average_used"]
    assert table[1].split() == ["free", "Free", "2", "3.0"]
    assert table[3].split() == ["professional", "Professional", "1", "7.0"]


def test_report_plans_counts_only_the_current_period(
    app: Flask, client: FlaskClient, clock: Clock
) -> None:
    analyze(client, "u1", 6)
    clock.set(datetime(2025, 11, 2, 9, 0, tzinfo=UTC))  # a new calendar month
    analyze(client, "u2", 2)

    free = report(app, "plans")[0]
    assert (free["users"], free["average_used"]) == (2, 1.0)


def test_report_plans_counts_a_lapsed_subscriber_on_the_free_plan(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    """A paid period that is over puts the user on free, even before maintenance has run."""
    billing.subscription("u1")
    billing.change_plan("u2", "starter")
    clock.advance(days=45)

    rows = {row["plan_code"]: row["users"] for row in report(app, "plans")}
    assert rows == {"free": 2, "starter": 0, "professional": 0, "enterprise": 0}
    assert billing.plan("u2").code == "free"


@pytest.mark.parametrize("command", ["top-users", "plans"])
def test_reports_refuse_an_unknown_metric(app: Flask, command: str) -> None:
    output = failed(run(app, "report", command, "--metric", "gpu_minutes"))
    assert "unknown metric 'gpu_minutes'; known metrics: analysis, export, active_vacancies" in (
        output
    )
