"""Refusals in the client's format, decided by more than ``Accept``: a JSON client gets the JSON
error shape even with a browser's ``Accept`` when it sends a JSON body, an ``Authorization`` header
or ``X-Requested-With: XMLHttpRequest``; anonymous JSON clients of a guard get 401 ``UNAUTHORIZED``
in the error shape, while browsers keep the login redirect; and a host's own error handler for a
refusal keeps ``Retry-After`` and the quota headers.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, jsonify
from flask.testing import FlaskClient

from flask_profile_billing import FeatureNotAvailable, ProfileBilling, QuotaExceeded
from tests.support.host_app import AppFactory, billing_of

# What Firefox and Chrome send for a navigation, and what many HTTP libraries copy.
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
FREE_ANALYSES = 20
QUOTA_HEADERS = ("Retry-After", "X-Quota-Limit", "X-Quota-Remaining", "X-Quota-Reset")


def error_of(response: Any) -> str | None:
    body = response.get_json(silent=True)
    return body.get("error") if isinstance(body, dict) else None


def use_up_analyses(billing: ProfileBilling, user_id: str = "alice") -> None:
    billing.consume(user_id, "analysis", FREE_ANALYSES)


def with_login_view(app: Flask) -> Flask:
    app.login_manager.login_view = "login"  # type: ignore[attr-defined]
    app.add_url_rule("/login", "login", lambda: "login form")
    return app


# --- anonymous clients of a guard -----------------------------------------------------------------


@pytest.mark.parametrize("login_view", [False, True], ids=["no login view", "login view"])
@pytest.mark.parametrize(
    "headers",
    [
        {"Accept": "application/json"},
        {"Accept": BROWSER_ACCEPT, "Authorization": "Bearer expired-token"},
        {"Accept": BROWSER_ACCEPT, "X-Requested-With": "XMLHttpRequest"},
    ],
    ids=["accept json", "authorization", "xhr"],
)
def test_anonymous_json_clients_of_a_guard_get_401_in_the_error_shape(
    app: Flask, headers: dict[str, str], login_view: bool
) -> None:
    if login_view:
        with_login_view(app)

    response = app.test_client().post("/analyze", headers=headers)

    assert response.status_code == 401
    assert response.mimetype == "application/json"
    assert error_of(response) == "UNAUTHORIZED"
    assert response.get_json()["success"] is False


def test_an_anonymous_json_body_gets_401_json(app: Flask) -> None:
    with_login_view(app)

    response = app.test_client().post(
        "/analyze", json={"text": "..."}, headers={"Accept": BROWSER_ACCEPT}
    )

    assert (response.status_code, error_of(response)) == (401, "UNAUTHORIZED")


def test_anonymous_browsers_keep_the_login_redirect(app: Flask) -> None:
    with_login_view(app)
    client = app.test_client()

    navigation = client.post("/analyze", headers={"Accept": BROWSER_ACCEPT})
    no_accept = client.post("/analyze")

    assert navigation.status_code == 302
    assert navigation.headers["Location"].startswith("/login")
    assert no_accept.status_code == 302


def test_anonymous_browsers_without_a_login_view_get_the_error_page(app: Flask) -> None:
    response = app.test_client().post("/analyze", headers={"Accept": BROWSER_ACCEPT})

    assert response.status_code == 401
    assert response.mimetype == "text/html"
    assert "Log in to use this endpoint" in response.get_data(as_text=True)


def test_the_hosts_unauthorized_handler_still_decides(app: Flask) -> None:
    @app.login_manager.unauthorized_handler  # type: ignore[attr-defined]
    def host_unauthorized() -> Any:
        return jsonify(reason="sign in first"), 401

    response = app.test_client().post("/analyze", headers={"Accept": "application/json"})

    assert response.status_code == 401
    assert response.get_json() == {"reason": "sign in first"}


# --- refusals to JSON clients with a browser's Accept --------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [{"Authorization": "Bearer alice-token"}, {"X-Requested-With": "XMLHttpRequest"}],
    ids=["authorization", "xhr"],
)
def test_refusals_to_code_with_a_browsers_accept_are_json(
    client: FlaskClient, billing: ProfileBilling, extra: dict[str, str]
) -> None:
    use_up_analyses(billing)
    headers = {"X-User": "alice", "Accept": BROWSER_ACCEPT, **extra}

    quota = client.post("/analyze", headers=headers)
    feature = client.get("/api/data", headers=headers)

    assert (quota.status_code, quota.mimetype, error_of(quota)) == (
        429,
        "application/json",
        "LIMIT_EXCEEDED",
    )
    assert (feature.status_code, feature.mimetype, error_of(feature)) == (
        403,
        "application/json",
        "FEATURE_NOT_AVAILABLE",
    )


def test_a_refusal_of_a_json_body_is_json(client: FlaskClient, billing: ProfileBilling) -> None:
    use_up_analyses(billing)

    response = client.post(
        "/analyze", json={"text": "..."}, headers={"X-User": "alice", "Accept": BROWSER_ACCEPT}
    )

    assert (response.status_code, response.mimetype) == (429, "application/json")
    assert response.get_json()["details"]["remaining"] == 0


def test_a_browser_navigation_still_gets_the_refusal_page(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    use_up_analyses(billing)

    response = client.post(
        "/analyze", data={"text": "..."}, headers={"X-User": "alice", "Accept": BROWSER_ACCEPT}
    )

    assert (response.status_code, response.mimetype) == (429, "text/html")


# --- a host's own handler of the refusal ---------------------------------------------------------


def host_with_handler(make_app: AppFactory, answer: str) -> Flask:
    app = make_app()

    @app.errorhandler(QuotaExceeded)
    def over_quota(error: QuotaExceeded) -> Any:
        if answer == "json":
            return jsonify(ok=False, why=error.message), 429
        if answer == "html":
            return f"<p>{error.message}</p>", 429
        if answer == "exception":
            return error  # werkzeug renders it, with get_headers()
        return jsonify(ok=True, fallback="cached result"), 200  # caught and served otherwise

    @app.errorhandler(FeatureNotAvailable)
    def not_on_plan(error: FeatureNotAvailable) -> Any:
        return jsonify(ok=False, upgrade_to="pro"), 403

    return app


@pytest.mark.parametrize("answer", ["json", "html", "exception"])
def test_a_hosts_refusal_handler_keeps_retry_after_and_the_quota_headers(
    make_app: AppFactory, answer: str
) -> None:
    app = host_with_handler(make_app, answer)
    with app.app_context():
        use_up_analyses(billing_of(app))

    response = app.test_client().post(
        "/analyze", headers={"X-User": "alice", "Accept": "application/json"}
    )

    assert response.status_code == 429
    assert {name: response.headers.get(name) for name in QUOTA_HEADERS} == {
        "Retry-After": response.headers.get("Retry-After"),
        "X-Quota-Limit": str(FREE_ANALYSES),
        "X-Quota-Remaining": "0",
        "X-Quota-Reset": response.headers.get("X-Quota-Reset"),
    }
    assert int(response.headers["Retry-After"]) > 0
    assert int(response.headers["X-Quota-Reset"]) > 0
    if answer == "json":
        assert response.get_json()["ok"] is False  # the host's own body, untouched


def test_a_hosts_headers_win_over_the_refusals(make_app: AppFactory) -> None:
    app = make_app()

    @app.errorhandler(429)
    def over_quota(error: Exception) -> Any:
        return jsonify(ok=False), 429, {"Retry-After": "60"}

    with app.app_context():
        use_up_analyses(billing_of(app))

    response = app.test_client().post("/analyze", headers={"X-User": "alice"})

    assert response.headers["Retry-After"] == "60"
    assert response.headers["X-Quota-Remaining"] == "0"


def test_a_refusal_the_host_answered_otherwise_gets_no_refusal_headers(
    make_app: AppFactory,
) -> None:
    app = host_with_handler(make_app, "fallback")
    with app.app_context():
        use_up_analyses(billing_of(app))
    client = app.test_client()

    fallback = client.post("/analyze", headers={"X-User": "alice"})
    # The next refusal of the same client is another one: nothing of the last leaks into it.
    feature = client.get("/api/data", headers={"X-User": "alice"})

    assert fallback.status_code == 200
    assert "Retry-After" not in fallback.headers
    assert "X-Quota-Remaining" not in fallback.headers
    assert (feature.status_code, feature.get_json()) == (403, {"ok": False, "upgrade_to": "pro"})
    assert "X-Quota-Remaining" not in feature.headers


def test_a_refusal_of_billing_consume_in_a_hosts_view_keeps_its_headers_too(
    make_app: AppFactory,
) -> None:
    app = host_with_handler(make_app, "json")
    billing = billing_of(app)

    @app.post("/batch")
    def batch() -> Any:
        billing.consume("alice", "analysis", FREE_ANALYSES + 1)  # more than the plan allows
        return jsonify(ok=True)

    response = app.test_client().post("/batch", headers={"X-User": "alice"})

    assert (response.status_code, response.get_json()["ok"]) == (429, False)
    assert response.headers["X-Quota-Limit"] == str(FREE_ANALYSES)
    assert response.headers["X-Quota-Remaining"] == str(FREE_ANALYSES)  # nothing was charged
    assert int(response.headers["Retry-After"]) > 0
