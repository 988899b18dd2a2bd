"""``PATCH /api/profile/me``: which fields a user may change, validation (every field error in one
answer, nothing stored on any error) and the stored normal form, one activity row and one signal
per change, concurrent edits of a new profile, who may write (own profile only, CSRF for cookie
sessions, 401 for anonymous reads and writes), and malformed or random bodies that never cause a
server error.

Every test runs on SQLite and on PostgreSQL. Reads are test_profile_read.py's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from flask_profile_billing import signals
from flask_profile_billing.state import get_state
from flask_profile_billing.store.models import activity, profiles
from tests.support.host_app import AppFactory, as_user
from tests.support.profile import ME, me, patch

EDITABLE = ["first_name", "company", "country", "timezone", "avatar_url", "phone"]


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


# -- what may change, validation, normalisation ----------------------------------------------------


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


# -- every change is logged once -------------------------------------------------------------------


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


# -- who may read and write ------------------------------------------------------------------------


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


# -- no malformed request gets a 500 ---------------------------------------------------------------

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
