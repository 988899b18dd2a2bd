"""The host app the adversarial scenarios serve with gunicorn, built as the README's integration
example builds one: Flask-SQLAlchemy, Flask-Login, the extension, ``@requires_quota("analysis")``.

gunicorn imports ``tests.adversarial.host:create_app()``, so everything comes from the environment:

- ``ADVERSARIAL_DATABASE_URL``: the SQLAlchemy URL (required).
- ``ADVERSARIAL_REDIS_URL``: the extension's cache in Redis; unset, a cache per process.
- ``ADVERSARIAL_SECRET_KEY``: signs session cookies, CSRF tokens and the API tokens below.
- ``ADVERSARIAL_IDEMPOTENCY_LOCK_SECONDS``: ``BILLING_IDEMPOTENCY_LOCK_SECONDS``, shortened by the
  scenarios that kill a worker and retry.
- ``ADVERSARIAL_WEBHOOK_SECRET``: when set, payments go through the extension's test provider and
  its webhooks are signed with this secret.

A user is whoever holds a valid token. Load clients send ``Authorization: Bearer <token>``
(Flask-Login's request_loader: no cookie, so no CSRF token), and ``POST /login`` with
``{"token": ...}`` logs a browser in with the session cookie instead, whose writes to the JSON API
then need the CSRF token it answers with. Like a real host's, both loaders then read the host's
users table through its Flask-SQLAlchemy session, on every request (a user's first request adds
their row): a database that is down fails the loading of the user too.

Every worker migrates the billing tables at start, as the example app does: workers and servers
started together on an empty database all run the migrations at the same moment.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Request, abort, jsonify, request
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import generate_csrf
from sqlalchemy import String, inspect, select, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_profile_billing import (
    ProfileBilling,
    TestPaymentProvider,
    answer_database_faults,
    requires_feature,
    requires_quota,
)

DATABASE_URL_ENV = "ADVERSARIAL_DATABASE_URL"
REDIS_URL_ENV = "ADVERSARIAL_REDIS_URL"
SECRET_KEY_ENV = "ADVERSARIAL_SECRET_KEY"
WEBHOOK_SECRET_ENV = "ADVERSARIAL_WEBHOOK_SECRET"
IDEMPOTENCY_LOCK_ENV = "ADVERSARIAL_IDEMPOTENCY_LOCK_SECONDS"
DEFAULT_SECRET_KEY = "adversarial-host-secret"
PROVIDER_NAME = "test"


class Model(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Model)
login_manager = LoginManager()
billing = ProfileBilling(db=db)


class User(UserMixin):  # type: ignore[misc]  # flask_login has no type hints
    """A user known by id alone; the profile API reads these attributes as the host's fields."""

    def __init__(self, user_id: str) -> None:
        self.id = user_id
        self.email = f"{user_id}@example.test"
        self.role = "user"


def token_for(secret_key: str, user_id: str) -> str:
    """The API token of ``user_id``: its id and a MAC of it, so clients cannot make up others'."""
    mac = hmac.new(secret_key.encode(), f"api-token:{user_id}".encode(), hashlib.sha256)
    return f"{user_id}.{mac.hexdigest()}"


def user_from_token(secret_key: str, token: str) -> User | None:
    user_id, _, _ = token.rpartition(".")
    if not user_id or not hmac.compare_digest(token, token_for(secret_key, user_id)):
        return None
    return User(user_id)


class HostUser(Model):
    """The host's own users table, which its loaders read."""

    __tablename__ = "host_users"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)


def user_row(user_id: str) -> User:
    """The host's user ``user_id``, read from its table (a query each request, as a loader that
    must see a deleted user makes); added on their first request."""
    try:
        found = db.session.execute(select(HostUser.id).where(HostUser.id == user_id))
        if found.scalar_one_or_none() is None:
            insert = postgresql_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
            db.session.execute(insert(HostUser).values(id=user_id).on_conflict_do_nothing())
            db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return User(user_id)


@login_manager.user_loader  # type: ignore[untyped-decorator]
def load_user(user_id: str) -> User:
    # Any id in a session cookie the app signed is a user: the cookie is the proof.
    return user_row(user_id)


