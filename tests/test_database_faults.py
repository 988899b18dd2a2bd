"""``answer_database_faults``: the host's own views answer the database's faults like the
extension's (503 with ``Retry-After``, in the client's format), and nothing else.

The views raise the database's exceptions themselves, as SQLAlchemy raises them; each test runs on
SQLite and PostgreSQL all the same, with the handler on the host app of either.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy.exc import OperationalError, ProgrammingError

from flask_profile_billing import answer_database_faults
from tests.support.host_app import AppFactory, as_user


@pytest.fixture
def host(make_app: AppFactory) -> Flask:
    app = make_app(BILLING_UNAVAILABLE_RETRY_AFTER=9)
    answer_database_faults(app)

    @app.get("/reports/down")
    def reports_down() -> Any:
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    @app.get("/reports/bug")
    def reports_bug() -> Any:
        # A statement naming a column that does not exist: a bug of the host, not a fault.
        raise ProgrammingError("SELECT nope FROM reports", {}, Exception("no column nope"))

    return app


def test_a_host_views_database_fault_is_503_with_retry_after_in_the_clients_format(
    host: Flask,
) -> None:
    client = host.test_client()

    as_json = client.get("/reports/down", headers=as_user("alice"))
    as_html = client.get("/reports/down", headers={"X-User": "alice", "Accept": "text/html"})

    assert as_json.status_code == 503
    assert as_json.get_json()["error"] == "SERVICE_UNAVAILABLE"
    assert as_json.headers["Retry-After"] == "9"
    assert as_html.status_code == 503
    assert as_html.mimetype == "text/html"
    assert as_html.headers["Retry-After"] == "9"
    assert "temporarily unavailable" in as_html.get_data(as_text=True)


def test_a_host_views_other_database_errors_stay_its_own(host: Flask) -> None:
    # Raised through the test client (TESTING): what a server answers 500.
    with pytest.raises(ProgrammingError, match="no column nope"):
        host.test_client().get("/reports/bug", headers=as_user("alice"))
