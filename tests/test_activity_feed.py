"""The activity feed, ``GET /api/profile/activity``: charges, refusals, plan changes and the host's
own events newest first in one shape, the limit and the window, each user's own events only, the
30-second cache and what makes it forget, the log line and Prometheus counters of every fetch,
receivers that never break the flow that sent the signal, and ``record`` for the host's events.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import Engine, func, insert, select

from flask_profile_billing import ProfileBilling
from flask_profile_billing.api.activity_views import activity_service
from flask_profile_billing.services.activity import ActivityService
from flask_profile_billing.store.models import activity
from tests.support.host_app import AppFactory, Clock, as_user, billing_of

START = datetime(2025, 10, 13, 10, 0, tzinfo=UTC)
EVENT_KEYS = {"id", "type", "title", "occurred_at", "metadata"}


@pytest.fixture
def feed_service(app: Flask) -> ActivityService:
    # Until init_app connects the receivers itself, the first use of the service does; connecting
    # again later is harmless.
    return activity_service(app)


def fetch(client: FlaskClient, user: str = "alice", **query: Any) -> Any:
    response = client.get("/api/profile/activity", query_string=query, headers=as_user(user))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["success"] is True
    assert set(body["data"]) == {"events"}
    return body["data"]["events"]


def titles(events: list[dict[str, Any]]) -> list[str]:
    return [item["title"] for item in events]


# -- the feed --------------------------------------------------------------------------------------


def test_charges_host_events_plan_changes_and_refusals_come_newest_first_in_one_shape(
    client: FlaskClient, billing: ProfileBilling, feed_service: ActivityService, clock: Clock
) -> None:
    assert client.post("/analyze", headers=as_user("alice")).status_code == 200
    clock.advance(minutes=1)
    feed_service.record("alice", "training.started", "Training run started", {"run": 7})
    clock.advance(minutes=1)
    assert client.post("/export", headers=as_user("alice")).status_code == 200
    clock.advance(minutes=1)
    assert client.post("/export", headers=as_user("alice")).status_code == 200
    clock.advance(minutes=1)
    assert client.post("/export", headers=as_user("alice")).status_code == 429  # 4 + 2 > 5
    clock.advance(minutes=1)
    billing.change_plan("alice", "starter")

    events = fetch(client)

    assert [(item["type"], item["title"]) for item in events] == [
        ("plan.changed", "Plan changed: Free → Starter"),
        ("quota.exceeded", "Export refused: limit reached"),
        ("quota.consumed", "Export used (2)"),
        ("quota.consumed", "Export used (2)"),
        ("training.started", "Training run started"),
        ("quota.consumed", "Analysis used"),
    ]
    assert all(set(item) == EVENT_KEYS for item in events)
    assert [item["occurred_at"] for item in events] == [
        (START + timedelta(minutes=m)).isoformat() for m in (5, 4, 3, 2, 1, 0)
    ]
    assert len({item["id"] for item in events}) == len(events)
    assert all(item["id"].startswith(("activity-", "usage-")) for item in events)
    assert events[0]["metadata"]["from_plan"] == "free"
    assert events[0]["metadata"]["to_plan"] == "starter"
    assert events[1]["metadata"] == {"metric": "export", "amount": 2, "limit": 5, "used": 4}
    assert events[2]["metadata"] == {"metric": "export", "amount": 2, "resources": {}}
    assert events[4]["metadata"] == {"run": 7}


def test_resources_of_a_charge_reach_the_event(
    client: FlaskClient, feed_service: ActivityService
) -> None:
    client.post("/analyze/app-42", headers=as_user("alice"))

    (charge,) = fetch(client)

    assert charge["metadata"]["resources"] == {"application_id": "app-42"}


def test_cancel_and_expiry_appear_in_the_feed(make_app: AppFactory, clock: Clock) -> None:
    app = make_app(PROFILE_ACTIVITY_WINDOW_DAYS=60)  # the month of the plan and a few days
    billing = billing_of(app)
    with app.app_context():
        activity_service(app)
        billing.change_plan("alice", "starter")
        clock.advance(days=1)
        billing.cancel("alice")
        clock.advance(days=40)
        assert billing.expire_lapsed() == 1

        events = fetch(app.test_client())

    assert [(item["type"], item["title"]) for item in events] == [
        ("subscription.expired", "Starter plan expired"),
        ("subscription.cancelled", "Starter subscription cancelled"),
        ("plan.changed", "Plan changed: Free → Starter"),
    ]
    # Dated when the paid month ended, not when the job noticed it.
    assert events[0]["occurred_at"] == datetime(2025, 11, 13, 10, 0, tzinfo=UTC).isoformat()
    assert events[0]["metadata"]["now_on"] == "free"


def test_events_at_the_same_instant_always_read_in_the_same_order(
    client: FlaskClient, feed_service: ActivityService
) -> None:
    # The test clock stands still: every event below has the same timestamp.
    client.post("/analyze", headers=as_user("alice"))
    feed_service.record("alice", "dataset.uploaded", "Dataset uploaded")
    client.post("/analyze", headers=as_user("alice"))
    feed_service.record("alice", "training.started", "Training run started")

    first = [e.id for e in feed_service.latest("alice", 10)]
    again = [e.id for e in feed_service.latest("alice", 10)]

    assert first == again
    assert [i.split("-")[0] for i in first] == ["activity", "activity", "usage", "usage"]
    assert [e.title for e in feed_service.latest("alice", 2)] == [
        "Training run started",
        "Dataset uploaded",
    ]


def test_the_limit_is_respected(
    client: FlaskClient, feed_service: ActivityService, clock: Clock
) -> None:
    for number in range(12):
        feed_service.record("alice", "training.started", f"Run {number}")
        clock.advance(seconds=1)

    assert titles(fetch(client)) == [f"Run {n}" for n in range(11, 1, -1)]  # default 10
    assert titles(fetch(client, limit=3)) == ["Run 11", "Run 10", "Run 9"]
    assert len(fetch(client, limit=100)) == 12
    assert len(fetch(client, limit=1)) == 1


def test_the_limit_covers_both_sources(
    client: FlaskClient, feed_service: ActivityService, clock: Clock
) -> None:
    for number in range(3):
        client.post("/analyze", headers=as_user("alice"))
        clock.advance(seconds=1)
        feed_service.record("alice", "training.started", f"Run {number}")
        clock.advance(seconds=1)

    assert titles(fetch(client, limit=3)) == ["Run 2", "Analysis used", "Run 1"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"limit": ""}, "limit"),
        ({"limit": "10", "page": "2"}, "page"),
    ],
)
def test_a_bad_query_is_a_422_naming_the_field(
    client: FlaskClient, query: dict[str, str], field: str
) -> None:
    response = client.get("/api/profile/activity", query_string=query, headers=as_user("alice"))

    assert response.status_code == 422
    body = response.get_json()
    assert body["error"] == "VALIDATION_ERROR"
    assert set(body["details"]["fields"]) == {field}


def test_the_window_leaves_older_events_out(make_app: AppFactory, clock: Clock) -> None:
    app = make_app(PROFILE_ACTIVITY_WINDOW_DAYS=7)
    client = app.test_client()
    with app.app_context():
        service = activity_service(app)
        service.record("alice", "dataset.uploaded", "Old dataset")
        client.post("/analyze", headers=as_user("alice"))
        clock.advance(days=6)
        service.record("alice", "dataset.uploaded", "Recent dataset")
        # Same instant: entries of the feed's table sort before charges.
        assert titles(fetch(client)) == ["Recent dataset", "Old dataset", "Analysis used"]
        clock.advance(days=1, seconds=1)
        service.record("alice", "dataset.uploaded", "New dataset")  # also forgets the cache

        assert titles(fetch(client)) == ["New dataset", "Recent dataset"]


def test_the_default_window_is_30_days(
    client: FlaskClient, feed_service: ActivityService, clock: Clock
) -> None:
    feed_service.record("alice", "dataset.uploaded", "Day 0")
    clock.advance(days=30)
    assert [e.title for e in feed_service.latest("alice")] == ["Day 0"]
    clock.advance(seconds=1)
    assert feed_service.latest("alice") == []


def test_a_user_sees_only_their_own_events(
    client: FlaskClient, billing: ProfileBilling, feed_service: ActivityService
) -> None:
    client.post("/analyze", headers=as_user("bob"))
    feed_service.record("bob", "training.started", "Bob's run")
    billing.change_plan("bob", "starter")
    feed_service.record("alice", "training.started", "Alice's run")

    assert titles(fetch(client, "alice")) == ["Alice's run"]
    assert "Alice's run" not in titles(fetch(client, "bob"))
    assert fetch(client, "carol") == []


def test_only_the_sending_app_records_its_signals(make_app: AppFactory) -> None:
    # Two apps on one database in one process: each app's receivers answer only its own signals,
    # so one plan change is one entry, not one per app.
    first, second = make_app(), make_app()
    for app in (first, second):
        with app.app_context():
            activity_service(app)
    with first.app_context():
        billing_of(first).change_plan("alice", "starter")
        assert [e.title for e in activity_service(first).latest("alice")] == [
            "Plan changed: Free → Starter"
        ]


# -- caching ---------------------------------------------------------------------------------------


def test_a_second_fetch_within_30_seconds_does_not_touch_the_database(
    client: FlaskClient, feed_service: ActivityService, statements: list[str]
) -> None:
    feed_service.record("alice", "training.started", "Run")
    fetch(client)
    statements.clear()

    fetch(client)
    fetch(client, limit=1)  # any limit is served by the same cache entry

    assert statements == []
    assert feed_service.feed("alice", 5).cached is True


def test_the_cache_hides_rows_written_behind_its_back_until_a_charge_or_record(
    client: FlaskClient, app: Flask, feed_service: ActivityService
) -> None:
    engine: Engine = app.extensions["profile_billing"].runtime.engine
    assert fetch(client) == []

    with engine.begin() as connection:
        connection.execute(
            insert(activity).values(
                user_id="alice", type="sneaky", title="Behind the cache", occurred_at=START
            )
        )
    assert fetch(client) == []  # served from the cache

    client.post("/analyze", headers=as_user("alice"))
    assert titles(fetch(client)) == ["Behind the cache", "Analysis used"]

    feed_service.record("alice", "training.started", "Run")
    assert titles(fetch(client))[0] == "Run"


def test_the_cache_is_per_user(client: FlaskClient, feed_service: ActivityService) -> None:
    assert fetch(client, "alice") == []
    feed_service.record("bob", "training.started", "Bob's run")

    assert titles(fetch(client, "bob")) == ["Bob's run"]


# -- observability ---------------------------------------------------------------------------------


def test_every_fetch_writes_a_log_line(
    client: FlaskClient, feed_service: ActivityService, caplog: pytest.LogCaptureFixture
) -> None:
    feed_service.record("alice", "training.started", "Run")
    caplog.set_level(logging.INFO, logger="flask_profile_billing.activity")

    fetch(client)
    fetch(client, limit=1)

    lines = [r for r in caplog.records if r.name == "flask_profile_billing.activity"]
    assert [r.getMessage() for r in lines] == ["profile_activity_fetched"] * 2
    assert [(r.user_id, r.count, r.cached) for r in lines] == [  # type: ignore[attr-defined]
        ("alice", 1, False),
        ("alice", 1, True),
    ]


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_every_fetch_increments_the_prometheus_counters(
    client: FlaskClient, feed_service: ActivityService
) -> None:
    feed_service.record("alice", "training.started", "Run 1")
    feed_service.record("alice", "training.started", "Run 2")
    fetched = sample("profile_activity_fetched_total")
    returned = sample("profile_activity_events_returned_total")
    hits = sample("profile_activity_cache_hits_total")

    fetch(client)
    fetch(client, limit=1)

    assert sample("profile_activity_fetched_total") == fetched + 2
    assert sample("profile_activity_events_returned_total") == returned + 3
    assert sample("profile_activity_cache_hits_total") == hits + 1


# -- the receivers never break the flow that sent the signal ---------------------------------------


def test_refusals_of_one_metric_are_not_repeated_within_five_minutes(
    client: FlaskClient, feed_service: ActivityService, clock: Clock
) -> None:
    for _ in range(2):
        client.post("/export", headers=as_user("alice"))
    for _ in range(3):
        assert client.post("/export", headers=as_user("alice")).status_code == 429
    assert titles(fetch(client)).count("Export refused: limit reached") == 1

    clock.advance(minutes=5, seconds=1)
    assert client.post("/export", headers=as_user("alice")).status_code == 429
    assert titles(fetch(client)).count("Export refused: limit reached") == 2


def test_a_failing_feed_write_does_not_change_a_refusal_or_a_plan_change(
    client: FlaskClient,
    billing: ProfileBilling,
    feed_service: ActivityService,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the feed is down")

    monkeypatch.setattr(ActivityService, "record", broken)
    monkeypatch.setattr(ActivityService, "_record_refusal", broken)
    for _ in range(2):
        client.post("/export", headers=as_user("alice"))

    refused = client.post("/export", headers=as_user("alice"))
    changed = billing.change_plan("alice", "starter")

    assert refused.status_code == 429
    assert refused.get_json()["error"] == "LIMIT_EXCEEDED"
    assert changed.plan_code == "starter"
    assert [r.getMessage() for r in caplog.records].count("profile_activity_record_failed") == 2


# -- recording -------------------------------------------------------------------------------------


def test_record_returns_the_event_in_the_feeds_shape(feed_service: ActivityService) -> None:
    recorded = feed_service.record("alice", "dataset.uploaded", "Dataset uploaded", {"rows": 10})

    assert recorded.id.startswith("activity-")
    assert recorded.occurred_at == START
    assert feed_service.latest("alice") == [recorded]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": "", "title": "x"}, "type"),
        ({"type": "t" * 65, "title": "x"}, "type"),
        ({"type": "t", "title": "x" * 201}, "title"),
        ({"type": "t", "title": "x", "metadata": {"when": datetime.now(UTC)}}, "JSON"),
        ({"type": "t", "title": "x", "occurred_at": datetime(2025, 1, 1)}, "aware"),
    ],
)
def test_record_refuses_bad_input_and_writes_nothing(
    app: Flask, feed_service: ActivityService, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        feed_service.record("alice", **kwargs)

    engine: Engine = app.extensions["profile_billing"].runtime.engine
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(activity)).scalar() == 0
