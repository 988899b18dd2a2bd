"""The Content-Security-Policy of the extension's pages: strict on its own layout, the host's
decision inside the host's (off, or the strict one with the host's sources), a per-request nonce
for the host's inline scripts and styles (``csp_nonce()``), and Flask-Talisman left in charge
when the host uses it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask, Request
from flask.testing import FlaskClient
from flask_login import LoginManager
from flask_talisman import Talisman
from jinja2 import DictLoader
from werkzeug.test import TestResponse

from flask_profile_billing import ProfileBilling
from flask_profile_billing.domain.errors import BillingConfigError
from tests.support.host_app import AppFactory, Clock, User, db

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
STRICT = "default-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
CDN = "https://cdn.example.com"
# A host's layout as hosts write them: a stylesheet and avatars from a CDN, an inline script.
HOST_LAYOUT = """<!doctype html>
<html><head><title>{% block title %}{% endblock %} · Host</title>
<link rel="stylesheet" href="https://cdn.example.com/host.css">
<script nonce="{{ csp_nonce() }}">window.hostReady = true;</script></head>
<body><nav id="host-nav"><img src="https://cdn.example.com/avatar.png" alt=""></nav>
<main>{% block content %}{% endblock %}</main></body></html>"""
NONCE = re.compile(r'<script nonce="([^"]+)">window\.hostReady')


def in_host_layout(app: Flask) -> Flask:
    """The host's templates, found before the extension's (as its templates/ folder is)."""
    app.jinja_loader = DictLoader({"layout.html": HOST_LAYOUT})
    return app


def profile(client: FlaskClient, user: str = "alice") -> TestResponse:
    page = client.get("/profile/", headers={"X-User": user, **HTML})
    assert page.status_code == 200, page.get_data(as_text=True)
    return page


def refusal(client: FlaskClient) -> TestResponse:
    # The default plan has no api_access feature: a browser gets the refusal page.
    page = client.get("/api/data", headers={"X-User": "alice", **HTML})
    assert page.status_code == 403
    assert page.mimetype == "text/html"
    return page


def nonce_of(page: TestResponse) -> str:
    found = NONCE.search(page.get_data(as_text=True))
    assert found is not None, page.get_data(as_text=True)
    return found.group(1)


def test_the_extensions_own_layout_gets_the_strict_policy(make_app: AppFactory) -> None:
    client = make_app().test_client()

    for page in (profile(client), refusal(client)):
        assert page.headers["Content-Security-Policy"] == STRICT
        assert page.headers["X-Frame-Options"] == "DENY"


def test_inside_the_hosts_layout_the_policy_is_the_hosts(make_app: AppFactory) -> None:
    app = in_host_layout(make_app(BILLING_BASE_TEMPLATE="layout.html"))
    client = app.test_client()

    for page in (profile(client), refusal(client)):
        assert '<nav id="host-nav">' in page.get_data(as_text=True)
        # The CDN stylesheet, the avatar and the inline script are the host's to allow.
        assert "Content-Security-Policy" not in page.headers
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["Referrer-Policy"] == "same-origin"


def test_a_host_extends_the_strict_policy_with_its_sources_and_the_nonce(
    make_app: AppFactory,
) -> None:
    app = in_host_layout(
        make_app(
            BILLING_BASE_TEMPLATE="layout.html",
            BILLING_CONTENT_SECURITY_POLICY={"style-src": CDN, "img-src": [CDN, "data:"]},
        )
    )
    client = app.test_client()

    for page in (profile(client), refusal(client)):
        nonce = nonce_of(page)
        assert page.headers["Content-Security-Policy"] == (
            f"{STRICT}; style-src 'self' {CDN} 'nonce-{nonce}'; img-src 'self' {CDN} data:; "
            f"script-src 'self' 'nonce-{nonce}'"
        )


def test_every_request_gets_a_new_nonce(make_app: AppFactory) -> None:
    app = in_host_layout(
        make_app(BILLING_BASE_TEMPLATE="layout.html", BILLING_CONTENT_SECURITY_POLICY=True)
    )
    client = app.test_client()

    first, second = profile(client), profile(client)

    assert nonce_of(first) != nonce_of(second)
    assert len(nonce_of(first)) >= 22  # at least 128 random bits
    assert f"'nonce-{nonce_of(second)}'" in second.headers["Content-Security-Policy"]


def test_a_page_that_used_no_nonce_gets_none(make_app: AppFactory) -> None:
    # A nonce in script-src or style-src switches a host's 'unsafe-inline' there off: only a page
    # that needs one gets one.
    app = make_app(BILLING_CONTENT_SECURITY_POLICY={"style-src": ["'self'", "'unsafe-inline'"]})

    page = profile(app.test_client())

    assert page.headers["Content-Security-Policy"] == f"{STRICT}; style-src 'self' 'unsafe-inline'"


def test_nonce_in_names_the_directives_that_get_it(make_app: AppFactory) -> None:
    app = in_host_layout(
        make_app(
            BILLING_BASE_TEMPLATE="layout.html",
            BILLING_CONTENT_SECURITY_POLICY={"style-src": CDN},
            BILLING_CONTENT_SECURITY_POLICY_NONCE_IN=["script-src"],
        )
    )

    page = profile(app.test_client())

    nonce = nonce_of(page)
    assert page.headers["Content-Security-Policy"] == (
        f"{STRICT}; style-src 'self' {CDN}; script-src 'self' 'nonce-{nonce}'"
    )


def test_false_sends_no_policy_even_on_the_extensions_own_layout(make_app: AppFactory) -> None:
    page = profile(make_app(BILLING_CONTENT_SECURITY_POLICY=False).test_client())

    assert "Content-Security-Policy" not in page.headers
    assert page.headers["X-Frame-Options"] == "DENY"


def test_framing_that_the_hosts_policy_allows_is_not_denied_by_x_frame_options(
    make_app: AppFactory,
) -> None:
    app = make_app(BILLING_CONTENT_SECURITY_POLICY={"frame-ancestors": "'self'"})

    page = profile(app.test_client())

    assert page.headers["Content-Security-Policy"] == (
        "default-src 'self'; frame-ancestors 'self'; base-uri 'self'; form-action 'self'"
    )
    assert "X-Frame-Options" not in page.headers


def test_json_answers_never_get_a_policy(make_app: AppFactory) -> None:
    app = make_app(BILLING_CONTENT_SECURITY_POLICY=True)

    answer = app.test_client().get("/api/profile/me", headers={"X-User": "alice"})

    assert answer.is_json
    assert "Content-Security-Policy" not in answer.headers


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("BILLING_CONTENT_SECURITY_POLICY", "default-src 'self'"),
        ("BILLING_CONTENT_SECURITY_POLICY", {"style-src": "https://a.example; script-src *"}),
        ("BILLING_CONTENT_SECURITY_POLICY", {"style-src": "https://a.example,https://b"}),
        ("BILLING_CONTENT_SECURITY_POLICY", {"Style Src": CDN}),
        ("BILLING_CONTENT_SECURITY_POLICY", {"style-src": []}),
        ("BILLING_CONTENT_SECURITY_POLICY", {"style-src": [3]}),
        ("BILLING_CONTENT_SECURITY_POLICY_NONCE_IN", "script-src"),
        ("BILLING_CONTENT_SECURITY_POLICY_NONCE_IN", ["frame-ancestors"]),
        ("BILLING_CONTENT_SECURITY_POLICY_NONCE_IN", None),
    ],
)
def test_a_malformed_policy_is_refused_at_startup(
    make_app: AppFactory, key: str, value: Any
) -> None:
    with pytest.raises(BillingConfigError, match=key):
        make_app(**{key: value})


# --- a host that uses Flask-Talisman ------------------------------------------------------------

TALISMAN_POLICY = {
    "default-src": "'self'",
    "style-src": ["'self'", CDN],
    "img-src": "*",
    "script-src": "'self'",
}


def talisman_host(database_url: str, clock: Clock, *, talisman_first: bool) -> Flask:
    app = Flask("talisman_host")
    app.config.update(
        TESTING=True,
        SECRET_KEY="test",
        SQLALCHEMY_DATABASE_URI=database_url,
        BILLING_CLOCK=clock,
        BILLING_BASE_TEMPLATE="layout.html",
    )
    db.init_app(app)
    login_manager = LoginManager(app)
    login_manager.user_loader(User)

    @login_manager.request_loader
    def load_from_header(request: Request) -> User | None:
        user_id = request.headers.get("X-User")
        return User(user_id) if user_id else None

    def talisman() -> None:
        Talisman(
            app,
            force_https=False,
            content_security_policy=TALISMAN_POLICY,
            content_security_policy_nonce_in=["script-src"],
        )

    if talisman_first:
        talisman()
    billing = ProfileBilling(app, db)
    if not talisman_first:
        talisman()
    with app.app_context():
        billing.create_all()
    return in_host_layout(app)


@pytest.mark.parametrize("talisman_first", [True, False], ids=["talisman first", "billing first"])
def test_flask_talisman_keeps_its_policy_and_its_nonce(
    database_url: str, clock: Clock, talisman_first: bool
) -> None:
    app = talisman_host(database_url, clock, talisman_first=talisman_first)

    page = profile(app.test_client())

    # Talisman's policy (not the extension's: no frame-ancestors), with the nonce the layout
    # printed, whichever of the two csp_nonce() functions the template called.
    assert page.headers["Content-Security-Policy"] == (
        f"default-src 'self'; style-src 'self' {CDN}; img-src *; "
        f"script-src 'self' 'nonce-{nonce_of(page)}'"
    )
