"""The quota packages preview, ``GET /api/billing/quotas/preview``: the paid plans as packages in
the shape of the documented example, public, "coming soon" until a payment provider is set, and
following the primary metric.
"""

from __future__ import annotations

from flask.testing import FlaskClient

from flask_profile_billing.payments import TestPaymentProvider
from tests.support.contracts import assert_same_shape
from tests.support.host_app import AppFactory

# The documented example of a package, with the fields this API adds (name, currency).
DOCUMENTED_PACKAGE = {
    "id": "starter",
    "name": "Starter",
    "tokens": 10,
    "price": 0,
    "currency": "RUB",
    "status": "coming_soon",
}


def test_the_preview_lists_the_paid_plans_as_coming_soon_without_a_login(
    client: FlaskClient,
) -> None:
    response = client.get("/api/billing/quotas/preview")

    assert response.status_code == 200
    body = response.get_json()
    assert body["success"] is True
    assert_same_shape(body["data"][:1], [DOCUMENTED_PACKAGE])
    assert body["data"] == [
        {
            "id": "starter",
            "name": "Starter",
            "tokens": 200,
            "price": 2990,
            "currency": "RUB",
            "status": "coming_soon",
        },
        {
            "id": "professional",
            "name": "Professional",
            "tokens": 1000,
            "price": 5990,
            "currency": "RUB",
            "status": "coming_soon",
        },
        {
            "id": "enterprise",
            "name": "Enterprise",
            "tokens": None,
            "price": None,
            "currency": "RUB",
            "status": "coming_soon",
        },
    ]


def test_the_preview_follows_the_primary_metric_and_the_payment_provider(
    make_app: AppFactory,
) -> None:
    app = make_app(BILLING_PRIMARY_METRIC="export", BILLING_PAYMENT_PROVIDER=TestPaymentProvider())

    packages = app.test_client().get("/api/billing/quotas/preview").get_json()["data"]

    assert [(p["id"], p["tokens"], p["status"]) for p in packages] == [
        ("starter", 50, "available"),
        ("professional", 200, "available"),
        ("enterprise", None, "on_request"),
    ]


def test_the_preview_refuses_query_parameters(client: FlaskClient) -> None:
    response = client.get("/api/billing/quotas/preview?page=2")

    assert response.status_code == 422
    assert set(response.get_json()["details"]["fields"]) == {"page"}
