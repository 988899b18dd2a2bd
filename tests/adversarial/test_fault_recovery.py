"""Faults around a charge, in process: the cache killed or frozen, a signal receiver that raises
after the charge committed, the database stopped before, during and after a request.

Whatever fails, a request that was not answered with success is not charged, and nothing answers a
bare 500: the cache degrades to the database, and the database's absence is a 503 with
``Retry-After`` in the client's format. Refunds that the database could not take are retried until
it is back.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify
from sqlalchemy import func, select

from flask_profile_billing import ProfileBilling, requires_capacity, requires_quota, signals
from flask_profile_billing.state import get_state
from flask_profile_billing.store.models import usage_counters, usage_daily, usage_events
from tests.adversarial.harness import DedicatedPostgres, DedicatedRedis
from tests.adversarial.report import Figures
from tests.support.host_app import AppFactory, Clock, HostUser, as_user, create_host_app, db

FREE_ANALYSES = 20
BOUND_SECONDS = 60.0
"""A request of these scenarios that has not answered by then is hung: the scenario fails."""


def stored_usage(app: Flask, user: str) -> tuple[int, int, int]:
    """Counter, number of usage events and daily total of ``analysis``, read from the database."""
    with app.app_context(), get_state(app).runtime.engine.connect() as connection:
        counter = connection.scalar(
            select(func.coalesce(func.sum(usage_counters.c.used), 0)).where(
                usage_counters.c.account_id == "user:" + user, usage_counters.c.metric == "analysis"
            )
        )
        events = connection.scalar(
            select(func.count()).where(
                usage_events.c.account_id == "user:" + user, usage_events.c.metric == "analysis"
            )
        )
        daily = connection.scalar(
            select(func.coalesce(func.sum(usage_daily.c.total), 0)).where(
                usage_daily.c.account_id == "user:" + user, usage_daily.c.metric == "analysis"
            )
        )
    return int(counter or 0), int(events or 0), int(daily or 0)


def within_bound(action: Callable[[], Any]) -> Any:
    """Run ``action`` in a thread and fail the scenario if it is still running after the bound."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = action()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(BOUND_SECONDS)
    assert not thread.is_alive(), f"still waiting after {BOUND_SECONDS:.0f} s: a request hung"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def analyses(app: Flask, count: int, user: str = "alice") -> Counter[int]:
    client = app.test_client()
    return Counter(client.post("/analyze", headers=as_user(user)).status_code for _ in range(count))


# -- the cache -----------------------------------------------------------------------------------


def test_a_killed_cache_neither_fails_nor_drains_a_quota(
    make_app: AppFactory, own_redis: DedicatedRedis, figures: Figures
) -> None:
    app = make_app(BILLING_CACHE_TYPE="RedisCache", BILLING_CACHE_REDIS_URL=own_redis.url)
    own_redis.kill()

    statuses = within_bound(lambda: analyses(app, 30))
    profile = app.test_client().get("/api/profile/me", headers=as_user("alice"))

    figures.count, figures.server_errors = 31, sum(n for s, n in statuses.items() if s >= 500)
    assert statuses == Counter({200: FREE_ANALYSES, 429: 10})
    assert stored_usage(app, "alice") == (FREE_ANALYSES, FREE_ANALYSES, FREE_ANALYSES)
    assert profile.status_code == 200
    assert profile.get_json()["data"]["quota"]["used"] == FREE_ANALYSES


def test_a_frozen_cache_costs_a_timeout_not_a_hang_and_serves_nothing_stale_after(
    make_app: AppFactory, own_redis: DedicatedRedis, figures: Figures
) -> None:
    app = make_app(
        BILLING_CACHE_TYPE="RedisCache",
        BILLING_CACHE_REDIS_URL=own_redis.url,
        BILLING_CACHE_RETRY_SECONDS=0.2,
    )
    client = app.test_client()
    before = client.get("/api/profile/me", headers=as_user("alice")).get_json()
    assert before["data"]["quota"]["used"] == 0  # now cached in Redis

    own_redis.freeze()
    try:
        statuses = within_bound(lambda: analyses(app, 5))
    finally:
        own_redis.thaw()
    time.sleep(0.3)  # past the bypass: the next call reaches Redis and forgets what it missed
    after = client.get("/api/profile/me", headers=as_user("alice")).get_json()

    figures.count = 7
    assert statuses == Counter({200: 5})
    assert stored_usage(app, "alice")[0] == 5
    assert after["data"]["quota"]["used"] == 5


