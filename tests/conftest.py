"""Fixtures: every database test runs on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_profile_billing import ProfileBilling
from tests.host_app import Clock, create_host_app
from tests.servers import PostgresServer, postgresql_server, redis_server  # noqa: F401

BACKENDS = ["sqlite", "postgresql"]
AppFactory = Callable[..., Flask]


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
    extension: ProfileBilling = app.extensions["test_billing"]
    return extension


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def as_user(user_id: str, **headers: str) -> dict[str, str]:
    """Request headers that log ``user_id`` in through the host app's request_loader."""
    return {"X-User": user_id, "Accept": "application/json", **headers}