@login_manager.request_loader  # type: ignore[untyped-decorator]
def load_user_from_token(incoming: Request) -> User | None:
    scheme, _, token = incoming.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    user = user_from_token(_secret_key(), token.strip())
    return None if user is None else user_row(user.id)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    database_url = os.environ.get(DATABASE_URL_ENV, "")
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=_secret_key(),
        SQLALCHEMY_DATABASE_URI=database_url,
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(database_url),
        SESSION_COOKIE_SAMESITE="Lax",
    )
    if redis_url := os.environ.get(REDIS_URL_ENV):
        app.config.update(BILLING_CACHE_TYPE="RedisCache", BILLING_CACHE_REDIS_URL=redis_url)
    if lock_seconds := os.environ.get(IDEMPOTENCY_LOCK_ENV):
        app.config.update(BILLING_IDEMPOTENCY_LOCK_SECONDS=int(lock_seconds))
    if webhook_secret := os.environ.get(WEBHOOK_SECRET_ENV):
        app.config.update(
            BILLING_PAYMENT_PROVIDER=TestPaymentProvider(PROVIDER_NAME),
            BILLING_WEBHOOK_SECRET=webhook_secret,
        )
    app.config.update(config or {})
    if not app.config["SQLALCHEMY_DATABASE_URI"]:
        raise RuntimeError(f"set {DATABASE_URL_ENV} to the SQLAlchemy URL of the database")

    db.init_app(app)
    login_manager.init_app(app)
    billing.init_app(app)
    # As docs/deployment.md recommends: the host's own database faults (its user loader under
    # @login_required included) answer 503 with Retry-After, like the extension's.
    answer_database_faults(app)

    @app.get("/health")
    def health() -> Any:
        return jsonify(success=True)

    @app.post("/login")
    def login() -> Any:
        body = request.get_json(silent=True)
        token = body.get("token") if isinstance(body, dict) else None
        user = user_from_token(_secret_key(), token) if isinstance(token, str) else None
        if user is None:
            abort(401)
        login_user(user)
        return jsonify(success=True, data={"csrf_token": generate_csrf()})

    @app.post("/analyze/<application_id>")
    @login_required  # type: ignore[untyped-decorator]
    @requires_quota("analysis")  # 429 LIMIT_EXCEEDED once the plan's analyses are used up
    def analyze(application_id: str) -> Any:
        return jsonify(success=True, data={"application_id": application_id})

    @app.post("/analyze-or-fail/<application_id>")
    @login_required  # type: ignore[untyped-decorator]
    @requires_quota("analysis")
    def analyze_or_fail(application_id: str) -> Any:
        # The view fails after the reservation, as the client asks: a crash or an error answer.
        failure = request.headers.get("X-Fail")
        if failure == "raise":
            raise RuntimeError("the analysis crashed")
        if failure == "refuse":
            abort(409)
        return jsonify(success=True, data={"application_id": application_id})

    @app.post("/slow-analyze/<application_id>")
    @login_required  # type: ignore[untyped-decorator]
    @requires_quota("analysis")
    def slow_analyze(application_id: str) -> Any:
        time.sleep(float(request.headers.get("X-Seconds", "2")))  # a worker may be killed meanwhile
        return jsonify(success=True, data={"application_id": application_id})

    @app.get("/api/data")
    @requires_feature("api_access")
    def api_data() -> Any:
        return jsonify(success=True, data=billing.allowances(current_user.get_id()))

    with app.app_context():
        billing.upgrade_database()
        create_users_table()
    return app


def create_users_table() -> None:
    """The host's users table, created once while every worker starts at the same moment."""
    with db.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Workers take turns: concurrent CREATE TABLE IF NOT EXISTS can still collide.
            connection.execute(text("SELECT pg_advisory_xact_lock(7316001)"))
        try:
            Model.metadata.create_all(connection)
        except OperationalError:  # SQLite: another worker created it in between
            if not inspect(connection).has_table(HostUser.__tablename__):
                raise


def _secret_key() -> str:
    return os.environ.get(SECRET_KEY_ENV, DEFAULT_SECRET_KEY)


def _engine_options(database_url: str) -> dict[str, Any]:
    if database_url.startswith("sqlite"):
        # Workers queue for SQLite's one write lock: a busy timeout well above any wait under load.
        return {"connect_args": {"timeout": 30}}
    return {"pool_size": 10, "max_overflow": 10, "pool_timeout": 30}
