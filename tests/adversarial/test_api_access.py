"""Access to the JSON API: clients that are not who they claim, or ask for more than they may,
over real HTTP to gunicorn, and payment webhooks that are forged or replayed. Every refusal is
checked in the database too: a refused request changes nothing.

The README-style host app (tests/adversarial/host.py) answers; clients log in with a bearer token
or with the session cookie ``POST /login`` sets. The example app's browser pages are
test_browser_access.py's.

"Lost" in the figures: refused requests that changed the database anyway.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import pytest
import requests
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy import Engine, select

from flask_profile_billing.payments import PAYMENT_SUCCEEDED, SIGNATURE_HEADER, sign
from flask_profile_billing.payments.providers import TestPaymentProvider
from flask_profile_billing.store.models import (
    payments,
    profiles,
    subscriptions,
    webhook_deliveries,
)
from tests.adversarial.harness import Traffic, row_counts, user_rows
from tests.adversarial.host import DEFAULT_SECRET_KEY, PROVIDER_NAME, token_for
from tests.adversarial.report import Figures
from tests.adversarial.scenarios import (
    HTML,
    IMG,
    JSON,
    SCRIPT,
    SESSION_COOKIE,
    USER_TABLES,
    WEBHOOK_SECRET,
    Deployment,
    assert_unchanged,
    cookie_login,
)

ALL_TABLES = (*USER_TABLES, webhook_deliveries)
SVG = "<svg onload=alert(1)>"  # no slash: it goes into a URL path segment

# Every endpoint that acts for the logged-in user: (method, path, JSON body).
USER_ENDPOINTS: tuple[tuple[str, str, Any], ...] = (
    ("GET", "/api/profile/me", None),
    ("PATCH", "/api/profile/me", {"first_name": "Nobody"}),
    ("GET", "/api/profile/activity", None),
    ("POST", "/api/profile/events", {"event": "profile:view"}),
    ("GET", "/api/profile/csrf-token", None),
    ("GET", "/api/subscription/current", None),
    ("POST", "/api/subscription/upgrade", {"plan_type": "professional", "duration_months": 1}),
    ("GET", "/api/subscription/usage", None),
    ("GET", "/api/subscription/limits/check", None),
    ("POST", "/api/subscription/cancel", None),
    ("POST", "/analyze/anonymous", None),
    ("GET", "/api/data", None),
)
# Writes that a session cookie alone must not authorise (no CSRF token).
COOKIE_WRITES: tuple[tuple[str, str, Any], ...] = (
    ("PATCH", "/api/profile/me", {"first_name": "Forged"}),
    ("POST", "/api/profile/events", {"event": "profile:cta_buy_quota"}),
    ("POST", "/api/subscription/upgrade", {"plan_type": "professional", "duration_months": 12}),
    ("POST", "/api/subscription/cancel", None),
)
# Fields of PATCH /api/profile/me that are not the user's to set, each alongside a valid field.
MASS_ASSIGNMENT: tuple[Mapping[str, Any], ...] = (
    {"user_id": "victim"},
    {"id": "victim"},
    {"email": "attacker@example.test"},
    {"role": "admin"},
    {"is_admin": True},
    {"plan": {"id": "enterprise", "name": "Enterprise"}},
    {"plan_code": "enterprise"},
    {"quota": {"limit": None, "used": 0, "available": None}},
    {"quotas": {"analysis": {"limit": 1000000}}},
    {"created_at": "2000-01-01T00:00:00+00:00"},
    {"updated_at": "2000-01-01T00:00:00+00:00"},
    {"subscription": {"status": "active", "plan_code": "enterprise"}},
    {"__class__": "Profile"},
)
# Avatar URLs that are not absolute http(s) URLs with a host.
BAD_AVATARS = (
    "javascript:alert(1)",
    "JavaScript:alert(document.cookie)",
    " javascript:alert(1)",
    "java\tscript:alert(1)",
    "java\nscript:alert(1)",
    "jav&#x09;ascript:alert(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "data:image/svg+xml,<svg onload=alert(1)>",
    "DATA:image/png;base64,iVBORw0KGgo=",
    "file:///etc/passwd",
    "file://localhost/etc/passwd",
    "vbscript:msgbox(1)",
    "ftp://example.test/avatar.png",
    "//evil.example/avatar.png",
    "/relative/avatar.png",
    "https://user:password@evil.example/avatar.png",
    "https:///no-host.png",
)


# -- helpers -------------------------------------------------------------------------------------


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(DEFAULT_SECRET_KEY, user)}", **JSON}


def first_visit(traffic: Traffic, host: Deployment, user: str) -> None:
    """Let the user's lazily created rows (free subscription, profile) exist before a snapshot."""
    response = traffic.session().get(host.url("/api/profile/me"), headers=bearer(user))
    assert response.status_code == 200, response.text


