"""Stripe through the official ``stripe`` library, against a loopback fake of Stripe's API.

An upgrade creates a Checkout Session for the plan's price, bound to our payment and the user; a
``checkout.session.completed`` signed as Stripe signs it grants the plan once, however often and
however concurrently it is delivered; a delivery with a wrong or stale signature, or a body changed
after signing, is refused and grants nothing; a confirmation for another amount, currency or user
grants nothing and stays in the payment's history.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_profile_billing import ProfileBilling
from flask_profile_billing.payments.stripe_provider import StripeProvider, minor_units
from tests.support.host_app import AppFactory, billing_of
from tests.support.payments import ONE_YEAR_LATER, PROFESSIONAL_YEAR, payment_rows, upgrade
from tests.support.provider_fakes import STRIPE_WEBHOOK_SECRET as WEBHOOK_SECRET
from tests.support.provider_fakes import FakeStripe, stripe_signature

CONCURRENT_DELIVERIES = 5


@pytest.fixture
def stripe_shop(make_app: AppFactory, fake_stripe: FakeStripe) -> Iterator[Flask]:
    provider = StripeProvider("sk_test_key", WEBHOOK_SECRET, api_base=fake_stripe.api_base)
    app = make_app(BILLING_PAYMENT_PROVIDER=provider)
    with app.app_context():
        yield app


@pytest.fixture
def client(stripe_shop: Flask) -> FlaskClient:
    return stripe_shop.test_client()


@pytest.fixture
def billing(stripe_shop: Flask) -> ProfileBilling:
    return billing_of(stripe_shop)


def start_checkout(client: FlaskClient, body: Any = None, user: str = "alice") -> dict[str, Any]:
    response = upgrade(client, body or PROFESSIONAL_YEAR, user)
    assert response.status_code == 202, response.get_json()
    payment: dict[str, Any] = response.get_json()["data"]["payment"]
    return payment


def session_of(app: Flask, payment: dict[str, Any]) -> str:
    [row] = [row for row in payment_rows(app) if row.id == payment["id"]]
    session_id: str = row.provider_payment_id
    return session_id


def deliver(client: FlaskClient, raw_body: bytes, header: str | None = None) -> Any:
    """POST a webhook as Stripe does: signed with the endpoint's secret unless ``header``."""
    signature = stripe_signature(WEBHOOK_SECRET, raw_body) if header is None else header
    headers = {"Stripe-Signature": signature} if signature else {}
    return client.post(
        "/api/billing/webhooks/stripe",
        data=raw_body,
        headers={**headers, "Content-Type": "application/json; charset=utf-8"},
    )


def history(billing: ProfileBilling, app: Flask) -> list[tuple[str | None, str]]:
    [row] = payment_rows(app)
    state = app.extensions["profile_billing"]
    return [(step["from_status"], step["to_status"]) for step in state.payments.events(row.id)]


def assert_nothing_granted(app: Flask, billing: ProfileBilling) -> None:
    assert billing.plan("alice").code == "free"
    assert [row.status for row in payment_rows(app)] == ["pending"]


# --- creating the checkout ------------------------------------------------------------------------


def test_an_upgrade_creates_a_checkout_session_for_the_price_bound_to_the_payment_and_user(
    stripe_shop: Flask, client: FlaskClient, fake_stripe: FakeStripe
) -> None:
    payment = start_checkout(client)

    [request] = fake_stripe.requests
    form = request.form
    assert request.path == "/v1/checkout/sessions"
    assert request.headers["authorization"] == "Bearer sk_test_key"
    assert request.headers["idempotency-key"] == f"checkout-{payment['id']}"
    assert form["mode"] == "payment"
    assert form["line_items[0][price_data][unit_amount]"] == "5990000"  # 59 900.00 RUB in kopecks
    assert form["line_items[0][price_data][currency]"] == "rub"
    assert form["line_items[0][quantity]"] == "1"
    assert form["metadata[payment_id]"] == payment["id"]
    assert form["metadata[user_id]"] == "alice"
    assert form["metadata[months]"] == "12"
    assert form["client_reference_id"] == payment["id"]
    assert form["success_url"] == "http://localhost/profile/"  # back to the profile page
    assert form["cancel_url"] == "http://localhost/profile/"
    [session] = fake_stripe.sessions.values()
    assert payment["confirmation_url"] == session["url"]
    assert session_of(stripe_shop, payment) == session["id"]


