"""Buying with a payment provider configured, in the browser: the example app with Stripe, its API
served by a fake on loopback. Choosing a plan on the profile page leads to the provider's checkout
page; once Stripe's signed webhook reaches the app, the profile shows the new plan."""

from __future__ import annotations

import json
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect
from pytest_httpserver import HTTPServer

from flask_profile_billing.payments.stripe_provider import StripeProvider
from tests.browser.profile_pages import PROFILE, open_profile
from tests.support.browser import ALICE, LiveServer, PageGuards
from tests.support.provider_fakes import FakeStripe, stripe_signature

WEBHOOK_SECRET = "whsec_browser_test"


@pytest.fixture
def fake_stripe(httpserver: HTTPServer) -> FakeStripe:
    fake = FakeStripe(httpserver, local_checkout=True)
    fake.install()
    return fake


@pytest.fixture
def app_config(fake_stripe: FakeStripe) -> dict[str, Any]:
    """The example app on its own database, taking payments through Stripe (the fake)."""
    provider = StripeProvider("sk_test_browser", WEBHOOK_SECRET, api_base=fake_stripe.api_base)
    return {"BILLING_PAYMENT_PROVIDER": provider}


def send_webhook(app_server: LiveServer, raw_body: bytes) -> dict[str, Any]:
    """POST the event to the app as Stripe does, signed with the endpoint's secret."""
    request = urllib.request.Request(
        f"{app_server.url}/api/billing/webhooks/stripe",
        data=raw_body,
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": stripe_signature(WEBHOOK_SECRET, raw_body),
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.load(response)
    return answer


def test_buy_goes_to_the_providers_checkout_and_the_webhook_brings_the_new_plan(
    page: Page, guards: PageGuards, app_server: LiveServer, fake_stripe: FakeStripe
) -> None:
    open_profile(page, ALICE)
    expect(page.locator("#pb-plan-starter")).not_to_have_attribute("aria-current", "true")

    page.locator("[data-pb-plan-form='starter']").get_by_role("button").click()
    link = page.locator("#pb-checkout-link")
    expect(link).to_be_visible()
    [session] = fake_stripe.sessions.values()
    expect(link).to_have_attribute("href", session["url"])
    assert session["customer_email"] == ALICE[0]  # Alice's session
    assert urlsplit(session["success_url"]).path == PROFILE  # the user comes back here

    checkout_origin = fake_stripe.api_base
    guards.allow_origin(checkout_origin)  # the provider's page, on loopback
    link.click()
    page.wait_for_url(f"{checkout_origin}/c/pay/{session['id']}")
    expect(page.locator("#session")).to_have_text(session["id"])

    answer = send_webhook(app_server, fake_stripe.event(session["id"]))
    page.goto(f"{app_server.url}{PROFILE}")

    assert answer["data"]["outcome"] == "processed"
    expect(page.locator("#pb-plan-starter")).to_have_attribute("aria-current", "true")