def snapshot(engine: Engine, *users: str) -> dict[str, Any]:
    return {user: user_rows(engine, user, USER_TABLES) for user in users}


def profile_of(engine: Engine, user: str) -> dict[str, Any] | None:
    with engine.connect() as connection:
        row = connection.execute(select(profiles).where(profiles.c.user_id == user)).first()
    return None if row is None else dict(row._mapping)


def forged_session_cookie(secret_key: str, data: Mapping[str, Any]) -> str:
    """A Flask session cookie holding ``data``, signed with ``secret_key`` as Flask would."""
    forger = Flask("forger")
    forger.secret_key = secret_key
    serializer = SecureCookieSessionInterface().get_signing_serializer(forger)
    assert serializer is not None
    return str(serializer.dumps(dict(data)))


# -- the JSON API of the host app ----------------------------------------------------------------


def test_without_credentials_every_user_endpoint_is_401_and_changes_nothing(
    host_app: Deployment, traffic: Traffic, figures: Figures
) -> None:
    before = row_counts(host_app.engine, ALL_TABLES)
    anonymous = traffic.session()
    forged_token = token_for("not-the-secret", "alice")
    malformed = ("Bearer", "Bearer ", "Basic YWxpY2U6YWxpY2U=", f"Bearer {forged_token}", "alice")

    for method, path, body in USER_ENDPOINTS:
        response = anonymous.request(method, host_app.url(path), json=body, headers=JSON)
        assert response.status_code == 401, (method, path, response.text)
        for header in malformed:
            response = anonymous.request(
                method, host_app.url(path), json=body, headers={**JSON, "Authorization": header}
            )
            assert response.status_code == 401, (method, path, header, response.text)

    assert_unchanged(figures, before, row_counts(host_app.engine, ALL_TABLES), "anonymous requests")


def test_another_users_session_reads_and_changes_only_its_own_profile(
    host_app: Deployment, traffic: Traffic, figures: Figures
) -> None:
    alice, mallory = "access-alice", "access-mallory"
    owner = traffic.session()
    response = owner.patch(
        host_app.url("/api/profile/me"),
        json={"first_name": "Alice", "company": "Alice Ltd", "country": "DE"},
        headers=bearer(alice),
    )
    assert response.status_code == 200, response.text
    alices_rows = snapshot(host_app.engine, alice)
    session, csrf = cookie_login(traffic, host_app, mallory)
    writes = {**JSON, "X-CSRFToken": csrf}

    for path in (
        "/api/profile/me",
        f"/api/profile/me?user_id={alice}",
        f"/api/profile/me?id={alice}",
    ):
        seen = session.get(host_app.url(path), headers=JSON)
        assert seen.status_code in (200, 422), seen.text  # an unknown parameter may be refused
        assert "Alice" not in seen.text
        assert alice not in seen.text.replace(mallory, "")
    for body in ({"user_id": alice, "first_name": "Owned"}, {"id": alice, "company": "Owned"}):
        refused = session.patch(host_app.url("/api/profile/me"), json=body, headers=writes)
        assert refused.status_code == 422, refused.text
    own = session.patch(host_app.url("/api/profile/me"), json={"first_name": "M"}, headers=writes)
    assert own.status_code == 200, own.text
    assert own.json()["data"]["id"] == mallory

    assert_unchanged(
        figures, alices_rows, snapshot(host_app.engine, alice), "another user's session"
    )
    stored = profile_of(host_app.engine, mallory)
    assert stored is not None
    assert stored["first_name"] == "M"