def test_configured_return_and_cancel_urls_are_sent_to_stripe(
    make_app: AppFactory, fake_stripe: FakeStripe
) -> None:
    provider = StripeProvider("sk_test_key", WEBHOOK_SECRET, api_base=fake_stripe.api_base)
    app = make_app(
        BILLING_PAYMENT_PROVIDER=provider,
        BILLING_PAYMENT_RETURN_URL="https://shop.example/thanks",
        BILLING_PAYMENT_CANCEL_URL="https://shop.example/pricing",
    )

    start_checkout(app.test_client())

    [request] = fake_stripe.requests
    assert request.form["success_url"] == "https://shop.example/thanks"
    assert request.form["cancel_url"] == "https://shop.example/pricing"


def test_stripe_refusing_the_session_fails_the_payment_with_a_502(
    stripe_shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_stripe: FakeStripe
) -> None:
    fake_stripe.failure = (
        401,
        {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_***key"},
    )

    response = upgrade(client, PROFESSIONAL_YEAR)

    assert response.status_code == 502
    assert response.get_json()["error"] == "PAYMENT_PROVIDER_ERROR"
    assert [row.status for row in payment_rows(stripe_shop)] == ["failed"]
    assert billing.plan("alice").code == "free"


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("59900", "RUB", 5990000),
        ("19.99", "EUR", 1999),
        ("5000", "JPY", 5000),
        ("1.5", "KWD", 1500),
    ],
)
def test_amounts_go_to_stripe_in_the_currencys_minor_units(
    amount: str, currency: str, minor: int
) -> None:
    from decimal import Decimal

    assert minor_units(Decimal(amount), currency) == minor


# --- the webhook grants -----------------------------------------------------------------------------


def test_a_completed_checkout_signed_by_stripe_grants_the_plan_once_with_its_history(
    stripe_shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_stripe: FakeStripe
) -> None:
    payment = start_checkout(client)
    raw = fake_stripe.event(session_of(stripe_shop, payment))

    response = deliver(client, raw)
    replay = deliver(client, raw)  # Stripe retries, or someone replays it within the tolerance

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["data"]["outcome"] == "processed"
    assert replay.get_json()["data"]["outcome"] == "duplicate"
    subscription = billing.subscription("alice")
    assert (subscription.plan_code, subscription.expires_at) == ("professional", ONE_YEAR_LATER)
    assert history(billing, stripe_shop) == [
        (None, "pending"),
        ("pending", "paid"),
        ("paid", "succeeded"),
    ]


def test_five_concurrent_deliveries_of_one_event_grant_once(
    stripe_shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_stripe: FakeStripe
) -> None:
    payment = start_checkout(client)
    raw = fake_stripe.event(session_of(stripe_shop, payment))
    header = stripe_signature(WEBHOOK_SECRET, raw)
    barrier = threading.Barrier(CONCURRENT_DELIVERIES)

    def send() -> str:
        own_client = stripe_shop.test_client()
        barrier.wait(timeout=30)
        response = deliver(own_client, raw, header)
        assert response.status_code == 200
        outcome: str = response.get_json()["data"]["outcome"]
        return outcome

    with ThreadPoolExecutor(max_workers=CONCURRENT_DELIVERIES) as pool:
        outcomes = [f.result() for f in [pool.submit(send) for _ in range(CONCURRENT_DELIVERIES)]]

    assert Counter(outcomes) == {"processed": 1, "duplicate": CONCURRENT_DELIVERIES - 1}
    assert billing.subscription("alice").expires_at == ONE_YEAR_LATER  # one year, not five
    assert history(billing, stripe_shop) == [
        (None, "pending"),
        ("pending", "paid"),
        ("paid", "succeeded"),
    ]


def test_a_payment_settled_later_grants_on_async_payment_succeeded(
    stripe_shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_stripe: FakeStripe
) -> None:
    payment = start_checkout(client)
    session_id = session_of(stripe_shop, payment)

    completed = deliver(client, fake_stripe.event(session_id, payment_status="unpaid"))
    assert completed.get_json()["data"]["outcome"] == "ignored"
    assert billing.plan("alice").code == "free"

    paid = deliver(
        client, fake_stripe.event(session_id, "checkout.session.async_payment_succeeded")
    )

    assert paid.get_json()["data"]["outcome"] == "processed"
    assert billing.plan("alice").code == "professional"


