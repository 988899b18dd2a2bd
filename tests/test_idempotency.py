"""Idempotency-Key on guarded routes, as payment APIs offer it: one key, one run, one charge.

The first charged response of a key is stored; a repeat gets it back without the view running,
marked ``Idempotent-Replayed: true``. A repeat while the first runs gets 409, a key reused for
another request 422. Keys belong to one user and one endpoint, and expire.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify, request
from flask.testing import FlaskClient

from flask_profile_billing import ProfileBilling, requires_quota
from flask_profile_billing.state import get_state
from flask_profile_billing.store import idempotency as keys
from tests.support.host_app import AppFactory, Clock, as_user, billing_of, create_host_app

FREE_ANALYSES = 20


class Runs:
    """Counts how often each counting view really ran."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.lock = threading.Lock()

    def ran(self, name: str) -> int:
        with self.lock:
            self.count[name] += 1
            return self.count[name]


@pytest.fixture
def runs(app: Flask) -> Runs:
    """Counting guarded views added to the test host app."""
    runs = Runs()

    @app.post("/counted/<resource>")
    @requires_quota("analysis")
    def counted(resource: str) -> Any:
        run = runs.ran("counted")
        return jsonify(success=True, resource=resource, run=run, body=request.get_json(silent=True))

    @app.post("/counted-export")
    @requires_quota("export")
    def counted_export() -> Any:
        return jsonify(success=True, run=runs.ran("export"))

    @app.post("/slow")
    @requires_quota("analysis")
    def slow() -> Any:
        run = runs.ran("slow")
        time.sleep(0.3)  # long enough for every concurrent repeat to arrive while it runs
        return jsonify(success=True, run=run)

    @app.post("/big")
    @requires_quota("analysis")
    def big() -> Any:
        runs.ran("big")
        return jsonify(success=True, padding="x" * 1000)

    @app.post("/with-cookie")
    @requires_quota("analysis")
    def with_cookie() -> Any:
        response = jsonify(success=True, run=runs.ran("cookie"))
        response.set_cookie("tracker", "first")
        return response

    return runs


def post(
    client: FlaskClient, path: str, key: str | None, user: str = "alice", **kwargs: Any
) -> Any:
    headers = as_user(user, **({"Idempotency-Key": key} if key else {}))
    return client.post(path, headers=headers, **kwargs)


def test_a_hundred_repeats_of_one_key_run_the_view_once_and_charge_once(
    client: FlaskClient, billing: ProfileBilling, runs: Runs
) -> None:
    responses = [post(client, "/counted/report-1", "job-1") for _ in range(100)]

    assert runs.count["counted"] == 1
    assert billing.allowance("alice", "analysis").used == 1
    assert {r.status_code for r in responses} == {200}
    assert {r.get_data() for r in responses} == {responses[0].get_data()}
    assert "Idempotent-Replayed" not in responses[0].headers
    assert all(r.headers["Idempotent-Replayed"] == "true" for r in responses[1:])
    # The stored answer carries the quota headers of the first response.
    assert responses[-1].headers["X-Quota-Remaining"] == str(FREE_ANALYSES - 1)
    assert responses[-1].content_type == "application/json"


def test_one_key_cannot_cover_another_resource_or_body(
    client: FlaskClient, billing: ProfileBilling, runs: Runs
) -> None:
    assert post(client, "/counted/a", "k", json={"n": 1}).status_code == 200

    other_resource = post(client, "/counted/b", "k", json={"n": 1})
    other_body = post(client, "/counted/a", "k", json={"n": 2})
    other_query = post(client, "/counted/a?x=1", "k", json={"n": 1})

    for response in (other_resource, other_body, other_query):
        assert response.status_code == 422
        assert response.get_json()["error"] == "IDEMPOTENCY_KEY_REUSED"
    assert runs.count["counted"] == 1
    assert billing.allowance("alice", "analysis").used == 1


