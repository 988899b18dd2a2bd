"""Stripe subscriptions: a plan and cadence with a price in BILLING_STRIPE_PRICES is sold through
Checkout in ``subscription`` mode; Stripe then charges every period, and its signed events drive
the user's plan: the first payment grants it (whichever of the completed session and the first
``invoice.paid`` comes first), each renewal's ``invoice.paid`` extends it by the plan's own cadence
at the price we know, and ``customer.subscription.updated`` / ``.deleted`` cancel or resume it.
A user's own cancel here is passed on to Stripe, so a cancelled user is not charged again.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from sqlalchemy import select

from flask_profile_billing import BillingConfigError, ProfileBilling
from flask_profile_billing.payments.stripe_provider import StripeProvider
from flask_profile_billing.store.models import recurring
from tests.support.host_app import AppFactory, billing_of
from tests.support.payments import payment_rows, rows, upgrade
from tests.support.provider_fakes import STRIPE_WEBHOOK_SECRET as WEBHOOK_SECRET
from tests.support.provider_fakes import FakeStripe
from tests.support.provider_fakes import deliver_to_stripe_webhook as deliver

PRICES = {"starter": {"monthly": "price_starter_monthly", "yearly": "price_starter_yearly"}}
STARTER_MONTH = {"plan_type": "starter", "duration_months": 1}
ONE_MONTH_LATER = datetime(2025, 11, 13, 10, 0, tzinfo=UTC)
TWO_MONTHS_LATER = datetime(2025, 12, 13, 10, 0, tzinfo=UTC)
CONCURRENT_DELIVERIES = 5


@pytest.fixture
def fake_stripe(httpserver: HTTPServer) -> FakeStripe:
    fake = FakeStripe(httpserver)
    fake.prices = {
        "price_starter_monthly": (299000, "rub"),
        "price_starter_yearly": (2990000, "rub"),
    }
    fake.install()
    return fake


@pytest.fixture
def shop(make_app: AppFactory, fake_stripe: FakeStripe) -> Iterator[Flask]:
    provider = StripeProvider(
        "sk_test_key", WEBHOOK_SECRET, api_base=fake_stripe.api_base, prices=PRICES
    )
    app = make_app(BILLING_PAYMENT_PROVIDER=provider)
    with app.app_context():
        yield app


@pytest.fixture
def client(shop: Flask) -> FlaskClient:
    return shop.test_client()


@pytest.fixture
def billing(shop: Flask) -> ProfileBilling:
    return billing_of(shop)


def subscribe(app: Flask, client: FlaskClient, fake: FakeStripe, body: Any = None) -> str:
    """Alice subscribes through Checkout and pays (the completed session is delivered); the
    Stripe subscription's id."""
    response = upgrade(client, body or STARTER_MONTH)
    assert response.status_code == 202, response.get_json()
    [row] = [r for r in payment_rows(app) if r.id == response.get_json()["data"]["payment"]["id"]]
    assert deliver(client, fake.event(row.provider_payment_id)) == "processed"
    subscription_id: str = fake.sessions[row.provider_payment_id]["subscription"]
    return subscription_id


def arrangement(app: Flask) -> Any:
    [row] = rows(app, select(recurring))
    return row


# --- checkout ---------------------------------------------------------------------------------------


def test_a_plan_with_a_stripe_price_is_sold_as_a_subscription_with_our_ids_on_it(
    shop: Flask, client: FlaskClient, fake_stripe: FakeStripe
) -> None:
    payment = upgrade(client, {"plan_type": "starter", "duration_months": 12}).get_json()
    one_off = upgrade(client, {"plan_type": "professional", "duration_months": 1})

    subscription_request, one_off_request = fake_stripe.requests
    form = subscription_request.form
    assert form["mode"] == "subscription"
    assert form["line_items[0][price]"] == "price_starter_yearly"
    assert form["line_items[0][quantity]"] == "1"
    assert "line_items[0][price_data][unit_amount]" not in form
    assert form["subscription_data[metadata][payment_id]"] == payment["data"]["payment"]["id"]
    assert form["subscription_data[metadata][user_id]"] == "alice"
    assert form["metadata[payment_id]"] == payment["data"]["payment"]["id"]
    assert one_off.status_code == 202
    assert one_off_request.form["mode"] == "payment"  # no price mapped: a one-off period


