"""The HTML page a browser gets when a guard refuses it: inside the host's layout when one is set,
the reset date for people in the user's time zone, a link back that never leads to another site,
and nothing the page shows able to inject markup."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jinja2 import DictLoader
from werkzeug.test import TestResponse

from flask_profile_billing import ProfileBilling
from flask_profile_billing.domain.errors import BillingConfigError, BillingError
from flask_profile_billing.responses import error_response
from tests.support.host_app import AppFactory, billing_of
from tests.support.profile import patch
from tests.support.servers import required_module

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
# The test clock is 13 Oct 2025, so the free plan's calendar month resets at 1 Nov, 00:00 UTC.
RESET_ISO = "2025-11-01T00:00:00+00:00"
HOST_LAYOUT = """<!doctype html>
<html><head><title>{% block title %}{% endblock %} · Host</title>
<link rel="stylesheet" href="/static/host.css"></head>
<body><nav id="host-layout-marker">Host navigation</nav>
<main>{% block content %}{% endblock %}</main></body></html>"""
# A layout whose main block has another name, adapted by a template of two lines.
OTHER_LAYOUT = """<!doctype html><html><body><div id="other-layout">
{% block page_body %}{% endblock %}</div></body></html>"""
ADAPTER = """{% extends "other_layout.html" %}
{% block page_body %}{% block content %}{% endblock %}{% endblock %}"""


def use_host_templates(app: Flask) -> None:
    """Templates of the host app, found before the extension's (as its templates/ folder is)."""
    app.jinja_loader = DictLoader(
        {"layout.html": HOST_LAYOUT, "other_layout.html": OTHER_LAYOUT, "adapter.html": ADAPTER}
    )


def refused_page(client: FlaskClient, billing: ProfileBilling, **headers: str) -> TestResponse:
    """Alice's analysis quota used up, then one more analysis asked for by her browser."""
    billing.consume("alice", "analysis", billing.allowance("alice", "analysis").remaining)
    page = client.post("/analyze", headers={"X-User": "alice", **HTML, **headers})
    assert page.status_code == 429
    assert page.mimetype == "text/html"
    return page


def back_link(page: TestResponse) -> str:
    found = re.search(r'<a href="([^"]*)">Go back</a>', page.get_data(as_text=True))
    assert found is not None, page.get_data(as_text=True)
    return found.group(1)


def visible_text(page: TestResponse) -> str:
    """The page without its tags (and their attributes): what the user reads."""
    return re.sub(r"<[^>]+>", "", page.get_data(as_text=True))


# --- the layout -----------------------------------------------------------------------------


