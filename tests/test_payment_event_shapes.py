"""Webhook bodies of every shape the providers' adapters could trip over: real events of Stripe
and YooKassa about payments of ours, with fields removed or replaced by values of other types,
out of range or absurd (Hypothesis), each delivered as the provider delivers it (Stripe's signed).
Whatever the body, the answer is a 200 with an outcome or a 4xx naming the problem: never a 5xx,
never a traceback's worth of surprise to the provider.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_profile_billing.payments.stripe_provider import StripeProvider
from flask_profile_billing.payments.yookassa_provider import YooKassaProvider
from tests.support.host_app import AppFactory
from tests.support.payments import payment_rows, upgrade
from tests.support.provider_fakes import STRIPE_WEBHOOK_SECRET as WEBHOOK_SECRET
from tests.support.provider_fakes import FakeStripe, FakeYooKassa, stripe_signature

EXAMPLES = 60
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # the app and its payments are new for every run
    suppress_health_check=list(HealthCheck),
)
OUTCOMES = {"processed", "duplicate", "ignored", "rejected"}
REFUSALS = {400: {"INVALID_JSON"}, 422: {"INVALID_EVENT"}}
PRICES = {"starter": {"monthly": "price_starter_monthly", "yearly": "price_starter_yearly"}}
DELETE = object()
"""A mutation that removes the field rather than replacing its value."""

_ODD_TEXT = [
    "",
    " ",
    "\x00",
    "x" * 300,
    "paid",
    "canceled",
    "subscription",
    "payment",
    "subscription_create",
    "subscription_cycle",
    "rub",
    "RUB",
    "checkout.session.completed",
    "invoice.paid",
    "customer.subscription.deleted",
    "charge.refunded",
    "payment.succeeded",
    "refund.succeeded",
    "notification",
]
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([0, -1, 2**63, 10**30, -(10**30), 253402300800])
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(_ODD_TEXT)
)
JSON_VALUES = st.recursive(
    _LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path into ``value``'s objects and lists."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, item in items:
        yield (*prefix, key)
        yield from paths(item, (*prefix, key))


def mutated(body: dict[str, Any], changes: list[tuple[tuple[Any, ...], Any]]) -> bytes:
    """``body`` with each path deleted or given a new value (paths a previous change removed are
    skipped), as the bytes a provider would send."""
    result = copy.deepcopy(body)
    for path, value in changes:
        parent: Any = result
        try:
            for key in path[:-1]:
                parent = parent[key]
            if value is DELETE:
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    return json.dumps(result).encode()


def changes_of(bodies: list[dict[str, Any]]) -> Any:
    """A base body and one to three mutations of it."""
    return st.sampled_from(bodies).flatmap(
        lambda body: st.tuples(
            st.just(body),
            st.lists(
                st.tuples(
                    st.sampled_from(sorted(set(paths(body)), key=repr)),
                    st.one_of(st.just(DELETE), JSON_VALUES),
                ),
                min_size=1,
                max_size=3,
            ),
        )
    )


def assert_answered(response: Any) -> None:
    """A 200 with an outcome, or a 4xx that names the problem; never a 5xx."""
    body = response.get_json()
    assert response.status_code < 500, body
    if response.status_code == 200:
        assert body["data"]["outcome"] in OUTCOMES
    else:
        assert body["error"] in REFUSALS[response.status_code], body


def started(app: Flask, client: FlaskClient, request: dict[str, Any]) -> str:
    """Start a payment; the provider's id of it."""
    response = upgrade(client, request)
    assert response.status_code == 202, response.get_json()
    payment_id = response.get_json()["data"]["payment"]["id"]
    [row] = [row for row in payment_rows(app) if row.id == payment_id]
    provider_payment_id: str = row.provider_payment_id
    return provider_payment_id


# --- Stripe -----------------------------------------------------------------------------------------


@pytest.fixture
def stripe_app(make_app: AppFactory, fake_stripe: FakeStripe) -> Iterator[Flask]:
    fake_stripe.prices = {
        "price_starter_monthly": (299000, "rub"),
        "price_starter_yearly": (2990000, "rub"),
    }
    provider = StripeProvider(
        "sk_test_key", WEBHOOK_SECRET, api_base=fake_stripe.api_base, prices=PRICES
    )
    app = make_app(BILLING_PAYMENT_PROVIDER=provider)
    with app.app_context():
        yield app


