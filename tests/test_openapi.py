"""The served OpenAPI document describes the API truthfully: schemathesis generates requests
from it, valid and invalid, and checks that no answer is a 5xx or breaks the documented schema,
on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from flask_profile_billing import TestPaymentProvider
from tests.support.host_app import AppFactory

OPENAPI_PATH = "/api/billing/openapi.json"
# Left out: positive_data_acceptance expects every valid request to succeed, but a documented 402
# (payment required) or 409 (nothing to cancel) is the right answer to some; ignored_auth cannot
# tell our real login cookie from one it generated (every endpoint's 401 without a login has tests
# of its own). Every other default check runs: no 5xx, documented status codes, content types,
# response schemas and headers, invalid data refused.
from schemathesis.checks import ignored_auth, positive_data_acceptance  # noqa: E402


@pytest.fixture
def fuzzed_app(make_app: AppFactory) -> Flask:
    # CSRF has tests of its own; here writes must reach validation to be fuzzed at all. Payments
    # are on, so paid upgrades and webhooks are fuzzed too (their "off" answers have own tests).
    return make_app(
        BILLING_CSRF_ENABLED=False,
        BILLING_PAYMENT_PROVIDER=TestPaymentProvider(),
        BILLING_WEBHOOK_SECRET="fuzzing-secret",
    )


def session_cookie(app: Flask, user_id: str) -> dict[str, str]:
    """Log in the way the document says (the session cookie) and return that cookie."""
    client = app.test_client()
    client.post(f"/session-login/{user_id}")
    cookie = client.get_cookie(app.config.get("SESSION_COOKIE_NAME", "session"))
    assert cookie is not None
    return {cookie.key: cookie.value}


def operations(app: Flask) -> list[Any]:
    schema = schemathesis.openapi.from_wsgi(OPENAPI_PATH, app)
    # The tests log in for real (the session cookie); logging out is covered by the 401 tests.
    schema.config.generation.update(with_security_parameters=False)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_answer_is_a_server_error_or_breaks_the_document(
    fuzzed_app: Flask, mode: GenerationMode
) -> None:
    cookies = session_cookie(fuzzed_app, "fuzzed-user")
    for operation in operations(fuzzed_app):
        if mode is GenerationMode.NEGATIVE and not (len(operation.query) or len(operation.body)):
            continue  # nothing to make invalid: the positive run covers it

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=30,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(
                cookies=cookies, excluded_checks=[positive_data_acceptance, ignored_auth]
            )

        check()


def test_the_document_is_openapi_3_1_and_names_every_endpoint(client: FlaskClient) -> None:
    document = client.get(OPENAPI_PATH).get_json()

    assert document["openapi"] == "3.1.0"
    assert {
        "/api/subscription/plans",
        "/api/subscription/current",
        "/api/subscription/upgrade",
        "/api/subscription/usage",
        "/api/subscription/limits/check",
        "/api/subscription/cancel",
        "/api/profile/me",
        "/api/profile/activity",
        "/api/profile/events",
        "/api/profile/csrf-token",
        "/api/billing/quotas/preview",
        "/api/billing/webhooks/{provider}",
        "/api/accounts",
        "/api/accounts/{account_id}",
        "/api/accounts/{account_id}/members/{user_id}",
        "/api/accounts/{account_id}/transfer",
        "/api/accounts/{account_id}/caps/{user_id}/{metric}",
        "/api/accounts/{account_id}/invitations",
        "/api/accounts/{account_id}/invitations/{invitation_id}",
        "/api/invitations/accept",
    } <= set(document["paths"])