@pytest.mark.parametrize("invoice_first", [False, True])
def test_the_first_payment_grants_one_period_whichever_event_comes_first(
    shop: Flask,
    client: FlaskClient,
    billing: ProfileBilling,
    fake_stripe: FakeStripe,
    invoice_first: bool,
) -> None:
    response = upgrade(client, STARTER_MONTH)
    [row] = payment_rows(shop)
    session = fake_stripe.complete(row.provider_payment_id)
    completed = fake_stripe.event(session["id"])
    first_invoice = fake_stripe.invoice_paid(session["subscription"], "subscription_create")
    order = [first_invoice, completed] if invoice_first else [completed, first_invoice]

    outcomes = [deliver(client, raw) for raw in order]

    assert response.status_code == 202
    assert outcomes == ["processed", "ignored"]
    subscription = billing.subscription("alice")
    assert (subscription.plan_code, subscription.expires_at) == ("starter", ONE_MONTH_LATER)
    kept = arrangement(shop)
    assert (kept.reference, kept.customer_reference) == (
        session["subscription"],
        session["customer"],
    )
    assert (kept.plan_code, kept.months, kept.status) == ("starter", 1, "active")
    [payment] = payment_rows(shop)
    assert payment.recurring_id == kept.id
    assert payment.refund_reference is not None  # the first invoice's PaymentIntent


# --- renewals ---------------------------------------------------------------------------------------


def test_a_paid_renewal_invoice_extends_the_period_by_the_plans_cadence_once(
    shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_stripe: FakeStripe
) -> None:
    subscription_id = subscribe(shop, client, fake_stripe)
    renewal = fake_stripe.invoice_paid(subscription_id)
    resent = renewal.replace(b'"id": "evt_', b'"id": "evt_resent_')  # another event, same invoice

    outcomes = [deliver(client, renewal), deliver(client, renewal), deliver(client, resent)]

    assert outcomes == ["processed", "duplicate", "ignored"]
    assert billing.subscription("alice").expires_at == TWO_MONTHS_LATER
    renewal_row = payment_rows(shop)[-1]
    assert (renewal_row.plan_code, renewal_row.months, renewal_row.status) == (
        "starter",
        1,
        "succeeded",
    )
    assert renewal_row.provider_payment_id.startswith("in_")
    state = shop.extensions["profile_billing"]
    assert [s["to_status"] for s in state.payments.events(renewal_row.id)] == [
        "pending",
        "paid",
        "succeeded",
    ]


def test_five_concurrent_deliveries_of_a_renewal_extend_once(
    shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_stripe: FakeStripe
) -> None:
    subscription_id = subscribe(shop, client, fake_stripe)
    renewal = fake_stripe.invoice_paid(subscription_id)
    barrier = threading.Barrier(CONCURRENT_DELIVERIES)

    def send() -> str:
        own_client = shop.test_client()
        barrier.wait(timeout=30)
        return deliver(own_client, renewal)

    with ThreadPoolExecutor(max_workers=CONCURRENT_DELIVERIES) as pool:
        outcomes = [f.result() for f in [pool.submit(send) for _ in range(CONCURRENT_DELIVERIES)]]

    assert Counter(outcomes) == {"processed": 1, "duplicate": CONCURRENT_DELIVERIES - 1}
    assert billing.subscription("alice").expires_at == TWO_MONTHS_LATER


def test_a_renewal_paid_for_another_amount_than_the_plans_price_extends_nothing(
    shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_stripe: FakeStripe
) -> None:
    subscription_id = subscribe(shop, client, fake_stripe)

    outcome = deliver(client, fake_stripe.invoice_paid(subscription_id, amount_paid=100))

    assert outcome == "rejected"
    assert billing.subscription("alice").expires_at == ONE_MONTH_LATER
    renewal_row = payment_rows(shop)[-1]
    assert renewal_row.status == "failed"
    state = shop.extensions["profile_billing"]
    [_created, rejected] = state.payments.events(renewal_row.id)
    assert rejected["reason"].startswith("rejected: paid 1.00 RUB, expected 2990.00 RUB")