@pytest.mark.parametrize(
    "tampering",
    ["signature changed", "payload swapped", "signed with another key", "unsigned"],
)
def test_a_tampered_session_cookie_is_anonymous(
    host_app: Deployment, traffic: Traffic, figures: Figures, tampering: str
) -> None:
    victim, mallory = "cookie-victim", "cookie-mallory"
    first_visit(traffic, host_app, victim)
    session, csrf = cookie_login(traffic, host_app, mallory)
    cookie = session.cookies.get(SESSION_COOKIE)
    assert cookie is not None
    claim = {"_user_id": victim, "_fresh": True}
    claim_b64 = base64.urlsafe_b64encode(json.dumps(claim).encode()).decode().rstrip("=")
    payload, timestamp, signature = cookie.rsplit(".", 2)
    other_ending = "AA" if not signature.endswith("AA") else "BB"
    forged = {
        "signature changed": f"{payload}.{timestamp}.{signature[:-2]}{other_ending}",
        "payload swapped": f"{claim_b64}.{timestamp}.{signature}",
        "signed with another key": forged_session_cookie("dev-only-insecure-secret-key", claim),
        "unsigned": claim_b64,
    }[tampering]
    before = snapshot(host_app.engine, victim, mallory)
    attacker = traffic.session()
    attacker.cookies.set(SESSION_COOKIE, forged)
    writes = {**JSON, "X-CSRFToken": csrf}

    read = attacker.get(host_app.url("/api/profile/me"), headers=JSON)
    write = attacker.patch(
        host_app.url("/api/profile/me"), json={"company": "Owned"}, headers=writes
    )
    charge = attacker.post(host_app.url("/analyze/tampered"), headers=JSON)

    assert [read.status_code, write.status_code, charge.status_code] == [401, 401, 401]
    assert_unchanged(figures, before, snapshot(host_app.engine, victim, mallory), tampering)


@pytest.mark.parametrize("extra", MASS_ASSIGNMENT, ids=lambda extra: next(iter(extra)))
def test_mass_assignment_on_the_profile_is_refused_whole(
    host_app: Deployment, traffic: Traffic, figures: Figures, extra: Mapping[str, Any]
) -> None:
    user = "mass-assigner"
    client = traffic.session()
    first_visit(traffic, host_app, user)
    before = snapshot(host_app.engine, user, "victim")

    # A valid field beside the forbidden one: the request is refused as a whole.
    response = client.patch(
        host_app.url("/api/profile/me"), json={"company": "Changed", **extra}, headers=bearer(user)
    )

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "VALIDATION_ERROR"
    assert_unchanged(figures, before, snapshot(host_app.engine, user, "victim"), str(extra))


def test_cookie_writes_without_the_csrf_token_are_refused(
    host_app: Deployment, traffic: Traffic, figures: Figures
) -> None:
    user, other = "csrf-victim", "csrf-other"
    session, token = cookie_login(traffic, host_app, user)
    _, others_token = cookie_login(traffic, host_app, other)
    first_visit(traffic, host_app, user)
    before = snapshot(host_app.engine, user)
    # (header, what is added to a JSON body): the API takes the token from the header only.
    attempts: dict[str, tuple[dict[str, str], dict[str, str]]] = {
        "missing": ({}, {}),
        "empty": ({"X-CSRFToken": ""}, {}),
        "wrong": ({"X-CSRFToken": "not-a-token"}, {}),
        "another session's": ({"X-CSRFToken": others_token}, {}),
        "in the body": ({}, {"csrf_token": token}),
    }

    for name, (header, in_body) in attempts.items():
        for method, path, body in COOKIE_WRITES:
            payload = {**body, **in_body} if body is not None else (in_body or None)
            response = session.request(
                method, host_app.url(path), json=payload, headers={**JSON, **header}
            )
            assert response.status_code == 400, (name, method, path, response.text)
            assert response.json()["error"] == "CSRF_FAILED"

    assert_unchanged(figures, before, snapshot(host_app.engine, user), "writes without CSRF")
    accepted = session.patch(
        host_app.url("/api/profile/me"),
        json={"first_name": "Kept"},
        headers={**JSON, "X-CSRFToken": token},
    )
    assert accepted.status_code == 200, accepted.text  # the same write with the token passes


