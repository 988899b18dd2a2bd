"""Refunds and chargebacks end the paid period the payment bought, against loopback fakes of Stripe
and YooKassa driven by their official libraries.

BILLING_REFUND_ENDS_PERIOD decides how: ``immediately`` (the default: back to the free plan now) or
``at_period_end`` (the subscription is cancelled, kept until its end, then free). Repeated and
out-of-order deliveries change nothing more, a partial refund keeps the period, and every step is
in the payment's history.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flask_profile_billing.payments.stripe_provider import StripeProvider
from flask_profile_billing.payments.yookassa_provider import YooKassaProvider
from tests.support.host_app import AppFactory, Clock, billing_of
from tests.support.payments import ONE_YEAR_LATER, PROFESSIONAL_YEAR, payment_rows, upgrade
from tests.support.provider_fakes import (
    STRIPE_WEBHOOK_SECRET as WEBHOOK_SECRET,
)
from tests.support.provider_fakes import (
    FakeStripe,
    FakeYooKassa,
)
from tests.support.provider_fakes import deliver_to_stripe_webhook as deliver
from tests.support.provider_fakes import deliver_to_yookassa_webhook as notify

PROFESSIONAL_YEAR_KOPECKS = 5990000


def stripe_app(make_app: AppFactory, fake: FakeStripe, **config: Any) -> Flask:
    provider = StripeProvider("sk_test_key", WEBHOOK_SECRET, api_base=fake.api_base)
    return make_app(BILLING_PAYMENT_PROVIDER=provider, **config)


@pytest.fixture
def stripe_shop(make_app: AppFactory, fake_stripe: FakeStripe) -> Iterator[Flask]:
    app = stripe_app(make_app, fake_stripe)
    with app.app_context():
        yield app


def paid_stripe_checkout(app: Flask, fake: FakeStripe) -> tuple[str, str]:
    """Alice bought a year of Professional through Stripe Checkout: (our payment id, the
    PaymentIntent Stripe's refunds and disputes name)."""
    client = app.test_client()
    response = upgrade(client, PROFESSIONAL_YEAR)
    assert response.status_code == 202, response.get_json()
    payment_id = response.get_json()["data"]["payment"]["id"]
    [row] = [row for row in payment_rows(app) if row.id == payment_id]
    assert deliver(client, fake.event(row.provider_payment_id)) == "processed"
    intent: str = fake.sessions[row.provider_payment_id]["payment_intent"]
    return payment_id, intent


def history(app: Flask, payment_id: str) -> list[tuple[str | None, str]]:
    state = app.extensions["profile_billing"]
    return [(step["from_status"], step["to_status"]) for step in state.payments.events(payment_id)]


def status_of(app: Flask, payment_id: str) -> str:
    [row] = [row for row in payment_rows(app) if row.id == payment_id]
    status: str = row.status
    return status


GRANTED = [(None, "pending"), ("pending", "paid"), ("paid", "succeeded")]


# --- Stripe ---------------------------------------------------------------------------------------


def test_a_refund_of_a_granted_payment_ends_the_paid_period_at_once_by_default(
    stripe_shop: Flask, fake_stripe: FakeStripe
) -> None:
    client = stripe_shop.test_client()
    billing = billing_of(stripe_shop)
    payment_id, intent = paid_stripe_checkout(stripe_shop, fake_stripe)
    assert billing.plan("alice").code == "professional"
    refund = fake_stripe.charge_refunded(intent, PROFESSIONAL_YEAR_KOPECKS, "rub")

    first = deliver(client, refund)
    again = deliver(client, refund)  # Stripe retries it

    assert (first, again) == ("processed", "duplicate")
    subscription = billing.subscription("alice")
    assert (subscription.plan_code, subscription.expires_at) == ("free", None)
    assert status_of(stripe_shop, payment_id) == "refunded"
    assert history(stripe_shop, payment_id) == [*GRANTED, ("succeeded", "refunded")]


def test_with_at_period_end_a_refund_cancels_and_the_plan_lasts_until_the_period_ends(
    make_app: AppFactory, fake_stripe: FakeStripe, clock: Clock
) -> None:
    app = stripe_app(make_app, fake_stripe, BILLING_REFUND_ENDS_PERIOD="at_period_end")
    billing = billing_of(app)
    with app.app_context():
        payment_id, intent = paid_stripe_checkout(app, fake_stripe)

        deliver(app.test_client(), fake_stripe.charge_refunded(intent, 5990000, "rub"))

        subscription = billing.subscription("alice")
        assert subscription.plan_code == "professional"
        assert subscription.status.value == "cancelled"
        assert subscription.expires_at == ONE_YEAR_LATER  # kept until the period's end
        assert status_of(app, payment_id) == "refunded"
        clock.set(ONE_YEAR_LATER)
        assert billing.plan("alice").code == "free"


def test_a_chargeback_ends_the_period_and_a_later_refund_of_it_changes_nothing(
    stripe_shop: Flask, fake_stripe: FakeStripe
) -> None:
    client = stripe_shop.test_client()
    payment_id, intent = paid_stripe_checkout(stripe_shop, fake_stripe)

    disputed = deliver(client, fake_stripe.dispute_created(intent, 5990000, "rub"))
    refunded = deliver(client, fake_stripe.charge_refunded(intent, 5990000, "rub"))

    assert (disputed, refunded) == ("processed", "ignored")
    assert billing_of(stripe_shop).plan("alice").code == "free"
    assert status_of(stripe_shop, payment_id) == "charged_back"
    # The late refund is kept in the history, as a step that changed nothing.
    assert history(stripe_shop, payment_id) == [
        *GRANTED,
        ("succeeded", "charged_back"),
        ("charged_back", "charged_back"),
    ]


def test_a_partial_refund_keeps_the_period_until_the_whole_amount_is_refunded(
    stripe_shop: Flask, fake_stripe: FakeStripe
) -> None:
    client = stripe_shop.test_client()
    billing = billing_of(stripe_shop)
    payment_id, intent = paid_stripe_checkout(stripe_shop, fake_stripe)

    partial = deliver(client, fake_stripe.charge_refunded(intent, 5990000, "rub", 1000000))

    assert partial == "ignored"
    assert billing.subscription("alice").expires_at == ONE_YEAR_LATER
    assert history(stripe_shop, payment_id)[-1] == ("succeeded", "succeeded")

    # Stripe's next charge.refunded counts every refund so far: now all of it.
    whole = deliver(client, fake_stripe.charge_refunded(intent, 5990000, "rub", 5990000))

    assert whole == "processed"
    assert billing.plan("alice").code == "free"


def test_a_success_delivered_after_the_refund_grants_nothing_again(
    stripe_shop: Flask, fake_stripe: FakeStripe
) -> None:
    client = stripe_shop.test_client()
    payment_id, intent = paid_stripe_checkout(stripe_shop, fake_stripe)
    [row] = payment_rows(stripe_shop)
    deliver(client, fake_stripe.charge_refunded(intent, 5990000, "rub"))

    late = deliver(
        client,
        fake_stripe.event(row.provider_payment_id, "checkout.session.async_payment_succeeded"),
    )

    assert late == "ignored"
    assert billing_of(stripe_shop).plan("alice").code == "free"
    assert status_of(stripe_shop, payment_id) == "refunded"


def test_a_refund_of_someone_elses_charge_on_the_account_is_ignored(
    stripe_shop: Flask, fake_stripe: FakeStripe
) -> None:
    paid_stripe_checkout(stripe_shop, fake_stripe)

    outcome = deliver(
        stripe_shop.test_client(), fake_stripe.charge_refunded("pi_not_ours", 5990000, "rub")
    )

    assert outcome == "ignored"
    assert billing_of(stripe_shop).plan("alice").code == "professional"


def test_a_refund_when_the_user_has_moved_to_another_plan_leaves_that_plan_alone(
    stripe_shop: Flask, fake_stripe: FakeStripe
) -> None:
    billing = billing_of(stripe_shop)
    payment_id, intent = paid_stripe_checkout(stripe_shop, fake_stripe)
    billing.change_plan("alice", "starter")  # an admin moved her since

    deliver(stripe_shop.test_client(), fake_stripe.charge_refunded(intent, 5990000, "rub"))

    assert billing.plan("alice").code == "starter"
    assert status_of(stripe_shop, payment_id) == "refunded"


# --- YooKassa -------------------------------------------------------------------------------------


@pytest.fixture
def yookassa_shop(make_app: AppFactory, fake_yookassa: FakeYooKassa) -> Iterator[Flask]:
    provider = YooKassaProvider("100001", "test_secret_key", api_url=fake_yookassa.api_url)
    app = make_app(BILLING_PAYMENT_PROVIDER=provider)
    with app.app_context():
        yield app


def started_yookassa_payment(app: Flask) -> tuple[str, str]:
    response = upgrade(app.test_client(), PROFESSIONAL_YEAR)
    assert response.status_code == 202, response.get_json()
    payment_id = response.get_json()["data"]["payment"]["id"]
    [row] = [row for row in payment_rows(app) if row.id == payment_id]
    return payment_id, row.provider_payment_id


def test_a_yookassa_refund_confirmed_by_the_api_ends_the_period_once(
    yookassa_shop: Flask, fake_yookassa: FakeYooKassa
) -> None:
    client = yookassa_shop.test_client()
    payment_id, provider_id = started_yookassa_payment(yookassa_shop)
    fake_yookassa.settle(provider_id)
    assert notify(client, fake_yookassa.notification(provider_id)) == "processed"
    refund_id = fake_yookassa.refund(provider_id)
    raw = fake_yookassa.refund_notification(refund_id)

    first = notify(client, raw)
    again = notify(client, raw)

    assert (first, again) == ("processed", "duplicate")
    assert billing_of(yookassa_shop).plan("alice").code == "free"
    assert history(yookassa_shop, payment_id) == [*GRANTED, ("succeeded", "refunded")]
    fetched = [r.path for r in fake_yookassa.requests if r.method == "GET"]
    assert f"/v3/refunds/{refund_id}" in fetched  # the notification alone proves nothing


def test_a_refund_confirmed_before_the_payment_was_means_it_is_never_granted(
    yookassa_shop: Flask, fake_yookassa: FakeYooKassa
) -> None:
    client = yookassa_shop.test_client()
    payment_id, provider_id = started_yookassa_payment(yookassa_shop)
    fake_yookassa.settle(provider_id)
    refund_id = fake_yookassa.refund(provider_id)

    refunded = notify(client, fake_yookassa.refund_notification(refund_id))
    late_success = notify(client, fake_yookassa.notification(provider_id))

    assert (refunded, late_success) == ("processed", "ignored")
    assert billing_of(yookassa_shop).plan("alice").code == "free"
    assert history(yookassa_shop, payment_id) == [(None, "pending"), ("pending", "refunded")]


def test_a_refund_notification_the_api_does_not_confirm_changes_nothing(
    yookassa_shop: Flask, fake_yookassa: FakeYooKassa
) -> None:
    client = yookassa_shop.test_client()
    payment_id, provider_id = started_yookassa_payment(yookassa_shop)
    fake_yookassa.settle(provider_id)
    notify(client, fake_yookassa.notification(provider_id))
    refund_id = fake_yookassa.refund(provider_id)
    raw = fake_yookassa.refund_notification(refund_id)
    del fake_yookassa.refunds[refund_id]  # a forged notification: YooKassa knows no such refund

    response = client.post(
        "/api/billing/webhooks/yookassa", data=raw, headers={"Content-Type": "application/json"}
    )

    # YooKassa's 404 is an answer, not an outage: refused for good rather than retried.
    assert response.status_code == 200
    assert response.get_json()["data"]["outcome"] == "rejected"
    assert billing_of(yookassa_shop).subscription("alice").expires_at == ONE_YEAR_LATER
    assert status_of(yookassa_shop, payment_id) == "succeeded"