def test_an_invoice_of_a_subscription_that_is_not_ours_is_ignored(
    shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_stripe: FakeStripe
) -> None:
    subscription_id = subscribe(shop, client, fake_stripe)
    fake_stripe.subscriptions["sub_other"] = {
        **fake_stripe.subscriptions[subscription_id],
        "id": "sub_other",
        "metadata": {},
    }

    assert deliver(client, fake_stripe.invoice_paid("sub_other")) == "ignored"
    assert billing.subscription("alice").expires_at == ONE_MONTH_LATER


# --- cancel and resume ------------------------------------------------------------------------------


def test_a_cancel_at_period_end_set_at_stripe_cancels_here_and_undoing_it_resumes(
    shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_stripe: FakeStripe
) -> None:
    subscription_id = subscribe(shop, client, fake_stripe)

    deliver(client, fake_stripe.subscription_event(subscription_id, cancel_at_period_end=True))
    cancelled = billing.subscription("alice")
    deliver(client, fake_stripe.subscription_event(subscription_id, cancel_at_period_end=False))
    resumed = billing.subscription("alice")

    assert (cancelled.status.value, cancelled.expires_at) == ("cancelled", ONE_MONTH_LATER)
    assert (resumed.status.value, resumed.expires_at) == ("active", ONE_MONTH_LATER)
    assert arrangement(shop).status == "active"


def test_an_older_subscription_change_delivered_late_is_not_applied(
    shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_stripe: FakeStripe
) -> None:
    subscription_id = subscribe(shop, client, fake_stripe)
    cancel = fake_stripe.subscription_event(
        subscription_id, created=1760350000, cancel_at_period_end=True
    )
    resume = fake_stripe.subscription_event(
        subscription_id, created=1760350060, cancel_at_period_end=False
    )

    outcomes = [deliver(client, resume), deliver(client, cancel)]

    assert outcomes == ["processed", "ignored"]
    assert billing.subscription("alice").status.value == "active"


def test_a_deleted_subscription_ends_with_the_paid_period(
    shop: Flask,
    client: FlaskClient,
    billing: ProfileBilling,
    fake_stripe: FakeStripe,
    clock: Any,
) -> None:
    subscription_id = subscribe(shop, client, fake_stripe)

    outcome = deliver(
        client,
        fake_stripe.subscription_event(
            subscription_id, "customer.subscription.deleted", status="canceled"
        ),
    )

    assert outcome == "processed"
    subscription = billing.subscription("alice")
    assert (subscription.status.value, subscription.expires_at) == ("cancelled", ONE_MONTH_LATER)
    assert arrangement(shop).status == "ended"
    # Nothing the subscription says afterwards changes it.
    late = fake_stripe.subscription_event(subscription_id, cancel_at_period_end=False)
    assert deliver(client, late) == "ignored"
    clock.set(ONE_MONTH_LATER)
    assert billing.plan("alice").code == "free"


ENDING_EVENTS = ["completed", "first invoice", "deleted"]


@pytest.mark.parametrize("order", list(itertools.permutations(ENDING_EVENTS)), ids=" then ".join)
def test_a_subscription_deleted_at_stripe_ends_the_plan_whatever_order_the_events_come_in(
    shop: Flask,
    client: FlaskClient,
    billing: ProfileBilling,
    fake_stripe: FakeStripe,
    clock: Any,
    order: tuple[str, ...],
) -> None:
    response = upgrade(client, STARTER_MONTH)
    [row] = payment_rows(shop)
    session = fake_stripe.complete(row.provider_payment_id)
    events = {
        "completed": fake_stripe.event(session["id"]),
        "first invoice": fake_stripe.invoice_paid(session["subscription"], "subscription_create"),
        "deleted": fake_stripe.subscription_event(
            session["subscription"], "customer.subscription.deleted", status="canceled"
        ),
    }

    outcomes = [deliver(client, events[name]) for name in order]

    assert response.status_code == 202
    assert "processed" in outcomes
    # Paid for once, then over at Stripe: the paid month is kept, and it does not renew.
    subscription = billing.subscription("alice")
    assert (subscription.plan_code, subscription.status.value, subscription.expires_at) == (
        "starter",
        "cancelled",
        ONE_MONTH_LATER,
    )
    assert arrangement(shop).status == "ended"
    assert [r.status for r in payment_rows(shop)] == ["succeeded"]
    clock.set(ONE_MONTH_LATER)
    assert billing.plan("alice").code == "free"


