"""The host's role as the profile shows it, without BILLING_USER_INFO: a string as it is, a role
object by its name, a list of roles by their names, never an object's repr."""

from __future__ import annotations

import enum
from typing import Any

import pytest

from tests.support.host_app import AppFactory
from tests.support.profile import me


class Role:
    """A role row as Flask-Security and most SQLAlchemy models have it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<Role {self.name!r}>"


class Level(enum.Enum):
    ADMIN = "admin"


def user_with(**attributes: Any) -> type:
    class HostUser:
        def __init__(self, user_id: str) -> None:
            self.id = user_id
            for name, value in attributes.items():
                setattr(self, name, value)

    return HostUser


@pytest.mark.parametrize(
    ("attributes", "shown"),
    [
        ({"role": "editor"}, "editor"),
        ({"role": Role("User")}, "User"),
        ({"role": Level.ADMIN}, "admin"),
        ({"roles": [Role("Admin"), Role("Editor")]}, "Admin, Editor"),
        ({"roles": ["admin", Role("Editor")]}, "admin, Editor"),
        ({"roles": []}, "user"),
        ({}, "user"),
    ],
    ids=["string", "object", "enum", "list-of-objects", "mixed-list", "no-roles", "nothing"],
)
def test_the_profile_presents_the_hosts_role_by_name(
    make_app: AppFactory, attributes: dict[str, Any], shown: str
) -> None:
    client = make_app(BILLING_USER_LOADER=user_with(**attributes)).test_client()

    assert me(client, "alice")["role"] == shown


def test_the_page_shows_the_role_objects_name(make_app: AppFactory) -> None:
    client = make_app(BILLING_USER_LOADER=user_with(role=Role("User"))).test_client()

    page = client.get("/profile/", headers={"X-User": "alice", "Accept": "text/html"})

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "User" in html
    assert "&lt;Role" not in html
    assert "<Role" not in html
