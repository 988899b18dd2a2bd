"""A pure JSON API on Flask-JWT-Extended, glued to the extension with the "Token clients" recipe
of docs/integration.md, run as written: a ``LoginManager`` with no login view and no sessions, whose
``request_loader`` reads the verified JWT's identity. Guards and the billing JSON API take the
same ``Authorization: Bearer`` token; every refusal, including the anonymous one of a guard reached
without ``@jwt_required()``, is JSON whatever the client's ``Accept``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask, g, jsonify
from flask_jwt_extended import JWTManager, create_access_token, get_jwt_identity, jwt_required

from flask_profile_billing import ProfileBilling, requires_quota
from tests.support.host_app import BILLING_KEY, Clock, billing_of, db
from tests.support.recipes import run_recipe

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
FREE_ANALYSES = 20


def build_host(database_url: str, clock: Clock) -> Flask:
    app = Flask("jwt_host")
    app.config.update(
        TESTING=True,
        SECRET_KEY="test",
        JWT_SECRET_KEY="a-jwt-secret-of-at-least-32-bytes!",
        SQLALCHEMY_DATABASE_URI=database_url,
        BILLING_CLOCK=clock,
    )
    db.init_app(app)
    JWTManager(app)

    @app.before_request
    def forget_previous_user() -> None:
        # The test client reuses one app context: Flask-Login's per-context cache must not leak.
        g.pop("_login_user", None)

    # The recipe, as docs/integration.md shows it, in the host's module.
    run_recipe("flask-jwt-extended")["login_manager"].init_app(app)

    # -- the host's routes -------------------------------------------------------------------------

    @app.post("/token/<user_id>")
    def issue_token(user_id: str) -> Any:
        return jsonify(access_token=create_access_token(identity=user_id))

    @app.post("/predict")
    @jwt_required()
    @requires_quota("analysis")
    def predict() -> Any:
        return jsonify(success=True, for_user=get_jwt_identity())

    @app.post("/quick-predict")
    @requires_quota("analysis")  # reached without the host's own auth decorator
    def quick_predict() -> Any:
        return jsonify(success=True)

    billing = ProfileBilling(app, db)
    with app.app_context():
        billing.create_all()
    app.extensions[BILLING_KEY] = billing
    return app


@pytest.fixture
def host(database_url: str, clock: Clock) -> Flask:
    return build_host(database_url, clock)


def token_for(app: Flask, user_id: str) -> str:
    token: str = app.test_client().post(f"/token/{user_id}").get_json()["access_token"]
    return token


def bearer(token: str, accept: str = "application/json") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": accept}


def error_of(response: Any) -> str | None:
    body = response.get_json(silent=True)
    return body.get("error") if isinstance(body, dict) else None


def used(app: Flask, user_id: str) -> int:
    with app.app_context():
        return billing_of(app).allowance(user_id, "analysis").used


def test_guards_and_the_billing_api_take_the_jwt(host: Flask) -> None:
    client = host.test_client()
    headers = bearer(token_for(host, "alice"))

    predict = client.post("/predict", headers=headers)
    quick = client.post("/quick-predict", headers=headers)
    current = client.get("/api/subscription/current", headers=headers)
    # A write with the token and no CSRF token: a header is no cookie a page could ride on.
    cancel = client.post("/api/subscription/cancel", headers=headers)

    assert (predict.status_code, predict.get_json()["for_user"]) == (200, "alice")
    assert predict.headers["X-Quota-Remaining"] == str(FREE_ANALYSES - 1)
    assert quick.status_code == 200
    assert current.status_code == 200
    assert current.get_json()["data"]["subscription"]["plan"]["plan_type"] == "free"
    assert (cancel.status_code, error_of(cancel)) == (409, "NOT_CANCELLABLE")
    assert used(host, "alice") == 2


@pytest.mark.parametrize("accept", ["application/json", "*/*"])
def test_a_guard_without_jwt_required_answers_anonymous_clients_in_json(
    host: Flask, accept: str
) -> None:
    client = host.test_client()

    response = client.post("/quick-predict", headers={"Accept": accept})

    assert response.status_code == 401
    assert response.mimetype == "application/json"
    assert error_of(response) == "UNAUTHORIZED"


def test_an_anonymous_browser_navigation_gets_the_401_page(host: Flask) -> None:
    """Nothing tells it from a browser (no token, no JSON body): the page, not werkzeug's."""
    response = host.test_client().post("/quick-predict", headers={"Accept": BROWSER_ACCEPT})

    assert (response.status_code, response.mimetype) == (401, "text/html")
    assert "Log in to use this endpoint" in response.get_data(as_text=True)


def test_an_expired_token_is_401_json_with_a_browsers_accept(host: Flask) -> None:
    with host.app_context():
        expired = create_access_token(identity="alice", expires_delta=timedelta(seconds=-60))
    client = host.test_client()

    guard_only = client.post("/quick-predict", headers=bearer(expired, BROWSER_ACCEPT))
    api = client.get("/api/profile/me", headers=bearer(expired, BROWSER_ACCEPT))

    assert (guard_only.status_code, error_of(guard_only)) == (401, "UNAUTHORIZED")
    assert (api.status_code, error_of(api)) == (401, "UNAUTHORIZED")
    assert used(host, "alice") == 0


def test_the_quota_refusal_is_json_with_its_headers_whatever_accept_says(host: Flask) -> None:
    with host.app_context():
        billing_of(host).consume("alice", "analysis", FREE_ANALYSES)
    client = host.test_client()

    response = client.post("/predict", headers=bearer(token_for(host, "alice"), BROWSER_ACCEPT))

    assert (response.status_code, response.mimetype) == (429, "application/json")
    assert error_of(response) == "LIMIT_EXCEEDED"
    assert response.headers["X-Quota-Remaining"] == "0"
    assert int(response.headers["Retry-After"]) > 0
