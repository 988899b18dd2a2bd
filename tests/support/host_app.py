"""A minimal host app for the tests: Flask-SQLAlchemy, Flask-Login and the extension.

Users are whoever the ``X-User`` header names (Flask-Login's request_loader; ``as_user`` builds the
headers), so concurrent tests need no login round trip. Like a real host's, both loaders read the
host's users table through its Flask-SQLAlchemy session on every request (an id seen for the
first time signs up: a row is added), so a database that is down fails the user's loading too; a
``ghost-*`` id has no row, and the user_loader knows no such user. Importable by worker processes
of the multi-process tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, Request, abort, g, jsonify
from flask_login import LoginManager, UserMixin, login_user
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import generate_csrf
from sqlalchemy import String, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_profile_billing import (
    ProfileBilling,
    requires_capacity,
    requires_feature,
    requires_quota,
)

AppFactory = Callable[..., Flask]
"""The ``make_app`` fixture: builds a host app on the test's database; keywords override config."""


def as_user(user_id: str, **headers: str) -> dict[str, str]:
    """Request headers that log ``user_id`` in through the host app's request_loader."""
    return {"X-User": user_id, "Accept": "application/json", **headers}


class Model(DeclarativeBase):
    pass


@dataclass
class Clock:
    """A clock the tests move by hand: periods and expiry without waiting or a scheduler."""

    now: datetime = field(default_factory=lambda: datetime(2025, 10, 13, 10, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now

    def set(self, moment: datetime) -> datetime:
        self.now = moment
        return moment


HOST_USERS_TABLE = "host_users"
# Where an app factory keeps the extension object it made the app with.
BILLING_KEY = "test_billing"
"""The host's users table, which its loaders read on every request."""

# One SQLAlchemy object serves every app the tests build, as in a host's app factory.
db = SQLAlchemy(model_class=Model)


class Vacancy(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "host_vacancies"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)


class HostUser(db.Model):  # type: ignore[name-defined,misc]
    """The host's own users table, which its loaders read."""

    __tablename__ = HOST_USERS_TABLE
    id: Mapped[str] = mapped_column(String(64), primary_key=True)


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def known_user(user_id: str) -> bool:
    """Whether the host's users table has ``user_id``: a query each time, never the session's
    identity map, as a loader that must see a deleted user does."""
    try:
        query = select(HostUser.id).where(HostUser.id == user_id)
        found = db.session.execute(query).scalar_one_or_none() is not None
        # The read ends here, so the request does not hold a pooled connection through its view:
        # the concurrency tests send far more requests at once than the pool has connections.
        db.session.commit()
    except Exception:
        # The session is left usable for the next request (Flask-SQLAlchemy would remove it at
        # the end of the app context, which the tests' fixtures keep pushed).
        db.session.rollback()
        raise
    return found


def sign_up(user_id: str) -> None:
    """Add ``user_id`` to the host's users, once even when concurrent first requests race."""
    try:
        table = HostUser.__table__
        if db.engine.dialect.name == "postgresql":
            statement: Any = postgresql_insert(table).on_conflict_do_nothing()
        else:
            statement = sqlite_insert(table).on_conflict_do_nothing()
        db.session.execute(statement.values(id=user_id))
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise


def load_user(user_id: str) -> User | None:
    """The host's user_loader: the user of the host's table; every id but a "ghost-*" one is a
    user, from its first request on (it signs up then)."""
    if known_user(user_id):
        return User(user_id)
    if user_id.startswith("ghost"):
        return None
    sign_up(user_id)
    return User(user_id)


def create_host_app(database_url: str, config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask("host_app")
    app.config.update(
        TESTING=True,
        SECRET_KEY="test",
        SQLALCHEMY_DATABASE_URI=database_url,
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(database_url),
    )
    app.config.update(config or {})

    db.init_app(app)
    login_manager = LoginManager(app)

    @app.before_request
    def forget_previous_user() -> None:
        # The test fixtures keep an app context pushed, which Flask reuses for requests, so
        # Flask-Login's per-context user cache (g._login_user) would leak from one request to the next.
        g.pop("_login_user", None)

    @login_manager.request_loader
    def load_from_header(request: Request) -> User | None:
        user_id = request.headers.get("X-User")
        if not user_id:
            return None
        # The header is trusted (the tests' stand-in for a verified token): a "ghost-*" user
        # is logged in even though the host has no row for them.
        return load_user(user_id) or User(user_id)

    login_manager.user_loader(load_user)

    @app.post("/session-login/<user_id>")
    def session_login(user_id: str) -> Any:
        # A browser-style login: the user id lands in the session cookie (CSRF applies).
        if not user_id.startswith("ghost"):
            sign_up(user_id)
        login_user(User(user_id))
        return jsonify(success=True, csrf_token=generate_csrf())

    billing = ProfileBilling(app, db)

    @billing.capacity_loader("active_vacancies")
    def count_vacancies(user_id: str) -> int:
        query = select(func.count()).select_from(Vacancy).where(Vacancy.user_id == user_id)
        return int(db.session.execute(query).scalar_one())

    @app.post("/analyze")
    @requires_quota("analysis")
    def analyze() -> Any:
        return jsonify(success=True)

    @app.post("/analyze/<application_id>")
    @requires_quota("analysis")
    def analyze_application(application_id: str) -> Any:
        return jsonify(success=True, application_id=application_id)

    @app.post("/export")
    @requires_quota("export", amount=2)
    def export_twice() -> Any:
        return jsonify(success=True)

    @app.post("/analyze/crash")
    @requires_quota("analysis")
    def crash() -> Any:
        raise RuntimeError("the analysis failed")

    @app.post("/analyze/refused")
    @requires_quota("analysis")
    def refused() -> Any:
        abort(422)

    @app.post("/analyze/half-done")
    @requires_quota("analysis")
    def half_done() -> Any:
        db.session.add(Vacancy(user_id=_current_user_id()))
        db.session.flush()  # written but never committed: the view then fails
        abort(409)

    @app.route("/analyze/preflight", methods=["OPTIONS", "POST"])
    @requires_quota("analysis")
    def preflight() -> Any:
        return jsonify(success=True)

    @app.get("/api/data")
    @requires_feature("api_access")
    def api_data() -> Any:
        return jsonify(success=True, data=[1, 2, 3])

    @app.post("/vacancies")
    @requires_capacity("active_vacancies")
    def add_vacancy() -> Any:
        vacancy = Vacancy(user_id=_current_user_id())
        db.session.add(vacancy)
        db.session.commit()
        return jsonify(success=True, id=vacancy.id), 201

    with app.app_context():
        db.create_all()
        billing.create_all()
    app.extensions[BILLING_KEY] = billing
    return app


def billing_of(app: Flask) -> ProfileBilling:
    """The extension object a test app was made with (an app factory keeps it under
    ``BILLING_KEY``); for apps made by the tests themselves. The ``billing`` fixtures give the
    default apps'."""
    billing: ProfileBilling = app.extensions[BILLING_KEY]
    return billing


def _current_user_id() -> str:
    from flask_login import current_user

    return str(current_user.get_id())


def _engine_options(database_url: str) -> dict[str, Any]:
    # Room for the concurrency tests: many requests in flight, each briefly holding a connection.
    options: dict[str, Any] = {"pool_size": 20, "max_overflow": 40, "pool_timeout": 60}
    if database_url.startswith("sqlite"):
        options["connect_args"] = {"timeout": 60}
    return options