def test_deliveries_out_of_order_grant_nothing_twice_and_nothing_after_expiry(
    stripe_shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_stripe: FakeStripe
) -> None:
    paid = start_checkout(client)
    abandoned = start_checkout(client, {"plan_type": "starter", "duration_months": 1})
    paid_session = session_of(stripe_shop, paid)
    abandoned_session = session_of(stripe_shop, abandoned)

    # The success of one arrives, then a stale expiry of it; the other expires before a late
    # (forged or misrouted) success of it arrives.
    assert deliver(client, fake_stripe.event(paid_session)).status_code == 200
    late_expiry = deliver(client, fake_stripe.event(paid_session, "checkout.session.expired"))
    expired = deliver(client, fake_stripe.event(abandoned_session, "checkout.session.expired"))
    late_success = deliver(client, fake_stripe.event(abandoned_session))

    assert late_expiry.get_json()["data"]["outcome"] == "ignored"
    assert expired.get_json()["data"]["outcome"] == "processed"
    assert late_success.get_json()["data"]["outcome"] == "ignored"
    assert billing.subscription("alice").plan_code == "professional"
    statuses = {row.id: row.status for row in payment_rows(stripe_shop)}
    assert statuses == {paid["id"]: "succeeded", abandoned["id"]: "cancelled"}


def test_an_event_stripe_sends_that_is_not_handled_is_recorded_and_ignored(
    stripe_shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_stripe: FakeStripe
) -> None:
    payment = start_checkout(client)
    raw = fake_stripe.event(session_of(stripe_shop, payment), "customer.created")

    response = deliver(client, raw)

    assert response.status_code == 200
    assert response.get_json()["data"]["outcome"] == "ignored"
    assert_nothing_granted(stripe_shop, billing)


# --- refused deliveries grant nothing ---------------------------------------------------------------


@pytest.mark.parametrize("offset", [-250, 250])
def test_a_signature_dated_within_the_tolerance_either_way_is_accepted_and_grants(
    stripe_shop: Flask,
    client: FlaskClient,
    billing: ProfileBilling,
    fake_stripe: FakeStripe,
    offset: int,
) -> None:
    payment = start_checkout(client)
    raw = fake_stripe.event(session_of(stripe_shop, payment))
    # 250 s off, well inside the 300 s tolerance: the test's own run time cannot push it out.
    header = stripe_signature(WEBHOOK_SECRET, raw, int(time.time()) + offset)

    response = deliver(client, raw, header)

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["data"]["outcome"] == "processed"
    assert billing.subscription("alice").expires_at == ONE_YEAR_LATER


