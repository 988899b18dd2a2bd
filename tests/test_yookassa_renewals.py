"""YooKassa renewals: the first payment saves the payment method, and maintenance charges it
BILLING_RENEWAL_LEAD_HOURS before the paid period ends, with the idempotence key
``renewal-<user>-<period end>``, so a renewal is charged at most once however many maintenance runs
overlap. A declined renewal gives BILLING_RENEWAL_GRACE_DAYS once, notifies the user once
(``renewal_failed``), and then the subscription lapses to the free plan as usual.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from flask_profile_billing import ProfileBilling, signals
from flask_profile_billing.payments.yookassa_provider import YooKassaProvider
from flask_profile_billing.store.models import notifications, recurring
from tests.support.host_app import AppFactory, Clock, billing_of
from tests.support.payments import payment_rows, rows, upgrade
from tests.support.provider_fakes import FakeYooKassa
from tests.support.provider_fakes import deliver_to_yookassa_webhook as notify

STARTER_MONTH = {"plan_type": "starter", "duration_months": 1}
ONE_MONTH_LATER = datetime(2025, 11, 13, 10, 0, tzinfo=UTC)
TWO_MONTHS_LATER = datetime(2025, 12, 13, 10, 0, tzinfo=UTC)
RENEWAL_KEY = f"renewal-alice-{int(ONE_MONTH_LATER.timestamp())}"
MAINTENANCE_RUNS = 2


@pytest.fixture
def shop(make_app: AppFactory, fake_yookassa: FakeYooKassa) -> Iterator[Flask]:
    provider = YooKassaProvider(
        "100001", "test_secret_key", api_url=fake_yookassa.api_url, save_payment_method=True
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


def buy_a_month(app: Flask, client: FlaskClient, fake: FakeYooKassa) -> str:
    """Alice pays a month of Starter, and YooKassa saves her card; the saved method's id."""
    assert upgrade(client, STARTER_MONTH).status_code == 202
    [row] = payment_rows(app)
    fake.settle(row.provider_payment_id)
    assert notify(client, fake.notification(row.provider_payment_id)) == "processed"
    method_id: str = fake.payments[row.provider_payment_id]["payment_method"]["id"]
    return method_id


def renewal_requests(fake: FakeYooKassa) -> list[Any]:
    return [r for r in fake.creations() if "payment_method_id" in r.json]


def renewal_failed_notices(app: Flask) -> list[Any]:
    return rows(app, select(notifications).where(notifications.c.kind == "renewal_failed"))


def test_the_first_payment_saves_the_method_and_keeps_it_for_renewals(
    shop: Flask, client: FlaskClient, fake_yookassa: FakeYooKassa
) -> None:
    method_id = buy_a_month(shop, client, fake_yookassa)

    [first] = fake_yookassa.creations()
    assert first.json["save_payment_method"] is True
    [kept] = rows(shop, select(recurring))
    assert (kept.provider, kept.reference, kept.status) == ("yookassa", method_id, "active")
    assert (kept.plan_code, kept.months, str(kept.amount), kept.currency) == (
        "starter",
        1,
        "2990.00",
        "RUB",
    )


def test_nothing_is_charged_before_the_lead_time(
    shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_yookassa: FakeYooKassa
) -> None:
    buy_a_month(shop, client, fake_yookassa)

    report = billing.run_maintenance(ONE_MONTH_LATER - timedelta(hours=25))

    assert report.renewals_charged == 0
    assert renewal_requests(fake_yookassa) == []