# -- after the charge committed --------------------------------------------------------------------


def test_a_signal_receiver_that_raises_after_the_charge_leaves_nothing_charged(
    app: Flask, billing: ProfileBilling, figures: Figures
) -> None:
    def broken_receiver(sender: Flask, **extra: Any) -> None:
        raise RuntimeError("the host's receiver failed")

    signals.quota_consumed.connect(broken_receiver, app)
    try:
        with pytest.raises(RuntimeError, match="receiver failed"):
            app.test_client().post("/analyze", headers=as_user("alice"))
        with pytest.raises(RuntimeError, match="receiver failed"):
            billing.consume("alice", "analysis")
    finally:
        signals.quota_consumed.disconnect(broken_receiver, app)

    figures.count = 2
    assert stored_usage(app, "alice") == (0, 0, 0)


# -- the database ----------------------------------------------------------------------------------


@pytest.fixture
def app_on_own_postgres(own_postgres: DedicatedPostgres, clock: Clock) -> Flask:
    url = own_postgres.new_database("faults")
    return create_host_app(url, {"BILLING_CLOCK": clock, "BILLING_UNAVAILABLE_RETRY_AFTER": 7})


def test_a_stopped_database_answers_503_with_retry_after_in_the_clients_format(
    app_on_own_postgres: Flask, own_postgres: DedicatedPostgres, figures: Figures
) -> None:
    app = app_on_own_postgres
    client = app.test_client()
    assert client.post("/analyze", headers=as_user("alice")).status_code == 200

    own_postgres.stop("fast")
    as_json = client.post("/analyze", headers=as_user("alice"))
    as_html = client.post("/analyze", headers={"X-User": "alice", "Accept": "text/html"})
    feature = client.get("/api/data", headers=as_user("alice"))
    api = client.get("/api/subscription/current", headers=as_user("alice"))
    own_postgres.start()
    recovered = [client.post("/analyze", headers=as_user("alice")).status_code for _ in range(3)]

    figures.count, figures.server_errors = 8, 4
    assert as_json.status_code == 503
    assert as_json.get_json()["error"] == "SERVICE_UNAVAILABLE"
    assert as_json.headers["Retry-After"] == "7"
    assert as_html.status_code == 503
    assert as_html.content_type.startswith("text/html")
    assert as_html.headers["Retry-After"] == "7"
    assert feature.status_code == 503
    assert api.status_code == 503
    assert api.get_json()["error"] == "SERVICE_UNAVAILABLE"
    assert api.headers["Retry-After"] == "7"
    # The first request after the restart may still meet a connection of the old server.
    assert recovered[-1] == 200
    assert stored_usage(app, "alice")[0] == 1 + recovered.count(200)


def test_a_refund_the_database_refused_is_applied_when_it_is_back(
    app_on_own_postgres: Flask, own_postgres: DedicatedPostgres, figures: Figures
) -> None:
    app = app_on_own_postgres

    @app.post("/analyze/database-dies")
    @requires_quota("analysis")
    def database_dies() -> Any:
        own_postgres.stop("fast")
        raise RuntimeError("the database went away mid-request")

    @app.post("/analyze/fine")
    @requires_quota("analysis")
    def fine() -> Any:
        return jsonify(success=True)

    client = app.test_client()
    assert client.post("/analyze/fine", headers=as_user("alice")).status_code == 200
    with pytest.raises(RuntimeError, match="went away"):
        client.post("/analyze/database-dies", headers=as_user("alice"))
    refunds = get_state(app).charge_returns
    assert refunds.pending == 1

    own_postgres.start()
    deadline = time.monotonic() + BOUND_SECONDS
    while refunds.pending and time.monotonic() < deadline:
        time.sleep(0.1)

    figures.count = 2
    assert refunds.pending == 0
    assert stored_usage(app, "alice") == (1, 1, 1)


