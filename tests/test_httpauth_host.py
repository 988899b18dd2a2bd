"""A host that authenticates its API clients with Flask-HTTPAuth (HTTP Basic) with the "Token
clients" recipe of docs/integration.md, run as written: a Flask-Login ``request_loader`` that reuses the user
Flask-HTTPAuth verified for this request (each request hashes a password once), inactive or
unconfirmed users answered 401/403 in JSON and never redirected to the host's login page, and the
billing JSON API working with the same credentials.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
import werkzeug.security
from flask import Flask, g, jsonify
from flask_login import LoginManager, UserMixin
from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from flask_profile_billing import ProfileBilling, requires_quota
from tests.support.host_app import BILLING_KEY, Clock, billing_of, db
from tests.support.recipes import run_recipe

# Cheap to compute in tests; the count of calls is what matters here.
HASH_METHOD = "pbkdf2:sha256:1000"
PASSWORD = "correct horse"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


class ApiMember(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "host_api_members"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    confirmed: Mapped[bool] = mapped_column(default=True)
    active: Mapped[bool] = mapped_column(default=True)

    @property
    def is_active(self) -> bool:  # Flask-Login: an inactive user is never authenticated
        return self.active


class PasswordChecks:
    """The host's password check, counted: it is the expensive part of every request."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, stored: str, given: str) -> bool:
        self.calls += 1
        return check_password_hash(stored, given)


def build_host(database_url: str, clock: Clock) -> Flask:
    app = Flask("httpauth_host")
    app.config.update(
        TESTING=True,
        SECRET_KEY="test",
        SQLALCHEMY_DATABASE_URI=database_url,
        BILLING_CLOCK=clock,
    )
    db.init_app(app)
    login_manager = LoginManager(app)
    login_manager.login_view = "login"  # the host's pages for browsers

    @app.before_request
    def forget_previous_user() -> None:
        # The test client reuses one app context: Flask-Login's per-context cache must not leak.
        g.pop("_login_user", None)
        g.pop("flask_httpauth_user", None)

    # The recipe, as docs/integration.md shows it, in the host's module.
    auth = run_recipe("flask-httpauth", db=db, User=ApiMember, login_manager=login_manager)["auth"]

    # -- the host's routes -------------------------------------------------------------------------

    @app.get("/login")
    def login() -> str:
        return "the login form, for browsers"

    @app.post("/reports")
    @auth.login_required(role="confirmed")
    @requires_quota("analysis")
    def reports() -> Any:
        return jsonify(success=True, by=auth.current_user().email)

    @app.post("/quick-report")
    @requires_quota("analysis")  # no auth decorator: the guard meets the loader alone
    def quick_report() -> Any:
        return jsonify(success=True)

    billing = ProfileBilling(app, db)
    with app.app_context():
        db.create_all()
        billing.create_all()
        for email, confirmed, active in [
            ("alice@example.com", True, True),
            ("unconfirmed@example.com", False, True),
            ("gone@example.com", True, False),
        ]:
            password_hash = generate_password_hash(PASSWORD, method=HASH_METHOD)
            db.session.add(
                ApiMember(
                    email=email, password_hash=password_hash, confirmed=confirmed, active=active
                )
            )
        db.session.commit()
    app.extensions[BILLING_KEY] = billing
    return app


@pytest.fixture
def check_password(monkeypatch: pytest.MonkeyPatch) -> PasswordChecks:
    """Werkzeug's password check, counted where the recipe imports it from."""
    checks = PasswordChecks()
    monkeypatch.setattr(werkzeug.security, "check_password_hash", checks)
    return checks


@pytest.fixture
def host(database_url: str, clock: Clock, check_password: PasswordChecks) -> Flask:
    return build_host(database_url, clock)


def basic(email: str, password: str = PASSWORD, accept: str = "application/json") -> dict[str, str]:
    credentials = base64.b64encode(f"{email}:{password}".encode()).decode()
    return {"Authorization": f"Basic {credentials}", "Accept": accept}


