"""Security headers on what the extension answers: pages get a strict policy, JSON gets nosniff,
and a header the host set is never replaced."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.wrappers import Response

from flask_profile_billing import responses
from tests.support.host_app import as_user

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
PAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def test_a_refusal_page_gets_the_page_headers(client: FlaskClient) -> None:
    page = client.get("/api/data", headers={"X-User": "alice", **HTML})

    assert page.status_code == 403
    assert page.mimetype == "text/html"
    assert {name: page.headers.get(name) for name in PAGE_HEADERS} == PAGE_HEADERS
    assert "api_access" in page.get_data(as_text=True) or "plan" in page.get_data(as_text=True)


def test_the_refusal_page_has_nothing_inline_that_its_policy_would_block(
    client: FlaskClient,
) -> None:
    # default-src 'self' blocks inline <style>, style="" and <script>: the page must not need them.
    page = client.get("/api/data", headers={"X-User": "alice", **HTML}).get_data(as_text=True)

    assert not re.search(r"<style|<script|\sstyle=|\son[a-z]+=", page, re.IGNORECASE)


def test_a_json_refusal_of_a_guard_gets_nosniff(client: FlaskClient) -> None:
    refused = client.get("/api/data", headers=as_user("alice"))

    assert refused.status_code == 403
    assert refused.is_json
    assert refused.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/subscription/plans", 200),
        ("GET", "/api/subscription/usage?days=0", 422),
        ("GET", "/api/profile/me", 200),
        ("POST", "/api/profile/events", 202),
        ("GET", "/api/billing/quotas/preview", 200),
        ("GET", "/api/billing/openapi.json", 200),
        ("POST", "/api/billing/webhooks/test", 404),  # no provider of that name
    ],
)
def test_every_json_answer_of_the_api_gets_nosniff(
    client: FlaskClient, method: str, path: str, status: int
) -> None:
    answer = client.open(
        path, method=method, json={"event": "profile:view"}, headers=as_user("alice")
    )

    assert answer.status_code == status
    assert answer.is_json
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_an_api_refusal_before_login_gets_nosniff(client: FlaskClient) -> None:
    answer = client.get("/api/subscription/current", headers={"Accept": "application/json"})

    assert answer.status_code == 401
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_a_header_the_host_set_is_kept(app: Flask) -> None:
    host_policy = "default-src 'none'; img-src https://cdn.example.com"
    page = Response(
        "<p>refused</p>",
        mimetype="text/html",
        headers={"Content-Security-Policy": host_policy, "X-Frame-Options": "SAMEORIGIN"},
    )
    answer = Response("{}", mimetype="application/json")

    responses.with_security_headers(page)
    responses.with_security_headers(answer)

    assert page.headers["Content-Security-Policy"] == host_policy
    assert page.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" not in answer.headers


def test_the_hosts_own_pages_are_left_alone(app: Flask) -> None:
    @app.get("/host-page")
    def host_page() -> str:
        return "<p>the host's page</p>"

    answer = app.test_client().get("/host-page")

    assert answer.status_code == 200
    assert not set(PAGE_HEADERS) & set(answer.headers.keys())
