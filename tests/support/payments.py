"""What the payment test modules share: the settings of the ``shop`` fixture (tests/conftest.py),
an upgrade request, and the payments table read straight from the database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Row, select

from flask_profile_billing.store.models import payments
from tests.support.host_app import as_user

SECRET = "s3cret"
CONTACT = "sales@example.com"
ONE_YEAR_LATER = datetime(2026, 10, 13, 10, 0, tzinfo=UTC)
PROFESSIONAL_YEAR = {"plan_type": "professional", "duration_months": 12}


def upgrade(client: FlaskClient, body: Any, user: str = "alice") -> Any:
    return client.post("/api/subscription/upgrade", json=body, headers=as_user(user))


def rows(app: Flask, query: Any) -> list[Row[Any]]:
    with app.extensions["sqlalchemy"].engine.connect() as connection:
        return list(connection.execute(query))


def payment_rows(app: Flask) -> list[Row[Any]]:
    return rows(app, select(payments).order_by(payments.c.created_at))