@pytest.mark.parametrize(
    "order",
    list(itertools.permutations(["completed", "cancel at period end"])),
    ids=" then ".join,
)
def test_a_cancel_at_period_end_before_the_first_payment_still_cancels(
    shop: Flask,
    client: FlaskClient,
    billing: ProfileBilling,
    fake_stripe: FakeStripe,
    order: tuple[str, ...],
) -> None:
    upgrade(client, STARTER_MONTH)
    [row] = payment_rows(shop)
    session = fake_stripe.complete(row.provider_payment_id)
    events = {
        "completed": fake_stripe.event(session["id"]),
        "cancel at period end": fake_stripe.subscription_event(
            session["subscription"], cancel_at_period_end=True
        ),
    }

    for name in order:
        deliver(client, events[name])

    subscription = billing.subscription("alice")
    assert (subscription.plan_code, subscription.status.value) == ("starter", "cancelled")
    assert arrangement(shop).status == "cancelling"
    # Stripe was not told again what it told us.
    assert not [r for r in fake_stripe.requests if r.path.startswith("/v1/subscriptions/")]


def test_a_users_own_cancel_and_resume_are_passed_on_to_stripe(
    shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_stripe: FakeStripe
) -> None:
    subscription_id = subscribe(shop, client, fake_stripe)

    billing.cancel("alice")
    cancel_request = fake_stripe.requests[-1]
    billing.resume("alice")
    resume_request = fake_stripe.requests[-1]

    assert (cancel_request.method, cancel_request.path) == (
        "POST",
        f"/v1/subscriptions/{subscription_id}",
    )
    assert cancel_request.form == {"cancel_at_period_end": "true"}
    assert resume_request.form == {"cancel_at_period_end": "false"}
    assert fake_stripe.subscriptions[subscription_id]["cancel_at_period_end"] is False
    # Stripe's own echo of the change is harmless.
    echo = fake_stripe.subscription_event(subscription_id, cancel_at_period_end=False)
    assert deliver(client, echo) == "processed"
    assert billing.subscription("alice").status.value == "active"


def test_a_refunded_renewal_ends_the_period_and_the_stripe_subscription(
    shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_stripe: FakeStripe
) -> None:
    subscription_id = subscribe(shop, client, fake_stripe)
    deliver(client, fake_stripe.invoice_paid(subscription_id))
    intent = payment_rows(shop)[-1].refund_reference

    outcome = deliver(client, fake_stripe.charge_refunded(intent, 299000, "rub"))

    assert outcome == "processed"
    assert billing.plan("alice").code == "free"
    assert payment_rows(shop)[-1].status == "refunded"
    assert fake_stripe.subscriptions[subscription_id]["status"] == "canceled"
    assert arrangement(shop).status == "ended"


def test_subscribing_to_another_plan_ends_the_earlier_stripe_subscription(
    shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_stripe: FakeStripe
) -> None:
    first = subscribe(shop, client, fake_stripe)

    second = subscribe(shop, client, fake_stripe, {"plan_type": "starter", "duration_months": 12})

    assert fake_stripe.subscriptions[first]["status"] == "canceled"  # not charged twice
    assert fake_stripe.subscriptions[second]["status"] == "active"
    statuses = {row.reference: row.status for row in rows(shop, select(recurring))}
    assert statuses == {first: "ended", second: "active"}


def test_a_new_subscription_announced_before_its_payment_still_ends_the_earlier_one(
    shop: Flask, client: FlaskClient, fake_stripe: FakeStripe
) -> None:
    """Stripe often sends the new subscription's update before the completed Checkout: the
    arrangement is recorded from it, and the one it replaces is ended at Stripe too."""
    first = subscribe(shop, client, fake_stripe)
    upgrade(client, {"plan_type": "starter", "duration_months": 12})
    session = fake_stripe.complete(payment_rows(shop)[-1].provider_payment_id)
    second = session["subscription"]

    update = fake_stripe.subscription_event(second, cancel_at_period_end=False)
    assert deliver(client, update) == "processed"
    assert deliver(client, fake_stripe.event(session["id"])) == "processed"

    assert fake_stripe.subscriptions[first]["status"] == "canceled"  # not charged twice
    assert fake_stripe.subscriptions[second]["status"] == "active"
    statuses = {row.reference: row.status for row in rows(shop, select(recurring))}
    assert statuses == {first: "ended", second: "active"}


