"""``GET /api/profile/me``: the answer against its documented example, the quota snapshot the
guard enforces, the host's fields (email, role, name) and where they come from, and the cache of
reads that every write forgets, also across processes with Redis.

Every test runs on SQLite and on PostgreSQL; the cross-process cache test runs on PostgreSQL with
Redis, in two app server processes. Writes are test_profile_edit.py's.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from flask_profile_billing import ProfileBilling
from flask_profile_billing.state import get_state
from flask_profile_billing.store.models import profiles
from tests.support.host_app import AppFactory, Clock, as_user
from tests.support.profile import ME, me, patch
from tests.support.servers import RedisServer
from tests.support.workers import AppProcess, user_info

# The documented example answer of GET /api/profile/me, as written: the first test makes the
# requests that lead to these values.
DOCUMENTED_EXAMPLE: dict[str, Any] = {
    "id": "uuid",
    "email": "user@example.com",
    "first_name": "",
    "company": "Acme AI",
    "timezone": "Europe/Moscow",
    "created_at": "2025-09-01T10:00:00Z",
    "role": "user",
    "quota": {"limit": 50, "used": 32, "available": 18, "resets_at": "2025-12-01T00:00:00Z"},
}
# What the profile adds to the example's fields: the other editable fields, the plan and every
# periodic metric. Nothing else may appear without this list (and the docs) changing.
EXTRA_FIELDS = {"country", "avatar_url", "phone", "plan", "quotas"}
TIMESTAMPS = {"created_at", "resets_at"}


def example_user_info(user: Any) -> dict[str, Any]:
    return {
        "email": "user@example.com",
        "role": "user",
        "created_at": datetime(2025, 9, 1, 10, 0, tzinfo=UTC),
    }


def shape(value: Any) -> Any:
    """Names, types and nesting of a JSON value, without the values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    return type(value).__name__


def same_values(answer: dict[str, Any], expected: dict[str, Any]) -> None:
    """Equal values; timestamps equal as instants ("Z" and "+00:00" are the same ISO 8601 time)."""
    for key, value in expected.items():
        if isinstance(value, dict):
            same_values(answer[key], value)
        elif key in TIMESTAMPS:
            assert datetime.fromisoformat(answer[key]) == datetime.fromisoformat(value), key
        else:
            assert answer[key] == value, key


def write_behind_the_extension(app: Flask, user: str, **values: Any) -> None:
    """Change a profile row directly, as nothing in the extension would: the cache cannot know."""
    with app.app_context(), get_state(app).runtime.engine.begin() as connection:
        connection.execute(update(profiles).where(profiles.c.user_id == user).values(**values))


# -- the answer matches the documented example -----------------------------------------------------


def test_get_me_matches_the_documented_example_field_by_field(
    make_app: AppFactory, clock: Clock
) -> None:
    clock.set(datetime(2025, 11, 13, 9, 30, tzinfo=UTC))
    app = make_app(PROFILE_DEFAULT_QUOTA=50, BILLING_USER_INFO=example_user_info)
    client = app.test_client()
    user = str(uuid.uuid4())
    assert (
        patch(client, user, {"company": "Acme AI", "timezone": "Europe/Moscow"}).status_code == 200
    )
    for _ in range(32):
        assert client.post("/analyze", headers=as_user(user)).status_code == 200

    response = client.get(ME, headers=as_user(user))

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"success", "data"}
    assert body["success"] is True
    data = body["data"]
    assert set(data) == set(DOCUMENTED_EXAMPLE) | EXTRA_FIELDS
    for key, value in DOCUMENTED_EXAMPLE.items():
        assert shape(data[key]) == shape(value), key
    same_values(data, {**DOCUMENTED_EXAMPLE, "id": user})
    assert uuid.UUID(data["id"])
    assert data["plan"] == {"id": "free", "name": "Free"}
    assert data["quotas"]["analysis"] == data["quota"]
    assert set(data["quotas"]) == {"analysis", "export"}
    assert {data[key] for key in ("country", "avatar_url", "phone")} == {None}


def test_patch_answers_with_the_profile_in_the_shape_of_get(client: FlaskClient) -> None:
    answer = patch(client, "alice", {"first_name": "Alice"})

    assert answer.status_code == 200
    assert answer.get_json()["success"] is True
    assert shape(answer.get_json()["data"]) == shape(me(client, "alice"))
    assert answer.get_json()["data"] == me(client, "alice")


