"""A host whose own session wrote before the guard: on SQLite that write holds the database's only
write lock, and the guard's transaction, on a connection of its own, could only wait for it until
the busy timeout. The extension says so at once, naming the fix; a host that commits first, or puts
the guard outermost, is charged as usual. PostgreSQL locks rows, so the same host works there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any

import pytest
from flask import Flask, Request, g, jsonify
from flask.testing import FlaskClient
from flask_login import LoginManager, UserMixin, current_user
from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from flask_profile_billing import ProfileBilling, requires_feature, requires_quota
from tests.support.host_app import BILLING_KEY, Clock, billing_of, db

# The busy timeout the host runs with: without the check, the guard would answer after it.
BUSY_TIMEOUT = 5.0


class Member(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "host_members"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


def permission_required(*, commit: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A host's permission check that records when the member was last seen, as many do: it
    flushes the update (to read it back), and commits it only when told to."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            member = db.session.get(Member, current_user.get_id())
            assert member is not None
            member.last_seen = datetime.now(UTC)
            db.session.flush()
            if commit:
                db.session.commit()
            return view(*args, **kwargs)

        return checked

    return decorator


def build_host(database_url: str, clock: Clock) -> Flask:
    app = Flask("self_wait_host")
    app.config.update(
        TESTING=True,
        SECRET_KEY="test",
        SQLALCHEMY_DATABASE_URI=database_url,
        BILLING_CLOCK=clock,
    )
    if database_url.startswith("sqlite"):
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"connect_args": {"timeout": BUSY_TIMEOUT}}
    db.init_app(app)
    login_manager = LoginManager(app)

    @app.before_request
    def forget_previous_user() -> None:
        g.pop("_login_user", None)

    @login_manager.request_loader
    def load_from_header(request: Request) -> Member | None:
        member_id = request.headers.get("X-User")
        return None if member_id is None else db.session.get(Member, member_id)

    billing = ProfileBilling(app, db)

    @app.post("/flushed-then-guarded")
    @permission_required(commit=False)
    @requires_quota("analysis")
    def flushed_then_guarded() -> Any:
        return jsonify(success=True)

    @app.get("/flushed-then-feature")
    @permission_required(commit=False)
    @requires_feature("api_access")
    def flushed_then_feature() -> Any:
        # Reads only, but a user's first request creates their free subscription: a write.
        return jsonify(success=True)

    @app.post("/committed-then-guarded")
    @permission_required(commit=True)
    @requires_quota("analysis")
    def committed_then_guarded() -> Any:
        return jsonify(success=True)

    @app.post("/guarded-then-flushed")
    @requires_quota("analysis")
    @permission_required(commit=False)
    def guarded_then_flushed() -> Any:
        return jsonify(success=True)

    with app.app_context():
        db.create_all()
        billing.create_all()
        db.session.add(Member(id="alice"))
        db.session.commit()
    app.extensions[BILLING_KEY] = billing
    return app


@pytest.fixture
def host(database_url: str, clock: Clock) -> Flask:
    return build_host(database_url, clock)


def used(app: Flask) -> int:
    with app.app_context():
        return billing_of(app).allowance("alice", "analysis").used


def post(client: FlaskClient, path: str) -> tuple[Any, float]:
    started = time.monotonic()
    response = client.post(path, headers={"X-User": "alice", "Accept": "application/json"})
    return response, time.monotonic() - started


def test_a_write_flushed_before_the_guard_is_named_at_once_on_sqlite(
    host: Flask, database_url: str
) -> None:
    response, elapsed = post(host.test_client(), "/flushed-then-guarded")

    if database_url.startswith("sqlite"):
        body = response.get_json()
        assert response.status_code == 500
        assert body["error"] == "CONFIGURATION_ERROR"
        assert "db.session.commit()" in body["message"]
        assert "guard outermost" in body["message"]
        # Not after the busy timeout: the guard never waited.
        assert elapsed < BUSY_TIMEOUT / 2
        assert used(host) == 0
    else:
        # Rows, not the database, are locked on PostgreSQL: the charge never waits on the host.
        assert response.status_code == 200
        assert used(host) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_idempotent_request_after_a_flushed_write_is_named_at_once(host: Flask) -> None:
    client = host.test_client()
    started = time.monotonic()
    response = client.post(
        "/flushed-then-guarded",
        headers={"X-User": "alice", "Accept": "application/json", "Idempotency-Key": "k-1"},
    )

    assert response.status_code == 500
    assert "db.session.commit()" in response.get_json()["message"]
    assert time.monotonic() - started < BUSY_TIMEOUT / 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_first_request_to_a_feature_guard_after_a_flushed_write_is_named_at_once(
    host: Flask,
) -> None:
    started = time.monotonic()
    response = host.test_client().get(
        "/flushed-then-feature", headers={"X-User": "alice", "Accept": "application/json"}
    )

    assert response.status_code == 500
    assert "db.session.commit()" in response.get_json()["message"]
    assert time.monotonic() - started < BUSY_TIMEOUT / 2


@pytest.mark.parametrize("path", ["/committed-then-guarded", "/guarded-then-flushed"])
def test_committing_first_or_guarding_outermost_is_charged(host: Flask, path: str) -> None:
    client = host.test_client()

    first, _ = post(client, path)
    second, _ = post(client, path)

    assert (first.status_code, second.status_code) == (200, 200)
    assert used(host) == 2


def test_reads_before_the_guard_are_no_write_to_wait_on(database_url: str, clock: Clock) -> None:
    """The host's session read (a user loader does): pysqlite began no transaction, the guard
    charges as usual."""
    app = build_host(database_url, clock)

    @app.post("/read-then-guarded")
    @requires_quota("analysis")
    def read_then_guarded() -> Any:
        return jsonify(success=True)

    response, _ = post(app.test_client(), "/read-then-guarded")

    assert response.status_code == 200
    assert used(app) == 1
