"""Requests to ``/api/profile/me`` that the profile test modules share."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from tests.support.host_app import as_user

ME = "/api/profile/me"


def me(client: FlaskClient, user: str) -> dict[str, Any]:
    response = client.get(ME, headers=as_user(user))
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    assert body["success"] is True
    data: dict[str, Any] = body["data"]
    return data


def patch(client: FlaskClient, user: str, body: Any) -> Any:
    return client.patch(ME, headers=as_user(user), json=body)
