"""Payment webhooks (``POST /api/billing/webhooks/<provider>``): only a correctly signed delivery
of the provider grants the paid plan, once, however often it is replayed or raced. Deliveries
without a valid signature, with a body that is not an event or with bad fields are refused and
change nothing; late, mismatched and unknown events grant nothing; and the signature scheme on
its own (raw bytes, rotated secrets).

Starting the payment these deliveries settle is test_payment_start.py's.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, Row, select, text, update

from flask_profile_billing import ProfileBilling, signals
from flask_profile_billing.payments import (
    PAYMENT_CANCELLED,
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
    SIGNATURE_HEADER,
    InvalidSignature,
    TestPaymentProvider,
    sign,
    verify,
)
from flask_profile_billing.store.models import payments, subscriptions, webhook_deliveries
from tests.support.host_app import AppFactory, Clock, billing_of
from tests.support.payments import (
    ONE_YEAR_LATER,
    PROFESSIONAL_YEAR,
    SECRET,
    payment_rows,
    rows,
    upgrade,
)

NOW = datetime(2025, 10, 13, 10, 0, tzinfo=UTC)
TOLERANCE = 300  # BILLING_WEBHOOK_TOLERANCE_SECONDS's default
CONCURRENT_DELIVERIES = 8


# --- helpers --------------------------------------------------------------------------------------


def start_payment(client: FlaskClient, body: Any = None, user: str = "alice") -> dict[str, Any]:
    response = upgrade(client, body or PROFESSIONAL_YEAR, user)
    assert response.status_code == 202, response.get_json()
    payment: dict[str, Any] = response.get_json()["data"]["payment"]
    return payment


def event_body(
    provider: TestPaymentProvider,
    payment: dict[str, Any],
    event_type: str = PAYMENT_SUCCEEDED,
    **overrides: Any,
) -> bytes:
    """The provider's webhook body for ``payment`` (an upgrade's ``data.payment``), as bytes."""
    body = provider.event(event_type, payment["id"], payment["amount"], payment["currency"])
    body.update(overrides)
    return json.dumps(body).encode()


def deliver(
    client: FlaskClient,
    raw_body: bytes,
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
    header: str | None = None,
    provider_name: str = "test",
) -> Any:
    """POST a webhook as the provider would: no login, no CSRF token, signed unless ``header``."""
    if header is None:
        moment = int(NOW.timestamp()) if timestamp is None else timestamp
        header = sign(secret, raw_body, moment)
    return client.post(
        f"/api/billing/webhooks/{provider_name}",
        data=raw_body,
        headers={SIGNATURE_HEADER: header, "Content-Type": "application/json"} if header else {},
    )


def delivery_rows(app: Flask) -> list[Row[Any]]:
    return rows(app, select(webhook_deliveries).order_by(webhook_deliveries.c.id))


def subscription_rows(app: Flask, user_id: str = "alice") -> list[Row[Any]]:
    query = (
        select(subscriptions)
        .where(subscriptions.c.account_id == "user:" + user_id)
        .order_by(subscriptions.c.id)
    )
    return rows(app, query)


@contextmanager
def plan_changes(app: Flask) -> Iterator[list[str]]:
    """The plan code of every ``subscription_changed`` the app sends inside the block."""
    codes: list[str] = []
    lock = threading.Lock()

    def receiver(sender: Flask, **kwargs: Any) -> None:
        with lock:
            codes.append(kwargs["current"].plan_code)

    with signals.subscription_changed.connected_to(receiver, sender=app):
        yield codes


def assert_nothing_granted(app: Flask, billing: ProfileBilling) -> None:
    assert billing.plan("alice").code == "free"
    assert [row.status for row in payment_rows(app)] == ["pending"]


# --- the webhook grants the plan ------------------------------------------------------------------


def test_a_signed_success_webhook_grants_the_paid_plan_for_the_paid_months(
    shop: Flask,
    shop_client: FlaskClient,
    shop_billing: ProfileBilling,
    provider: TestPaymentProvider,
) -> None:
    payment = start_payment(shop_client)

    with plan_changes(shop) as changes:
        response = deliver(shop_client, event_body(provider, payment))

    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {
        "success": True,
        "data": {"outcome": "processed", "event_id": f"evt_{PAYMENT_SUCCEEDED}_{payment['id']}"},
    }
    subscription = shop_billing.subscription("alice")
    assert subscription.plan_code == "professional"
    assert subscription.expires_at == ONE_YEAR_LATER
    assert changes == ["professional"]
    [row] = payment_rows(shop)
    assert (row.status, row.settled_at) == ("succeeded", NOW)
    [delivery] = delivery_rows(shop)
    assert (delivery.outcome, delivery.event_type) == ("processed", PAYMENT_SUCCEEDED)
    assert json.loads(delivery.payload)["payment_id"] == payment["id"]


def test_the_same_delivery_three_times_changes_the_plan_once(
    shop: Flask,
    shop_client: FlaskClient,
    shop_billing: ProfileBilling,
    provider: TestPaymentProvider,
) -> None:
    payment = start_payment(shop_client)
    raw = event_body(provider, payment)

    with plan_changes(shop) as changes:
        responses = [deliver(shop_client, raw) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    outcomes = [r.get_json()["data"]["outcome"] for r in responses]
    assert outcomes == ["processed", "duplicate", "duplicate"]
    assert changes == ["professional"]
    assert shop_billing.subscription("alice").expires_at == ONE_YEAR_LATER  # not two years
    assert len(subscription_rows(shop)) == 2  # the free one it replaced, and professional
    deliveries = delivery_rows(shop)
    assert len(deliveries) == 3
    assert Counter(d.outcome for d in deliveries) == {"processed": 1, "duplicate": 2}


def test_concurrent_deliveries_of_one_event_change_the_plan_once(
    shop: Flask,
    shop_client: FlaskClient,
    shop_billing: ProfileBilling,
    provider: TestPaymentProvider,
) -> None:
    payment = start_payment(shop_client)
    raw = event_body(provider, payment)
    barrier = threading.Barrier(CONCURRENT_DELIVERIES)

    def send() -> tuple[int, str]:
        client = shop.test_client()
        barrier.wait(timeout=30)
        response = deliver(client, raw)
        return response.status_code, response.get_json()["data"]["outcome"]

    with (
        plan_changes(shop) as changes,
        ThreadPoolExecutor(max_workers=CONCURRENT_DELIVERIES) as pool,
    ):
        results = [f.result() for f in [pool.submit(send) for _ in range(CONCURRENT_DELIVERIES)]]

    assert Counter(status for status, _ in results) == {200: CONCURRENT_DELIVERIES}
    assert Counter(outcome for _, outcome in results) == {
        "processed": 1,
        "duplicate": CONCURRENT_DELIVERIES - 1,
    }
    assert changes == ["professional"]
    assert shop_billing.subscription("alice").expires_at == ONE_YEAR_LATER
    assert len(subscription_rows(shop)) == 2
    deliveries = delivery_rows(shop)
    assert len(deliveries) == CONCURRENT_DELIVERIES
    assert sum(d.outcome == "processed" for d in deliveries) == 1


def test_a_confirmation_whose_payment_is_settled_meanwhile_grants_nothing(
    shop: Flask,
    shop_client: FlaskClient,
    shop_billing: ProfileBilling,
    provider: TestPaymentProvider,
) -> None:
    """A confirmation reads its payment pending while another writer is settling it: its move
    waits for that writer, finds the payment moved, and the event is decided again on the
    settled payment, which it leaves alone (PostgreSQL; SQLite runs the two one after the
    other, to the same end)."""
    payment = start_payment(shop_client)
    raw = event_body(provider, payment)
    engine = shop.extensions["sqlalchemy"].engine
    with ThreadPoolExecutor(max_workers=1) as pool:
        with engine.begin() as writer:
            writer.execute(
                update(payments).where(payments.c.id == payment["id"]).values(status="cancelled")
            )
            delivery = pool.submit(lambda: deliver(shop.test_client(), raw).get_json()["data"])
            if engine.dialect.name == "postgresql":
                wait_until_a_statement_waits_for_a_lock(engine)
        result = delivery.result(timeout=30)

    assert result["outcome"] == "ignored"
    assert result["reason"] == "the payment is no longer pending"
    assert [row.status for row in payment_rows(shop)] == ["cancelled"]
    assert shop_billing.subscription("alice").plan_code != "professional"


def wait_until_a_statement_waits_for_a_lock(engine: Engine) -> None:
    deadline = time.monotonic() + 30
    waiting = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            if connection.execute(waiting).scalar_one():
                return
        time.sleep(0.01)
    raise AssertionError("the delivery never waited for the settling writer")


def test_paying_again_for_the_current_plan_extends_it(
    shop: Flask,
    shop_client: FlaskClient,
    shop_billing: ProfileBilling,
    provider: TestPaymentProvider,
) -> None:
    first = start_payment(shop_client)
    deliver(shop_client, event_body(provider, first))
    second = start_payment(shop_client, {"plan_type": "professional", "duration_months": 1})

    response = deliver(shop_client, event_body(provider, second))

    assert response.get_json()["data"]["outcome"] == "processed"
    assert shop_billing.subscription("alice").expires_at == datetime(
        2026, 11, 13, 10, 0, tzinfo=UTC
    )


# --- refused deliveries change nothing ------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        "missing header",
        "empty header",
        "malformed header",
        "timestamp not a number",
        "wrong signature",
        "another secret",
        "body changed after signing",
        "timestamp too old",
        "timestamp in the future",
        "clock moved on",
    ],
)
def test_a_delivery_without_a_valid_signature_is_a_401_and_changes_nothing(
    shop: Flask,
    shop_client: FlaskClient,
    shop_billing: ProfileBilling,
    provider: TestPaymentProvider,
    clock: Clock,
    case: str,
) -> None:
    payment = start_payment(shop_client)
    raw = event_body(provider, payment)
    now = int(NOW.timestamp())
    good = sign(SECRET, raw, now)
    cases: dict[str, dict[str, Any]] = {
        "missing header": {"header": ""},
        "empty header": {"header": " "},
        "malformed header": {"header": "sha256=deadbeef"},
        "timestamp not a number": {"header": good.replace(f"t={now}", "t=soon")},
        "wrong signature": {"header": f"t={now},v1={'0' * 64}"},
        "another secret": {"secret": "not-the-secret"},
        "body changed after signing": {"header": good},
        "timestamp too old": {"timestamp": now - TOLERANCE - 1},
        "timestamp in the future": {"timestamp": now + TOLERANCE + 1},
        "clock moved on": {},
    }
    if case == "body changed after signing":
        raw = raw.replace(b'"59900"', b'"1"')  # the header still signs the original bytes
    if case == "clock moved on":
        clock.advance(seconds=TOLERANCE + 1)  # a captured delivery replayed later

    response = deliver(shop_client, raw, **cases[case])

    assert response.status_code == 401
    assert response.get_json()["error"] == "INVALID_SIGNATURE"
    assert_nothing_granted(shop, shop_billing)
    assert delivery_rows(shop) == []  # unsigned junk is not stored


@pytest.mark.parametrize("offset", [-TOLERANCE, TOLERANCE])
def test_a_timestamp_within_the_tolerance_either_way_is_accepted_and_grants(
    shop: Flask,
    shop_client: FlaskClient,
    shop_billing: ProfileBilling,
    provider: TestPaymentProvider,
    offset: int,
) -> None:
    payment = start_payment(shop_client)

    response = deliver(
        shop_client, event_body(provider, payment), timestamp=int(NOW.timestamp()) + offset
    )

    # A 200 alone says little: ignored and rejected deliveries are answered 200 too.
    assert response.status_code == 200
    assert response.get_json()["data"]["outcome"] == "processed"
    subscription = shop_billing.subscription("alice")
    assert (subscription.plan_code, subscription.expires_at) == ("professional", ONE_YEAR_LATER)
    assert [row.status for row in payment_rows(shop)] == ["succeeded"]


def test_without_a_secret_webhooks_are_disabled(
    make_app: AppFactory, provider: TestPaymentProvider
) -> None:
    app = make_app(BILLING_PAYMENT_PROVIDER=provider)
    billing = billing_of(app)
    client = app.test_client()
    payment = start_payment(client)

    response = deliver(client, event_body(provider, payment))

    assert response.status_code == 503
    assert response.get_json()["error"] == "WEBHOOKS_DISABLED"
    with app.app_context():
        assert_nothing_granted(app, billing)
        assert delivery_rows(app) == []


@pytest.mark.parametrize("configured", [True, False])
def test_a_provider_that_is_not_configured_is_a_404(
    make_app: AppFactory, provider: TestPaymentProvider, configured: bool
) -> None:
    config: dict[str, Any] = {"BILLING_WEBHOOK_SECRET": SECRET}
    if configured:
        config["BILLING_PAYMENT_PROVIDER"] = provider
    app = make_app(**config)

    response = deliver(app.test_client(), b"{}", provider_name="stripe")

    assert response.status_code == 404
    assert response.get_json()["error"] == "UNKNOWN_PROVIDER"
    with app.app_context():
        assert delivery_rows(app) == []


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"", 400),
        (b"not json", 400),
        (b"\xff\xfe\x00garbage", 400),
        (b"[1, 2]", 400),
        (b"null", 400),
        (b"[" * 100_000, 400),
        (b"{}", 422),
        (b'{"event_id": "e1", "event_type": "payment.succeeded"}', 422),
        (b'{"event_id": 5, "event_type": "payment.succeeded", "payment_id": "p"}', 422),
    ],
)
def test_a_signed_body_that_is_not_an_event_is_a_4xx_and_changes_nothing(
    shop: Flask,
    shop_client: FlaskClient,
    shop_billing: ProfileBilling,
    raw: bytes,
    status: int,
) -> None:
    start_payment(shop_client)

    response = deliver(shop_client, raw)

    assert response.status_code == status
    body = response.get_json()
    assert body["success"] is False
    assert body["error"] in {"INVALID_JSON", "INVALID_EVENT"}
    assert_nothing_granted(shop, shop_billing)
    assert [d.outcome for d in delivery_rows(shop)] == ["rejected"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"amount": "abc"},
        {"amount": True},
        {"amount": None},
        {"amount": "-59900"},
        {"amount": "NaN"},
        {"currency": ["RUB"]},
        {"event_id": "e" * 300},
        {"event_id": "evt\u0000"},
        {"event_type": "t" * 100},
        {"payment_id": None, "provider_payment_id": None},
        {"payment_id": "p" * 100},
    ],
)
def test_a_signed_event_with_bad_fields_is_a_422_never_a_500(
    shop: Flask,
    shop_client: FlaskClient,
    shop_billing: ProfileBilling,
    provider: TestPaymentProvider,
    overrides: dict[str, Any],
) -> None:
    payment = start_payment(shop_client)

    response = deliver(shop_client, event_body(provider, payment, **overrides))

    assert response.status_code == 422
    assert response.get_json()["error"] == "INVALID_EVENT"
    assert_nothing_granted(shop, shop_billing)


# --- out of order, mismatched and unknown events --------------------------------------------------


def test_a_late_failure_after_success_changes_nothing(
    shop: Flask,
    shop_client: FlaskClient,
    shop_billing: ProfileBilling,
    provider: TestPaymentProvider,
) -> None:
    payment = start_payment(shop_client)
    deliver(shop_client, event_body(provider, payment))

    for event_type in (PAYMENT_FAILED, PAYMENT_CANCELLED):
        response = deliver(shop_client, event_body(provider, payment, event_type))
        assert response.status_code == 200
        assert response.get_json()["data"]["outcome"] == "ignored"

    assert [row.status for row in payment_rows(shop)] == ["succeeded"]
    assert shop_billing.plan("alice").code == "professional"
    assert shop_billing.subscription("alice").expires_at == ONE_YEAR_LATER


@pytest.mark.parametrize(
    ("event_type", "status"), [(PAYMENT_FAILED, "failed"), (PAYMENT_CANCELLED, "cancelled")]
)
def test_a_failed_payment_grants_nothing_not_even_after_a_late_success(
    shop: Flask,
    shop_client: FlaskClient,
    shop_billing: ProfileBilling,
    provider: TestPaymentProvider,
    event_type: str,
    status: str,
) -> None:
    payment = start_payment(shop_client)

    failed = deliver(shop_client, event_body(provider, payment, event_type))
    late_success = deliver(shop_client, event_body(provider, payment))

    assert failed.get_json()["data"]["outcome"] == "processed"
    assert late_success.get_json()["data"]["outcome"] == "ignored"
    assert [row.status for row in payment_rows(shop)] == [status]
    assert shop_billing.plan("alice").code == "free"


@pytest.mark.parametrize(
    "overrides",
    [
        {"amount": "5990"},  # a month's price for the year
        {"amount": "59899.99"},
        {"currency": "USD"},
    ],
)
def test_a_success_for_the_wrong_amount_or_currency_does_not_grant(
    shop: Flask,
    shop_client: FlaskClient,
    shop_billing: ProfileBilling,
    provider: TestPaymentProvider,
    overrides: dict[str, Any],
) -> None:
    payment = start_payment(shop_client)

    response = deliver(shop_client, event_body(provider, payment, **overrides))

    assert response.status_code == 200
    assert response.get_json()["data"]["outcome"] == "rejected"
    assert_nothing_granted(shop, shop_billing)
    assert [d.outcome for d in delivery_rows(shop)] == ["rejected"]


def test_an_amount_written_differently_is_the_same_amount(
    shop: Flask,
    shop_client: FlaskClient,
    shop_billing: ProfileBilling,
    provider: TestPaymentProvider,
) -> None:
    payment = start_payment(shop_client)

    response = deliver(shop_client, event_body(provider, payment, amount="59900.00"))

    assert response.get_json()["data"]["outcome"] == "processed"
    assert shop_billing.plan("alice").code == "professional"


@pytest.mark.parametrize(
    "overrides",
    [
        {"payment_id": "0" * 32},
        {"payment_id": None, "provider_payment_id": "test_unknown"},
        {"provider_payment_id": "test_someone_elses"},
    ],
)
def test_an_event_for_an_unknown_payment_grants_nothing(
    shop: Flask,
    shop_client: FlaskClient,
    shop_billing: ProfileBilling,
    provider: TestPaymentProvider,
    overrides: dict[str, Any],
) -> None:
    payment = start_payment(shop_client)

    response = deliver(shop_client, event_body(provider, payment, **overrides))

    assert response.status_code == 200
    assert response.get_json()["data"]["outcome"] == "rejected"
    assert_nothing_granted(shop, shop_billing)


def test_a_payment_is_found_by_the_providers_id_when_ours_is_not_echoed(
    shop: Flask,
    shop_client: FlaskClient,
    shop_billing: ProfileBilling,
    provider: TestPaymentProvider,
) -> None:
    payment = start_payment(shop_client)

    response = deliver(shop_client, event_body(provider, payment, payment_id=None))

    assert response.get_json()["data"]["outcome"] == "processed"
    assert shop_billing.plan("alice").code == "professional"


def test_an_event_type_we_do_not_handle_is_recorded_and_ignored(
    shop: Flask,
    shop_client: FlaskClient,
    shop_billing: ProfileBilling,
    provider: TestPaymentProvider,
) -> None:
    payment = start_payment(shop_client)

    response = deliver(shop_client, event_body(provider, payment, "refund.succeeded"))

    assert response.status_code == 200
    assert response.get_json()["data"]["outcome"] == "ignored"
    assert_nothing_granted(shop, shop_billing)
    assert [(d.event_type, d.outcome) for d in delivery_rows(shop)] == [
        ("refund.succeeded", "ignored")
    ]


# --- the signature scheme on its own --------------------------------------------------------------


def test_signatures_sign_the_raw_bytes_at_a_time() -> None:
    raw = b'{"a": 1}'
    header = sign(SECRET, raw, int(NOW.timestamp()))

    verify(header, raw, SECRET, NOW, TOLERANCE)  # no exception
    with pytest.raises(InvalidSignature):
        verify(header, b'{"a":1}', SECRET, NOW, TOLERANCE)  # same JSON, other bytes


def test_a_rotated_secret_can_be_sent_alongside_the_old_one() -> None:
    raw = b"{}"
    moment = int(NOW.timestamp())
    old, new = sign("old", raw, moment), sign("new", raw, moment)
    both = f"{old},{new.split(',')[1]}"

    verify(both, raw, "new", NOW, TOLERANCE)
    verify(both, raw, "old", NOW, TOLERANCE)
    with pytest.raises(InvalidSignature):
        verify(both, raw, "other", NOW, TOLERANCE)