def test_two_overlapping_maintenance_runs_charge_the_renewal_once(
    shop: Flask,
    client: FlaskClient,
    billing: ProfileBilling,
    fake_yookassa: FakeYooKassa,
    clock: Clock,
) -> None:
    method_id = buy_a_month(shop, client, fake_yookassa)
    clock.set(ONE_MONTH_LATER - timedelta(hours=12))
    barrier = threading.Barrier(MAINTENANCE_RUNS)
    reports = []

    def run() -> None:
        with shop.app_context():
            barrier.wait(timeout=30)
            reports.append(billing.run_maintenance())

    threads = [threading.Thread(target=run) for _ in range(MAINTENANCE_RUNS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    billing.run_maintenance()  # and once more afterwards

    [renewal] = renewal_requests(fake_yookassa)
    assert renewal.headers["idempotence-key"] == RENEWAL_KEY
    assert renewal.json["payment_method_id"] == method_id
    assert renewal.json["amount"] == {"value": "2990.00", "currency": "RUB"}
    assert renewal.json["metadata"]["user_id"] == "alice"
    keys = Counter(r.headers["idempotence-key"] for r in fake_yookassa.creations())
    assert set(keys.values()) == {1}  # one create-payment call per key
    assert sum(report.renewals_charged for report in reports) == 1
    subscription = billing.subscription("alice")
    assert (subscription.plan_code, subscription.expires_at) == ("starter", TWO_MONTHS_LATER)
    renewal_row = payment_rows(shop)[-1]
    assert (renewal_row.status, renewal_row.months) == ("succeeded", 1)


def test_a_renewal_yookassa_settles_later_is_granted_by_its_notification(
    shop: Flask,
    client: FlaskClient,
    billing: ProfileBilling,
    fake_yookassa: FakeYooKassa,
    clock: Clock,
) -> None:
    buy_a_month(shop, client, fake_yookassa)
    fake_yookassa.renewal_status = "pending"
    clock.set(ONE_MONTH_LATER - timedelta(hours=1))

    billing.run_maintenance()
    renewal_row = payment_rows(shop)[-1]
    assert renewal_row.status == "pending"
    fake_yookassa.settle(renewal_row.provider_payment_id)
    outcome = notify(client, fake_yookassa.notification(renewal_row.provider_payment_id))

    assert outcome == "processed"
    assert billing.subscription("alice").expires_at == TWO_MONTHS_LATER
    assert len(renewal_requests(fake_yookassa)) == 1


def test_a_declined_renewal_gives_the_grace_once_notifies_once_then_the_free_plan(
    make_app: AppFactory, fake_yookassa: FakeYooKassa, clock: Clock
) -> None:
    provider = YooKassaProvider(
        "100001", "test_secret_key", api_url=fake_yookassa.api_url, save_payment_method=True
    )
    app = make_app(BILLING_PAYMENT_PROVIDER=provider, BILLING_RENEWAL_GRACE_DAYS=3)
    billing = billing_of(app)
    announced: list[dict[str, Any]] = []

    def on_notification(sender: Any, **arguments: Any) -> None:
        announced.append(arguments)

    signals.notification_due.connect(on_notification, sender=app)
    with app.app_context():
        client = app.test_client()
        buy_a_month(app, client, fake_yookassa)
        fake_yookassa.renewal_status = "canceled"
        clock.set(ONE_MONTH_LATER - timedelta(hours=2))

        report = billing.run_maintenance()
        grace_end = ONE_MONTH_LATER + timedelta(days=3)
        after_decline = billing.subscription("alice")
        # Within the lead time of the new end, and again a day before it: no second charge.
        billing.run_maintenance(grace_end - timedelta(hours=2))
        clock.set(grace_end - timedelta(hours=1))
        billing.run_maintenance()
        clock.set(grace_end)
        billing.run_maintenance()

        assert report.renewals_declined == 1
        assert (after_decline.plan_code, after_decline.expires_at) == ("starter", grace_end)
        assert len(renewal_requests(fake_yookassa)) == 1
        assert payment_rows(app)[-1].status == "cancelled"
        assert billing.plan("alice").code == "free"
        [notice] = renewal_failed_notices(app)
        assert notice.account_id == "user:alice"
        assert [a["kind"] for a in announced if a["kind"] == "renewal_failed"] == ["renewal_failed"]
    signals.notification_due.disconnect(on_notification, sender=app)


def test_a_declined_renewal_reported_twice_gives_the_grace_once(
    shop: Flask,
    client: FlaskClient,
    billing: ProfileBilling,
    fake_yookassa: FakeYooKassa,
    clock: Clock,
) -> None:
    buy_a_month(shop, client, fake_yookassa)
    fake_yookassa.renewal_status = "canceled"
    clock.set(ONE_MONTH_LATER - timedelta(hours=2))
    billing.run_maintenance()
    renewal_row = payment_rows(shop)[-1]

    # YooKassa also notifies the cancellation the API already answered.
    outcome = notify(
        client, fake_yookassa.notification(renewal_row.provider_payment_id, "payment.canceled")
    )

    assert outcome == "ignored"
    assert billing.subscription("alice").expires_at == ONE_MONTH_LATER + timedelta(days=3)
    assert len(renewal_failed_notices(shop)) == 1


def test_a_cancelled_subscription_is_not_renewed(
    shop: Flask,
    client: FlaskClient,
    billing: ProfileBilling,
    fake_yookassa: FakeYooKassa,
    clock: Clock,
) -> None:
    buy_a_month(shop, client, fake_yookassa)
    billing.cancel("alice")
    clock.set(ONE_MONTH_LATER - timedelta(hours=2))

    billing.run_maintenance()

    assert renewal_requests(fake_yookassa) == []
    assert billing.subscription("alice").expires_at == ONE_MONTH_LATER


def test_a_dry_run_counts_the_renewals_due_and_charges_nothing(
    shop: Flask,
    client: FlaskClient,
    billing: ProfileBilling,
    fake_yookassa: FakeYooKassa,
    clock: Clock,
) -> None:
    buy_a_month(shop, client, fake_yookassa)
    clock.set(ONE_MONTH_LATER - timedelta(hours=2))

    report = billing.run_maintenance(dry_run=True)

    assert report.renewals_charged == 1
    assert renewal_requests(fake_yookassa) == []
    assert billing.subscription("alice").expires_at == ONE_MONTH_LATER


def test_a_refunded_payment_stops_the_renewals(
    shop: Flask,
    client: FlaskClient,
    billing: ProfileBilling,
    fake_yookassa: FakeYooKassa,
    clock: Clock,
) -> None:
    buy_a_month(shop, client, fake_yookassa)
    [row] = payment_rows(shop)
    refund_id = fake_yookassa.refund(row.provider_payment_id)
    assert notify(client, fake_yookassa.refund_notification(refund_id)) == "processed"
    [kept] = rows(shop, select(recurring))
    clock.set(ONE_MONTH_LATER - timedelta(hours=2))

    billing.run_maintenance()

    assert kept.status == "ended"
    assert renewal_requests(fake_yookassa) == []


def test_the_user_is_emailed_once_that_the_renewal_was_declined(
    make_app: AppFactory, fake_yookassa: FakeYooKassa, clock: Clock
) -> None:
    provider = YooKassaProvider(
        "100001", "test_secret_key", api_url=fake_yookassa.api_url, save_payment_method=True
    )
    sent: list[Any] = []
    app = make_app(
        BILLING_PAYMENT_PROVIDER=provider,
        BILLING_EMAIL_SENDER=sent.append,
        BILLING_USER_INFO=lambda user: {"email": f"{user.id}@example.com"},
    )
    billing = billing_of(app)
    with app.app_context():
        buy_a_month(app, app.test_client(), fake_yookassa)
        fake_yookassa.renewal_status = "canceled"
        clock.set(ONE_MONTH_LATER - timedelta(hours=2))

        billing.run_maintenance()
        billing.run_maintenance()

    [email] = [e for e in sent if e.notification.kind == "renewal_failed"]
    assert email.to == "alice@example.com"
    assert email.subject == "We could not renew your Starter subscription"
    assert "Your plan stays active until November 16, 2025." in email.text
