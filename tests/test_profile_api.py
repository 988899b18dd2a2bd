"""SPEC P1, P2, P11, P12, Q4, Q5, Q7: ``GET`` and ``PATCH /api/profile/me``.

The seed's JSON of ``GET /api/profile/me`` is a contract: the test below compares the answer with
the seed's example field by field. Every test runs on SQLite and on PostgreSQL; the cross-process
cache test runs on PostgreSQL with Redis, in two app server processes.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from flask_profile_billing import ProfileBilling, signals
from flask_profile_billing.extension import get_state
from flask_profile_billing.store.models import activity, profiles
from tests.conftest import AppFactory, as_user
from tests.host_app import Clock
from tests.profile_worker import AppProcess, user_info
from tests.servers import RedisServer

ME = "/api/profile/me"
EDITABLE = ["first_name", "company", "country", "timezone", "avatar_url", "phone"]

# The seed's example of GET /api/profile/me ("API и контракты"), as written there.
SEED_EXAMPLE: dict[str, Any] = {
    "id": "uuid",
    "email": "user@example.com",
    "first_name": "",
    "company": "Acme AI",
    "timezone": "Europe/Moscow",
    "created_at": "2025-09-01T10:00:00Z",
    "role": "user",
    "quota": {"limit": 50, "used": 32, "available": 18, "resets_at": "2025-12-01T00:00:00Z"},
}
# What the profile adds to the seed's fields: the other editable fields, the plan (P13) and every
# periodic metric. Nothing else may appear without this list (and the docs) changing.
EXTRA_FIELDS = {"country", "avatar_url", "phone", "plan", "quotas"}
TIMESTAMPS = {"created_at", "resets_at"}


def seed_user_info(user: Any) -> dict[str, Any]:
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


def me(client: FlaskClient, user: str) -> dict[str, Any]:
    response = client.get(ME, headers=as_user(user))
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    assert body["success"] is True
    data: dict[str, Any] = body["data"]
    return data


def patch(client: FlaskClient, user: str, body: Any) -> Any:
    return client.patch(ME, headers=as_user(user), json=body)


def stored(app: Flask, user: str) -> dict[str, Any] | None:
    """The user's profile row, read straight from the database."""
    with app.app_context(), get_state(app).runtime.engine.connect() as connection:
        row = connection.execute(select(profiles).where(profiles.c.user_id == user)).first()
    return None if row is None else dict(row._mapping)


def activity_of(app: Flask, user: str) -> list[dict[str, Any]]:
    with app.app_context(), get_state(app).runtime.engine.connect() as connection:
        rows = connection.execute(
            select(activity.c.type, activity.c.title, activity.c["metadata"])
            .where(activity.c.user_id == user)
            .order_by(activity.c.id)
        )
        return [dict(row._mapping) for row in rows]


def write_behind_the_extension(app: Flask, user: str, **values: Any) -> None:
    """Change a profile row directly, as nothing in the extension would: the cache cannot know."""
    with app.app_context(), get_state(app).runtime.engine.begin() as connection:
        connection.execute(update(profiles).where(profiles.c.user_id == user).values(**values))


@pytest.fixture
def received() -> Iterator[dict[str, list[dict[str, Any]]]]:
    """What the profile signals sent during the test."""
    sent: dict[str, list[dict[str, Any]]] = {"viewed": [], "updated": []}

    def on_viewed(sender: Flask, **kwargs: Any) -> None:
        sent["viewed"].append(kwargs)

    def on_updated(sender: Flask, **kwargs: Any) -> None:
        sent["updated"].append(kwargs)

    with (
        signals.profile_viewed.connected_to(on_viewed),
        signals.profile_updated.connected_to(on_updated),
    ):
        yield sent


# -- the contract (P1) ---------------------------------------------------------------------------


def test_get_me_matches_the_seeds_contract_field_by_field(
    make_app: AppFactory, clock: Clock
) -> None:
    clock.set(datetime(2025, 11, 13, 9, 30, tzinfo=UTC))
    app = make_app(PROFILE_DEFAULT_QUOTA=50, BILLING_USER_INFO=seed_user_info)
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
    assert set(data) == set(SEED_EXAMPLE) | EXTRA_FIELDS
    for key, value in SEED_EXAMPLE.items():
        assert shape(data[key]) == shape(value), key
    same_values(data, {**SEED_EXAMPLE, "id": user})
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


# -- the quota snapshot is what the guard enforces (P12) ----------------------------------------


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
    allowance = get_state().quotas.allowance("alice", "analysis")
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


# -- where the host's fields come from (X2) ------------------------------------------------------


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