def analyses_used(app: Flask, email: str) -> int:
    with app.app_context():
        member = db.session.scalar(select(ApiMember).where(ApiMember.email == email))
        assert member is not None
        billing = billing_of(app)
        return billing.allowance(str(member.id), "analysis").used


def error_of(response: Any) -> str | None:
    body = response.get_json(silent=True)
    return body.get("error") if isinstance(body, dict) else None


def test_a_guarded_route_behind_httpauth_hashes_the_password_once(
    host: Flask, check_password: PasswordChecks
) -> None:
    client = host.test_client()

    first = client.post("/reports", headers=basic("alice@example.com"))
    second = client.post("/quick-report", headers=basic("alice@example.com"))

    assert (first.status_code, second.status_code) == (200, 200)
    assert first.get_json()["by"] == "alice@example.com"
    assert first.headers["X-Quota-Remaining"] == "19"
    assert check_password.calls == 2  # one per request, whoever asked who the user is
    assert analyses_used(host, "alice@example.com") == 2


def test_the_billing_json_api_takes_the_same_credentials(
    host: Flask, check_password: PasswordChecks
) -> None:
    client = host.test_client()

    profile = client.get("/api/profile/me", headers=basic("alice@example.com"))
    current = client.get("/api/subscription/current", headers=basic("alice@example.com"))
    # A write without a CSRF token (credentials in a header are no cookie a page could ride on):
    # past login and CSRF, refused only because a free plan has nothing to cancel.
    cancel = client.post("/api/subscription/cancel", headers=basic("alice@example.com"))

    assert profile.status_code == 200
    assert profile.get_json()["data"]["email"] == "alice@example.com"
    assert current.status_code == 200
    assert current.get_json()["data"]["subscription"]["plan"]["plan_type"] == "free"
    assert (cancel.status_code, error_of(cancel)) == (409, "NOT_CANCELLABLE")
    assert check_password.calls == 3


@pytest.mark.parametrize("accept", ["application/json", BROWSER_ACCEPT])
def test_unconfirmed_and_inactive_users_get_json_refusals_not_the_login_page(
    host: Flask, accept: str
) -> None:
    client = host.test_client()

    unconfirmed = client.post("/reports", headers=basic("unconfirmed@example.com", accept=accept))
    inactive = client.post("/reports", headers=basic("gone@example.com", accept=accept))
    inactive_quick = client.post("/quick-report", headers=basic("gone@example.com", accept=accept))
    inactive_api = client.get("/api/profile/me", headers=basic("gone@example.com", accept=accept))

    assert (unconfirmed.status_code, error_of(unconfirmed)) == (403, "FORBIDDEN")
    # Flask-HTTPAuth let them in (right password); the guard found no authenticated user.
    assert (inactive.status_code, error_of(inactive)) == (401, "UNAUTHORIZED")
    assert (inactive_quick.status_code, error_of(inactive_quick)) == (401, "UNAUTHORIZED")
    assert (inactive_api.status_code, error_of(inactive_api)) == (401, "UNAUTHORIZED")
    for response in (inactive, inactive_quick, inactive_api):
        assert response.mimetype == "application/json"
        assert "Location" not in response.headers
    assert analyses_used(host, "gone@example.com") == 0


def test_wrong_credentials_are_401_json_everywhere(
    host: Flask, check_password: PasswordChecks
) -> None:
    client = host.test_client()
    wrong = basic("alice@example.com", "wrong", accept=BROWSER_ACCEPT)

    responses = [
        client.post("/reports", headers=wrong),
        client.post("/quick-report", headers=wrong),
        client.get("/api/profile/me", headers=wrong),
    ]

    assert [(r.status_code, error_of(r)) for r in responses] == [(401, "UNAUTHORIZED")] * 3
    assert check_password.calls == 3
    assert analyses_used(host, "alice@example.com") == 0
