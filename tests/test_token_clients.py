"""Who may call the JSON API and when CSRF applies: login is decided before CSRF, API clients that
send ``Authorization: Bearer <token>`` (a Flask-Login ``request_loader``) need no CSRF token, and
browser sessions (the session cookie) always do, also on hosts with Flask-WTF's global
``CSRFProtect`` initialised before or after the extension.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import pytest
from flask import Flask, Request, jsonify, session
from flask.testing import FlaskClient
from flask_login import LoginManager, current_user, login_required, login_user
from flask_wtf.csrf import CSRFProtect, generate_csrf

from flask_profile_billing import ProfileBilling, requires_quota
from flask_profile_billing.payments import TestPaymentProvider
from tests.support.host_app import BILLING_KEY, Clock, User, billing_of, db, load_user

# What a host keeps (hashed) in its database: the token a user created for a script.
API_TOKENS = {"alice-api-token": "alice"}
JSON = {"Accept": "application/json"}
CANCEL = "/api/subscription/cancel"
# How the host protects its own writes from cross-site requests:
# - "none": no global protection (the extension's API still checks cookie sessions itself);
# - "before" / "after": Flask-WTF's global CSRFProtect, initialised before or after init_app;
# - "cookie sessions": CSRFProtect for every request but those of token clients (docs/api.md).
HostCsrf = Literal["none", "before", "after", "cookie sessions"]
MakeHost = Callable[[HostCsrf], Flask]


def load_token_client(request: Request) -> User | None:
    """The host's request_loader: ``Authorization: Bearer <token>`` names a user, or nobody."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    user_id = API_TOKENS.get(token)
    return None if user_id is None else load_user(user_id)  # read from the host's users table


def build_host(database_url: str, clock: Clock, host_csrf: HostCsrf) -> Flask:
    app = Flask("token_host")
    app.config.update(
        TESTING=True,
        SECRET_KEY="test",
        SQLALCHEMY_DATABASE_URI=database_url,
        BILLING_CLOCK=clock,
        BILLING_PAYMENT_PROVIDER=TestPaymentProvider(),
        BILLING_WEBHOOK_SECRET="token-host-secret",
    )
    db.init_app(app)
    login_manager = LoginManager(app)
    login_manager.request_loader(load_token_client)
    login_manager.user_loader(load_user)
    csrf = CSRFProtect()
    if host_csrf == "before":
        csrf.init_app(app)
    billing = ProfileBilling(app, db)
    if host_csrf == "cookie sessions":
        app.config["WTF_CSRF_CHECK_DEFAULT"] = False  # checked below, for browsers only
    if host_csrf in ("after", "cookie sessions"):
        csrf.init_app(app)
    if host_csrf == "cookie sessions":

        @app.before_request
        def protect_cookie_sessions() -> None:
            # A token client sends no cookie a cross-site page could ride on.
            if "_user_id" in session or not current_user.is_authenticated:
                csrf.protect(apply_exemptions=True)  # the extension's API decides for itself

    @app.get("/browser-login/<user_id>")
    def browser_login(user_id: str) -> Any:
        # A form login, as a browser does it: the user id lands in the session cookie.
        login_user(load_user(user_id))
        return jsonify(csrf_token=generate_csrf())

    @app.post("/notes")
    @login_required
    def add_note() -> Any:
        return jsonify(success=True)

    @app.post("/analyze")
    @requires_quota("analysis")
    def analyze() -> Any:
        return jsonify(success=True)

    with app.app_context():
        db.create_all()  # the host's users table
        billing.create_all()
    app.extensions[BILLING_KEY] = billing
    return app


@pytest.fixture
def make_host(database_url: str, clock: Clock) -> MakeHost:
    """Build a host app on the test's database (SQLite, then PostgreSQL)."""

    def make(host_csrf: HostCsrf) -> Flask:
        return build_host(database_url, clock, host_csrf)

    return make


def bearer(token: str) -> dict[str, str]:
    return {**JSON, "Authorization": f"Bearer {token}"}