# -- PATCH: what may change, validation, normalisation (P2, Q4, Q5) ------------------------------


@pytest.mark.parametrize(
    "forbidden",
    [
        {"role": "admin"},
        {"email": "root@example.com"},
        {"quota": {"limit": 1000000}},
        {"id": "bob"},
        {"created_at": "2000-01-01T00:00:00Z"},
        {"user_id": "bob", "plan": "enterprise"},
    ],
)
def test_read_only_and_unknown_fields_are_refused_and_nothing_changes(
    app: Flask, client: FlaskClient, forbidden: dict[str, Any]
) -> None:
    patch(client, "alice", {"first_name": "Alice"})
    before = stored(app, "alice")
    feed_before = activity_of(app, "alice")

    answer = patch(client, "alice", {"company": "Sneaky Corp", **forbidden})

    assert answer.status_code == 422
    body = answer.get_json()
    assert body["success"] is False
    assert body["error"] == "VALIDATION_ERROR"
    assert set(body["details"]["fields"]) == set(forbidden)
    assert stored(app, "alice") == before
    assert activity_of(app, "alice") == feed_before
    assert stored(app, "bob") is None


INVALID_VALUES: dict[str, list[Any]] = {
    "timezone": ["", "../etc", "UTC+3", "Mars/Olympus_Mons", "/etc/passwd", "localtime", 3, True],
    "country": ["XX", "russia", "", "R", "RUS", "1A", 7, ["RU"]],
    "phone": [
        "12345",
        "+7 999",
        "",
        "+7 912 345-67-89" + "9" * 60,
        "+999 123 4567",
        "call me",
        79123456789,
    ],
    "avatar_url": [
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
        "ftp://example.com/avatar.png",
        "/static/avatar.png",
        "//example.com/avatar.png",
        "avatar.png",
        "http://",
        "https://example.com/" + "a" * 2048,
        "https://exa mple.com/a.png",
        "java\tscript:alert(1)",
        "https://user:secret@example.com/a.png",
        "http://[::1/a.png",
        "",
        {"url": "https://example.com"},
    ],
    "first_name": ["A" * 101, "Ali\x00ce", "Ali\nce", "Ali\x1bce", 42, {"x": 1}],
    "company": ["C" * 201, "Acme\rInc", False, [1, 2]],
}


@pytest.mark.parametrize(
    ("field", "value"),
    [(field, value) for field, values in INVALID_VALUES.items() for value in values],
)
def test_an_invalid_value_is_a_field_error_and_changes_nothing(
    app: Flask, client: FlaskClient, field: str, value: Any
) -> None:
    patch(client, "alice", {"company": "Acme AI"})
    before = stored(app, "alice")

    answer = patch(client, "alice", {"first_name": "Changed", field: value})

    assert answer.status_code == 422, value
    assert set(answer.get_json()["details"]["fields"]) == {field}
    assert stored(app, "alice") == before


def test_every_field_error_comes_in_one_answer(app: Flask, client: FlaskClient) -> None:
    answer = patch(
        client,
        "alice",
        {
            "timezone": "UTC+3",
            "country": "russia",
            "phone": "+7 999",
            "avatar_url": "javascript:alert(1)",
            "first_name": "x" * 101,
            "company": "Fine Company",
            "role": "admin",
        },
    )

    assert answer.status_code == 422
    fields = answer.get_json()["details"]["fields"]
    assert set(fields) == {"timezone", "country", "phone", "avatar_url", "first_name", "role"}
    assert all(isinstance(messages, list) and messages for messages in fields.values())
    assert stored(app, "alice") is None  # not even the valid company, not even an empty row


def test_valid_values_are_stored_normalised(app: Flask, client: FlaskClient) -> None:
    answer = patch(
        client,
        "alice",
        {
            "first_name": "  Иван  ",
            "company": "\tMLservice ",
            "country": "ru",
            "timezone": "Europe/Moscow",
            "avatar_url": "https://cdn.example.com/avatars/alice.png?size=128",
            "phone": "+7 (912) 345-67-89",
        },
    )

    assert answer.status_code == 200
    row = stored(app, "alice")
    assert row is not None
    assert {field: row[field] for field in EDITABLE} == {
        "first_name": "Иван",
        "company": "MLservice",
        "country": "RU",
        "timezone": "Europe/Moscow",
        "avatar_url": "https://cdn.example.com/avatars/alice.png?size=128",
        "phone": "+79123456789",
    }
    data = answer.get_json()["data"]
    assert {field: data[field] for field in EDITABLE} == {field: row[field] for field in EDITABLE}


