"""The client's analytics events, ``POST /api/profile/events``: each allowed event sends its signal
once and writes nothing, any other event or body is refused, cookie sessions need the CSRF token,
and anonymous requests to the events and the activity feed get a 401 in JSON.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_profile_billing import signals
from tests.support.host_app import AppFactory, as_user


@pytest.mark.parametrize(
    ("name", "signal", "arguments"),
    [
        ("profile:view", signals.profile_viewed, {"user_id": "alice", "source": "client"}),
        (
            "profile:update",
            signals.profile_updated,
            {"user_id": "alice", "fields": [], "source": "client"},
        ),
        (
            "profile:cta_buy_quota",
            signals.buy_cta_clicked,
            {"user_id": "alice", "properties": {"plan": "starter"}, "source": "client"},
        ),
    ],
)
def test_each_analytics_event_sends_its_signal_once_and_writes_nothing(
    client: FlaskClient,
    app: Flask,
    statements: list[str],
    name: str,
    signal: Any,
    arguments: dict[str, Any],
) -> None:
    received: list[tuple[Any, dict[str, Any]]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        received.append((sender, kwargs))

    with signal.connected_to(receiver, sender=app):
        response = client.post(
            "/api/profile/events",
            json={"event": name, "properties": {"plan": "starter"}},
            headers=as_user("alice"),
        )

    assert response.status_code == 202
    assert response.get_json() == {"success": True, "data": {"accepted": name}}
    assert received == [(app, arguments)]
    assert statements == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event": "profile:delete"}, "event"),
        ({"event": "profile_view"}, "event"),
        ({}, "event"),
        ({"event": 1}, "event"),
        ({"event": "profile:view", "properties": []}, "properties"),
        ({"event": "profile:view", "properties": None}, "properties"),
        ({"event": "profile:view", "properties": {str(n): n for n in range(21)}}, "properties"),
        ({"event": "profile:view", "properties": {"note": "x" * 3000}}, "properties"),
        ({"event": "profile:view", "user_id": "bob"}, "user_id"),
    ],
)
def test_other_events_are_refused_and_send_nothing(
    client: FlaskClient, app: Flask, body: dict[str, Any], field: str
) -> None:
    received: list[Any] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        received.append(kwargs)

    with signals.profile_viewed.connected_to(receiver, sender=app):
        response = client.post("/api/profile/events", json=body, headers=as_user("alice"))

    assert response.status_code == 422
    assert set(response.get_json()["details"]["fields"]) == {field}
    assert received == []


def test_an_event_body_that_is_not_json_is_a_415(client: FlaskClient) -> None:
    response = client.post(
        "/api/profile/events",
        data=b"profile:view",
        content_type="text/plain",
        headers=as_user("alice"),
    )

    assert response.status_code == 415
    assert response.get_json()["error"] == "UNSUPPORTED_MEDIA_TYPE"


def test_cookie_sessions_need_the_csrf_token_to_send_events(make_app: AppFactory) -> None:
    app = make_app()
    client = app.test_client()
    token = client.post("/session-login/alice").get_json()["csrf_token"]

    refused = client.post("/api/profile/events", json={"event": "profile:view"})
    accepted = client.post(
        "/api/profile/events", json={"event": "profile:view"}, headers={"X-CSRFToken": token}
    )

    assert refused.status_code == 400
    assert refused.get_json()["error"] == "CSRF_FAILED"
    assert accepted.status_code == 202


# -- login -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/api/profile/activity"), ("POST", "/api/profile/events")]
)
def test_anonymous_requests_get_a_401_in_json(client: FlaskClient, method: str, path: str) -> None:
    response = client.open(path, method=method, json={"event": "profile:view"})

    assert response.status_code == 401
    assert response.get_json() == {
        "success": False,
        "error": "UNAUTHORIZED",
        "message": "Log in to use this endpoint",
        "details": {},
    }