def test_a_request_answered_before_the_database_went_away_keeps_its_answer(
    app_on_own_postgres: Flask, own_postgres: DedicatedPostgres, figures: Figures
) -> None:
    """The view succeeded and was charged, then the database stopped before the request ended:
    ending the host's session (a rollback on a dropped connection) must not turn the success
    into a 500. Its answer goes out, and its charge is the one the client was told of."""
    app = app_on_own_postgres

    @app.post("/analyze/then-stop")
    @requires_quota("analysis")
    def then_stop() -> Any:
        db.session.execute(select(HostUser.id)).all()  # the host's own read, in its session
        own_postgres.stop("fast")
        return jsonify(success=True)

    client = app.test_client()
    try:
        answered = client.post("/analyze/then-stop", headers=as_user("alice"))
    finally:
        own_postgres.start()
    after = [client.post("/analyze", headers=as_user("alice")).status_code for _ in range(3)]

    figures.count = 4
    assert answered.status_code == 200
    assert after[-1] == 200
    assert stored_usage(app, "alice")[0] == 1 + after.count(200)


def test_a_gauge_view_answered_before_the_database_went_away_keeps_its_answer(
    app_on_own_postgres: Flask, own_postgres: DedicatedPostgres, figures: Figures
) -> None:
    """The capacity guard holds the gauge's lock in a transaction until its view returns; when
    the database stops in between, the view's answer still goes out (its work is done)."""
    app = app_on_own_postgres

    @app.post("/vacancies/then-stop")
    @requires_capacity("active_vacancies")
    def vacancy_then_stop() -> Any:
        own_postgres.stop("fast")
        return jsonify(success=True), 201

    client = app.test_client()
    try:
        answered = client.post("/vacancies/then-stop", headers=as_user("alice"))
    finally:
        own_postgres.start()

    figures.count = 1
    assert answered.status_code == 201
    assert answered.get_json() == {"success": True}