def test_the_same_json_spelled_differently_is_the_same_request(
    client: FlaskClient, billing: ProfileBilling, runs: Runs
) -> None:
    """A client that serialises its body anew for the retry (other spacing, other key order)
    sends the same request: it gets the stored answer, not 422."""
    first = post(
        client,
        "/counted/a",
        "spelled",
        data='{"n": 1, "tags": ["x", "y"]}',
        content_type="application/json",
    )
    respelled = post(
        client,
        "/counted/a",
        "spelled",
        data='{"tags":["x","y"],\n  "n":1}',
        content_type="application/json; charset=utf-8",
    )
    other_value = post(
        client,
        "/counted/a",
        "spelled",
        data='{"tags": ["y", "x"], "n": 1}',
        content_type="application/json",
    )

    assert first.status_code == 200
    assert respelled.status_code == 200
    assert respelled.headers["Idempotent-Replayed"] == "true"
    assert other_value.status_code == 422
    assert other_value.get_json()["error"] == "IDEMPOTENCY_KEY_REUSED"
    assert runs.count["counted"] == 1
    assert billing.allowance("alice", "analysis").used == 1


def test_keys_are_scoped_to_the_user_and_the_endpoint(
    client: FlaskClient, billing: ProfileBilling, runs: Runs
) -> None:
    assert post(client, "/counted/a", "shared").status_code == 200
    assert post(client, "/counted/a", "shared", user="bob").status_code == 200
    assert post(client, "/counted-export", "shared").status_code == 200

    assert runs.count == Counter({"counted": 2, "export": 1})
    assert billing.allowance("alice", "analysis").used == 1
    assert billing.allowance("alice", "export").used == 1
    assert billing.allowance("bob", "analysis").used == 1


def test_a_key_does_not_make_exports_free(
    client: FlaskClient, billing: ProfileBilling, runs: Runs
) -> None:
    free_exports = billing.allowance("alice", "export").limit
    assert free_exports is not None
    statuses = [
        post(client, "/counted-export", "same").status_code for _ in range(free_exports * 4)
    ]

    assert runs.count["export"] == 1
    assert set(statuses) == {200}
    assert billing.allowance("alice", "export").used == 1


