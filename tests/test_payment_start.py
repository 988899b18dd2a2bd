"""Starting a payment with ``POST /api/subscription/upgrade``: without a payment provider a paid
plan is "coming soon" (402 with the address to buy from), enterprise is priced on request either
way, and moving to Free waits for the end of the paid period; with a provider the upgrade records
a pending payment and changes nothing yet. A provider that fails to start leaves a failed payment,
and fields a client may not set or other durations are refused before any payment.

The webhooks that settle a payment are test_payment_webhooks.py's.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_profile_billing import BillingConfigError, ProfileBilling, SubscriptionStatus
from flask_profile_billing.payments import (
    PaymentIntent,
    ProviderPayment,
    TestPaymentProvider,
)
from flask_profile_billing.services.payments import PAYMENTS_NOTICE
from tests.support.host_app import AppFactory, Clock, billing_of
from tests.support.payments import (
    CONTACT,
    ONE_YEAR_LATER,
    PROFESSIONAL_YEAR,
    SECRET,
    payment_rows,
    upgrade,
)

# --- without a provider: coming soon --------------------------------------------------------------


def test_without_a_provider_a_paid_upgrade_is_coming_soon_and_changes_nothing(
    make_app: AppFactory,
) -> None:
    app = make_app(PROFILE_PAYMENTS_CTA_EMAIL=CONTACT)
    billing = billing_of(app)

    response = upgrade(app.test_client(), PROFESSIONAL_YEAR)

    assert response.status_code == 402
    body = response.get_json()
    assert body["success"] is False
    assert body["error"] == "PAYMENT_REQUIRED"
    assert body["message"] == PAYMENTS_NOTICE
    assert body["details"]["contact_email"] == CONTACT
    assert body["details"]["contact_url"] == f"mailto:{CONTACT}"
    with app.app_context():
        assert billing.plan("alice").code == "free"
        assert payment_rows(app) == []


@pytest.mark.parametrize("with_provider", [False, True])
def test_enterprise_is_priced_on_request_so_it_goes_to_a_human(
    make_app: AppFactory, provider: TestPaymentProvider, with_provider: bool
) -> None:
    config: dict[str, Any] = {"PROFILE_PAYMENTS_CTA_EMAIL": CONTACT}
    if with_provider:
        config.update(BILLING_PAYMENT_PROVIDER=provider, BILLING_WEBHOOK_SECRET=SECRET)
    app = make_app(**config)
    billing = billing_of(app)

    response = upgrade(app.test_client(), {"plan_type": "enterprise", "duration_months": 12})

    assert response.status_code == 402
    body = response.get_json()
    assert body["error"] == "PAYMENT_REQUIRED"
    assert body["details"]["contact_email"] == CONTACT
    assert body["details"]["reason"] == "price_on_request"
    assert provider.started == []
    with app.app_context():
        assert billing.plan("alice").code == "free"
        assert payment_rows(app) == []


def test_moving_to_free_from_a_paid_plan_takes_effect_at_the_end_of_the_period(
    shop: Flask, shop_client: FlaskClient, shop_billing: ProfileBilling, clock: Clock
) -> None:
    shop_billing.change_plan("alice", "professional", 12)

    response = upgrade(shop_client, {"plan_type": "free", "duration_months": 1})

    assert response.status_code == 200
    assert "payment" not in response.get_json()["data"]
    assert shop_billing.subscription("alice").status is SubscriptionStatus.CANCELLED
    assert shop_billing.plan("alice").code == "professional"
    assert payment_rows(shop) == []
    clock.set(ONE_YEAR_LATER)
    assert shop_billing.plan("alice").code == "free"


# --- with the test provider: the upgrade starts a payment -----------------------------------------


@pytest.mark.parametrize(
    ("plan_type", "months", "amount"),
    [("professional", 12, 59900), ("starter", 1, 2990)],
)
def test_an_upgrade_starts_a_pending_payment_and_changes_nothing_yet(
    shop: Flask,
    shop_client: FlaskClient,
    shop_billing: ProfileBilling,
    provider: TestPaymentProvider,
    plan_type: str,
    months: int,
    amount: int,
) -> None:
    response = upgrade(shop_client, {"plan_type": plan_type, "duration_months": months})

    assert response.status_code == 202
    data = response.get_json()["data"]
    payment = data["payment"]
    assert payment == {
        "id": payment["id"],
        "status": "pending",
        "amount": amount,
        "currency": "RUB",
        "plan_type": plan_type,
        "duration_months": months,
        "confirmation_url": f"https://payments.example.test/pay/test_{payment['id']}",
    }
    assert data["subscription"]["plan"]["plan_type"] == "free"
    assert shop_billing.plan("alice").code == "free"
    [row] = payment_rows(shop)
    assert (row.id, row.account_id, row.status, row.plan_code, row.months) == (
        payment["id"],
        "user:alice",
        "pending",
        plan_type,
        months,
    )
    assert (row.amount, row.currency) == (Decimal(amount), "RUB")
    assert (row.provider, row.provider_payment_id) == ("test", f"test_{payment['id']}")
    [intent] = provider.started
    assert (intent.id, intent.amount, intent.account_id) == (
        payment["id"],
        Decimal(amount),
        "user:alice",
    )


class BrokenProvider(TestPaymentProvider):
    def __init__(self, answer: ProviderPayment | None) -> None:
        super().__init__()
        self.answer = answer

    def start(self, payment: PaymentIntent) -> ProviderPayment:
        if self.answer is None:
            raise ConnectionError("provider unreachable")
        return self.answer


@pytest.mark.parametrize(
    "answer",
    [
        None,
        ProviderPayment("p1", "javascript:alert(1)"),
        ProviderPayment("p" * 300, "https://payments.example.test/pay/p"),
    ],
    ids=["unreachable", "unsafe url", "id too long"],
)
def test_a_provider_that_fails_to_start_leaves_a_failed_payment_and_the_plan_alone(
    make_app: AppFactory, answer: ProviderPayment | None
) -> None:
    app = make_app(BILLING_PAYMENT_PROVIDER=BrokenProvider(answer), BILLING_WEBHOOK_SECRET=SECRET)
    billing = billing_of(app)

    response = upgrade(app.test_client(), PROFESSIONAL_YEAR)

    assert response.status_code == 502
    assert response.get_json()["error"] == "PAYMENT_PROVIDER_ERROR"
    with app.app_context():
        assert billing.plan("alice").code == "free"
        assert [row.status for row in payment_rows(app)] == ["failed"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("paypal", "BILLING_PAYMENT_PROVIDER: unknown payment provider 'paypal'"),
        (42, "BILLING_PAYMENT_PROVIDER"),
        ("yookassa", "BILLING_YOOKASSA_"),  # a built-in provider without its keys
        ("stripe", "BILLING_STRIPE_"),
    ],
)
def test_a_provider_setting_that_is_not_a_provider_fails_at_start_up(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch, value: Any, message: str
) -> None:
    for key in ("BILLING_STRIPE_SECRET_KEY", "BILLING_YOOKASSA_SHOP_ID"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(BillingConfigError, match=message):
        make_app(BILLING_PAYMENT_PROVIDER=value)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({**PROFESSIONAL_YEAR, "status": "succeeded"}, {"status"}),
        ({**PROFESSIONAL_YEAR, "user_id": "bob"}, {"user_id"}),
        ({**PROFESSIONAL_YEAR, "amount": 0, "currency": "RUB"}, {"amount", "currency"}),
        ({"plan_type": "professional", "duration_months": 3}, {"duration_months"}),
    ],
)
def test_mass_assignment_and_bad_durations_are_refused_before_any_payment(
    shop: Flask,
    shop_client: FlaskClient,
    shop_billing: ProfileBilling,
    provider: TestPaymentProvider,
    body: dict[str, Any],
    fields: set[str],
) -> None:
    response = upgrade(shop_client, body)

    assert response.status_code == 422
    assert response.get_json()["error"] == "VALIDATION_ERROR"
    assert set(response.get_json()["details"]["fields"]) == fields
    assert provider.started == []
    assert payment_rows(shop) == []
    assert shop_billing.plan("alice").code == "free"
