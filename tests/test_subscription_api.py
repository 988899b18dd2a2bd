"""The subscription API, ``/api/subscription/...``: plans, the current subscription, usage and the
limits check against their documented examples; cancel and upgrade; validation, login and CSRF;
where the API is mounted; and the daily usage rollup the statistics read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from flask_profile_billing import ProfileBilling
from tests.support.contracts import OpenMap, assert_same_shape
from tests.support.host_app import AppFactory, Clock, as_user, billing_of

# The documented examples, with their "..." filled by values of the same type.
DOCUMENTED_PLAN = {
    "id": "...",
    "plan_type": "free",
    "name": "Free",
    "description": "...",
    "pricing": {"monthly": 0, "yearly": 0, "currency": "RUB", "yearly_discount": 0},
    "limits": {"active_vacancies": 1, "analyses_per_month": 20, "exports_per_month": 5},
    "features": OpenMap(True),  # {"basic_analysis": true, "api_access": false, ...}
}
DOCUMENTED_SUBSCRIPTION = {
    "id": "...",
    "user_id": "...",
    "plan": DOCUMENTED_PLAN,
    "status": "active",
    "is_active": True,
    "period": {
        "started_at": "2025-10-13T10:00:00",
        "expires_at": "2025-11-13T10:00:00",
        "days_remaining": 30,
    },
    "usage": {
        "analyses": {"used": 5, "limit": 20, "percentage": 25.0},
        "exports": {"used": 2, "limit": 5, "percentage": 40.0},
    },
}
DOCUMENTED_LIMITS = {
    "can_analyze": True,
    "can_export": False,
    "can_add_vacancy": True,
    "messages": {"analyze": None, "export": "Export limit reached (5 per month)", "vacancy": None},
}


def envelope(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}


def get(client: FlaskClient, path: str, user: str = "alice") -> Any:
    response = client.get(f"/api/subscription{path}", headers=as_user(user))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def post(client: FlaskClient, path: str, body: Any = None, user: str = "alice") -> Any:
    return client.post(f"/api/subscription{path}", json=body, headers=as_user(user))


def test_plans_match_the_documented_example_and_numbers(client: FlaskClient) -> None:
    body = client.get("/api/subscription/plans").get_json()  # public: no login needed

    assert_same_shape(body, envelope({"plans": [DOCUMENTED_PLAN]}))
    plans = {plan["plan_type"]: plan for plan in body["data"]["plans"]}
    assert list(plans) == ["free", "starter", "professional", "enterprise"]
    assert plans["starter"]["pricing"] == {
        "monthly": 2990,
        "yearly": 29900,
        "currency": "RUB",
        "yearly_discount": 16,
    }
    assert plans["professional"]["limits"] == {
        "active_vacancies": 20,
        "analyses_per_month": 1000,
        "exports_per_month": 200,
    }
    assert plans["enterprise"]["pricing"]["monthly"] is None  # on request
    assert set(plans["enterprise"]["limits"].values()) == {None}  # unlimited
    assert plans["free"]["features"]["api_access"] is False
    assert plans["professional"]["features"]["api_access"] is True


def test_current_matches_the_documented_example(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    billing.change_plan("alice", "professional")
    for _ in range(5):
        client.post("/analyze", headers=as_user("alice"))
    client.post("/export", headers=as_user("alice"))  # charges 2

    body = get(client, "/current")

    assert_same_shape(body, envelope({"subscription": DOCUMENTED_SUBSCRIPTION}))
    subscription = body["data"]["subscription"]
    assert subscription["user_id"] == "alice"
    assert subscription["plan"]["plan_type"] == "professional"
    assert subscription["period"]["expires_at"] == "2025-11-13T10:00:00+00:00"
    assert subscription["period"]["days_remaining"] == 31
    assert subscription["usage"] == {
        "analyses": {"used": 5, "limit": 1000, "percentage": 0.5},
        "exports": {"used": 2, "limit": 200, "percentage": 1.0},
    }


def test_a_free_subscription_has_no_end(client: FlaskClient) -> None:
    period = get(client, "/current")["data"]["subscription"]["period"]

    assert period["expires_at"] is None
    assert period["days_remaining"] is None


def test_usage_statistics_total_and_by_day(client: FlaskClient, clock: Clock) -> None:
    client.post("/analyze", headers=as_user("alice"))
    clock.advance(days=1)
    client.post("/analyze", headers=as_user("alice"))
    client.post("/analyze", headers=as_user("alice"))
    client.post("/export", headers=as_user("alice"))
    client.post("/analyze", headers=as_user("bob"))  # someone else's

    body = get(client, "/usage?days=30")

    assert_same_shape(
        body,
        envelope(
            {
                "period_days": 30,
                "subscription": DOCUMENTED_SUBSCRIPTION
                | {"period": body["data"]["subscription"]["period"]},
                "total_usage": {"analysis": 3, "export": 2},
                "daily_usage": {
                    "2025-10-13": {"analysis": 1},
                    "2025-10-14": {"analysis": 2, "export": 2},
                },
            }
        ),
    )
    data = body["data"]
    assert data["total_usage"] == {"analysis": 3, "export": 2}
    assert data["daily_usage"] == {
        "2025-10-13": {"analysis": 1},
        "2025-10-14": {"analysis": 2, "export": 2},
    }


def test_usage_covers_only_the_requested_days(client: FlaskClient, clock: Clock) -> None:
    client.post("/analyze", headers=as_user("alice"))
    clock.advance(days=10)

    assert get(client, "/usage?days=5")["data"]["total_usage"] == {}
    assert get(client, "/usage?days=11")["data"]["total_usage"] == {"analysis": 1}


@pytest.mark.parametrize("days", ["0", "366", "-1", "abc", "1.5", ""])
def test_usage_refuses_days_out_of_range(client: FlaskClient, days: str) -> None:
    response = client.get(f"/api/subscription/usage?days={days}", headers=as_user("alice"))

    assert response.status_code == 422
    assert response.get_json()["details"]["fields"]["days"]


def test_limits_check_matches_the_documented_example(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    billing.consume("alice", "export", 5)

    body = get(client, "/limits/check")

    assert_same_shape(body, envelope(DOCUMENTED_LIMITS))
    assert body["data"]["can_analyze"] is True
    assert body["data"]["can_add_vacancy"] is True
    assert body["data"]["messages"]["analyze"] is None


def test_limits_check_reports_an_exhausted_quota_with_the_documented_message(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    billing.consume("alice", "export", 5)
    client.post("/vacancies", headers=as_user("alice"))

    data = get(client, "/limits/check")["data"]

    assert data["can_export"] is False
    assert data["messages"]["export"] == "Export limit reached (5 per month)"
    assert data["can_add_vacancy"] is False
    assert data["messages"]["vacancy"] == "Active vacancy limit reached (1)"


def test_cancel_keeps_access_until_the_date_it_names(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    billing.change_plan("alice", "starter")

    response = post(client, "/cancel")

    assert response.status_code == 200
    data = response.get_json()["data"]
    assert data["message"] == "Subscription cancelled. Access is kept until 13.11.2025"
    assert data["subscription"]["status"] == "cancelled"
    assert data["subscription"]["is_active"] is True
    assert data["subscription"]["plan"]["plan_type"] == "starter"


def test_cancelling_the_free_plan_is_a_conflict(client: FlaskClient) -> None:
    response = post(client, "/cancel")

    assert response.status_code == 409
    assert response.get_json()["error"] == "NOT_CANCELLABLE"


def test_a_paid_upgrade_by_the_users_own_request_changes_nothing(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    response = post(client, "/upgrade", {"plan_type": "professional", "duration_months": 12})

    assert response.status_code == 402
    assert response.get_json()["error"] == "PAYMENT_REQUIRED"
    assert billing.plan("alice").code == "free"


def test_moving_to_free_takes_effect_at_the_end_of_the_period(
    client: FlaskClient, billing: ProfileBilling, clock: Clock
) -> None:
    billing.change_plan("alice", "starter")

    response = post(client, "/upgrade", {"plan_type": "free", "duration_months": 1})

    assert response.status_code == 200
    assert response.get_json()["data"]["message"] == "Your plan changes to Free after 13.11.2025"
    assert billing.plan("alice").code == "starter"
    clock.set(datetime(2025, 11, 13, 10, tzinfo=UTC))
    assert billing.plan("alice").code == "free"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"plan_type"}),
        ({"plan_type": "gold"}, {"plan_type"}),
        ({"plan_type": "starter", "duration_months": 3}, {"duration_months"}),
        ({"plan_type": "starter", "duration_months": "12"}, {"duration_months"}),
        ({"plan_type": "starter", "user_id": "bob"}, {"user_id"}),
        ({"plan_type": 5, "status": "active"}, {"plan_type", "status"}),
    ],
)
def test_invalid_upgrades_name_every_bad_field(
    client: FlaskClient, billing: ProfileBilling, body: dict[str, Any], fields: set[str]
) -> None:
    response = post(client, "/upgrade", body)

    assert response.status_code == 422
    assert set(response.get_json()["details"]["fields"]) == fields
    assert billing.plan("alice").code == "free"


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"', b"null", b"[" * 100_000])
def test_a_body_that_is_not_a_json_object_is_a_400(client: FlaskClient, raw: bytes) -> None:
    response = client.post(
        "/api/subscription/upgrade",
        data=raw,
        headers=as_user("alice", **{"Content-Type": "application/json"}),
    )

    assert response.status_code == 400
    assert response.get_json()["error"] == "INVALID_JSON"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/current"),
        ("POST", "/upgrade"),
        ("GET", "/usage"),
        ("GET", "/limits/check"),
        ("POST", "/cancel"),
    ],
)
def test_every_personal_endpoint_needs_a_login_and_answers_json(
    client: FlaskClient, method: str, path: str
) -> None:
    response = client.open(f"/api/subscription{path}", method=method, json={})

    assert response.status_code == 401
    assert response.get_json() == {
        "success": False,
        "error": "UNAUTHORIZED",
        "message": "Log in to use this endpoint",
        "details": {},
    }


def test_cookie_sessions_need_the_csrf_token_to_write(make_app: AppFactory) -> None:
    app = make_app()
    client = app.test_client()
    token = client.post("/session-login/alice").get_json()["csrf_token"]
    with app.app_context():
        billing_of(app).change_plan("alice", "starter")

    refused = client.post("/api/subscription/cancel")
    accepted = client.post("/api/subscription/cancel", headers={"X-CSRFToken": token})

    assert refused.status_code == 400
    assert refused.get_json()["error"] == "CSRF_FAILED"
    assert accepted.status_code == 200


def test_the_api_can_be_moved_renamed_or_switched_off(make_app: AppFactory) -> None:
    moved = make_app(
        BILLING_SUBSCRIPTION_API_PREFIX="/billing/v1", BILLING_SUBSCRIPTION_API_NAME="plans_api"
    )
    assert moved.test_client().get("/billing/v1/plans").status_code == 200
    assert "plans_api" in moved.blueprints

    off = make_app(BILLING_SUBSCRIPTION_API_ENABLED=False)
    assert off.test_client().get("/api/subscription/plans").status_code == 404


def test_the_csrf_token_endpoint_gives_the_token_writes_need(make_app: AppFactory) -> None:
    app = make_app()
    client = app.test_client()
    client.post("/session-login/alice")
    with app.app_context():
        billing_of(app).change_plan("alice", "starter")

    token = client.get("/api/profile/csrf-token").get_json()["data"]["csrf_token"]

    assert (
        client.post("/api/subscription/cancel", headers={"X-CSRFToken": token}).status_code == 200
    )
    assert app.test_client().get("/api/profile/csrf-token").status_code == 401


def test_usage_statistics_forget_refunded_charges(client: FlaskClient) -> None:
    client.post("/analyze", headers=as_user("alice"))
    client.post("/analyze/refused", headers=as_user("alice"))  # charged, then given back

    assert get(client, "/usage?days=1")["data"]["total_usage"] == {"analysis": 1}


def test_the_migration_fills_the_daily_rollup_from_the_usage_log(database_url: str) -> None:
    from sqlalchemy import create_engine, text

    from flask_profile_billing import migrate

    engine = create_engine(database_url)
    migrate.upgrade(engine, "0002")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO billing_usage_events (user_id, metric, amount, period_start, created_at)"
                " VALUES ('u', 'analysis', 2, :start, :at), ('u', 'analysis', 3, :start, :at),"
                " ('u', 'export', 1, :start, :next_day)"
            ),
            {
                "start": datetime(2025, 10, 1, tzinfo=UTC),
                "at": datetime(2025, 10, 13, 23, 30, tzinfo=UTC),
                "next_day": datetime(2025, 10, 14, 0, 30, tzinfo=UTC),
            },
        )
    migrate.upgrade(engine)

    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT metric, day, total FROM billing_usage_daily ORDER BY day, metric")
        ).all()
    assert [(metric, str(day), int(total)) for metric, day, total in rows] == [
        ("analysis", "2025-10-13", 5),
        ("export", "2025-10-14", 1),
    ]
    engine.dispose()


def test_a_host_catalog_without_prices_is_served(make_app: AppFactory) -> None:
    app = make_app(
        BILLING_PLANS={
            "metrics": {"analysis": {}},
            "plans": [
                {"code": "basic", "name": "Basic", "default": True, "limits": {"analysis": 3}}
            ],
        }
    )

    response = app.test_client().get("/api/subscription/plans")

    assert response.status_code == 200
    plan = response.get_json()["data"]["plans"][0]
    assert plan["pricing"] == {"monthly": 0, "yearly": 0, "currency": "RUB", "yearly_discount": 0}
