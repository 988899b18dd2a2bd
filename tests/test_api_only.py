"""A pure JSON API host (token clients, no sessions, no HTML): the extension sets no cookie on a
request that sent none, whatever endpoint it asked, and its HTML parts can be switched off."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from werkzeug.routing import Rule

from flask_profile_billing import TestPaymentProvider
from tests.support.host_app import AppFactory, as_user

# Every blueprint of the JSON API, by its default name.
API_BLUEPRINTS = (
    "billing_subscription_api",
    "billing_profile_api",
    "billing_api",
    "billing_accounts_api",
)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
BEARER_LIKE = as_user("token-client")  # the host's request_loader reads a header, not a cookie


def api_rules(app: Flask) -> list[Rule]:
    """Every URL rule of the JSON API: a new endpoint is covered without touching this test."""
    rules = [
        rule for rule in app.url_map.iter_rules() if rule.endpoint.split(".")[0] in API_BLUEPRINTS
    ]
    assert len(rules) >= 12, "the API's endpoints were not found"
    return rules


def concrete_url(rule: Rule) -> str:
    """The rule's URL with each variable part filled in (``<provider>`` -> ``test``)."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", "test", rule.rule)


@pytest.mark.parametrize("authenticated", [True, False], ids=["token client", "anonymous"])
def test_no_api_answer_sets_a_cookie_on_a_request_without_one(
    make_app: AppFactory, authenticated: bool
) -> None:
    app = make_app(
        BILLING_PAYMENT_PROVIDER=TestPaymentProvider(), BILLING_WEBHOOK_SECRET="api-only"
    )
    client = app.test_client(use_cookies=False)
    headers = BEARER_LIKE if authenticated else {"Accept": "application/json"}
    answered: list[tuple[str, str, int]] = []
    with_cookies: list[tuple[str, str, int, str]] = []
    for rule in api_rules(app):
        url = concrete_url(rule)
        for method in METHODS:
            if method not in (rule.methods or ()):
                continue
            answer = client.open(url, method=method, json={}, headers=headers)
            answered.append((method, url, answer.status_code))
            assert answer.status_code < 500, (method, url, answer.get_data(as_text=True))
            if "Set-Cookie" in answer.headers:
                with_cookies.append((method, url, answer.status_code, answer.headers["Set-Cookie"]))

    assert with_cookies == []
    # The token client reached the views (not only their refusals), the CSRF token's among them.
    if authenticated:
        assert ("GET", "/api/profile/csrf-token", 200) in answered
        assert ("GET", "/api/profile/me", 200) in answered


def test_a_token_client_is_told_it_needs_no_csrf_token(make_app: AppFactory) -> None:
    client = make_app().test_client(use_cookies=False)

    answer = client.get("/api/profile/csrf-token", headers=BEARER_LIKE)

    assert answer.status_code == 200
    assert answer.json == {"success": True, "data": {"csrf_token": None}}
    assert "Set-Cookie" not in answer.headers


def test_a_session_client_still_gets_its_csrf_token(make_app: AppFactory) -> None:
    app = make_app()
    client = app.test_client()
    login = client.post("/session-login/alice")
    assert login.status_code == 200

    token = client.get("/api/profile/csrf-token", headers={"Accept": "application/json"})
    cancelled = client.post(
        "/api/subscription/cancel",
        headers={"Accept": "application/json", "X-CSRFToken": token.json["data"]["csrf_token"]},
    )

    assert token.status_code == 200
    assert isinstance(token.json["data"]["csrf_token"], str)
    assert cancelled.status_code != 400  # the token was accepted (409: nothing to cancel on Free)
    assert cancelled.json["error"] != "CSRF_FAILED"


def test_an_api_only_host_switches_the_page_and_the_csrf_token_off(make_app: AppFactory) -> None:
    app = make_app(BILLING_PROFILE_PAGE_ENABLED=False, BILLING_CSRF_ENABLED=False)
    client = app.test_client(use_cookies=False)

    assert client.get("/profile/", headers=BEARER_LIKE).status_code == 404
    assert client.get("/api/profile/csrf-token", headers=BEARER_LIKE).status_code == 404
    assert client.get("/api/profile/me", headers=BEARER_LIKE).status_code == 200
    assert not [rule for rule in app.url_map.iter_rules() if "profile_page" in rule.endpoint]


def test_the_openapi_document_accepts_a_bearer_token_or_the_session_cookie(
    make_app: AppFactory,
) -> None:
    app = make_app()
    document = app.test_client().get("/api/billing/openapi.json").get_json()

    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["type"] == "http"
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    assert schemes["cookieAuth"] == {
        "type": "apiKey",
        "in": "cookie",
        "name": "session",
        "description": schemes["cookieAuth"]["description"],
    }
    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    public = {("/api/subscription/plans", "get"), ("/api/billing/quotas/preview", "get")}
    for path, method, operation in operations:
        if operation["security"] == []:
            continue  # public: the catalog, the packages, the document, the webhooks
        # Two alternatives (either one authenticates), not one requirement naming both.
        assert operation["security"] == [{"cookieAuth": []}, {"bearerAuth": []}], (path, method)
    assert public <= {(path, method) for path, method, op in operations if op["security"] == []}
    assert "/api/profile/csrf-token" in document["paths"]


def test_the_openapi_document_leaves_out_the_csrf_token_when_it_is_off(
    make_app: AppFactory,
) -> None:
    app = make_app(BILLING_CSRF_ENABLED=False)
    document = app.test_client().get("/api/billing/openapi.json").get_json()

    assert "/api/profile/csrf-token" not in document["paths"]
    assert "/api/profile/me" in document["paths"]