# --- configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prices",
    [
        {"nonexistent": {"monthly": "price_x"}},
        {"free": {"monthly": "price_x"}},
        {"starter": {"weekly": "price_x"}},
        {"starter": {"monthly": "prod_x"}},
        ["price_x"],
    ],
)
def test_stripe_prices_that_do_not_fit_the_catalog_are_refused_at_start_up(
    make_app: AppFactory, prices: Any
) -> None:
    with pytest.raises(BillingConfigError, match="BILLING_STRIPE_PRICES"):
        make_app(BILLING_STRIPE_PRICES=prices)


def test_the_stripe_provider_built_by_name_sells_the_configured_prices_as_subscriptions(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_STRIPE_SECRET_KEY", "sk_test_env")
    monkeypatch.setenv("BILLING_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)

    app = make_app(BILLING_PAYMENT_PROVIDER="stripe", BILLING_STRIPE_PRICES=PRICES)

    provider = app.extensions["profile_billing"].payments.provider
    assert provider.price_for("starter", 12) == "price_starter_yearly"
    assert provider.price_for("professional", 1) is None


def test_stripe_prices_in_the_config_that_the_provider_object_lacks_fail_init_app(
    make_app: AppFactory, fake_stripe: FakeStripe
) -> None:
    # Built as a host builds it to point it elsewhere; the prices only in the config.
    provider = StripeProvider("sk_test_key", WEBHOOK_SECRET, api_base=fake_stripe.api_base)

    with pytest.raises(BillingConfigError, match=r"prices=app.config\['BILLING_STRIPE_PRICES'\]"):
        make_app(BILLING_PAYMENT_PROVIDER=provider, BILLING_STRIPE_PRICES=PRICES)


def test_stripe_prices_in_the_config_and_other_prices_on_the_object_fail_init_app(
    make_app: AppFactory, fake_stripe: FakeStripe
) -> None:
    provider = StripeProvider(
        "sk_test_key",
        WEBHOOK_SECRET,
        api_base=fake_stripe.api_base,
        prices={"starter": {"monthly": "price_starter_monthly"}},
    )

    with pytest.raises(BillingConfigError, match="was built with other prices"):
        make_app(BILLING_PAYMENT_PROVIDER=provider, BILLING_STRIPE_PRICES=PRICES)


def test_the_same_prices_in_the_config_and_on_the_object_sell_subscriptions(
    make_app: AppFactory, fake_stripe: FakeStripe
) -> None:
    provider = StripeProvider(
        "sk_test_key", WEBHOOK_SECRET, api_base=fake_stripe.api_base, prices=PRICES
    )
    app = make_app(BILLING_PAYMENT_PROVIDER=provider, BILLING_STRIPE_PRICES=PRICES)

    response = upgrade(app.test_client(), STARTER_MONTH)

    assert response.status_code == 202, response.get_json()
    [request] = fake_stripe.requests
    assert request.form["mode"] == "subscription"
    assert request.form["line_items[0][price]"] == "price_starter_monthly"


@pytest.mark.parametrize(
    "prices",
    [
        {"gold": {"monthly": "price_gold"}},
        {"free": {"monthly": "price_free"}},
        {"starter": {"weekly": "price_starter_weekly"}},
        {"starter": {"monthly": "starter-monthly"}},
    ],
)
def test_prices_on_a_provider_object_that_do_not_fit_the_catalog_fail_init_app(
    make_app: AppFactory, fake_stripe: FakeStripe, prices: Any
) -> None:
    provider = StripeProvider(
        "sk_test_key", WEBHOOK_SECRET, api_base=fake_stripe.api_base, prices=prices
    )

    with pytest.raises(BillingConfigError, match="do not fit the catalog"):
        make_app(BILLING_PAYMENT_PROVIDER=provider)