def browser_login(client: FlaskClient, user_id: str) -> str:
    """Log in with the session cookie; the CSRF token of that session."""
    token: str = client.get(f"/browser-login/{user_id}").get_json()["csrf_token"]
    return token


def error_of(response: Any) -> str | None:
    body = response.get_json(silent=True)
    return body.get("error") if isinstance(body, dict) else None


def give_starter_plan(app: Flask, user_id: str) -> None:
    with app.app_context():
        billing_of(app).change_plan(user_id, "starter")


# --- login before CSRF, under the host's global CSRFProtect ----------------------------------------


@pytest.mark.parametrize("host_csrf", ["before", "after"])
def test_anonymous_api_writes_are_401_not_csrf_failures(
    make_host: MakeHost, host_csrf: HostCsrf
) -> None:
    client = make_host(host_csrf).test_client()

    writes = [
        client.post(CANCEL, headers=JSON),
        client.post("/api/subscription/upgrade", json={"plan_type": "starter"}, headers=JSON),
        client.patch("/api/profile/me", json={"company": "Acme"}, headers=JSON),
        client.post("/api/profile/events", json={"event": "profile:view"}, headers=JSON),
    ]
    unsigned_webhook = client.post("/api/billing/webhooks/test", json={"event_id": "e"})

    assert [(write.status_code, error_of(write)) for write in writes] == [
        (401, "UNAUTHORIZED")
    ] * len(writes)
    assert (unsigned_webhook.status_code, error_of(unsigned_webhook)) == (401, "INVALID_SIGNATURE")


@pytest.mark.parametrize("host_csrf", ["before", "after"])
def test_cookie_sessions_still_need_the_csrf_token_for_api_writes(
    make_host: MakeHost, host_csrf: HostCsrf
) -> None:
    app = make_host(host_csrf)
    give_starter_plan(app, "alice")
    client = app.test_client()
    token = browser_login(client, "alice")

    missing = client.post(CANCEL, headers=JSON)
    wrong = client.post(CANCEL, headers={**JSON, "X-CSRFToken": "not-the-token"})
    cancelled = client.post(CANCEL, headers={**JSON, "X-CSRFToken": token})

    assert (missing.status_code, error_of(missing)) == (400, "CSRF_FAILED")
    assert (wrong.status_code, error_of(wrong)) == (400, "CSRF_FAILED")
    assert cancelled.status_code == 200, cancelled.get_json()
    assert cancelled.get_json()["data"]["subscription"]["status"] == "cancelled"


@pytest.mark.parametrize("host_csrf", ["before", "after"])
def test_the_hosts_own_writes_stay_protected_by_its_csrf_protect(
    make_host: MakeHost, host_csrf: HostCsrf
) -> None:
    client = make_host(host_csrf).test_client()
    anonymous = client.post("/notes", headers=JSON)
    token = browser_login(client, "alice")

    without_token = client.post("/notes", headers=JSON)
    with_token = client.post("/notes", headers={**JSON, "X-CSRFToken": token})

    assert anonymous.status_code == 400  # CSRFProtect answers before the host's login check
    assert without_token.status_code == 400
    assert with_token.status_code == 200


# --- token clients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("host_csrf", ["none", "cookie sessions"])
def test_a_token_client_needs_no_csrf_token(make_host: MakeHost, host_csrf: HostCsrf) -> None:
    app = make_host(host_csrf)
    give_starter_plan(app, "alice")
    client = app.test_client()
    headers = bearer("alice-api-token")

    current = client.get("/api/subscription/current", headers=headers)
    edited = client.patch("/api/profile/me", json={"company": "Acme AI"}, headers=headers)
    analysed = client.post("/analyze", headers=headers)
    cancelled = client.post(CANCEL, headers=headers)

    assert current.status_code == 200
    assert current.get_json()["data"]["subscription"]["plan"]["id"] == "starter"
    assert edited.status_code == 200, edited.get_json()
    assert edited.get_json()["data"]["company"] == "Acme AI"
    assert analysed.status_code == 200
    assert cancelled.status_code == 200, cancelled.get_json()
    with app.app_context():
        billing = billing_of(app)
        assert billing.allowance("alice", "analysis").used == 1
        assert billing.subscription("alice").cancelled_at is not None


