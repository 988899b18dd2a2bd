"""The example app's own pages carry the extension's security headers (its one-click forms cannot be
framed), and the app has an icon, so no browser asks for one in vain."""

from __future__ import annotations

from pathlib import Path

import pytest
from example_app import create_app
from flask import Flask
from flask.testing import FlaskClient

from flask_profile_billing.responses import PAGE_SECURITY_HEADERS

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.fixture
def example(tmp_path: Path) -> Flask:
    return create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/example.sqlite3",
            "WTF_CSRF_ENABLED": False,
        }
    )


def logged_in(example: Flask) -> FlaskClient:
    client = example.test_client()
    answer = client.post("/login", data={"email": "alice@example.com", "password": "alice"})
    assert answer.status_code == 303
    return client


def test_the_login_page_cannot_be_framed(example: Flask) -> None:
    answer = example.test_client().get("/login", headers=HTML)

    assert answer.status_code == 200
    for name, value in PAGE_SECURITY_HEADERS.items():
        assert answer.headers[name] == value
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]


def test_the_home_page_carries_the_headers_and_json_answers_nosniff(example: Flask) -> None:
    client = logged_in(example)

    home = client.get("/", headers=HTML)
    assert home.status_code == 200
    assert "<form" in home.get_data(as_text=True)  # the one-click forms the headers protect
    for name, value in PAGE_SECURITY_HEADERS.items():
        assert home.headers[name] == value
    # An answer that is not a page: nosniff only, no page policy.
    analysed = client.post("/analyze", headers={"Accept": "application/json"})
    assert analysed.status_code == 200
    assert analysed.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" not in analysed.headers


def test_the_icon_is_named_by_the_pages_and_served_at_both_addresses(example: Flask) -> None:
    client = example.test_client()
    page = client.get("/login", headers=HTML).get_data(as_text=True)
    assert '<link rel="icon" type="image/svg+xml" href="/static/favicon.svg">' in page

    for url in ["/static/favicon.svg", "/favicon.ico"]:
        icon = client.get(url)
        assert icon.status_code == 200, url
        assert icon.mimetype == "image/svg+xml"
        assert icon.get_data(as_text=True).startswith("<svg ")
        icon.close()