@pytest.mark.parametrize(
    "case",
    [
        "no signature",
        "wrong signature",
        "signed with another secret",
        "stale timestamp",
        "replayed an hour later",
        "dated past the tolerance in the future",
        "dated a day in the future",
        "body changed after signing",
        "our own scheme instead of Stripe's",
    ],
)
def test_a_delivery_stripe_did_not_sign_now_is_refused_and_grants_nothing(
    stripe_shop: Flask,
    client: FlaskClient,
    billing: ProfileBilling,
    fake_stripe: FakeStripe,
    case: str,
) -> None:
    payment = start_checkout(client)
    raw = fake_stripe.event(session_of(stripe_shop, payment))
    now = int(time.time())
    headers = {
        "no signature": "",
        "wrong signature": f"t={now},v1={'0' * 64}",
        "signed with another secret": stripe_signature("whsec_other", raw),
        "stale timestamp": stripe_signature(WEBHOOK_SECRET, raw, now - 301),
        "replayed an hour later": stripe_signature(WEBHOOK_SECRET, raw, now - 3600),
        # Dated ahead, a captured delivery would stay replayable until long after its capture.
        "dated past the tolerance in the future": stripe_signature(WEBHOOK_SECRET, raw, now + 400),
        "dated a day in the future": stripe_signature(WEBHOOK_SECRET, raw, now + 86400),
        "body changed after signing": stripe_signature(WEBHOOK_SECRET, raw),
        "our own scheme instead of Stripe's": stripe_signature(WEBHOOK_SECRET, raw),
    }
    if case == "body changed after signing":
        raw = raw.replace(b'"amount_total": 5990000', b'"amount_total": 100')
    if case == "our own scheme instead of Stripe's":
        response = client.post(
            "/api/billing/webhooks/stripe",
            data=raw,
            headers={"X-Billing-Signature": headers[case]},
        )
    else:
        response = deliver(client, raw, headers[case])

    assert response.status_code == 401
    assert response.get_json()["error"] == "INVALID_SIGNATURE"
    assert_nothing_granted(stripe_shop, billing)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"amount_total": 599000}, "paid 5990.00 RUB, expected 59900.00 RUB"),
        ({"currency": "usd"}, "paid 59900.00 USD, expected 59900.00 RUB"),
        ({"metadata": {"user_id": "mallory"}}, "the event is for another user"),
    ],
)
def test_a_confirmation_that_differs_from_our_record_grants_nothing_and_is_kept(
    stripe_shop: Flask,
    client: FlaskClient,
    billing: ProfileBilling,
    fake_stripe: FakeStripe,
    caplog: pytest.LogCaptureFixture,
    changes: dict[str, Any],
    reason: str,
) -> None:
    payment = start_checkout(client)
    session_id = session_of(stripe_shop, payment)
    changes = dict(changes)  # the parameter is shared by both databases' runs
    if "metadata" in changes:
        changes["metadata"] = {
            **fake_stripe.sessions[session_id]["metadata"],
            **changes["metadata"],
        }
    raw = fake_stripe.event(session_id, **changes)

    with caplog.at_level(logging.WARNING, logger="flask_profile_billing"):
        response = deliver(client, raw)

    assert response.status_code == 200
    assert response.get_json()["data"]["outcome"] == "rejected"
    assert reason in response.get_json()["data"]["reason"]
    assert_nothing_granted(stripe_shop, billing)
    assert any(reason in record.getMessage() for record in caplog.records)
    state = stripe_shop.extensions["profile_billing"]
    steps = state.payments.events(payment["id"])
    assert [(s["from_status"], s["to_status"]) for s in steps] == [
        (None, "pending"),
        ("pending", "pending"),
    ]
    assert reason in steps[-1]["reason"]


# --- configuration alone ----------------------------------------------------------------------------


def test_the_stripe_provider_is_set_up_by_name_from_keys_in_the_environment(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BILLING_STRIPE_SECRET_KEY", "sk_test_from_env")
    monkeypatch.setenv("BILLING_STRIPE_WEBHOOK_SECRET", "whsec_from_env")

    with caplog.at_level(logging.DEBUG):
        app = make_app(BILLING_PAYMENT_PROVIDER="stripe")

    state = app.extensions["profile_billing"]
    provider = state.payments.provider
    assert isinstance(provider, StripeProvider)
    assert state.payments.provider_named("stripe") is provider
    shown = f"{provider!r} {state.runtime.settings!r} {caplog.text}"
    assert "sk_test_from_env" not in shown
    assert "whsec_from_env" not in shown


# --- the profile page -------------------------------------------------------------------------------


def test_buy_on_the_profile_page_goes_to_stripe_checkout_and_the_webhook_shows_the_new_plan(
    stripe_shop: Flask, client: FlaskClient, fake_stripe: FakeStripe
) -> None:
    from tests.test_profile_page import parse, post, render

    before = parse(render(client, "alice"))
    assert before.by_id("pb-plan-starter").get("aria-current") != "true"  # type: ignore[union-attr]

    chosen = post(client, "alice", "plan", plan_type="starter", duration_months="12")
    checkout = parse(render(client, "alice", "?dialog=checkout"))

    assert chosen.status_code == 303
    assert chosen.headers["Location"].endswith("/profile/?dialog=checkout")
    [session] = fake_stripe.sessions.values()
    link = checkout.by_id("pb-checkout-link")
    assert link is not None
    assert link["href"] == session["url"]  # the user pays on Stripe's page
    assert session["success_url"] == "http://localhost/profile/"  # and comes back here

    assert deliver(client, fake_stripe.event(session["id"])).status_code == 200

    after = parse(render(client, "alice"))
    assert after.by_id("pb-plan-starter")["aria-current"] == "true"  # type: ignore[index]