@pytest.mark.parametrize("host_csrf", ["none", "cookie sessions"])
@pytest.mark.parametrize(
    "authorization", ["Bearer not-a-token", "Bearer ", "Basic alice-api-token", "alice-api-token"]
)
def test_a_bad_token_is_401(make_host: MakeHost, host_csrf: HostCsrf, authorization: str) -> None:
    app = make_host(host_csrf)
    client = app.test_client()
    headers = {**JSON, "Authorization": authorization}

    answers = [
        client.get("/api/subscription/current", headers=headers),
        client.post(CANCEL, headers=headers),
        client.patch("/api/profile/me", json={"company": "Acme"}, headers=headers),
    ]
    guarded = client.post("/analyze", headers=headers)

    assert [(answer.status_code, error_of(answer)) for answer in answers] == [
        (401, "UNAUTHORIZED")
    ] * len(answers)
    # The guard hands anonymous users to Flask-Login (no login_view here: 401); on the
    # "cookie sessions" host the host's CSRF check answers first, as for any anonymous write.
    assert guarded.status_code == (401 if host_csrf == "none" else 400)


@pytest.mark.parametrize("host_csrf", ["none", "cookie sessions"])
def test_a_browser_session_on_the_same_app_still_needs_the_csrf_token(
    make_host: MakeHost, host_csrf: HostCsrf
) -> None:
    app = make_host(host_csrf)
    client = app.test_client()
    token = browser_login(client, "bob")
    edit = {"company": "Bob & Co"}

    refused = client.patch("/api/profile/me", json=edit, headers=JSON)
    accepted = client.patch("/api/profile/me", json=edit, headers={**JSON, "X-CSRFToken": token})
    read = client.get("/api/profile/me", headers=JSON)  # reads need no token

    assert (refused.status_code, error_of(refused)) == (400, "CSRF_FAILED")
    assert accepted.status_code == 200, accepted.get_json()
    assert read.get_json()["data"]["company"] == "Bob & Co"
    if host_csrf == "cookie sessions":  # the host protects its guarded view for browsers too
        assert client.post("/analyze", headers=JSON).status_code == 400
        assert client.post("/analyze", headers={**JSON, "X-CSRFToken": token}).status_code == 200


def test_a_session_cookie_wins_over_a_token_sent_with_it(make_host: MakeHost) -> None:
    # Flask-Login prefers the session's user, so a page that adds someone's token to a browser's
    # request is still a cookie-authenticated write, and still needs the CSRF token.
    client = make_host("none").test_client()
    browser_login(client, "bob")

    refused = client.patch(
        "/api/profile/me", json={"company": "Mallory"}, headers=bearer("alice-api-token")
    )

    assert (refused.status_code, error_of(refused)) == (400, "CSRF_FAILED")


def test_a_cookie_write_over_https_needs_a_same_origin_referrer(make_app: Any) -> None:
    """The API keeps the strict Referer check of Flask-WTF for cookie writes over HTTPS."""
    app = make_app()
    client = app.test_client()
    secure = {"base_url": "https://billing.test"}
    token = client.post("/session-login/alice", **secure).get_json()["csrf_token"]
    headers = {"Accept": "application/json", "X-CSRFToken": token}

    without_referrer = client.post("/api/subscription/cancel", headers=headers, **secure)
    foreign = client.post(
        "/api/subscription/cancel",
        headers={**headers, "Referer": "https://evil.example/page"},
        **secure,
    )
    same_site = client.post(
        "/api/subscription/cancel",
        headers={**headers, "Referer": "https://billing.test/profile"},
        **secure,
    )

    assert without_referrer.status_code == 400
    assert without_referrer.get_json()["error"] == "CSRF_FAILED"
    assert foreign.status_code == 400
    assert same_site.status_code != 400  # past CSRF (409: a free plan has nothing to cancel)
