"""Edges of the JSON API: signed webhooks under a host's global CSRF protection, unknown query
parameters, bodies that are not JSON, and the cap on a user's pending payments."""

from __future__ import annotations

import io
import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import func, select

from flask_profile_billing import BillingConfigError
from flask_profile_billing.domain.accounts import personal_account_id
from flask_profile_billing.payments import (
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
    SIGNATURE_HEADER,
    TestPaymentProvider,
    sign,
)
from flask_profile_billing.settings import DEFAULTS
from flask_profile_billing.store.models import payments
from tests.support.host_app import AppFactory, Clock, as_user, billing_of

SECRET = "edge-secret"
NOW = datetime(2025, 10, 13, 10, 0, tzinfo=UTC)  # the test clock's start
STARTER = {"plan_type": "starter", "duration_months": 1}
API_BLUEPRINTS = (
    "billing_subscription_api",
    "billing_profile_api",
    "billing_api",
    "billing_accounts_api",
)
# Every GET endpoint of the three API blueprints; the test below finds them in the URL map, so a
# new one is checked as soon as it exists, and this list says it was looked at.
GET_ENDPOINTS = {
    "/api/subscription/plans",
    "/api/subscription/current",
    "/api/subscription/usage",
    "/api/subscription/limits/check",
    "/api/profile/me",
    "/api/profile/activity",
    "/api/profile/csrf-token",
    "/api/billing/quotas/preview",
    "/api/billing/openapi.json",
    "/api/accounts",
    "/api/accounts/<account_id>",
}


def shop(make_app: AppFactory, provider: TestPaymentProvider, **config: Any) -> Flask:
    return make_app(BILLING_PAYMENT_PROVIDER=provider, BILLING_WEBHOOK_SECRET=SECRET, **config)


def deliver(
    client: FlaskClient, provider: TestPaymentProvider, payment: dict[str, Any], kind: str
) -> Any:
    """The provider's signed delivery: no login, no session, no CSRF token."""
    raw = json.dumps(
        provider.event(kind, payment["id"], payment["amount"], payment["currency"])
    ).encode()
    return client.post(
        "/api/billing/webhooks/test",
        data=raw,
        headers={
            SIGNATURE_HEADER: sign(SECRET, raw, int(NOW.timestamp())),
            "Content-Type": "application/json",
        },
    )


def pending_payments(app: Flask, user_id: str) -> int:
    query = (
        select(func.count())
        .select_from(payments)
        .where(
            payments.c.account_id == personal_account_id(user_id), payments.c.status == "pending"
        )
    )
    with app.app_context(), app.extensions["sqlalchemy"].engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


# --- signed webhooks and a host's global CSRFProtect -----------------------------------------------


def test_a_signed_webhook_passes_csrf_protect_initialised_after_the_extension(
    make_app: AppFactory, provider: TestPaymentProvider
) -> None:
    app = shop(make_app, provider)
    CSRFProtect(app)  # after ProfileBilling(app, db), which create_host_app ran
    billing = billing_of(app)
    client = app.test_client()
    token = client.get("/api/profile/csrf-token", headers=as_user("alice")).get_json()["data"]
    started = client.post(
        "/api/subscription/upgrade",
        json=STARTER,
        headers=as_user("alice", **{"X-CSRFToken": token["csrf_token"]}),
    )
    assert started.status_code == 202, started.get_json()

    delivered = deliver(
        app.test_client(), provider, started.get_json()["data"]["payment"], PAYMENT_SUCCEEDED
    )

    assert delivered.status_code == 200, delivered.get_json()
    assert delivered.get_json()["data"]["outcome"] == "processed"
    with app.app_context():
        assert billing.plan("alice").code == "starter"