@pytest.mark.parametrize(
    ("field", "value", "stored_as"),
    [
        ("timezone", "america/argentina/buenos_aires", "America/Argentina/Buenos_Aires"),
        ("timezone", "UTC", "UTC"),
        ("timezone", "Etc/GMT+3", "Etc/GMT+3"),
        ("country", " de ", "DE"),
        ("phone", "+1 650-253-0000", "+16502530000"),
        ("phone", "+44 20 7031 3000", "+442070313000"),
        ("avatar_url", "HTTP://Example.com/a.png", "HTTP://Example.com/a.png"),
        ("first_name", "A" * 100, "A" * 100),
        ("first_name", "   ", None),
        ("company", "", None),
    ],
)
def test_more_valid_values_and_their_stored_form(
    app: Flask, client: FlaskClient, field: str, value: str, stored_as: str | None
) -> None:
    assert patch(client, "alice", {field: value}).status_code == 200

    row = stored(app, "alice")
    assert row is not None
    assert row[field] == stored_as


def test_null_clears_a_field(app: Flask, client: FlaskClient) -> None:
    patch(client, "alice", {"company": "Acme AI", "phone": "+79123456789", "country": "RU"})

    answer = patch(client, "alice", {"company": None, "phone": None})

    assert answer.status_code == 200
    data = answer.get_json()["data"]
    assert (data["company"], data["phone"], data["country"]) == (None, None, "RU")


def test_an_empty_patch_is_a_no_op(
    app: Flask, client: FlaskClient, received: dict[str, list[dict[str, Any]]]
) -> None:
    patch(client, "alice", {"company": "Acme AI"})
    before = stored(app, "alice")

    answer = patch(client, "alice", {})

    assert answer.status_code == 200
    assert answer.get_json()["data"]["company"] == "Acme AI"
    assert stored(app, "alice") == before
    assert len(activity_of(app, "alice")) == 1
    assert len(received["updated"]) == 1


# -- every change is logged once (P2) ------------------------------------------------------------


def test_a_change_writes_one_activity_row_with_the_changed_fields(
    app: Flask, client: FlaskClient, received: dict[str, list[dict[str, Any]]]
) -> None:
    patch(client, "alice", {"company": "Acme AI"})

    patch(client, "alice", {"company": "Acme AI", "timezone": "Asia/Tokyo", "first_name": "Al"})
    patch(client, "alice", {"company": "Acme AI", "timezone": "Asia/Tokyo"})  # changes nothing

    assert activity_of(app, "alice") == [
        {
            "type": "profile.updated",
            "title": "Profile updated",
            "metadata": {"fields": ["company"]},
        },
        {
            "type": "profile.updated",
            "title": "Profile updated",
            "metadata": {"fields": ["first_name", "timezone"]},
        },
    ]
    assert received["updated"] == [
        {"user_id": "alice", "fields": ["company"], "source": "api"},
        {"user_id": "alice", "fields": ["first_name", "timezone"], "source": "api"},
    ]


def test_a_read_sends_profile_viewed(
    client: FlaskClient, received: dict[str, list[dict[str, Any]]]
) -> None:
    me(client, "alice")
    me(client, "alice")  # from the cache: still a view

    assert received["viewed"] == [{"user_id": "alice", "source": "api"}] * 2


def test_the_profile_row_is_created_lazily_once(app: Flask, client: FlaskClient) -> None:
    assert stored(app, "alice") is None

    me(client, "alice")
    created = stored(app, "alice")
    me(client, "alice")

    assert created is not None
    assert created["created_at"] == datetime(2025, 10, 13, 10, tzinfo=UTC)
    assert stored(app, "alice") == created


