"""The bench host app: the routes that ``bench/run.py`` measures, side by side.

A host app as the README shows one (Flask, Flask-SQLAlchemy, Flask-Login, the extension), whose
catalog has limits so large that no request is ever refused during a run. Users are whoever the
``X-User`` header (or the ``user`` query argument) names, through Flask-Login's request_loader.

Routes (all ``GET``, all answer ``{"success": true}``):

- ``/bare``: ``jsonify`` and nothing else, the ceiling of every other route.
- ``/limiter/memory`` and ``/limiter/redis``: Flask-Limiter with a huge limit, memory or Redis
  storage, keyed by the user. Each lives in a Flask app of its own (``create_wsgi`` routes to it by
  path prefix), so the limiters' ``before_request`` hooks do not run on the other routes.
- ``/sql/update``: what a developer writes by hand: one conditional upsert on a counters table of
  the bench's own (SQLAlchemy Core, pooled connection, one transaction).
- ``/sql/update-insert``: the same plus one ``INSERT`` into a log table, in the same transaction.
- ``/guard/quota``: ``@requires_quota("analysis")``.
- ``/guard/quota/team``: the same guard, charging the team the ``X-Account`` header names (the
  guard's own account choice): a team member's charge, under the pool and the member's cap.
- ``/guard/feature``: ``@requires_feature("bench_api")``, a feature the plan has.
- ``/guard/capacity``: ``@requires_capacity("seats")``; the capacity loader returns a constant.

Configuration by environment (so gunicorn can import ``bench.app:create_wsgi()``):
``BENCH_DATABASE_URL`` (SQLAlchemy URL, SQLite by default) and ``BENCH_REDIS_URL`` (no
``/limiter/redis`` route without it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Request, jsonify, request
from flask_login import LoginManager, UserMixin, current_user, login_required
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    text,
)

from flask_profile_billing import (
    ProfileBilling,
    requires_capacity,
    requires_feature,
    requires_quota,
)

ENV_DATABASE_URL = "BENCH_DATABASE_URL"
ENV_REDIS_URL = "BENCH_REDIS_URL"
DEFAULT_DATABASE_URL = "sqlite:////tmp/flask-profile-billing-bench.sqlite3"

HUGE = 10**9
"""Every limit of the bench plan: no request is refused during a run."""
HOT_USER = "hot"
ACCOUNT_HEADER = "X-Account"
SPREAD_USERS = 1000


def spread_user(number: int) -> str:
    """The id of spread user ``number`` (1..SPREAD_USERS): ``u1`` .. ``u1000``."""
    return f"u{number}"


def all_users() -> list[str]:
    return [HOT_USER, *(spread_user(n) for n in range(1, SPREAD_USERS + 1))]


FEATURE = "bench_api"
BENCH_PLANS: dict[str, Any] = {
    "metrics": {
        "analysis": {"kind": "periodic", "limit_key": "analyses_per_month"},
        "export": {"kind": "periodic", "limit_key": "exports_per_month"},
        "seats": {"kind": "gauge"},
    },
    "plans": [
        {
            "code": "bench",
            "name": "Bench",
            "default": True,
            # Given explicitly: the schema's load_default (int 0) is not a Decimal, and the
            # subscription API's money() needs one (see bench/README.md, "Findings").
            "price_monthly": 0,
            "price_yearly": 0,
            "limits": {"analysis": HUGE, "export": HUGE, "seats": HUGE},
            "features": {FEATURE: True},
        }
    ],
}

# -- the bench's own tables, for the hand-written routes ----------------------------------------

db = SQLAlchemy()
billing = ProfileBilling(db=db)

bench_counters = Table(
    "bench_counters",
    db.metadata,
    Column("user_id", String(255), nullable=False),
    Column("metric", String(64), nullable=False),
    Column("period", String(7), nullable=False),  # "2025-11": a calendar month, as a key
    Column("used", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "metric", "period"),
)
bench_log = Table(
    "bench_log",
    db.metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("user_id", String(255), nullable=False),
    Column("metric", String(64), nullable=False),
    Column("amount", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_bench_log_user_id_created_at", "user_id", "created_at"),
)

# The hand-written statements: what the guard does, written directly (SQLite 3.35+ and PostgreSQL).
CONSUME_SQL = text(
    "INSERT INTO bench_counters (user_id, metric, period, used) "
    "VALUES (:user_id, :metric, :period, :amount) "
    "ON CONFLICT (user_id, metric, period) DO UPDATE SET used = bench_counters.used + :amount "
    "WHERE bench_counters.used + :amount <= :limit "
    "RETURNING used"
)
LOG_SQL = text(
    "INSERT INTO bench_log (user_id, metric, amount, created_at) "
    "VALUES (:user_id, :metric, :amount, :created_at)"
)


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id
        self.email = f"{user_id}@bench.invalid"


def _consume_params(user_id: str, now: datetime) -> dict[str, Any]:
    """What the hand-written routes bind to ``CONSUME_SQL``: one analysis in this month."""
    return {
        "user_id": user_id,
        "metric": "analysis",
        "period": now.strftime("%Y-%m"),
        "amount": 1,
        "limit": HUGE,
    }


def _user_from_request(req: Request) -> str | None:
    return req.headers.get("X-User") or req.args.get("user") or None


def _account_of_request() -> str | None:
    """The account ``/guard/quota/team`` charges: a team named by the request (``X-Account``), as
    a host that lets its users act for a team would choose it; else the personal account."""
    return request.headers.get(ACCOUNT_HEADER) or None


def _engine_options(database_url: str) -> dict[str, Any]:
    if database_url.startswith("sqlite"):
        # Two gunicorn processes share the file: wait for the write lock rather than fail.
        return {"connect_args": {"timeout": 30}}
    return {}


def create_app(database_url: str | None = None, config: dict[str, Any] | None = None) -> Flask:
    """The host app of the bare, hand-written SQL and guarded routes."""
    url = database_url or os.environ.get(ENV_DATABASE_URL) or DEFAULT_DATABASE_URL
    app = Flask("bench_app")
    app.config.update(
        SECRET_KEY="bench",
        SQLALCHEMY_DATABASE_URI=url,
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(url),
        BILLING_PLANS=BENCH_PLANS,
    )
    app.config.update(config or {})
    db.init_app(app)
    login_manager = LoginManager(app)

    @login_manager.request_loader
    def load_from_request(req: Request) -> User | None:
        user_id = _user_from_request(req)
        return User(user_id) if user_id else None

    @login_manager.user_loader
    def load_user(user_id: str) -> User | None:
        return User(user_id)

    billing.init_app(app)

    @app.get("/bare")
    def bare() -> Any:
        return jsonify(success=True)

    @app.get("/sql/update")
    @login_required
    def sql_update() -> Any:
        params = _consume_params(current_user.get_id(), datetime.now(UTC))
        with db.engine.begin() as connection:
            used = connection.execute(CONSUME_SQL, params).scalar_one_or_none()
        if used is None:
            return jsonify(success=False, error="LIMIT_EXCEEDED"), 429
        return jsonify(success=True)

    @app.get("/sql/update-insert")
    @login_required
    def sql_update_insert() -> Any:
        now = datetime.now(UTC)
        user_id = current_user.get_id()
        params = _consume_params(user_id, now)
        with db.engine.begin() as connection:
            used = connection.execute(CONSUME_SQL, params).scalar_one_or_none()
            if used is None:
                connection.rollback()
                return jsonify(success=False, error="LIMIT_EXCEEDED"), 429
            connection.execute(
                LOG_SQL,
                {"user_id": user_id, "metric": "analysis", "amount": 1, "created_at": now},
            )
        return jsonify(success=True)

    @app.get("/guard/quota")
    @requires_quota("analysis")
    def guard_quota() -> Any:
        return jsonify(success=True)

    @app.get("/guard/quota/team")
    @requires_quota("analysis", account=_account_of_request)
    def guard_quota_team() -> Any:
        return jsonify(success=True)

    @app.get("/guard/feature")
    @requires_feature(FEATURE)
    def guard_feature() -> Any:
        return jsonify(success=True)

    @app.get("/guard/capacity")
    @requires_capacity("seats")
    def guard_capacity() -> Any:
        return jsonify(success=True)

    return app


@billing.capacity_loader("seats")
def count_seats(user_id: str) -> int:
    """A constant: the measurement is of the guard (and its lock), not of a host's count."""
    return 0