# -- the quota snapshot is what the guard enforces -------------------------------------------------


def test_the_quota_snapshot_follows_what_the_guard_charges(client: FlaskClient) -> None:
    first = me(client, "alice")  # cached from here on: every charge must make it stale
    assert first["quota"] == {
        "limit": 20,
        "used": 0,
        "available": 20,
        "resets_at": "2025-11-01T00:00:00+00:00",
    }

    for used in range(1, 21):
        charged = client.post("/analyze", headers=as_user("alice"))
        assert charged.status_code == 200
        quota = me(client, "alice")["quota"]
        assert (quota["used"], quota["available"]) == (used, 20 - used)
        assert quota["available"] == int(charged.headers["X-Quota-Remaining"])
        assert quota["resets_at"] == "2025-11-01T00:00:00+00:00"

    refused = client.post("/analyze", headers=as_user("alice"))
    assert refused.status_code == 429
    quota = me(client, "alice")["quota"]
    assert (quota["limit"], quota["used"], quota["available"]) == (20, 20, 0)
    allowance = get_state().quotas.allowance("user:alice", "analysis")
    assert (allowance.limit, allowance.used, allowance.remaining) == (20, 20, 0)


def test_an_unlimited_quota_has_null_limit_and_available(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    me(client, "alice")
    billing.change_plan("alice", "enterprise")  # the plan change forgets the cached read
    client.post("/analyze", headers=as_user("alice"))

    data = me(client, "alice")

    assert data["plan"]["id"] == "enterprise"
    assert data["quota"] == {
        "limit": None,
        "used": 1,
        "available": None,
        "resets_at": data["quota"]["resets_at"],
    }
    assert datetime.fromisoformat(data["quota"]["resets_at"]) > datetime(2025, 10, 13, tzinfo=UTC)


def test_a_cached_read_is_not_served_past_the_end_of_its_period(
    client: FlaskClient, clock: Clock
) -> None:
    for _ in range(3):
        client.post("/analyze", headers=as_user("alice"))
    assert me(client, "alice")["quota"]["used"] == 3  # cached

    clock.set(datetime(2025, 11, 1, 0, 0, 1, tzinfo=UTC))  # no write happens at a new period

    quota = me(client, "alice")["quota"]
    assert (quota["used"], quota["available"]) == (0, 20)
    assert quota["resets_at"] == "2025-12-01T00:00:00+00:00"


# -- where the host's fields come from -------------------------------------------------------------


class HostUser:
    def __init__(self, user_id: str) -> None:
        self.id = user_id
        self.email = f"{user_id}@example.com"
        self.name = "Alice Host"
        self.role = "admin"
        self.created_at = datetime(2024, 5, 6, 7, 8, 9)  # naive UTC, as many host models keep it


def test_host_fields_come_from_the_host_user_and_the_stored_name_wins(
    make_app: AppFactory,
) -> None:
    client = make_app(BILLING_USER_LOADER=HostUser).test_client()

    before = me(client, "alice")
    patch(client, "alice", {"first_name": "Alicia"})
    after = me(client, "alice")
    patch(client, "alice", {"first_name": None})  # cleared: the host's name shows again
    cleared = me(client, "alice")

    assert before["email"] == "alice@example.com"
    assert before["role"] == "admin"
    assert before["first_name"] == "Alice Host"
    assert before["created_at"] == "2024-05-06T07:08:09+00:00"
    assert after["first_name"] == "Alicia"
    assert cleared["first_name"] == "Alice Host"


def test_an_unknown_host_user_gets_the_stored_profile_not_an_error(client: FlaskClient) -> None:
    # The host's user_loader knows no "ghost-*" user; the request_loader still logs them in.
    assert patch(client, "ghost-1", {"company": "Nowhere Ltd"}).status_code == 200

    data = me(client, "ghost-1")

    assert data["email"] is None
    assert data["role"] == "user"
    assert data["first_name"] == ""
    assert data["company"] == "Nowhere Ltd"
    assert datetime.fromisoformat(data["created_at"]) == datetime(2025, 10, 13, 10, tzinfo=UTC)


def test_a_failing_user_info_accessor_does_not_break_the_profile(make_app: AppFactory) -> None:
    def broken(user: Any) -> dict[str, Any]:
        raise RuntimeError("the host's accessor has a bug")

    client = make_app(BILLING_USER_INFO=broken).test_client()

    data = me(client, "alice")

    assert (data["id"], data["email"], data["role"]) == ("alice", None, "user")


# -- the cache -------------------------------------------------------------------------------------


def test_read_patch_read_shows_the_new_values_at_once(app: Flask, client: FlaskClient) -> None:
    patch(client, "alice", {"company": "Before"})
    assert me(client, "alice")["company"] == "Before"
    # Proof that reads are cached: a change behind the extension's back is not seen...
    write_behind_the_extension(app, "alice", company="Behind the cache")
    assert me(client, "alice")["company"] == "Before"

    patch(client, "alice", {"timezone": "Asia/Tokyo"})

    # ...and that a PATCH forgets the cached read: the next read comes from the database.
    data = me(client, "alice")
    assert (data["timezone"], data["company"]) == ("Asia/Tokyo", "Behind the cache")


def test_a_write_during_a_read_never_leaves_a_stale_read_in_the_cache(make_app: AppFactory) -> None:
    # The host's accessor runs in the middle of the read, after the profile row was read: it is
    # where another process's PATCH committing (and forgetting the cache) is simulated.
    racing = {"on": False}

    def user_info_with_a_concurrent_write(user: Any) -> dict[str, Any]:
        if racing["on"]:
            racing["on"] = False
            write_behind_the_extension(app, "alice", company="Written during the read")
            get_state(app).runtime.cache.forget_user("alice")
        return {"email": "alice@example.com"}

    app = make_app(BILLING_USER_INFO=user_info_with_a_concurrent_write)
    client = app.test_client()
    patch(client, "alice", {"company": "Before"})

    racing["on"] = True
    assert me(client, "alice")["company"] == "Before"  # read before the write committed

    assert me(client, "alice")["company"] == "Written during the read"


def test_caching_can_be_switched_off(make_app: AppFactory) -> None:
    app = make_app(BILLING_PROFILE_CACHE_SECONDS=0)
    client = app.test_client()
    patch(client, "alice", {"company": "Before"})
    me(client, "alice")

    write_behind_the_extension(app, "alice", company="Seen at once")

    assert me(client, "alice")["company"] == "Seen at once"


@pytest.mark.redis
@pytest.mark.postgresql
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_with_redis_a_write_in_one_process_is_seen_at_once_in_another(
    make_app: AppFactory, database_url: str, clock: Clock, redis_server: RedisServer
) -> None:
    redis_server.flush()
    config: dict[str, Any] = {
        "BILLING_CLOCK": clock,
        "BILLING_CACHE_TYPE": "RedisCache",
        "BILLING_CACHE_REDIS_URL": redis_server.url,
        "BILLING_USER_INFO": user_info,
    }
    app = make_app(**config)  # creates the tables before the processes start
    a = AppProcess(database_url, config)
    b = AppProcess(database_url, config)
    try:
        assert a.call("PATCH", ME, "alice", {"company": "Before"})[0] == 200
        status, first = a.call("GET", ME, "alice")
        assert (status, first["data"]["company"]) == (200, "Before")
        assert first["data"]["email"] == "alice@example.com"
        # One cache for both processes: B is served A's cached read, blind to a change made
        # behind the extension's back...
        write_behind_the_extension(app, "alice", company="Behind the cache")
        assert b.call("GET", ME, "alice")[1]["data"]["company"] == "Before"

        # ...and B's PATCH forgets it for A too.
        assert b.call("PATCH", ME, "alice", {"first_name": "Alice", "country": "de"})[0] == 200
        data = a.call("GET", ME, "alice")[1]["data"]
        assert (data["first_name"], data["country"], data["company"]) == (
            "Alice",
            "DE",
            "Behind the cache",
        )

        # A charge through B's guard is in A's next read.
        assert b.call("POST", "/analyze", "alice")[0] == 200
        assert a.call("GET", ME, "alice")[1]["data"]["quota"]["used"] == 1
    finally:
        a.stop()
        b.stop()
    assert a.process.exitcode == 0
    assert b.process.exitcode == 0