def stripe_events(app: Flask, client: FlaskClient, fake: FakeStripe) -> list[dict[str, Any]]:
    """Every kind of event the provider reads, about a one-off payment and a subscription."""
    one_off = fake.complete(
        started(app, client, {"plan_type": "professional", "duration_months": 1})
    )
    monthly = fake.complete(started(app, client, {"plan_type": "starter", "duration_months": 1}))
    subscription = monthly["subscription"]
    raw = [
        fake.event(one_off["id"]),
        fake.event(one_off["id"], "checkout.session.async_payment_failed"),
        fake.event(monthly["id"]),
        fake.invoice_paid(subscription, "subscription_create"),
        fake.invoice_paid(subscription),
        fake.subscription_event(subscription, cancel_at_period_end=True),
        fake.subscription_event(subscription, "customer.subscription.deleted", status="canceled"),
        fake.charge_refunded(one_off["payment_intent"], 599000, "rub"),
        fake.dispute_created(one_off["payment_intent"], 599000, "rub"),
    ]
    return [json.loads(body) for body in raw]


def test_stripe_events_of_any_shape_are_answered_without_a_5xx(
    stripe_app: Flask, fake_stripe: FakeStripe
) -> None:
    client = stripe_app.test_client()
    bodies = stripe_events(stripe_app, client, fake_stripe)

    @FUZZ
    @given(changes_of(bodies))
    def check(case: tuple[dict[str, Any], list[tuple[tuple[Any, ...], Any]]]) -> None:
        body, changes = case
        raw = mutated(body, changes)
        response = client.post(
            "/api/billing/webhooks/stripe",
            data=raw,
            headers={
                "Stripe-Signature": stripe_signature(WEBHOOK_SECRET, raw, int(time.time())),
                "Content-Type": "application/json",
            },
        )
        assert_answered(response)

    check()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("data",), None),
        (("data",), "object"),
        (("data", "object"), None),
        (("data", "object"), ["not", "an", "object"]),
        (("created",), 10**30),
        (("created",), 253402300800 * 10),
        (("created",), "yesterday"),
        (("data", "object", "payment_status"), ["paid"]),
        (("data", "object", "currency"), None),
        (("data", "object", "amount_total"), "5990.00"),
        (("data", "object", "amount_total"), -1),
        (("data", "object", "metadata"), "payment_id"),
        (("id",), None),
        (("type",), ["checkout.session.completed"]),
    ],
)
def test_a_signed_stripe_event_with_a_malformed_field_is_a_422(
    stripe_app: Flask, fake_stripe: FakeStripe, path: tuple[str, ...], value: Any
) -> None:
    client = stripe_app.test_client()
    session = fake_stripe.complete(
        started(stripe_app, client, {"plan_type": "professional", "duration_months": 1})
    )
    raw = mutated(json.loads(fake_stripe.event(session["id"])), [(path, value)])

    response = client.post(
        "/api/billing/webhooks/stripe",
        data=raw,
        headers={
            "Stripe-Signature": stripe_signature(WEBHOOK_SECRET, raw),
            "Content-Type": "application/json",
        },
    )

    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"] == "INVALID_EVENT"
    assert [row.status for row in payment_rows(stripe_app)] == ["pending"]


# --- YooKassa ---------------------------------------------------------------------------------------


@pytest.fixture
def yookassa_app(make_app: AppFactory, fake_yookassa: FakeYooKassa) -> Iterator[Flask]:
    provider = YooKassaProvider("100001", "test_secret_key", api_url=fake_yookassa.api_url)
    app = make_app(BILLING_PAYMENT_PROVIDER=provider)
    with app.app_context():
        yield app


def test_yookassa_notifications_of_any_shape_are_answered_without_a_5xx(
    yookassa_app: Flask, fake_yookassa: FakeYooKassa
) -> None:
    client = yookassa_app.test_client()
    paid = started(yookassa_app, client, {"plan_type": "professional", "duration_months": 1})
    fake_yookassa.settle(paid)
    refunded = started(yookassa_app, client, {"plan_type": "starter", "duration_months": 1})
    fake_yookassa.settle(refunded)
    refund_id = fake_yookassa.refund(refunded)
    bodies = [
        json.loads(fake_yookassa.notification(paid)),
        json.loads(fake_yookassa.notification(refunded, "payment.waiting_for_capture")),
        json.loads(fake_yookassa.refund_notification(refund_id)),
    ]

    @FUZZ
    @given(changes_of(bodies))
    def check(case: tuple[dict[str, Any], list[tuple[tuple[Any, ...], Any]]]) -> None:
        body, changes = case
        response = client.post(
            "/api/billing/webhooks/yookassa",
            data=mutated(body, changes),
            headers={"Content-Type": "application/json"},
        )
        assert_answered(response)

    check()
