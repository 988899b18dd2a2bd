"""YooKassa through the official ``yookassa`` library, against a loopback fake of its API.

An upgrade creates a YooKassa payment for the plan's price with a redirect back to the profile
page, our payment id as the ``Idempotence-Key`` and in the metadata, and a receipt when a VAT code
is configured. YooKassa does not sign notifications, so a notification only makes the extension
fetch the payment from the API: a payment the API reports as not succeeded, or for another amount,
grants nothing, whatever the notification said.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from flask_profile_billing import ProfileBilling
from flask_profile_billing.payments.yookassa_provider import YooKassaProvider
from flask_profile_billing.store.models import webhook_deliveries
from tests.support.host_app import AppFactory, billing_of
from tests.support.payments import ONE_YEAR_LATER, PROFESSIONAL_YEAR, payment_rows, rows, upgrade
from tests.support.provider_fakes import FakeYooKassa

SHOP_ID = "100001"
SECRET_KEY = "test_secret_key"
YOOKASSA_ADDRESS = "185.71.76.5"  # inside one of YooKassa's published networks
CONCURRENT_DELIVERIES = 5


def yookassa_app(make_app: AppFactory, fake: FakeYooKassa, **config: Any) -> Flask:
    options = {
        key: config.pop(key)
        for key in ("receipt_vat_code", "trusted_networks_only")
        if key in config
    }
    provider = YooKassaProvider(SHOP_ID, SECRET_KEY, api_url=fake.api_url, **options)
    return make_app(BILLING_PAYMENT_PROVIDER=provider, **config)


@pytest.fixture
def shop(make_app: AppFactory, fake_yookassa: FakeYooKassa) -> Iterator[Flask]:
    app = yookassa_app(make_app, fake_yookassa)
    with app.app_context():
        yield app


@pytest.fixture
def client(shop: Flask) -> FlaskClient:
    return shop.test_client()


@pytest.fixture
def billing(shop: Flask) -> ProfileBilling:
    return billing_of(shop)


def start_payment(client: FlaskClient, body: Any = None) -> dict[str, Any]:
    response = upgrade(client, body or PROFESSIONAL_YEAR)
    assert response.status_code == 202, response.get_json()
    payment: dict[str, Any] = response.get_json()["data"]["payment"]
    return payment


def yookassa_id(app: Flask, payment: dict[str, Any]) -> str:
    [row] = [row for row in payment_rows(app) if row.id == payment["id"]]
    provider_payment_id: str = row.provider_payment_id
    return provider_payment_id


def notify(client: FlaskClient, raw_body: bytes, address: str = YOOKASSA_ADDRESS) -> Any:
    """POST a notification as YooKassa does: unsigned JSON, from its address."""
    return client.post(
        "/api/billing/webhooks/yookassa",
        data=raw_body,
        headers={"Content-Type": "application/json"},
        environ_base={"REMOTE_ADDR": address},
    )


def assert_nothing_granted(app: Flask, billing: ProfileBilling) -> None:
    assert billing.plan("alice").code == "free"
    assert [row.status for row in payment_rows(app)] == ["pending"]


# --- creating the payment -------------------------------------------------------------------------


def test_an_upgrade_creates_a_yookassa_payment_with_a_redirect_back_to_the_profile(
    shop: Flask, client: FlaskClient, fake_yookassa: FakeYooKassa
) -> None:
    payment = start_payment(client)

    [request] = fake_yookassa.requests
    body = request.json
    assert (request.method, request.path) == ("POST", "/v3/payments")
    assert request.headers["idempotence-key"] == payment["id"]
    assert request.headers["authorization"].startswith("Basic ")
    assert body["amount"] == {"value": "59900.00", "currency": "RUB"}
    assert body["capture"] is True
    assert body["confirmation"] == {"type": "redirect", "return_url": "http://localhost/profile/"}
    # (the library adds its own cms_name)
    assert body["metadata"]["payment_id"] == payment["id"]
    assert body["metadata"]["user_id"] == "alice"
    assert "receipt" not in body
    [created] = fake_yookassa.payments.values()
    assert payment["confirmation_url"] == created["confirmation"]["confirmation_url"]
    assert yookassa_id(shop, payment) == created["id"]


def test_a_configured_vat_code_sends_a_receipt_with_the_users_email(
    make_app: AppFactory, fake_yookassa: FakeYooKassa
) -> None:
    app = yookassa_app(
        make_app,
        fake_yookassa,
        receipt_vat_code=1,
        BILLING_USER_INFO=lambda user: {"email": f"{user.id}@example.com"},
    )

    start_payment(app.test_client(), {"plan_type": "professional", "duration_months": 1})

    [request] = fake_yookassa.requests
    receipt = request.json["receipt"]
    assert receipt["customer"] == {"email": "alice@example.com"}
    [item] = receipt["items"]
    assert item["amount"] == {"value": "5990.00", "currency": "RUB"}
    assert item["vat_code"] == 1
    assert float(item["quantity"]) == 1  # the library writes it its own way ("1.0")
    assert item["description"] == "Professional plan, 1 month"


def test_a_receipt_without_an_email_fails_the_payment_before_yookassa_hears_of_it(
    make_app: AppFactory, fake_yookassa: FakeYooKassa
) -> None:
    app = yookassa_app(make_app, fake_yookassa, receipt_vat_code=1)

    response = upgrade(app.test_client(), PROFESSIONAL_YEAR)

    assert response.status_code == 502
    assert fake_yookassa.requests == []
    with app.app_context():
        assert [row.status for row in payment_rows(app)] == ["failed"]


# --- notifications, confirmed by the API ------------------------------------------------------------


def test_a_notification_confirmed_by_the_api_grants_the_plan_once(
    shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_yookassa: FakeYooKassa
) -> None:
    payment = start_payment(client)
    provider_id = yookassa_id(shop, payment)
    fake_yookassa.settle(provider_id)
    raw = fake_yookassa.notification(provider_id)

    first = notify(client, raw)
    again = notify(client, raw)

    assert first.status_code == 200, first.get_json()
    assert first.get_json()["data"]["outcome"] == "processed"
    assert again.get_json()["data"]["outcome"] == "duplicate"
    subscription = billing.subscription("alice")
    assert (subscription.plan_code, subscription.expires_at) == ("professional", ONE_YEAR_LATER)
    fetched = [r.path for r in fake_yookassa.requests if r.method == "GET"]
    assert fetched == [f"/v3/payments/{provider_id}"] * 2  # every notification is checked


@pytest.mark.parametrize("status", ["pending", "waiting_for_capture", "canceled"])
def test_a_notification_of_success_grants_nothing_when_the_api_says_otherwise(
    shop: Flask,
    client: FlaskClient,
    billing: ProfileBilling,
    fake_yookassa: FakeYooKassa,
    status: str,
) -> None:
    payment = start_payment(client)
    provider_id = yookassa_id(shop, payment)
    forged = fake_yookassa.notification(provider_id).replace(
        b'"status": "pending"', b'"status": "succeeded"'
    )
    fake_yookassa.settle(provider_id, status)

    response = notify(client, forged)

    assert response.status_code == 200
    assert billing.plan("alice").code == "free"
    [row] = payment_rows(shop)
    assert row.status == ("cancelled" if status == "canceled" else "pending")


@pytest.mark.parametrize(
    "amount",
    [{"value": "5990.00", "currency": "RUB"}, {"value": "59900.00", "currency": "USD"}],
)
def test_a_payment_the_api_reports_for_another_amount_grants_nothing(
    shop: Flask,
    client: FlaskClient,
    billing: ProfileBilling,
    fake_yookassa: FakeYooKassa,
    amount: dict[str, str],
) -> None:
    payment = start_payment(client)
    provider_id = yookassa_id(shop, payment)
    fake_yookassa.settle(provider_id, amount=amount)

    response = notify(client, fake_yookassa.notification(provider_id))

    assert response.status_code == 200
    assert response.get_json()["data"]["outcome"] == "rejected"
    assert_nothing_granted(shop, billing)
    state = shop.extensions["profile_billing"]
    assert [s["to_status"] for s in state.payments.events(payment["id"])] == ["pending", "pending"]


def api_reads(fake: FakeYooKassa) -> list[str]:
    """The paths of every GET the extension sent to the API."""
    return [r.path for r in fake.requests if r.method == "GET"]


@pytest.mark.parametrize("event", ["payment.succeeded", "payment.waiting_for_capture"])
def test_a_notification_naming_a_payment_we_never_started_is_rejected_without_asking_the_api(
    shop: Flask,
    client: FlaskClient,
    billing: ProfileBilling,
    fake_yookassa: FakeYooKassa,
    caplog: pytest.LogCaptureFixture,
    event: str,
) -> None:
    start_payment(client)
    stranger = str(uuid.uuid4())
    raw = json.dumps(
        {"type": "notification", "event": event, "object": {"id": stranger, "status": "succeeded"}}
    ).encode()

    responses = [notify(client, raw) for _ in range(3)]

    assert [r.status_code for r in responses] == [200] * 3
    assert {r.get_json()["data"]["outcome"] for r in responses} == {"rejected"}
    assert responses[0].get_json()["data"]["reason"] == "no such payment"
    assert api_reads(fake_yookassa) == []  # an anonymous POST costs no call to YooKassa
    assert rows(shop, select(webhook_deliveries)) == []  # nor a row: it is not stored
    assert_nothing_granted(shop, billing)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 3  # one line per delivery, no traceback
    assert all(r.exc_info is None for r in warnings)


def test_a_refund_notification_for_a_payment_we_never_started_is_rejected_without_asking(
    shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_yookassa: FakeYooKassa
) -> None:
    start_payment(client)
    raw = json.dumps(
        {
            "type": "notification",
            "event": "refund.succeeded",
            "object": {"id": str(uuid.uuid4()), "payment_id": str(uuid.uuid4())},
        }
    ).encode()

    response = notify(client, raw)

    assert response.status_code == 200
    assert response.get_json()["data"]["outcome"] == "rejected"
    assert api_reads(fake_yookassa) == []
    assert_nothing_granted(shop, billing)


def test_a_payment_of_ours_the_api_does_not_know_is_rejected_for_good_not_retried(
    shop: Flask,
    client: FlaskClient,
    billing: ProfileBilling,
    fake_yookassa: FakeYooKassa,
    caplog: pytest.LogCaptureFixture,
) -> None:
    payment = start_payment(client)
    provider_id = yookassa_id(shop, payment)
    raw = fake_yookassa.notification(provider_id)
    fake_yookassa.payments.clear()  # the API answers 404: it knows no such payment

    response = notify(client, raw)

    # A 404 is an answer, not an outage: a 5xx would only make YooKassa send it for a day.
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["data"]["outcome"] == "rejected"
    assert response.get_json()["data"]["reason"] == f"YooKassa knows no payment {provider_id}"
    assert api_reads(fake_yookassa) == [f"/v3/payments/{provider_id}"]
    assert [d.outcome for d in rows(shop, select(webhook_deliveries))] == ["rejected"]
    assert_nothing_granted(shop, billing)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].exc_info is None


def test_a_notification_the_api_cannot_answer_is_a_502_so_yookassa_delivers_it_again(
    shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_yookassa: FakeYooKassa
) -> None:
    payment = start_payment(client)
    provider_id = yookassa_id(shop, payment)
    fake_yookassa.settle(provider_id)
    fake_yookassa.outage = True

    response = notify(client, fake_yookassa.notification(provider_id))

    assert response.status_code == 502
    assert response.get_json()["error"] == "PAYMENT_PROVIDER_ERROR"
    assert_nothing_granted(shop, billing)
    fake_yookassa.outage = False
    assert notify(client, fake_yookassa.notification(provider_id)).status_code == 200
    assert billing.plan("alice").code == "professional"


@pytest.mark.parametrize(
    "body",
    [
        {"type": "notification", "event": "payment.succeeded"},
        {"type": "notification", "event": "payment.succeeded", "object": None},
        {"type": "notification", "event": "payment.succeeded", "object": "pay_1"},
        {"type": "notification", "event": "payment.succeeded", "object": []},
        {"type": "notification", "event": "payment.succeeded", "object": {}},
        {"type": "notification", "event": "payment.succeeded", "object": {"id": 5}},
        {"type": "notification", "event": "payment.succeeded", "object": {"id": ""}},
        {"type": "notification", "event": "payment.succeeded", "object": {"id": ["x"]}},
        {"type": "notification", "event": "payment.succeeded", "object": {"id": "a" * 300}},
        {"type": "notification", "event": "refund.succeeded", "object": {"id": "r1"}},
        {
            "type": "notification",
            "event": "refund.succeeded",
            "object": {"id": "r1", "payment_id": {"id": "p"}},
        },
        {"type": "notification", "event": None, "object": {"id": "p1"}},
        {"type": "notification", "event": 5, "object": {"id": "p1"}},
        {"type": "notification", "object": {"id": "p1"}},
        {"event": "payment.succeeded", "object": {"id": "p1"}},
        {"type": "payment", "event": "payment.succeeded", "object": {"id": "p1"}},
    ],
)
def test_a_notification_of_a_malformed_shape_is_a_422_and_asks_nothing(
    shop: Flask,
    client: FlaskClient,
    billing: ProfileBilling,
    fake_yookassa: FakeYooKassa,
    body: dict[str, Any],
) -> None:
    start_payment(client)

    response = notify(client, json.dumps(body).encode())

    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"] == "INVALID_EVENT"
    assert api_reads(fake_yookassa) == []
    assert_nothing_granted(shop, billing)


def test_five_concurrent_notifications_grant_once(
    shop: Flask, client: FlaskClient, billing: ProfileBilling, fake_yookassa: FakeYooKassa
) -> None:
    payment = start_payment(client)
    provider_id = yookassa_id(shop, payment)
    fake_yookassa.settle(provider_id)
    raw = fake_yookassa.notification(provider_id)
    barrier = threading.Barrier(CONCURRENT_DELIVERIES)

    def send() -> str:
        own_client = shop.test_client()
        barrier.wait(timeout=30)
        response = notify(own_client, raw)
        assert response.status_code == 200, response.get_json()
        outcome: str = response.get_json()["data"]["outcome"]
        return outcome

    with ThreadPoolExecutor(max_workers=CONCURRENT_DELIVERIES) as pool:
        outcomes = [f.result() for f in [pool.submit(send) for _ in range(CONCURRENT_DELIVERIES)]]

    assert Counter(outcomes) == {"processed": 1, "duplicate": CONCURRENT_DELIVERIES - 1}
    assert billing.subscription("alice").expires_at == ONE_YEAR_LATER
    state = shop.extensions["profile_billing"]
    assert [s["to_status"] for s in state.payments.events(payment["id"])] == [
        "pending",
        "paid",
        "succeeded",
    ]


# --- where notifications come from ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "status"), [(YOOKASSA_ADDRESS, 200), ("203.0.113.9", 403), ("not an ip", 403)]
)
def test_with_the_allow_list_only_yookassas_networks_are_heard(
    make_app: AppFactory, fake_yookassa: FakeYooKassa, address: str, status: int
) -> None:
    app = yookassa_app(make_app, fake_yookassa, trusted_networks_only=True)
    client = app.test_client()
    payment = start_payment(client)
    with app.app_context():
        provider_id = yookassa_id(app, payment)
    fake_yookassa.settle(provider_id)

    response = notify(client, fake_yookassa.notification(provider_id), address)

    assert response.status_code == status
    if status == 403:
        assert response.get_json()["error"] == "UNTRUSTED_SOURCE"
        assert not [r for r in fake_yookassa.requests if r.method == "GET"]


def test_the_yookassa_provider_is_set_up_by_name_from_keys_in_the_environment(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_YOOKASSA_SHOP_ID", SHOP_ID)
    monkeypatch.setenv("BILLING_YOOKASSA_SECRET_KEY", "live_secret_from_env")

    app = make_app(BILLING_PAYMENT_PROVIDER="yookassa", BILLING_YOOKASSA_RECEIPT_VAT_CODE=4)

    state = app.extensions["profile_billing"]
    assert isinstance(state.payments.provider, YooKassaProvider)
    assert "live_secret_from_env" not in f"{state.payments.provider!r} {state.runtime.settings!r}"


@pytest.mark.parametrize(
    "api_url", ["http://127.0.0.1:8080", "https://api.yookassa.ru", "api.yookassa.ru/v3"]
)
def test_an_api_url_without_the_version_is_refused_when_the_provider_is_built(api_url: str) -> None:
    with pytest.raises(ValueError, match="ending in /v3"):
        YooKassaProvider(SHOP_ID, SECRET_KEY, api_url=api_url)


def test_an_api_url_with_a_trailing_slash_is_the_same_api(
    make_app: AppFactory, fake_yookassa: FakeYooKassa
) -> None:
    provider = YooKassaProvider(SHOP_ID, SECRET_KEY, api_url=fake_yookassa.api_url + "/")
    app = make_app(BILLING_PAYMENT_PROVIDER=provider)

    start_payment(app.test_client())

    assert [(r.method, r.path) for r in fake_yookassa.requests] == [("POST", "/v3/payments")]