def test_concurrent_edits_of_a_new_profile_create_one_row_and_log_each_change(
    app: Flask,
) -> None:
    values = {
        "first_name": "Alice",
        "company": "Acme AI",
        "country": "RU",
        "timezone": "Europe/Moscow",
        "avatar_url": "https://example.com/a.png",
        "phone": "+79123456789",
    }
    statuses: list[int] = []
    barrier = threading.Barrier(len(values))

    def edit(field: str, value: str) -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(patch(client, "alice", {field: value}).status_code)

    threads = [threading.Thread(target=edit, args=item) for item in values.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * len(values)
    row = stored(app, "alice")
    assert row is not None
    assert {field: row[field] for field in EDITABLE} == values
    logged = sorted(entry["metadata"]["fields"][0] for entry in activity_of(app, "alice"))
    assert logged == sorted(values)
    with get_state(app).runtime.engine.connect() as connection:
        count = select(func.count()).select_from(profiles).where(profiles.c.user_id == "alice")
        assert connection.execute(count).scalar_one() == 1


# -- the cache (P11) -----------------------------------------------------------------------------


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


# -- who may read and write (Q5) -----------------------------------------------------------------


def test_a_user_sees_and_changes_only_their_own_profile(app: Flask, client: FlaskClient) -> None:
    patch(client, "bob", {"company": "Bob's Burgers", "phone": "+79123456789"})
    bob_before = stored(app, "bob")

    answer = patch(client, "alice", {"company": "Alice Inc"})
    sneaky = patch(client, "alice", {"user_id": "bob", "company": "Hijacked"})

    assert answer.status_code == 200
    assert answer.get_json()["data"]["id"] == "alice"
    assert sneaky.status_code == 422
    assert stored(app, "bob") == bob_before
    alice = me(client, "alice")
    assert (alice["id"], alice["company"], alice["phone"]) == ("alice", "Alice Inc", None)
    assert me(client, "bob")["company"] == "Bob's Burgers"
    assert [entry["metadata"] for entry in activity_of(app, "bob")] == [
        {"fields": ["company", "phone"]}
    ]


def test_a_cookie_session_patch_needs_the_csrf_token(make_app: AppFactory) -> None:
    app = make_app()
    client = app.test_client()
    token = client.post("/session-login/alice").get_json()["csrf_token"]
    patch_body = {"company": "Acme AI"}

    refused = client.patch(ME, json=patch_body, headers={"Accept": "application/json"})
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "CSRF_FAILED"
    assert stored(app, "alice") is None
    wrong = client.patch(ME, json=patch_body, headers={"X-CSRFToken": "not-the-token"})
    assert wrong.status_code == 400

    accepted = client.patch(ME, json=patch_body, headers={"X-CSRFToken": token})

    assert accepted.status_code == 200
    assert accepted.get_json()["data"]["company"] == "Acme AI"
    assert client.get(ME).get_json()["data"]["company"] == "Acme AI"  # reads need no token


@pytest.mark.parametrize("method", ["GET", "PATCH"])
@pytest.mark.parametrize("accept", ["application/json", "text/html", "*/*"])
def test_anonymous_requests_get_401_json_never_a_redirect(
    client: FlaskClient, method: str, accept: str
) -> None:
    answer = client.open(ME, method=method, json={"company": "x"}, headers={"Accept": accept})

    assert answer.status_code == 401
    assert answer.mimetype == "application/json"
    assert answer.get_json()["error"] == "UNAUTHORIZED"
    assert "Location" not in answer.headers


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("not json", "application/json"),
        ('{"company": "Acme"', "application/json"),
        ("[1, 2]", "application/json"),
        ('"Acme"', "application/json"),
        ("null", "application/json"),
        ("42", "application/json"),
        (b"\xff\xfe\x00", "application/json"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_400(
    app: Flask, client: FlaskClient, data: str | bytes, content_type: str
) -> None:
    answer = client.patch(ME, data=data, content_type=content_type, headers=as_user("alice"))

    assert answer.status_code == 400
    assert answer.get_json()["error"] == "INVALID_JSON"
    assert stored(app, "alice") is None


# -- no malformed request gets a 500 (Q4) -------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
# Random keys rarely hit a real field: mix in the editable and read-only names, and values
# close to valid ones, so the validators themselves get fuzzed.
KEYS = st.sampled_from([*EDITABLE, "email", "role", "id", "quota", "created_at"]) | st.text()
VALUES = JSON_VALUES | st.sampled_from(
    [
        "+7 (912) 345-67-89",
        "+7 999",
        "Europe/Moscow",
        "../../etc/passwd",
        "RU",
        "https://example.com/a.png",
        "javascript:alert(1)",
        "http://[::1",
        "\x00",
        "\ud800",
        " ",
        "x" * 3000,
    ]
)


@settings(
    max_examples=75,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=st.dictionaries(KEYS, VALUES, max_size=6))
def test_random_json_objects_never_cause_a_server_error(
    client: FlaskClient, body: dict[str, Any]
) -> None:
    answer = patch(client, "fuzzy", body)

    assert answer.status_code in (200, 422), answer.get_json()
    assert answer.get_json()["success"] is (answer.status_code == 200)
    assert me(client, "fuzzy")["id"] == "fuzzy"


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_random_bodies_never_cause_a_server_error(client: FlaskClient, data: bytes) -> None:
    answer = client.patch(ME, data=data, content_type="application/json", headers=as_user("fuzzy"))

    assert answer.status_code in (200, 400, 422)