def test_stored_markup_in_profile_fields_is_never_served_as_html(
    host_app: Deployment, traffic: Traffic, figures: Figures
) -> None:
    user = "xss-author"
    client = traffic.session()
    stored = client.patch(
        host_app.url("/api/profile/me"),
        json={"first_name": SCRIPT, "company": IMG},
        headers=bearer(user),
    )
    # Text is text: stored as typed, and escaped wherever it is shown as HTML.
    assert stored.status_code == 200, stored.text

    profile = client.get(host_app.url("/api/profile/me"), headers={**bearer(user), **HTML})
    assert profile.status_code == 200
    assert profile.headers["Content-Type"].startswith("application/json")
    # The refusal page is the extension's HTML: use the quota up, then ask as a browser (on the
    # session cookie: a request with an Authorization header is a script's, answered in JSON).
    browser, csrf = cookie_login(traffic, host_app, user)
    pages = []
    for _ in range(25):
        answer = browser.post(
            host_app.url(f"/analyze/{quote(SVG)}"), headers={**HTML, "X-CSRFToken": csrf}
        )
        assert answer.status_code in (200, 429), answer.text
        if answer.status_code == 429:
            pages.append(answer)
    assert pages, "the Free plan's limit was never reached"
    for page in pages:
        assert page.headers["Content-Type"].startswith("text/html")
        assert SCRIPT not in page.text
        assert "<img src=x" not in page.text
        assert SVG not in page.text
        assert "<script" not in page.text.lower()


@pytest.mark.parametrize("avatar", BAD_AVATARS)
def test_avatar_urls_that_are_not_http_are_refused(
    host_app: Deployment, traffic: Traffic, figures: Figures, avatar: str
) -> None:
    user = "avatar-owner"
    client = traffic.session()
    good = "https://cdn.example.test/avatar.png"
    response = client.patch(
        host_app.url("/api/profile/me"), json={"avatar_url": good}, headers=bearer(user)
    )
    assert response.status_code == 200, response.text
    before = snapshot(host_app.engine, user)

    refused = client.patch(
        host_app.url("/api/profile/me"), json={"avatar_url": avatar}, headers=bearer(user)
    )

    assert refused.status_code == 422, refused.text
    assert_unchanged(figures, before, snapshot(host_app.engine, user), repr(avatar))
    stored = profile_of(host_app.engine, user)
    assert stored is not None
    assert stored["avatar_url"] == good


# -- payment webhooks ----------------------------------------------------------------------------


def start_payment(traffic: Traffic, host: Deployment, user: str) -> dict[str, Any]:
    response = traffic.session().post(
        host.url("/api/subscription/upgrade"),
        json={"plan_type": "professional", "duration_months": 1},
        headers=bearer(user),
    )
    assert response.status_code == 202, response.text
    payment: dict[str, Any] = response.json()["data"]["payment"]
    return payment


def success_event(payment: Mapping[str, Any]) -> bytes:
    body = TestPaymentProvider(PROVIDER_NAME).event(
        PAYMENT_SUCCEEDED, payment["id"], payment["amount"], payment["currency"]
    )
    return json.dumps(body).encode()