def test_a_locked_sqlite_database_answers_503_and_charges_nothing(
    tmp_path: Path, clock: Clock, figures: Figures
) -> None:
    path = tmp_path / "locked.sqlite3"
    # A short busy timeout, as a host that prefers failing fast would configure.
    fast = create_host_app(
        f"sqlite:///{path}",
        {"BILLING_CLOCK": clock, "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"timeout": 0.2}}},
    )
    client = fast.test_client()
    assert client.post("/analyze", headers=as_user("alice")).status_code == 200

    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        locked = client.post("/analyze", headers=as_user("alice"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    after = client.post("/analyze", headers=as_user("alice"))

    figures.count, figures.server_errors = 3, 1
    assert locked.status_code == 503
    assert locked.headers["Retry-After"] == "5"
    assert after.status_code == 200
    assert stored_usage(fast, "alice") == (2, 2, 2)


# -- every face during an outage, the user's loading included ----------------------------------------

FaceAnswer = tuple[int, str, str | None]
"""Status, content type and Retry-After of an answer."""


def faces_during(app: Flask, session_client: Any) -> dict[str, FaceAnswer]:
    """Ask every face once: the guards (JSON and HTML), the page (as a browser, and with
    ``Accept: */*``), the JSON API; the users are loaded by the host's request_loader (the
    ``X-User`` header) and, for ``session_client``, by its user_loader from the session cookie."""
    client = app.test_client()
    html = {"X-User": "alice", "Accept": "text/html"}
    any_type = {"X-User": "alice", "Accept": "*/*"}
    requests = {
        "quota guard, JSON": lambda: client.post("/analyze", headers=as_user("alice")),
        "quota guard, HTML": lambda: client.post("/analyze", headers=html),
        "feature guard": lambda: client.get("/api/data", headers=as_user("alice")),
        "capacity guard": lambda: client.post("/vacancies", headers=as_user("alice")),
        "page, HTML": lambda: client.get("/profile/", headers=html),
        "page, */*": lambda: client.get("/profile/", headers=any_type),
        "page, session cookie": lambda: session_client.get(
            "/profile/", headers={"Accept": "text/html"}
        ),
        "API": lambda: client.get("/api/subscription/current", headers=as_user("alice")),
        "profile API": lambda: client.get("/api/profile/me", headers=as_user("alice")),
    }
    answers: dict[str, FaceAnswer] = {}
    for name, send in requests.items():
        try:
            response = send()
        except Exception as error:  # raised through the test client: what a server answers 500
            answers[name] = (500, type(error).__name__, None)
            continue
        answers[name] = (
            response.status_code,
            response.mimetype,
            response.headers.get("Retry-After"),
        )
    return answers


EXPECTED_DURING_OUTAGE: dict[str, FaceAnswer] = {
    "quota guard, JSON": (503, "application/json", "7"),
    "quota guard, HTML": (503, "text/html", "7"),
    "feature guard": (503, "application/json", "7"),
    "capacity guard": (503, "application/json", "7"),
    "page, HTML": (503, "text/html", "7"),
    "page, */*": (503, "application/json", "7"),
    "page, session cookie": (503, "text/html", "7"),
    "API": (503, "application/json", "7"),
    "profile API": (503, "application/json", "7"),
}


def until_served(client: Any) -> int:
    """Analyses sent after the database is back until one succeeds (the first may meet a pooled
    connection of the stopped server); how many succeeded (one)."""
    for _ in range(5):
        if client.post("/analyze", headers=as_user("alice")).status_code == 200:
            return 1
    raise AssertionError("the app did not recover once the database was back")


def test_every_face_answers_a_stopped_postgresql_with_503_in_the_clients_format(
    own_postgres: DedicatedPostgres, clock: Clock, figures: Figures
) -> None:
    url = own_postgres.new_database("faces")
    app = create_host_app(url, {"BILLING_CLOCK": clock, "BILLING_UNAVAILABLE_RETRY_AFTER": 7})
    session_client = app.test_client()
    session_client.post("/session-login/alice")
    assert session_client.get("/profile/", headers={"Accept": "text/html"}).status_code == 200

    own_postgres.stop("fast")
    try:
        answers = within_bound(lambda: faces_during(app, session_client))
        page = app.test_client().get(
            "/profile/", headers={"X-User": "alice", "Accept": "text/html"}
        )
    finally:
        own_postgres.start()
    succeeded = until_served(app.test_client())

    figures.count = len(answers) + 2
    figures.server_errors = sum(
        1 for status, _, _ in answers.values() if status >= 500 and status != 503
    )
    assert answers == EXPECTED_DURING_OUTAGE
    # The page of a 503 is drawn from nothing the outage took: no user, no profile.
    assert "The service is temporarily unavailable" in page.get_data(as_text=True)
    # Nothing answered with an error was charged; the one success after the outage was.
    assert stored_usage(app, "alice") == (succeeded, succeeded, succeeded)


def test_every_face_answers_a_locked_sqlite_database_with_503_in_the_clients_format(
    tmp_path: Path, clock: Clock, figures: Figures
) -> None:
    path = tmp_path / "faces.sqlite3"
    app = create_host_app(
        f"sqlite:///{path}",
        {
            "BILLING_CLOCK": clock,
            "BILLING_UNAVAILABLE_RETRY_AFTER": 7,
            "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"timeout": 0.2}},
        },
    )
    session_client = app.test_client()
    session_client.post("/session-login/alice")
    assert session_client.get("/profile/", headers={"Accept": "text/html"}).status_code == 200

    # Another process holds the database's exclusive lock past the busy timeout: neither a
    # write nor a read (the user's loading) gets through.
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        answers = within_bound(lambda: faces_during(app, session_client))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    succeeded = until_served(app.test_client())

    figures.count = len(answers) + 1
    figures.server_errors = sum(
        1 for status, _, _ in answers.values() if status >= 500 and status != 503
    )
    assert answers == EXPECTED_DURING_OUTAGE
    assert stored_usage(app, "alice") == (succeeded, succeeded, succeeded)