def test_concurrent_first_uses_of_one_key_run_once(
    app: Flask, billing: ProfileBilling, runs: Runs
) -> None:
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(50)

    def send() -> None:
        client = app.test_client()
        barrier.wait()
        response = post(client, "/slow", "one-new-key")
        with lock:
            statuses[response.status_code] += 1

    threads = [threading.Thread(target=send) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert runs.count["slow"] == 1
    assert billing.allowance("alice", "analysis").used == 1
    assert statuses[200] >= 1
    assert set(statuses) <= {200, 409}
    assert sum(statuses.values()) == 50


def test_a_repeat_while_the_first_runs_gets_409_with_retry_after(
    app: Flask, billing: ProfileBilling, runs: Runs
) -> None:
    first: dict[str, Any] = {}

    def send_first() -> None:
        first["response"] = post(app.test_client(), "/slow", "busy")

    thread = threading.Thread(target=send_first)
    thread.start()
    deadline = time.monotonic() + 10
    while runs.count["slow"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)

    repeat = post(app.test_client(), "/slow", "busy")
    thread.join()

    assert repeat.status_code == 409
    assert repeat.get_json()["error"] == "IDEMPOTENCY_KEY_IN_USE"
    # The time the key's lock still holds (the clock stands still here): a repeat sent then
    # gets the stored answer, or takes over a holder that died.
    assert repeat.headers["Retry-After"] == str(
        get_state(app).runtime.settings.idempotency_lock_seconds
    )
    assert first["response"].status_code == 200
    assert runs.count["slow"] == 1


def test_the_retry_of_the_request_that_used_the_last_unit_is_replayed_not_refused(
    client: FlaskClient, billing: ProfileBilling, runs: Runs
) -> None:
    for index in range(FREE_ANALYSES - 1):
        assert post(client, f"/counted/r{index}", None).status_code == 200

    last = post(client, "/counted/last", "last-unit")
    retry = post(client, "/counted/last", "last-unit")

    assert last.status_code == 200
    assert retry.status_code == 200
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert billing.allowance("alice", "analysis").used == FREE_ANALYSES


def test_consume_with_a_key_at_the_last_unit_replays_on_every_database(
    billing: ProfileBilling,
) -> None:
    for _ in range(FREE_ANALYSES - 1):
        billing.consume("carol", "analysis")
    first = billing.consume("carol", "analysis", idempotency_key="job-last")

    again = billing.consume("carol", "analysis", idempotency_key="job-last")

    assert not first.replayed
    assert again.replayed
    assert billing.allowance("carol", "analysis").used == FREE_ANALYSES


def test_a_refused_request_leaves_its_key_free_for_a_later_retry(
    client: FlaskClient, billing: ProfileBilling, clock: Clock, runs: Runs
) -> None:
    for index in range(FREE_ANALYSES):
        assert post(client, f"/counted/r{index}", None).status_code == 200

    refused = post(client, "/counted/next", "after-reset")
    clock.set(clock.now.replace(month=11, day=1))
    retried = post(client, "/counted/next", "after-reset")

    assert refused.status_code == 429
    assert retried.status_code == 200
    assert "Idempotent-Replayed" not in retried.headers


def test_stored_responses_expire(
    client: FlaskClient, billing: ProfileBilling, clock: Clock, runs: Runs
) -> None:
    assert post(client, "/counted/a", "daily-job").status_code == 200
    clock.advance(hours=23)
    assert post(client, "/counted/a", "daily-job").headers.get("Idempotent-Replayed") == "true"

    clock.advance(hours=1)
    fresh = post(client, "/counted/a", "daily-job")

    assert "Idempotent-Replayed" not in fresh.headers
    assert runs.count["counted"] == 2
    assert billing.allowance("alice", "analysis").used == 2


def test_cookies_of_the_first_response_are_not_replayed(client: FlaskClient, runs: Runs) -> None:
    first = post(client, "/with-cookie", "cookie-key")
    repeat = post(client, "/with-cookie", "cookie-key")

    assert "tracker=first" in first.headers["Set-Cookie"]
    assert repeat.headers["Idempotent-Replayed"] == "true"
    assert "tracker" not in repeat.headers.get("Set-Cookie", "")


def test_a_response_over_the_size_cap_is_not_stored_and_never_runs_again(
    make_app: AppFactory,
) -> None:
    app = make_app(BILLING_IDEMPOTENCY_MAX_RESPONSE_BYTES=100)
    with app.app_context():
        runs = Runs()

        @app.post("/big")
        @requires_quota("analysis")
        def big() -> Any:
            runs.ran("big")
            return jsonify(success=True, padding="x" * 1000)

        client = app.test_client()
        first = post(client, "/big", "large")
        repeat = post(client, "/big", "large")
        used = billing_of(app).allowance("alice", "analysis").used

    assert first.status_code == 200
    assert repeat.status_code == 409
    assert repeat.get_json()["error"] == "IDEMPOTENT_RESPONSE_NOT_STORED"
    assert runs.count["big"] == 1
    assert used == 1


def test_a_key_whose_holder_stopped_is_taken_over_and_its_charge_given_back(
    app: Flask, billing: ProfileBilling, clock: Clock
) -> None:
    """A first request that stops in its view (a worker killed mid-request looks the same from
    outside) holds its key until the lock expires; then a repeat takes the key over, gives back
    the stalled request's charge and runs."""
    stalled, resume = threading.Event(), threading.Event()
    runs = Runs()

    @app.post("/stalls-once")
    @requires_quota("analysis")
    def stalls_once() -> Any:
        if runs.ran("stalls") == 1:
            stalled.set()
            resume.wait(30)
        return jsonify(success=True)

    first: dict[str, Any] = {}
    holder = threading.Thread(
        target=lambda: first.update(response=post(app.test_client(), "/stalls-once", "orphan"))
    )
    holder.start()
    assert stalled.wait(10)
    try:
        lock_seconds = get_state(app).runtime.settings.idempotency_lock_seconds
        clock.advance(seconds=100)
        while_locked = post(app.test_client(), "/stalls-once", "orphan")
        clock.advance(seconds=lock_seconds - 100)
        after_lock = post(app.test_client(), "/stalls-once", "orphan")
    finally:
        resume.set()
        holder.join(30)

    assert while_locked.status_code == 409
    # What the lock still holds, not "1": a client that retries once, then, takes the key over.
    assert while_locked.headers["Retry-After"] == str(lock_seconds - 100)
    assert after_lock.status_code == 200
    assert "Idempotent-Replayed" not in after_lock.headers
    assert runs.count["stalls"] == 2
    # The stalled request's charge was given back when its key was taken over: one remains.
    assert billing.allowance("alice", "analysis").used == 1
    replay = post(app.test_client(), "/stalls-once", "orphan")
    assert replay.headers["Idempotent-Replayed"] == "true"


def test_maintenance_deletes_expired_keys_only(
    app: Flask, client: FlaskClient, clock: Clock, runs: Runs
) -> None:
    assert post(client, "/counted/a", "old").status_code == 200
    clock.advance(hours=25)
    assert post(client, "/counted/a", "new").status_code == 200

    with app.app_context():
        output = app.test_cli_runner().invoke(args=["billing", "maintenance"]).output
    repeat_new = post(client, "/counted/a", "new")

    assert "Expired idempotency keys deleted: 1." in output.splitlines()
    assert repeat_new.headers["Idempotent-Replayed"] == "true"


def key_record(app: Flask, scope: str, key: str, user: str = "alice") -> keys.KeyRecord | None:
    with app.app_context(), get_state(app).runtime.engine.connect() as connection:
        return keys.find(connection, user_id=user, scope=scope, key=key)


def test_a_view_slower_than_the_lock_keeps_its_key_and_runs_once(
    make_app: AppFactory, clock: Clock
) -> None:
    """The lock is renewed while the view runs: a repeat that arrives after the lock's first
    period is refused (409), not let in to run the view a second time for one charge."""
    app = make_app(BILLING_IDEMPOTENCY_LOCK_SECONDS=3)
    runs = Runs()
    in_view, resume = threading.Event(), threading.Event()

    @app.post("/long")
    @requires_quota("analysis")
    def long() -> Any:
        if runs.ran("long") == 1:
            in_view.set()
            resume.wait(30)
        return jsonify(success=True)

    first: dict[str, Any] = {}
    holder = threading.Thread(
        target=lambda: first.update(response=post(app.test_client(), "/long", "slow-job"))
    )
    holder.start()
    try:
        assert in_view.wait(10)
        clock.advance(seconds=4)  # the view has run longer than the lock's 3 s
        # The holder renews once a second (a third of the lock): wait for it, by event-free
        # polling of the row, bounded.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            record = key_record(app, "long", "slow-job")
            assert record is not None
            if record.locked_until is not None and record.locked_until > clock.now:
                break
            time.sleep(0.05)
        repeat = post(app.test_client(), "/long", "slow-job")
    finally:
        resume.set()
        holder.join(30)
    with app.app_context():
        used = billing_of(app).allowance("alice", "analysis").used

    assert repeat.status_code == 409
    assert repeat.get_json()["error"] == "IDEMPOTENCY_KEY_IN_USE"
    assert 1 <= int(repeat.headers["Retry-After"]) <= 3
    assert first["response"].status_code == 200
    assert runs.count["long"] == 1
    assert used == 1


def test_a_response_the_database_could_not_store_is_answered_and_stored_later(
    tmp_path: Path, clock: Clock
) -> None:
    """The database becomes unavailable between the charge and the storing of the response (a
    lock held past the busy timeout, here): the view's answer goes out as it was, charged once,
    and the response is stored once the database is back, so a repeat gets it replayed."""
    path = tmp_path / "bookkeeping.sqlite3"
    app = create_host_app(
        f"sqlite:///{path}",
        {"BILLING_CLOCK": clock, "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"timeout": 0.2}}},
    )
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    @app.post("/then-locked")
    @requires_quota("analysis")
    def then_locked() -> Any:
        holder.execute("BEGIN EXCLUSIVE")  # taken after the charge, kept past the answer
        return jsonify(success=True)

    client = app.test_client()
    try:
        answered = post(client, "/then-locked", "late-store")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    deadline = time.monotonic() + 30
    record = key_record(app, "then_locked", "late-store")
    while record is not None and record.state != keys.COMPLETED and time.monotonic() < deadline:
        time.sleep(0.05)  # the background retry lands within a second of the lock's end
        record = key_record(app, "then_locked", "late-store")
    repeat = post(client, "/then-locked", "late-store")
    with app.app_context():
        used = billing_of(app).allowance("alice", "analysis").used

    assert answered.status_code == 200
    assert answered.get_json() == {"success": True}
    assert record is not None
    assert record.state == keys.COMPLETED
    assert repeat.status_code == 200
    assert repeat.headers["Idempotent-Replayed"] == "true"
    assert used == 1