def create_limiter_app(kind: str, storage_uri: str) -> Flask:
    """A Flask app with one route, ``/limiter/<kind>``, limited by Flask-Limiter (huge limit)."""
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    def key() -> str:
        return _user_from_request(request) or get_remote_address()

    app = Flask(f"bench_limiter_{kind}")
    limiter = Limiter(key, app=app, storage_uri=storage_uri, key_prefix=f"bench-{kind}")

    @app.get(f"/limiter/{kind}")
    @limiter.limit(f"{HUGE}/hour")
    def limited() -> Any:
        return jsonify(success=True)

    return app


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def create_wsgi(database_url: str | None = None, redis_url: str | None = None) -> WSGIApp:
    """What gunicorn serves: the host app, and the Flask-Limiter apps under ``/limiter/``."""
    main = create_app(database_url)
    mounts: dict[str, Flask] = {"/limiter/memory": create_limiter_app("memory", "memory://")}
    redis_url = redis_url or os.environ.get(ENV_REDIS_URL)
    if redis_url:
        mounts["/limiter/redis"] = create_limiter_app("redis", redis_url)

    def dispatch(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/limiter/"):
            target = mounts.get(path)
            if target is not None:
                return target(environ, start_response)
        return main(environ, start_response)

    return dispatch


def setup_database(app: Flask, users: Iterable[str] | None = None) -> None:
    """Create every table, seed the plans, and give each user a subscription and counters.

    Done once, before gunicorn starts, so that the measured requests find everything in place
    (no first-request inserts during a run) and the workers never race on ``CREATE TABLE``.
    """
    now = datetime.now(UTC)
    period = now.strftime("%Y-%m")
    users = list(users if users is not None else all_users())
    with app.app_context():
        db.create_all()
        billing.create_all()
        billing.seed_plans()
        for user_id in users:
            billing.subscription(user_id)
        with db.engine.begin() as connection:
            existing = {
                row[0]
                for row in connection.execute(
                    text("SELECT user_id FROM bench_counters WHERE metric = 'analysis'")
                )
            }
            missing = [
                {"user_id": u, "metric": "analysis", "period": period, "used": 0}
                for u in users
                if u not in existing
            ]
            if missing:
                connection.execute(bench_counters.insert(), missing)
        # One charge per user creates the period's counter row of the extension.
        for user_id in users:
            billing.consume(user_id, "analysis")
