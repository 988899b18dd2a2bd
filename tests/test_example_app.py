"""The example host app (example_app/) as users will copy it: login, guards, CSRF, restarts."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flask_migrate
import pytest
from example_app import create_app
from example_app.extensions import billing, db
from example_app.models import User
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, inspect, select, text
from werkzeug.test import TestResponse

from flask_profile_billing.migrate import current_revision as billing_revision
from flask_profile_billing.payments import (
    PAYMENT_SUCCEEDED,
    SIGNATURE_HEADER,
    TestPaymentProvider,
    sign,
)

JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')

MakeApp = Callable[..., Flask]


@pytest.fixture
def make_app(tmp_path: Path) -> MakeApp:
    """Builds the example app on one SQLite file per test; call it again to "restart"."""

    def make(*, csrf: bool = False) -> Flask:
        return create_app(
            {
                "TESTING": True,
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/example.sqlite3",
                "WTF_CSRF_ENABLED": csrf,
            }
        )

    return make


@pytest.fixture
def example(make_app: MakeApp) -> Flask:
    return make_app()


@pytest.fixture
def client(example: Flask) -> FlaskClient:
    return example.test_client()


def login(client: FlaskClient, email: str, password: str, **data: str) -> TestResponse:
    return client.post("/login", data={"email": email, "password": password, **data})


def logged_in(example: Flask, name: str) -> FlaskClient:
    client = example.test_client()
    response = login(client, f"{name}@example.com", name)
    assert response.status_code == 303, response.get_data(as_text=True)
    return client


def user_id(example: Flask, email: str) -> str:
    with example.app_context():
        return str(db.session.scalar(select(User.id).where(User.email == email)))


def body(response: TestResponse) -> dict[str, Any]:
    data = response.get_json()
    assert isinstance(data, dict), response.get_data(as_text=True)
    return data


def test_login_with_a_wrong_password_fails(client: FlaskClient) -> None:
    response = login(client, "alice@example.com", "bob")

    assert response.status_code == 401
    assert "Wrong email or password." in response.get_data(as_text=True)
    assert client.get("/").status_code == 302  # still anonymous


def test_alice_logs_in_and_sees_the_free_plan(client: FlaskClient) -> None:
    response = login(client, "alice@example.com", "alice")
    assert response.status_code == 303
    assert response.location == "/"

    page = client.get("/").get_data(as_text=True)

    assert "Hello, Alice" in page
    assert '<tr><th scope="row">Plan</th><td>Free</td></tr>' in page
    assert CSRF_META.search(page)


def test_an_anonymous_post_is_sent_to_the_login_page(client: FlaskClient) -> None:
    response = client.post("/analyze", headers={"Accept": "text/html"})

    assert response.status_code == 302
    assert response.location.startswith("/login?next=")


def test_an_anonymous_json_client_gets_401_not_the_login_page(client: FlaskClient) -> None:
    response = client.post("/analyze", headers=JSON)

    assert (response.status_code, response.get_json()["error"]) == (401, "UNAUTHORIZED")


def test_alice_analyzes_twenty_times_then_is_refused(example: Flask) -> None:
    client = logged_in(example, "alice")
    for remaining in range(19, -1, -1):
        response = client.post("/analyze", headers=JSON)
        assert response.status_code == 200
        assert body(response)["success"] is True
        assert response.headers["X-Quota-Remaining"] == str(remaining)

    refused = client.post("/analyze", headers=JSON)

    assert refused.status_code == 429
    assert body(refused)["error"] == "LIMIT_EXCEEDED"
    assert int(refused.headers["Retry-After"]) > 0
    with example.app_context():
        assert billing.allowance(user_id(example, "alice@example.com"), "analysis").used == 20
    page = client.get("/").get_data(as_text=True)
    assert re.search(r'id="usage-analysis">\s*<td>Analysis</td>\s*<td>20 / 20</td>', page)


def test_alice_sixth_export_is_refused(example: Flask) -> None:
    client = logged_in(example, "alice")
    statuses = [client.post("/export", json={}).status_code for _ in range(6)]

    assert statuses == [200] * 5 + [429]


def test_api_access_is_for_professional_plans_only(example: Flask) -> None:
    alice = logged_in(example, "alice").get("/api/data", headers=JSON)
    bob = logged_in(example, "bob").get("/api/data", headers=JSON)

    assert alice.status_code == 403
    assert body(alice)["error"] == "FEATURE_NOT_AVAILABLE"
    assert bob.status_code == 200
    assert body(bob)["data"]["plan"] == "professional"
    assert body(bob)["data"]["user"]["email"] == "bob@example.com"


def test_active_vacancies_are_capped_by_the_plan(example: Flask) -> None:
    alice = logged_in(example, "alice")
    bob = logged_in(example, "bob")

    first = alice.post("/vacancies", json={"title": "Backend developer"})
    second = alice.post("/vacancies", json={"title": "Designer"})
    bobs = [bob.post("/vacancies", json={"title": f"Role {n}"}).status_code for n in range(3)]

    assert first.status_code == 200
    assert body(first)["data"]["vacancy"]["title"] == "Backend developer"
    assert second.status_code == 429
    assert body(second)["error"] == "LIMIT_EXCEEDED"
    assert bobs == [200, 200, 200]
    with example.app_context():
        assert billing.capacity(user_id(example, "bob@example.com"), "active_vacancies").used == 3


def test_a_browser_gets_redirects_and_an_html_refusal_page(example: Flask) -> None:
    client = logged_in(example, "alice")
    added = client.post("/vacancies", data={"title": "<script>alert(1)</script>"}, headers=HTML)
    assert added.status_code == 303
    assert added.location == "/"
    page = client.get("/").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)</script>" not in page

    refused = client.post("/vacancies", data={"title": "Second"}, headers=HTML)

    assert refused.status_code == 429
    assert refused.mimetype == "text/html"
    assert "Active vacancy limit reached (1)" in refused.get_data(as_text=True)


def test_csrf_protects_form_posts_and_accepts_the_header(make_app: MakeApp) -> None:
    client = make_app(csrf=True).test_client()
    form = client.get("/login").get_data(as_text=True)
    field = CSRF_FIELD.search(form)
    assert field is not None

    assert login(client, "alice@example.com", "alice").status_code == 400
    assert login(client, "alice@example.com", "alice", csrf_token=field[1]).status_code == 303

    home = client.get("/").get_data(as_text=True)
    meta = CSRF_META.search(home)
    assert meta is not None
    refused = client.post("/analyze", json={}, headers=JSON)
    assert refused.status_code == 400
    assert body(refused)["error"] == "CSRF_FAILED"
    accepted = client.post("/analyze", json={}, headers={**JSON, "X-CSRFToken": meta[1]})
    assert accepted.status_code == 200
    assert body(accepted)["data"]["usage"]["used"] == 1  # the refused request cost nothing


def test_a_restart_keeps_the_demo_users_and_bobs_subscription(make_app: MakeApp) -> None:
    first = make_app()
    bob = user_id(first, "bob@example.com")
    with first.app_context():
        before = billing.subscription(bob)

    second = make_app()

    with second.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 2
        after = billing.subscription(bob)
        assert billing.plan(user_id(second, "alice@example.com")).code == "free"
    assert before.plan_code == after.plan_code == "professional"
    assert after.id == before.id
    assert after.expires_at == before.expires_at


def test_a_signed_payment_webhook_passes_the_global_csrf_protection(tmp_path: Path) -> None:
    # CSRFProtect is initialised before billing.init_app here, and guards every POST.
    provider = TestPaymentProvider()
    secret = "example-webhook-secret"
    example = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/example.sqlite3",
            "WTF_CSRF_ENABLED": True,
            "BILLING_PAYMENT_PROVIDER": provider,
            "BILLING_WEBHOOK_SECRET": secret,
        }
    )
    alice = example.test_client()
    field = CSRF_FIELD.search(alice.get("/login").get_data(as_text=True))
    assert field is not None
    assert login(alice, "alice@example.com", "alice", csrf_token=field[1]).status_code == 303
    started = alice.post(
        "/api/subscription/upgrade",
        json={"plan_type": "starter", "duration_months": 1},
        headers={**JSON, "X-CSRFToken": field[1]},
    )
    assert started.status_code == 202, started.get_data(as_text=True)
    payment = body(started)["data"]["payment"]
    raw = json.dumps(
        provider.event(PAYMENT_SUCCEEDED, payment["id"], payment["amount"], payment["currency"])
    ).encode()

    delivered = example.test_client().post(
        "/api/billing/webhooks/test",
        data=raw,
        headers={
            **JSON,
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, raw, int(time.time())),
        },
    )

    assert delivered.status_code == 200, delivered.get_data(as_text=True)
    assert body(delivered)["data"]["outcome"] == "processed"
    with example.app_context():
        assert billing.plan(user_id(example, "alice@example.com")).code == "starter"
    # The API still needs the token from a cookie session (its own check, after authentication).
    other_write = alice.post("/api/subscription/cancel", headers=JSON)
    assert other_write.status_code == 400
    assert body(other_write)["error"] == "CSRF_FAILED"
    # And the host's own forms stay under CSRFProtect.
    host_form = alice.post("/logout")
    assert host_form.status_code == 400


def test_a_form_encoded_profile_edit_is_refused_not_silently_ignored(make_app: MakeApp) -> None:
    # CSRFProtect reads the form for its token, so the body reaches the API already parsed.
    client = make_app(csrf=True).test_client()
    field = CSRF_FIELD.search(client.get("/login").get_data(as_text=True))
    assert field is not None
    assert login(client, "alice@example.com", "alice", csrf_token=field[1]).status_code == 303
    token = {**JSON, "X-CSRFToken": field[1]}

    refused = client.patch("/api/profile/me", data={"company": "Acme"}, headers=token)

    assert refused.status_code == 415
    assert body(refused)["error"] == "UNSUPPORTED_MEDIA_TYPE"
    assert body(client.get("/api/profile/me", headers=JSON))["data"]["company"] is None


# --- its own Flask-Migrate folder -------------------------------------------------------------


def test_its_start_applies_its_migrations_and_the_extensions(example: Flask) -> None:
    """create_app runs `flask db upgrade`: the app's revisions (migrations/), then the billing
    tables from the last line of migrations/env.py; the two histories keep their own tables."""
    with example.app_context():
        engine = db.engine
        tables = set(inspect(engine).get_table_names())
        assert {"users", "vacancies", "alembic_version"} <= tables
        assert {"billing_subscriptions", "billing_alembic_version"} <= tables
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT version_num FROM alembic_version")) == "0001"
        assert billing_revision(engine) is not None


def test_its_migrations_match_its_models(example: Flask) -> None:
    """`flask db check`: the app's autogenerate finds nothing to add, and proposes no drop of the
    extension's tables (exclude_billing_tables)."""
    with example.app_context():
        flask_migrate.check()  # raises (and exits) when a revision would be generated


def test_the_profile_page_of_a_team_counts_the_teams_own_vacancies(example: Flask) -> None:
    """A team's gauge is asked of the app's counter with the team's account id: it has none of
    its members' vacancies, and the page shows it rather than failing."""
    alice = logged_in(example, "alice")
    assert alice.post("/vacancies", json={"title": "Backend developer"}).status_code == 200
    with example.app_context():
        team = billing.accounts.create_team(user_id(example, "alice@example.com"), "Acme")
    with alice.session_transaction() as session:
        session["billing_account"] = team.id
    page = alice.get("/profile/", headers={"Accept": "text/html"})
    assert page.status_code == 200, page.get_data(as_text=True)[:300]
    assert 'id="pb-team"' in page.get_data(as_text=True)
    with example.app_context():
        assert billing.capacity(team.id, "active_vacancies").used == 0