def test_the_hosts_csrf_protect_leaves_the_api_to_its_own_check(
    make_app: AppFactory, provider: TestPaymentProvider
) -> None:
    """The extension's endpoints decide authentication first (401), then CSRF for cookie
    sessions (400 CSRF_FAILED); the host's own views stay under its CSRFProtect."""
    app = shop(make_app, provider)
    CSRFProtect(app)
    cookie = app.test_client()
    with cookie.session_transaction() as session:
        session["_user_id"] = "alice"
        session["_fresh"] = True

    writes = {
        path: cookie.post(path, json=body, headers={"Accept": "application/json"})
        for path, body in [
            ("/api/subscription/upgrade", STARTER),
            ("/api/subscription/cancel", {}),
            ("/api/profile/events", {"event": "profile:view"}),
        ]
    }
    host_view = cookie.post("/analyze", json={}, headers={"Accept": "application/json"})
    anonymous = app.test_client().post("/api/subscription/cancel", headers=as_user(""))
    unsigned = app.test_client().post("/api/billing/webhooks/test", json={"event_id": "e"})

    assert {path: answer.status_code for path, answer in writes.items()} == dict.fromkeys(
        writes, 400
    )
    assert {answer.get_json()["error"] for answer in writes.values()} == {"CSRF_FAILED"}
    assert pending_payments(app, "alice") == 0
    assert host_view.status_code == 400  # the host's own view: CSRFProtect's refusal
    assert anonymous.status_code == 401
    assert unsigned.status_code == 401  # past CSRF, the signature is what authenticates it
    assert unsigned.get_json()["error"] == "INVALID_SIGNATURE"


# --- unknown query parameters ---------------------------------------------------------------------


def test_every_get_endpoint_refuses_unknown_query_parameters(
    app: Flask, client: FlaskClient
) -> None:
    found = {
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.split(".")[0] in API_BLUEPRINTS and "GET" in (rule.methods or ())
    }
    assert found == GET_ENDPOINTS

    answers = {path: client.get(f"{path}?unexpected=1", headers=as_user("alice")) for path in found}

    refused = {
        path: (answer.status_code, answer.get_json()["error"], answer.get_json()["details"])
        for path, answer in answers.items()
    }
    expected = (422, "VALIDATION_ERROR", {"fields": {"unexpected": ["Unknown field."]}})
    assert refused == dict.fromkeys(found, expected)


def test_known_query_parameters_still_work_next_to_the_refusal(client: FlaskClient) -> None:
    usage = client.get("/api/subscription/usage?days=7", headers=as_user("alice"))
    mixed = client.get("/api/subscription/usage?days=7&verbose=1", headers=as_user("alice"))

    assert usage.status_code == 200
    assert mixed.status_code == 422
    assert set(mixed.get_json()["details"]["fields"]) == {"verbose"}


def test_the_openapi_document_says_every_get_endpoint_can_answer_422(client: FlaskClient) -> None:
    document = client.get("/api/billing/openapi.json").get_json()

    without_422 = [
        path
        for path, operations in document["paths"].items()
        if "get" in operations and "422" not in operations["get"]["responses"]
    ]
    assert without_422 == []


# --- bodies that are not JSON ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ({"company": "Acme"}, None),  # a form: application/x-www-form-urlencoded
        ({"company": "Acme", "logo": b"png"}, None),  # multipart: it carries a file
        ('{"company": "Acme"}', "text/plain"),
        ('{"company": "Acme"}', None),  # no Content-Type at all
    ],
    ids=["form", "multipart", "text", "no content type"],
)
def test_a_profile_edit_that_is_not_json_is_415_and_changes_nothing(
    client: FlaskClient, body: Any, content_type: str | None
) -> None:
    if isinstance(body, dict) and "logo" in body:
        body = {**body, "logo": (io.BytesIO(body["logo"]), "logo.png")}  # a fresh file each run
    answer = client.patch(
        "/api/profile/me", data=body, content_type=content_type, headers=as_user("alice")
    )

    assert answer.status_code == 415
    assert answer.get_json() == {
        "success": False,
        "error": "UNSUPPORTED_MEDIA_TYPE",
        "message": "The request body must be JSON: send it with Content-Type: application/json",
        "details": {},
    }
    me = client.get("/api/profile/me", headers=as_user("alice")).get_json()["data"]
    assert me["company"] is None


@pytest.mark.parametrize(
    ("path", "body"),
    [("/api/subscription/upgrade", STARTER), ("/api/profile/events", {"event": "profile:view"})],
)
def test_every_json_body_endpoint_refuses_a_form(
    client: FlaskClient, path: str, body: dict[str, Any]
) -> None:
    answer = client.post(path, data=body, headers=as_user("alice"))

    assert answer.status_code == 415
    assert answer.get_json()["error"] == "UNSUPPORTED_MEDIA_TYPE"


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/merge-patch+json"]
)
def test_json_media_types_with_parameters_or_a_suffix_are_json(
    client: FlaskClient, content_type: str
) -> None:
    answer = client.patch(
        "/api/profile/me",
        data=json.dumps({"company": "Acme"}),
        content_type=content_type,
        headers=as_user("alice"),
    )

    assert answer.status_code == 200
    assert answer.get_json()["data"]["company"] == "Acme"