def deliver(
    traffic: Traffic, host: Deployment, raw: bytes, header: str | None
) -> requests.Response:
    headers = {"Content-Type": "application/json", **JSON}
    if header is not None:
        headers[SIGNATURE_HEADER] = header
    response: requests.Response = traffic.session().post(
        host.url(f"/api/billing/webhooks/{PROVIDER_NAME}"), data=raw, headers=headers
    )
    return response


def webhook_state(engine: Engine, user: str) -> dict[str, Any]:
    with engine.connect() as connection:
        deliveries = connection.execute(
            select(webhook_deliveries.c.event_id, webhook_deliveries.c.outcome)
        ).all()
    return {"rows": user_rows(engine, user, (subscriptions, payments)), "deliveries": deliveries}


@pytest.fixture
def pending_payment(host_app: Deployment, traffic: Traffic) -> tuple[str, bytes]:
    """A user with a pending Professional payment, and the provider's success event for it."""
    user = f"payer-{time.monotonic_ns()}"
    return user, success_event(start_payment(traffic, host_app, user))


@pytest.mark.parametrize(
    "forgery",
    [
        "absent",
        "empty",
        "malformed",
        "wrong mac",
        "another secret",
        "body changed after signing",
        "stale timestamp",
        "future timestamp",
    ],
)
def test_a_webhook_without_a_valid_signature_is_401_and_changes_nothing(
    host_app: Deployment,
    traffic: Traffic,
    figures: Figures,
    pending_payment: tuple[str, bytes],
    forgery: str,
) -> None:
    user, raw = pending_payment
    now = int(time.time())
    body = raw
    header: str | None = {
        "absent": None,
        "empty": "",
        "malformed": "sha256=" + "0" * 64,
        "wrong mac": f"t={now},v1={'0' * 64}",
        "another secret": sign("not-the-secret", raw, now),
        "body changed after signing": sign(WEBHOOK_SECRET, raw, now),
        "stale timestamp": sign(WEBHOOK_SECRET, raw, now - 3600),  # tolerance: 300 s
        "future timestamp": sign(WEBHOOK_SECRET, raw, now + 3600),
    }[forgery]
    if forgery == "body changed after signing":
        body = raw.replace(b'"currency": "', b'"currency": "X')
    before = webhook_state(host_app.engine, user)

    response = deliver(traffic, host_app, body, header)

    assert response.status_code == 401, response.text
    assert response.json()["error"] == "INVALID_SIGNATURE"
    assert_unchanged(figures, before, webhook_state(host_app.engine, user), forgery)


def test_a_replayed_webhook_grants_the_plan_once(
    host_app: Deployment,
    traffic: Traffic,
    figures: Figures,
    pending_payment: tuple[str, bytes],
) -> None:
    user, raw = pending_payment
    header = sign(WEBHOOK_SECRET, raw, int(time.time()))

    first = deliver(traffic, host_app, raw, header)
    granted = webhook_state(host_app.engine, user)
    replays = [deliver(traffic, host_app, raw, header) for _ in range(3)]
    resigned = deliver(traffic, host_app, raw, sign(WEBHOOK_SECRET, raw, int(time.time())))

    assert first.status_code == 200, first.text
    assert first.json()["data"]["outcome"] == "processed"
    for replay in [*replays, resigned]:
        assert replay.status_code == 200, replay.text
        assert replay.json()["data"]["outcome"] == "duplicate"
    after = webhook_state(host_app.engine, user)
    assert_unchanged(figures, granted["rows"], after["rows"], "replayed deliveries")
    event_id = json.loads(raw)["event_id"]
    outcomes = [outcome for delivered, outcome in after["deliveries"] if delivered == event_id]
    assert outcomes.count("processed") == 1
    with host_app.engine.connect() as connection:
        current = connection.execute(
            select(subscriptions.c.plan_code).where(
                subscriptions.c.account_id == "user:" + user, subscriptions.c.ended_at.is_(None)
            )
        ).all()
    assert [plan for (plan,) in current] == ["professional"]