def test_without_a_base_template_the_page_is_the_extensions_own(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    html = refused_page(client, billing).get_data(as_text=True)

    assert html.startswith("<!doctype html>")
    assert "<title>429 Too Many Requests</title>" in html
    assert 'class="billing-refusal"' in html


def test_the_page_extends_the_hosts_base_template(make_app: AppFactory) -> None:
    app = make_app(BILLING_BASE_TEMPLATE="layout.html")
    use_host_templates(app)
    with app.app_context():
        page = refused_page(app.test_client(), billing_of(app))
    html = page.get_data(as_text=True)

    assert '<nav id="host-layout-marker">' in html
    assert "<title>429 Too Many Requests · Host</title>" in html
    # The refusal is inside the layout's content block, not a page of its own after it.
    assert re.search(r'<main>\s*<section class="billing-refusal"', html)
    assert html.count("<html") == 1


def test_a_layout_with_other_block_names_is_adapted_by_a_two_line_template(
    make_app: AppFactory,
) -> None:
    app = make_app(BILLING_BASE_TEMPLATE="adapter.html")
    use_host_templates(app)
    with app.app_context():
        html = refused_page(app.test_client(), billing_of(app)).get_data(as_text=True)

    assert re.search(r'<div id="other-layout">\s*<section class="billing-refusal"', html)


def test_the_page_in_the_hosts_layout_keeps_the_headers_and_needs_nothing_inline(
    make_app: AppFactory,
) -> None:
    app = make_app(BILLING_BASE_TEMPLATE="layout.html")
    use_host_templates(app)
    with app.app_context():
        page = refused_page(app.test_client(), billing_of(app))

    # Inside the host's layout the policy is the host's (BILLING_CONTENT_SECURITY_POLICY).
    assert "Content-Security-Policy" not in page.headers
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    html = page.get_data(as_text=True)
    assert not re.search(r"<style|<script|\sstyle=|\son[a-z]+=", html, re.IGNORECASE)


def test_a_base_template_the_app_lacks_still_answers_a_page(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(BILLING_BASE_TEMPLATE="no_such_layout.html")
    with app.app_context():
        page = refused_page(app.test_client(), billing_of(app))

    assert "limit" in page.get_data(as_text=True).lower()
    assert any("no_such_layout.html" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("BILLING_BASE_TEMPLATE", ""),
        ("BILLING_BASE_TEMPLATE", 3),
        ("BILLING_REFUSAL_BACK_URL", "javascript:alert(1)"),
        ("BILLING_REFUSAL_BACK_URL", ""),
        ("BILLING_REFUSAL_BACK_URL", None),
    ],
)
def test_page_settings_are_validated(make_app: AppFactory, key: str, value: object) -> None:
    with pytest.raises(BillingConfigError, match=key):
        make_app(**{key: value})


# --- the reset date -------------------------------------------------------------------------


def test_the_reset_date_is_written_for_people_not_in_iso(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    page = refused_page(client, billing)
    text = visible_text(page)

    assert "Your quota resets on 1 Nov 2025, 00:00 (UTC)." in text
    assert RESET_ISO not in text
    # Machines still get the exact moment, in the <time> element's attribute.
    assert f'<time datetime="{RESET_ISO}">' in page.get_data(as_text=True)


def test_the_reset_date_is_in_the_users_own_time_zone(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    assert patch(client, "alice", {"timezone": "Europe/Moscow"}).status_code == 200

    text = visible_text(refused_page(client, billing))

    assert "1 Nov 2025, 03:00 (Europe/Moscow)" in text


def test_with_flask_babel_the_reset_date_is_in_the_requests_locale(
    make_app: AppFactory,
) -> None:
    flask_babel = required_module("flask_babel")
    app = make_app(BABEL_DEFAULT_LOCALE="de")
    flask_babel.Babel(app)
    with app.app_context():
        text = visible_text(refused_page(app.test_client(), billing_of(app)))

    # German medium format: "01.11.2025, 00:00:00".
    assert "01.11.2025, 00:00:00 (UTC)" in text


# --- the way back ---------------------------------------------------------------------------


def test_the_back_link_returns_to_a_page_of_the_app(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    page = refused_page(client, billing, Referer="http://localhost/dashboard?tab=usage")

    assert back_link(page) == "http://localhost/dashboard?tab=usage"


@pytest.mark.parametrize(
    "referrer",
    [
        "https://evil.example/phish",
        "http://localhost.evil.example/",
        "http://user@evil.example/",
        "https://localhost/dashboard",  # another scheme is another origin
        "javascript:alert(1)",
        None,
    ],
)
def test_the_back_link_never_leads_to_another_site(
    client: FlaskClient, billing: ProfileBilling, referrer: str | None
) -> None:
    headers = {} if referrer is None else {"Referer": referrer}

    assert back_link(refused_page(client, billing, **headers)) == "/"


def test_the_back_link_without_a_referrer_of_the_app_is_configurable(
    make_app: AppFactory,
) -> None:
    app = make_app(BILLING_REFUSAL_BACK_URL="/plans")
    with app.app_context():
        page = refused_page(app.test_client(), billing_of(app), Referer="https://evil.example/")

    assert back_link(page) == "/plans"


def test_the_page_links_the_profile_page(client: FlaskClient, billing: ProfileBilling) -> None:
    assert 'href="/profile/">Your plan and usage' in refused_page(client, billing).get_data(
        as_text=True
    )


def test_no_profile_link_when_the_profile_page_is_off(make_app: AppFactory) -> None:
    app = make_app(BILLING_PROFILE_PAGE_ENABLED=False)
    with app.app_context():
        page = refused_page(app.test_client(), billing_of(app))

    assert "Your plan and usage" not in page.get_data(as_text=True)


# --- escaping -------------------------------------------------------------------------------


def test_markup_in_a_message_is_shown_as_text(app: Flask) -> None:
    error = BillingError(
        '<script>alert("x")</script><b>bold</b>', {"resets_at": "<i>soon</i>"}, error_code="X"
    )
    with app.test_request_context(
        "/analyze", headers={**HTML, "Referer": 'http://localhost/"><b>'}
    ):
        html = error_response(error, 429).get_data(as_text=True)

    assert "<script>" not in html
    assert "<b>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in html
    # A referrer of the app's own origin is linked, escaped inside its attribute.
    assert 'href="http://localhost/&#34;&gt;&lt;b&gt;"' in html
    # A reset moment that is not a date is left out rather than shown.
    assert "soon" not in html