def test_an_empty_body_needs_no_content_type(client: FlaskClient) -> None:
    answer = client.post(
        "/api/subscription/upgrade", content_type="text/plain", headers=as_user("alice")
    )

    assert answer.status_code == 422  # validated as {}: plan_type is missing
    assert set(answer.get_json()["details"]["fields"]) == {"plan_type"}


# --- the cap on pending payments ------------------------------------------------------------------


def upgrade(client: FlaskClient, user: str = "alice") -> Any:
    return client.post("/api/subscription/upgrade", json=STARTER, headers=as_user(user))


def test_at_most_the_cap_of_pending_payments_then_429_and_nothing_created(
    make_app: AppFactory, provider: TestPaymentProvider
) -> None:
    app = shop(make_app, provider, BILLING_MAX_PENDING_PAYMENTS=2)
    client = app.test_client()

    started = [upgrade(client) for _ in range(2)]
    refused = upgrade(client)
    other_user = upgrade(client, "bob")

    assert [answer.status_code for answer in started] == [202, 202]
    assert refused.status_code == 429
    body = refused.get_json()
    assert body["success"] is False
    assert body["error"] == "TOO_MANY_PENDING_PAYMENTS"
    assert "finish" in body["message"]
    assert "wait" in body["message"]
    assert body["details"] == {"pending_payments": 2, "max_pending_payments": 2}
    assert pending_payments(app, "alice") == 2
    assert len(provider.started) == 3  # alice's two and bob's one: the refusal never reached it
    assert other_user.status_code == 202


def test_a_settled_payment_frees_its_place_under_the_cap(
    make_app: AppFactory, provider: TestPaymentProvider
) -> None:
    app = shop(make_app, provider, BILLING_MAX_PENDING_PAYMENTS=1)
    client = app.test_client()
    first = upgrade(client).get_json()["data"]["payment"]
    assert upgrade(client).status_code == 429

    assert deliver(client, provider, first, PAYMENT_FAILED).status_code == 200

    assert upgrade(client).status_code == 202
    assert pending_payments(app, "alice") == 1


def test_a_payment_pending_for_a_day_is_abandoned_and_frees_its_place(
    make_app: AppFactory, provider: TestPaymentProvider, clock: Clock
) -> None:
    app = shop(make_app, provider, BILLING_MAX_PENDING_PAYMENTS=1)
    client = app.test_client()
    assert upgrade(client).status_code == 202
    clock.advance(hours=23)
    assert upgrade(client).status_code == 429

    clock.advance(hours=1)

    assert upgrade(client).status_code == 202


def test_the_default_cap_is_five(make_app: AppFactory, provider: TestPaymentProvider) -> None:
    app = shop(make_app, provider)
    client = app.test_client()

    statuses = [upgrade(client).status_code for _ in range(6)]

    assert DEFAULTS["BILLING_MAX_PENDING_PAYMENTS"] == 5
    assert statuses == [202] * 5 + [429]


@pytest.mark.parametrize("value", [0, -1, "many", None])
def test_a_cap_that_is_not_a_positive_number_fails_at_start_up(
    make_app: AppFactory, value: Any
) -> None:
    with pytest.raises(BillingConfigError, match="BILLING_MAX_PENDING_PAYMENTS"):
        make_app(BILLING_MAX_PENDING_PAYMENTS=value)


CONCURRENT_STARTS = 12
CONCURRENT_CAP = 3


def test_concurrent_starts_never_pass_the_cap(
    make_app: AppFactory, provider: TestPaymentProvider
) -> None:
    app = shop(make_app, provider, BILLING_MAX_PENDING_PAYMENTS=CONCURRENT_CAP)
    with app.app_context():  # the plans and alice's free subscription exist before the race
        billing_of(app).subscription("alice")
    barrier = threading.Barrier(CONCURRENT_STARTS)

    def start() -> int:
        client = app.test_client()
        barrier.wait(timeout=30)
        return int(upgrade(client).status_code)

    with ThreadPoolExecutor(max_workers=CONCURRENT_STARTS) as pool:
        statuses = Counter(
            f.result() for f in [pool.submit(start) for _ in range(CONCURRENT_STARTS)]
        )

    assert statuses == {202: CONCURRENT_CAP, 429: CONCURRENT_STARTS - CONCURRENT_CAP}
    assert pending_payments(app, "alice") == CONCURRENT_CAP
