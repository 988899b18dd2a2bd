"""Providers that post their notifications as forms (Robokassa's Result URL, CloudPayments'
default): an adapter of the host's own, written as docs/payments.md shows, verifies the raw body and
reads the form's fields; the grant still comes from our own record of the payment."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_profile_billing.payments import (
    PAYMENT_SUCCEEDED,
    InvalidSignature,
    PaymentIntent,
    ProviderEvent,
    ProviderPayment,
)
from tests.support.host_app import AppFactory, billing_of
from tests.support.payments import PROFESSIONAL_YEAR, payment_rows, upgrade

PASSWORD_2 = "robokassa-password-2"


class RobokassaStyleProvider:
    """Robokassa's scheme: the Result URL gets a form with OutSum, InvId and SignatureValue, the
    MD5 of "OutSum:InvId:Password2" (upper-case hex)."""

    name = "robokassa"

    def start(self, payment: PaymentIntent) -> ProviderPayment:
        query = urlencode({"OutSum": f"{payment.amount:.2f}", "InvId": payment.id})
        return ProviderPayment(
            provider_payment_id=payment.id,
            confirmation_url=f"https://auth.robokassa.example/Merchant/Index.aspx?{query}",
        )

    def verify(self, headers: Mapping[str, str], raw_body: bytes, now: datetime) -> None:
        fields = dict(parse_qsl(raw_body.decode("utf-8")))
        signed = f"{fields.get('OutSum', '')}:{fields.get('InvId', '')}:{PASSWORD_2}"
        expected = hashlib.md5(signed.encode()).hexdigest().upper()
        if not hmac.compare_digest(expected, fields.get("SignatureValue", "").upper()):
            raise InvalidSignature("SignatureValue does not match")

    def parse_event(self, payload: Mapping[str, Any]) -> ProviderEvent:
        return ProviderEvent(
            event_id=f"{payload['InvId']}:paid",
            event_type=PAYMENT_SUCCEEDED,
            payment_id=payload["InvId"],
            provider_payment_id=payload["InvId"],
            amount=Decimal(payload["OutSum"]),
            currency="RUB",
        )


def result_form(out_sum: str, inv_id: str, password: str = PASSWORD_2) -> bytes:
    signature = hashlib.md5(f"{out_sum}:{inv_id}:{password}".encode()).hexdigest()
    return urlencode({"OutSum": out_sum, "InvId": inv_id, "SignatureValue": signature}).encode()


def post_form(client: FlaskClient, body: bytes) -> Any:
    return client.post(
        "/api/billing/webhooks/robokassa",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


@pytest.fixture
def shop(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app(BILLING_PAYMENT_PROVIDER=RobokassaStyleProvider())
    with app.app_context():
        yield app


def started_payment(shop: Flask) -> tuple[str, str]:
    """Alice starts a year of Professional: (our payment id, its amount as the form writes it)."""
    response = upgrade(shop.test_client(), PROFESSIONAL_YEAR)
    assert response.status_code == 202, response.get_json()
    [row] = payment_rows(shop)
    return row.id, f"{row.amount:.2f}"


def test_a_signed_form_grants_the_plan_of_our_own_record(shop: Flask) -> None:
    payment_id, amount = started_payment(shop)

    answer = post_form(shop.test_client(), result_form(amount, payment_id))

    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["data"]["outcome"] == "processed"
    billing = billing_of(shop)
    assert billing.plan("alice").code == "professional"
    # A repeat of the same form is a duplicate: nothing is granted twice.
    again = post_form(shop.test_client(), result_form(amount, payment_id))
    assert again.get_json()["data"]["outcome"] == "duplicate"


@pytest.mark.parametrize(
    ("tamper", "status"),
    [
        ("password", 401),  # signed with another password
        ("amount", 401),  # the amount changed after signing
    ],
)
def test_a_form_that_fails_its_signature_grants_nothing(
    shop: Flask, tamper: str, status: int
) -> None:
    payment_id, amount = started_payment(shop)
    if tamper == "password":
        body = result_form(amount, payment_id, password="guess")
    else:
        body = result_form(amount, payment_id).replace(amount.encode(), b"1.00")

    assert post_form(shop.test_client(), body).status_code == status
    billing = billing_of(shop)
    assert billing.plan("alice").code == "free"


class TrustingProvider(RobokassaStyleProvider):
    """Accepts every delivery, so that what follows the signature check is what is tested."""

    def verify(self, headers: Mapping[str, str], raw_body: bytes, now: datetime) -> None:
        return None


@pytest.mark.parametrize("body", [b"\xff\xfe=broken", b"no pairs here", b"InvId=1&&="])
def test_a_form_that_is_not_name_value_pairs_is_a_400_not_a_500(
    make_app: AppFactory, body: bytes
) -> None:
    app = make_app(BILLING_PAYMENT_PROVIDER=TrustingProvider())

    answer = post_form(app.test_client(), body)

    assert answer.status_code == 400, answer.get_json()
    assert "form" in answer.get_json()["message"]
