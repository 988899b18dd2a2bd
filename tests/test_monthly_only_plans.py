"""A plan the catalog prices by the month only (no ``price_yearly``), as the integration guide's
Pro: the plan list, ``/upgrade`` and the profile page agree that it is not sold by the year."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_profile_billing.payments import TestPaymentProvider
from tests.support.host_app import AppFactory, as_user, billing_of

PLANS = {
    "metrics": {"post": {"kind": "periodic"}},
    "plans": [
        {"code": "free", "name": "Free", "default": True, "limits": {"post": 3}},
        {"code": "pro", "name": "Pro", "price_monthly": 19, "limits": {"post": None}},
        {"code": "team", "name": "Team", "price_monthly": 49, "price_yearly": 490},
    ],
}


@pytest.fixture
def shop(make_app: AppFactory) -> Any:
    app = make_app(
        BILLING_PLANS=PLANS, BILLING_CURRENCY="EUR", BILLING_PAYMENT_PROVIDER=TestPaymentProvider()
    )
    with app.app_context():
        yield app


def pricing(client: FlaskClient) -> dict[str, Any]:
    body = client.get("/api/subscription/plans").get_json()
    return {plan["id"]: plan["pricing"] for plan in body["data"]["plans"]}


def test_the_plan_list_gives_null_for_the_yearly_price_and_discount(shop: Flask) -> None:
    prices = pricing(shop.test_client())

    assert prices["pro"] == {
        "monthly": 19,
        "yearly": None,
        "currency": "EUR",
        "yearly_discount": None,
    }
    # A free plan stays free by the year, and a plan with both prices keeps its discount.
    assert prices["free"] == {"monthly": 0, "yearly": 0, "currency": "EUR", "yearly_discount": 0}
    assert prices["team"]["yearly"] == 490
    assert prices["team"]["yearly_discount"] == 16
    billing = billing_of(shop)
    assert billing.catalog.plan("pro").price_yearly is None
    assert billing.catalog.plan("free").price_yearly == Decimal(0)


def test_upgrade_refuses_a_year_of_it_and_sells_a_month(shop: Flask) -> None:
    client = shop.test_client()

    yearly = client.post(
        "/api/subscription/upgrade",
        json={"plan_type": "pro", "duration_months": 12},
        headers=as_user("alice"),
    )
    monthly = client.post(
        "/api/subscription/upgrade",
        json={"plan_type": "pro", "duration_months": 1},
        headers=as_user("alice"),
    )

    assert yearly.status_code == 402, yearly.get_json()
    assert yearly.get_json()["details"]["reason"] == "price_on_request"
    assert monthly.status_code == 202, monthly.get_json()


def plan_item(markup: str, code: str) -> str:
    """The markup of one plan's item in the plans card, up to the next plan's."""
    start = markup.index(f'data-pb-plan="{code}"')
    end = markup.find('<li class="pb-plan-option', start)
    return markup[start : end if end > 0 else markup.index("</section>", start)]


def test_the_page_offers_no_yearly_price_for_it(shop: Flask) -> None:
    client = shop.test_client()
    headers = {"X-User": "alice", "Accept": "text/html"}

    yearly = client.get("/profile/?billing=yearly", headers=headers).get_data(as_text=True)
    monthly = client.get("/profile/", headers=headers).get_data(as_text=True)

    assert "On request" in plan_item(yearly, "pro")
    assert "/ year" not in plan_item(yearly, "pro")
    assert 'data-pb-plan-form="pro"' not in plan_item(yearly, "pro")
    assert 'data-pb-plan-form="team"' in plan_item(yearly, "team")
    assert "/ month" in plan_item(monthly, "pro")
    assert 'data-pb-plan-form="pro"' in plan_item(monthly, "pro")
