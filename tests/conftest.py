"""Fixtures: every database test runs on SQLite and on a real PostgreSQL server.

The helpers these fixtures use, and that tests import, are in tests/support/.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from sqlalchemy import Engine, event

from flask_profile_billing import ProfileBilling
from flask_profile_billing.payments import TestPaymentProvider
from tests.support.host_app import HOST_USERS_TABLE, AppFactory, Clock, billing_of, create_host_app
from tests.support.payments import CONTACT, SECRET
from tests.support.provider_fakes import FakeStripe, FakeYooKassa
from tests.support.servers import PostgresServer, postgresql_server, redis_server  # noqa: F401

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A fresh, empty database: a SQLite file, or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/billing.sqlite3"
    server: PostgresServer = request.getfixturevalue("postgresql_server")
    return server.new_database(f"test_{uuid.uuid4().hex[:16]}")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_app(database_url: str, clock: Clock) -> AppFactory:
    """Build a host app on the test's database; keyword arguments are config overrides."""

    def factory(**config: Any) -> Flask:
        config.setdefault("BILLING_CLOCK", clock)
        return create_host_app(database_url, config)

    return factory


@pytest.fixture
def app(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app()
    with app.app_context():
        yield app


@pytest.fixture
def billing(app: Flask) -> ProfileBilling:
    return billing_of(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def statements(app: Flask) -> Iterator[list[str]]:
    """The SQL statements the extension runs on the app's engine while the test runs (not the
    host's own: its user loaders' reads of its users table)."""
    engine: Engine = app.extensions["profile_billing"].runtime.engine
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if HOST_USERS_TABLE not in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    yield seen
    event.remove(engine, "before_cursor_execute", count)


# -- a host app that takes payments through the test provider --------------------------------------


@pytest.fixture
def provider() -> TestPaymentProvider:
    return TestPaymentProvider()


@pytest.fixture
def shop(make_app: AppFactory, provider: TestPaymentProvider) -> Iterator[Flask]:
    """A host app that takes payments through the test provider."""
    app = make_app(
        BILLING_PAYMENT_PROVIDER=provider,
        BILLING_WEBHOOK_SECRET=SECRET,
        PROFILE_PAYMENTS_CTA_EMAIL=CONTACT,
    )
    with app.app_context():
        yield app


@pytest.fixture
def shop_client(shop: Flask) -> FlaskClient:
    return shop.test_client()


@pytest.fixture
def shop_billing(shop: Flask) -> ProfileBilling:
    return billing_of(shop)


# -- the payment providers' HTTP APIs, faked on loopback (tests/support/provider_fakes.py) ------


@pytest.fixture
def fake_stripe(httpserver: HTTPServer) -> FakeStripe:
    fake = FakeStripe(httpserver)
    fake.install()
    return fake


@pytest.fixture
def fake_yookassa(httpserver: HTTPServer) -> FakeYooKassa:
    fake = FakeYooKassa(httpserver)
    fake.install()
    return fake
