"""The route guards as a route author sees them: charges, refusals, headers, retries, failures."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from flask_profile_billing import ProfileBilling, signals
from tests.support.host_app import HOST_USERS_TABLE, AppFactory, Clock, as_user, billing_of

FREE_ANALYSES = 20
NOVEMBER_FIRST = datetime(2025, 11, 1, tzinfo=UTC)


def analyze(client: FlaskClient, user: str = "alice", **headers: str) -> Any:
    return client.post("/analyze", headers=as_user(user, **headers))


def use_up_analyses(client: FlaskClient, user: str = "alice") -> None:
    for _ in range(FREE_ANALYSES):
        assert analyze(client, user).status_code == 200


def test_successful_request_is_charged_once_and_reports_quota_headers(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    response = analyze(client)

    assert response.status_code == 200
    assert billing.allowance("alice", "analysis").used == 1
    assert response.headers["X-Quota-Limit"] == "20"
    assert response.headers["X-Quota-Remaining"] == "19"
    assert response.headers["X-Quota-Reset"] == str(int(NOVEMBER_FIRST.timestamp()))


def test_exhausted_quota_answers_429_in_the_error_shape(
    client: FlaskClient, billing: ProfileBilling, clock: Clock
) -> None:
    use_up_analyses(client)

    response = analyze(client)

    assert response.status_code == 429
    assert response.get_json() == {
        "success": False,
        "error": "LIMIT_EXCEEDED",
        "message": "Analysis limit reached (20 per month)",
        "details": {
            "metric": "analysis",
            "limit": 20,
            "used": 20,
            "remaining": 0,
            "resets_at": NOVEMBER_FIRST.isoformat(),
        },
    }
    assert int(response.headers["Retry-After"]) == int((NOVEMBER_FIRST - clock.now).total_seconds())
    assert response.headers["X-Quota-Remaining"] == "0"
    assert billing.allowance("alice", "analysis").used == FREE_ANALYSES


def test_browser_gets_an_html_refusal_page_with_escaped_text(client: FlaskClient) -> None:
    use_up_analyses(client)

    response = client.post(
        "/analyze",
        headers={"X-User": "alice", "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
    )

    assert response.status_code == 429
    assert response.mimetype == "text/html"
    assert "Analysis limit reached (20 per month)" in response.get_data(as_text=True)


def test_each_user_has_a_quota_of_their_own(client: FlaskClient, billing: ProfileBilling) -> None:
    use_up_analyses(client, "alice")

    assert analyze(client, "bob").status_code == 200
    assert billing.allowance("bob", "analysis").used == 1


def test_amount_is_charged_in_full_or_not_at_all(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    # Free allows 5 exports a month and the route charges 2 at a time: 2 + 2, then 1 left.
    statuses = [client.post("/export", headers=as_user("alice")).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    assert billing.allowance("alice", "export").used == 4


def test_a_view_that_raises_is_not_charged(app: Flask, billing: ProfileBilling) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = app.test_client().post("/analyze/crash", headers=as_user("alice"))

    assert response.status_code == 500
    assert billing.allowance("alice", "analysis").used == 0


def test_an_error_status_is_not_charged(client: FlaskClient, billing: ProfileBilling) -> None:
    response = client.post("/analyze/refused", headers=as_user("alice"))

    assert response.status_code == 422
    assert billing.allowance("alice", "analysis").used == 0


def test_a_view_that_wrote_without_committing_and_failed_is_not_charged(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    response = client.post("/analyze/half-done", headers=as_user("alice"))

    assert response.status_code == 409
    assert billing.allowance("alice", "analysis").used == 0


def test_failed_requests_are_charged_when_configured(make_app: AppFactory) -> None:
    app = make_app(BILLING_CHARGE_FAILED_REQUESTS=True)
    client = app.test_client()

    assert client.post("/analyze/refused", headers=as_user("alice")).status_code == 422
    with app.app_context():
        assert billing_of(app).allowance("alice", "analysis").used == 1


def test_a_refund_leaves_no_usage_event(app: Flask, billing: ProfileBilling) -> None:
    from flask_profile_billing import UsageEventRow

    analyze(app.test_client())
    app.test_client().post("/analyze/refused", headers=as_user("alice"))

    db = app.extensions["sqlalchemy"]
    events = db.session.scalars(db.select(UsageEventRow)).all()
    assert [
        (event.account_id, event.actor_user_id, event.metric, event.amount) for event in events
    ] == [("user:alice", "alice", "analysis", 1)]


def test_a_retry_with_the_same_idempotency_key_is_charged_once(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    first = analyze(client, **{"Idempotency-Key": "job-42"})
    retry = analyze(client, **{"Idempotency-Key": "job-42"})
    other = analyze(client, **{"Idempotency-Key": "job-43"})

    assert [first.status_code, retry.status_code, other.status_code] == [200, 200, 200]
    assert billing.allowance("alice", "analysis").used == 2
    assert retry.headers["X-Quota-Remaining"] == "19"


def test_idempotency_keys_belong_to_one_user(client: FlaskClient, billing: ProfileBilling) -> None:
    analyze(client, "alice", **{"Idempotency-Key": "shared"})
    analyze(client, "bob", **{"Idempotency-Key": "shared"})

    assert billing.allowance("bob", "analysis").used == 1


def test_a_failed_request_can_be_retried_with_its_key(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    headers = as_user("alice", **{"Idempotency-Key": "retry-me"})
    assert client.post("/analyze/refused", headers=headers).status_code == 422

    assert client.post("/analyze", headers=headers).status_code == 200
    assert billing.allowance("alice", "analysis").used == 1


def test_an_overlong_idempotency_key_is_a_400_that_charges_nothing(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    response = analyze(client, **{"Idempotency-Key": "k" * 256})

    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "INVALID_REQUEST"
    assert "Idempotency-Key" in body["details"]["fields"]
    assert billing.allowance("alice", "analysis").used == 0


def test_view_arguments_are_logged_as_the_usage_event_resources(app: Flask) -> None:
    from flask_profile_billing import UsageEventRow

    app.test_client().post("/analyze/app-7", headers=as_user("alice"))

    db = app.extensions["sqlalchemy"]
    event = db.session.scalars(db.select(UsageEventRow)).one()
    assert event.resources == {"application_id": "app-7"}


def test_anonymous_users_are_handed_to_flask_login(app: Flask, billing: ProfileBilling) -> None:
    response = app.test_client().post("/analyze", headers={"Accept": "application/json"})

    assert response.status_code == 401  # no login_view: Flask-Login aborts with 401


def test_anonymous_users_are_redirected_to_the_login_view(app: Flask) -> None:
    app.login_manager.login_view = "login"  # type: ignore[attr-defined]
    app.add_url_rule("/login", "login", lambda: "login form")

    response = app.test_client().post("/analyze")

    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_options_requests_pass_uncharged(client: FlaskClient, billing: ProfileBilling) -> None:
    response = client.options("/analyze/preflight", headers=as_user("alice"))

    assert response.status_code == 200
    assert billing.allowance("alice", "analysis").used == 0


def test_a_new_period_starts_at_zero_without_any_job(
    client: FlaskClient, billing: ProfileBilling, clock: Clock
) -> None:
    use_up_analyses(client)
    clock.set(NOVEMBER_FIRST)

    assert analyze(client).status_code == 200
    assert billing.allowance("alice", "analysis").used == 1


def test_unlimited_plans_are_never_refused_and_send_no_limit_headers(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    billing.change_plan("erin", "enterprise")

    responses = [analyze(client, "erin") for _ in range(FREE_ANALYSES + 5)]

    assert {response.status_code for response in responses} == {200}
    assert "X-Quota-Limit" not in responses[-1].headers
    assert billing.allowance("erin", "analysis").used == FREE_ANALYSES + 5


def test_an_upgrade_raises_the_limit_in_the_same_period(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    use_up_analyses(client)
    billing.change_plan("alice", "starter")

    response = analyze(client)

    assert response.status_code == 200
    assert response.headers["X-Quota-Remaining"] == str(200 - FREE_ANALYSES - 1)


def test_feature_guard_refuses_plans_without_the_feature(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    refused = client.get("/api/data", headers=as_user("alice"))
    billing.change_plan("alice", "professional")
    allowed = client.get("/api/data", headers=as_user("alice"))

    assert refused.status_code == 403
    assert refused.get_json() == {
        "success": False,
        "error": "FEATURE_NOT_AVAILABLE",
        "message": "API access is not available on the Free plan",
        "details": {"feature": "api_access", "plan": "free"},
    }
    assert allowed.status_code == 200


def test_capacity_guard_caps_the_hosts_count(client: FlaskClient, billing: ProfileBilling) -> None:
    first = client.post("/vacancies", headers=as_user("alice"))
    second = client.post("/vacancies", headers=as_user("alice"))

    assert first.status_code == 201
    assert first.headers["X-Quota-Remaining"] == "0"
    assert second.status_code == 429
    assert second.get_json()["message"] == "Active vacancy limit reached (1)"
    assert "Retry-After" not in second.headers  # a gauge does not reset by itself
    assert billing.capacity("alice", "active_vacancies").used == 1


def test_capacity_lock_is_released_when_the_view_fails(app: Flask) -> None:
    from flask_profile_billing import requires_capacity
    from flask_profile_billing.state import get_state

    @app.post("/failing-vacancy")
    @requires_capacity("active_vacancies")
    def failing_vacancy() -> Any:
        raise RuntimeError("the host's insert failed")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert app.test_client().post("/failing-vacancy", headers=as_user("alice")).status_code == 500

    with app.app_context():
        engine = get_state().runtime.engine
    if engine.dialect.name == "postgresql":
        # A session lock left on a pooled connection would show here (and block other workers).
        with engine.connect() as connection:
            advisory = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            assert connection.execute(text(advisory)).scalar_one() == 0
        return
    # SQLite: another thread takes the process lock at once (a lock left behind never frees).
    taken = threading.Event()

    def take_the_lock() -> None:
        with app.app_context(), get_state().quotas.capacity_held("user:alice", "active_vacancies"):
            taken.set()

    worker = threading.Thread(target=take_the_lock, daemon=True)
    worker.start()
    assert taken.wait(timeout=10)
    worker.join(timeout=10)


def test_a_subscription_that_keeps_changing_answers_409_and_charges_nothing(
    app: Flask, client: FlaskClient, billing: ProfileBilling, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_profile_billing.state import get_state

    with app.app_context():
        quotas = get_state().quotas
    # As if a concurrent plan change ended the subscription before every attempt to charge.
    monkeypatch.setattr(quotas, "_charge_in_transaction", lambda request: None)
    monkeypatch.setattr(quotas, "_charge_in_one_statement", lambda request: None)

    response = analyze(client)

    assert response.status_code == 409
    assert response.get_json()["error"] == "SUBSCRIPTION_CONFLICT"
    monkeypatch.undo()
    assert billing.allowance("alice", "analysis").used == 0


def test_error_handlers_of_the_host_can_replace_the_refusal(app: Flask) -> None:
    from flask_profile_billing import QuotaExceeded

    @app.errorhandler(QuotaExceeded)
    def custom(error: QuotaExceeded) -> tuple[str, int]:
        return f"custom: {error.metric}", 429

    client = app.test_client()
    use_up_analyses(client)

    assert analyze(client).get_data(as_text=True) == "custom: analysis"


def test_signals_report_consumption_low_quota_and_refusal(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    received: list[tuple[str, str, int]] = []

    def recorder(name: str) -> Any:
        def receive(app: Flask, *, user_id: str, metric: str, allowance: Any, **_: Any) -> None:
            received.append((name, metric, allowance.used))

        return receive

    consumed, low, exceeded = recorder("consumed"), recorder("low"), recorder("exceeded")
    with (
        signals.quota_consumed.connected_to(consumed),
        signals.quota_low.connected_to(low),
        signals.quota_exceeded.connected_to(exceeded),
    ):
        use_up_analyses(client)
        analyze(client)

    assert [entry for entry in received if entry[0] == "low"] == [("low", "analysis", 16)]
    assert len([entry for entry in received if entry[0] == "consumed"]) == FREE_ANALYSES
    assert received[-1] == ("exceeded", "analysis", FREE_ANALYSES)


@pytest.mark.parametrize("amount", [0, -1, 1.5, True])
def test_guards_refuse_nonsense_amounts_at_decoration_time(amount: Any) -> None:
    from flask_profile_billing import requires_capacity, requires_quota

    with pytest.raises(ValueError, match="positive integer"):
        requires_quota("analysis", amount=amount)
    with pytest.raises(ValueError, match="positive integer"):
        requires_capacity("active_vacancies", amount=amount)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_on_postgresql_a_guarded_request_costs_one_statement(
    client: FlaskClient, app: Flask
) -> None:
    from sqlalchemy import event

    analyze(client)  # the first request creates the subscription
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if HOST_USERS_TABLE not in statement:  # the host's user loader, not the guard
            statements.append(statement)

    engine = app.extensions["sqlalchemy"].engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert analyze(client).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)

    assert len(statements) == 1, statements
