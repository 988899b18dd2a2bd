"""The accounts API (``/api/accounts/...``, ``/api/invitations/accept``), on both databases.

Each endpoint's answer; that nobody reads or changes an account they do not belong to (404
``ACCOUNT_NOT_FOUND``, as if it did not exist) nor changes what their role does not allow (403
``ACCOUNT_FORBIDDEN``), the database left as it was; the CSRF token on every write a browser's
session cookie authenticates; field errors for every body; an invitation used once, by its own
address, before it expires and unless revoked; the seats counted; and the existing endpoints
acting for the account the host's ``account_loader`` picks.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from sqlalchemy import select

from flask_profile_billing import ProfileBilling
from flask_profile_billing.domain.accounts import Role
from flask_profile_billing.services.email_senders import OutgoingEmail
from flask_profile_billing.state import get_state
from flask_profile_billing.store.models import (
    account_members,
    accounts,
    invitations,
    member_caps,
)
from tests.support.host_app import AppFactory, Clock, as_user

OWNER, ADMIN, MEMBER, STRANGER = "owner-1", "admin-1", "member-1", "stranger-1"
METRIC = "analysis"


def user_info(user: Any) -> dict[str, str]:
    return {"email": f"{user.id}@example.com", "first_name": user.id.title()}


@pytest.fixture
def sent() -> list[OutgoingEmail]:
    return []


@pytest.fixture
def app(make_app: AppFactory, sent: list[OutgoingEmail]) -> Iterator[Flask]:
    app = make_app(BILLING_USER_INFO=user_info, BILLING_EMAIL_SENDER=sent.append)
    with app.app_context():
        yield app


@pytest.fixture
def team(billing: ProfileBilling) -> str:
    """A team on the starter plan (5 seats) with an owner, an admin and a member."""
    service = billing.accounts
    account = service.create_team(OWNER, "Acme", key="acme")
    billing.change_plan(OWNER, "starter", account_id=account.id)
    service.add_member(OWNER, account.id, ADMIN, Role.ADMIN)
    service.add_member(OWNER, account.id, MEMBER, Role.MEMBER)
    return account.id


def stored(account_id: str) -> dict[str, Any]:
    """Everything of the team the API could change, as the database has it."""
    engine = get_state().runtime.engine
    with engine.connect() as connection:
        name = connection.execute(
            select(accounts.c.name).where(accounts.c.id == account_id)
        ).scalar_one_or_none()
        members = connection.execute(
            select(account_members.c.user_id, account_members.c.role).where(
                account_members.c.account_id == account_id
            )
        ).all()
        caps = connection.execute(
            select(member_caps.c.user_id, member_caps.c.metric, member_caps.c.cap).where(
                member_caps.c.account_id == account_id
            )
        ).all()
        invited = connection.execute(
            select(
                invitations.c.id,
                invitations.c.email,
                invitations.c.revoked_at,
                invitations.c.accepted_at,
            ).where(invitations.c.account_id == account_id)
        ).all()
    return {
        "name": name,
        "members": dict(sorted((row.user_id, row.role) for row in members)),
        "caps": sorted(tuple(row) for row in caps),
        "invitations": sorted(tuple(row) for row in invited),
    }


def call(client: FlaskClient, method: str, path: str, user: str | None, body: Any = None) -> Any:
    headers = as_user(user) if user is not None else {"Accept": "application/json"}
    return client.open(f"/api{path}", method=method, json=body, headers=headers)


def answered(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.get_json()
    body = response.get_json()
    assert body["success"] is True
    return body["data"]


def refused(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_json()
    body: dict[str, Any] = response.get_json()
    assert body["success"] is False
    assert body["error"] == code
    return body


def field_errors(response: Any) -> dict[str, Any]:
    fields: dict[str, Any] = refused(response, 422, "VALIDATION_ERROR")["details"]["fields"]
    return fields


# Every endpoint, with a valid body, for the checks that run over all of them. ``member`` is
# whom a write names (a member's id in the URL), so that only the caller's rights decide.
def endpoints(team: str, invitation_id: str = "none") -> list[tuple[str, str, Any]]:
    return [
        ("GET", f"/accounts/{team}", None),
        ("PATCH", f"/accounts/{team}", {"name": "Renamed"}),
        ("PATCH", f"/accounts/{team}/members/{MEMBER}", {"role": "admin"}),
        ("DELETE", f"/accounts/{team}/members/{MEMBER}", None),
        ("POST", f"/accounts/{team}/transfer", {"user_id": MEMBER}),
        ("PUT", f"/accounts/{team}/caps/{MEMBER}/{METRIC}", {"cap": 1}),
        ("POST", f"/accounts/{team}/invitations", {"email": "new@example.com", "role": "member"}),
        ("DELETE", f"/accounts/{team}/invitations/{invitation_id}", None),
    ]


# -- the caller's accounts ----------------------------------------------------------------------


def test_the_list_has_the_personal_account_first_and_marks_the_current_one(
    client: FlaskClient, billing: ProfileBilling, team: str
) -> None:
    data = answered(call(client, "GET", "/accounts", ADMIN))

    assert data == {
        "accounts": [
            {
                "id": "user:admin-1",
                "kind": "personal",
                "name": None,
                "role": "owner",
                "current": True,
            },
            {"id": team, "kind": "team", "name": "Acme", "role": "admin", "current": False},
        ],
        "current": "user:admin-1",
    }

    @billing.account_loader
    def from_header(user_id: str) -> str | None:
        return request.headers.get("X-Account")

    chosen = client.get("/api/accounts", headers=as_user(ADMIN, **{"X-Account": team}))
    assert answered(chosen)["current"] == team
    assert [a["current"] for a in answered(chosen)["accounts"]] == [False, True]
    # A stranger sees only their own account.
    assert [a["id"] for a in answered(call(client, "GET", "/accounts", STRANGER))["accounts"]] == [
        "user:stranger-1"
    ]


def test_creating_a_team_makes_the_caller_its_owner(client: FlaskClient) -> None:
    data = answered(
        call(client, "POST", "/accounts", "founder", {"name": " Rocket ", "key": "rkt"}), 201
    )

    account = data["account"]
    assert (account["id"], account["kind"], account["name"], account["role"]) == (
        "team:rkt",
        "team",
        "Rocket",
        "owner",
    )
    assert account["members"][0]["user_id"] == "founder"
    assert stored("team:rkt")["members"] == {"founder": "owner"}
    random_key = answered(call(client, "POST", "/accounts", "founder", {"name": "Two"}), 201)
    assert random_key["account"]["id"].startswith("team:")
    taken = call(client, "POST", "/accounts", "other", {"name": "Mine", "key": "rkt"})
    refused(taken, 409, "MEMBERSHIP_CONFLICT")
    assert stored("team:rkt")["members"] == {"founder": "owner"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 121}, "name"),
        ({"name": 5}, "name"),
        ({"name": "Ok", "key": "no spaces"}, "key"),
        ({"name": "Ok", "key": "k" * 65}, "key"),
        ({"name": "Ok", "owner": "someone-else"}, "owner"),
    ],
)
def test_a_team_body_is_validated(client: FlaskClient, body: Any, field: str) -> None:
    response = call(client, "POST", "/accounts", "founder", body)
    assert field in field_errors(response)
    assert [a["id"] for a in answered(call(client, "GET", "/accounts", "founder"))["accounts"]] == [
        "user:founder"
    ]


# -- reading an account -------------------------------------------------------------------------


def test_a_manager_sees_the_whole_team(
    client: FlaskClient, billing: ProfileBilling, team: str, clock: Clock
) -> None:
    billing.accounts.set_cap(OWNER, team, MEMBER, METRIC, 3)
    billing.accounts.invite(OWNER, team, "new@example.com", Role.ADMIN)
    billing.consume(MEMBER, METRIC, 2, account_id=team)
    billing.consume(ADMIN, METRIC, 1, account_id=team)

    account = answered(call(client, "GET", f"/accounts/{team}", ADMIN))["account"]

    assert (account["kind"], account["name"], account["role"]) == ("team", "Acme", "admin")
    assert account["plan"] == {"id": "starter", "name": "Starter"}
    assert account["seats"] == {"seats": 5, "members": 3, "pending_invitations": 1, "free": 1}
    assert {m["user_id"]: (m["role"], m["email"], m["name"]) for m in account["members"]} == {
        OWNER: ("owner", "owner-1@example.com", "Owner-1"),
        ADMIN: ("admin", "admin-1@example.com", "Admin-1"),
        MEMBER: ("member", "member-1@example.com", "Member-1"),
    }
    assert all(datetime.fromisoformat(m["joined_at"]) for m in account["members"])
    assert account["caps"] == [{"user_id": MEMBER, "metric": METRIC, "cap": 3}]
    assert [(i["email"], i["role"]) for i in account["invitations"]] == [
        ("new@example.com", "admin")
    ]
    assert account["usage"]["pool"][METRIC]["used"] == 3
    members_usage = account["usage"]["members"]
    assert (members_usage[MEMBER][METRIC], members_usage[ADMIN][METRIC]) == (2, 1)


def test_a_member_sees_the_pool_and_only_their_own(
    client: FlaskClient, billing: ProfileBilling, team: str
) -> None:
    billing.accounts.set_cap(OWNER, team, MEMBER, METRIC, 3)
    billing.accounts.set_cap(OWNER, team, ADMIN, METRIC, 7)
    billing.accounts.invite(OWNER, team, "new@example.com")
    billing.consume(MEMBER, METRIC, 2, account_id=team)
    billing.consume(ADMIN, METRIC, 1, account_id=team)

    account = answered(call(client, "GET", f"/accounts/{team}", MEMBER))["account"]

    assert account["role"] == "member"
    assert account["invitations"] is None
    assert account["caps"] == [{"user_id": MEMBER, "metric": METRIC, "cap": 3}]
    assert account["usage"]["pool"][METRIC]["used"] == 3
    assert list(account["usage"]["members"]) == [MEMBER]
    assert account["usage"]["members"][MEMBER][METRIC] == 2


def test_the_personal_account_reads_like_a_team_of_one(
    client: FlaskClient, billing: ProfileBilling
) -> None:
    billing.consume("solo", METRIC, 2)

    account = answered(call(client, "GET", "/accounts/user:solo", "solo"))["account"]

    assert (account["kind"], account["name"], account["role"]) == ("personal", None, "owner")
    assert account["seats"] is None
    assert account["invitations"] is None
    assert account["members"] == [
        {
            "user_id": "solo",
            "role": "owner",
            "joined_at": None,
            "name": "Solo",
            "email": "solo@example.com",
        }
    ]
    assert account["usage"]["pool"][METRIC]["used"] == 2
    assert account["usage"]["members"] == {"solo": {METRIC: 2, "export": 0}}


# -- nobody acts for an account they do not belong to, nor beyond their role ---------------------


def test_a_stranger_gets_404_on_every_endpoint_and_changes_nothing(
    client: FlaskClient, billing: ProfileBilling, team: str
) -> None:
    issued = billing.accounts.invite(OWNER, team, "pending@example.com")
    before = stored(team)

    for method, path, body in endpoints(team, issued.invitation.id):
        response = call(client, method, path, STRANGER, body)
        refused(response, 404, "ACCOUNT_NOT_FOUND")
        assert response.get_json()["details"] == {}, (method, path)
    # Another user's personal account, and accounts that do not exist, answer alike.
    for path in ("/accounts/user:owner-1", "/accounts/team:nope", "/accounts/nonsense"):
        refused(call(client, "GET", path, STRANGER), 404, "ACCOUNT_NOT_FOUND")
    refused(
        call(client, "PATCH", "/accounts/user:owner-1", STRANGER, {"name": "Mine"}),
        404,
        "ACCOUNT_NOT_FOUND",
    )

    assert stored(team) == before


def test_a_plain_member_gets_403_on_every_managers_endpoint_and_changes_nothing(
    client: FlaskClient, billing: ProfileBilling, team: str
) -> None:
    issued = billing.accounts.invite(OWNER, team, "pending@example.com")
    before = stored(team)
    writes = [
        ("PATCH", f"/accounts/{team}", {"name": "Renamed"}),
        ("PATCH", f"/accounts/{team}/members/{ADMIN}", {"role": "member"}),
        ("DELETE", f"/accounts/{team}/members/{ADMIN}", None),
        ("POST", f"/accounts/{team}/transfer", {"user_id": ADMIN}),
        ("PUT", f"/accounts/{team}/caps/{MEMBER}/{METRIC}", {"cap": 1000}),
        ("POST", f"/accounts/{team}/invitations", {"email": "x@example.com", "role": "member"}),
        ("DELETE", f"/accounts/{team}/invitations/{issued.invitation.id}", None),
    ]

    for method, path, body in writes:
        refused(call(client, method, path, MEMBER, body), 403, "ACCOUNT_FORBIDDEN")

    assert stored(team) == before


def test_an_admin_cannot_transfer_nor_touch_an_owner(client: FlaskClient, team: str) -> None:
    before = stored(team)
    for method, path, body in [
        ("POST", f"/accounts/{team}/transfer", {"user_id": MEMBER}),
        ("PATCH", f"/accounts/{team}/members/{MEMBER}", {"role": "owner"}),
        ("PATCH", f"/accounts/{team}/members/{OWNER}", {"role": "member"}),
        ("DELETE", f"/accounts/{team}/members/{OWNER}", None),
    ]:
        refused(call(client, method, path, ADMIN, body), 403, "ACCOUNT_FORBIDDEN")
    assert stored(team) == before


def test_every_endpoint_needs_a_login(client: FlaskClient, team: str) -> None:
    before = stored(team)
    for method, path, body in [
        ("GET", "/accounts", None),
        ("POST", "/accounts", {"name": "Anon"}),
        *endpoints(team),
        ("POST", "/invitations/accept", {"token": "x"}),
        ("GET", "/accounts/team:a%00b", None),  # an id no row can hold: still 401 first
    ]:
        refused(call(client, method, path, None, body), 401, "UNAUTHORIZED")
    assert stored(team) == before


# -- changes ----------------------------------------------------------------------------------


def test_a_manager_renames_the_team(client: FlaskClient, team: str) -> None:
    account = answered(call(client, "PATCH", f"/accounts/{team}", ADMIN, {"name": "Acme Ltd"}))
    assert account["account"]["name"] == "Acme Ltd"
    assert stored(team)["name"] == "Acme Ltd"
    for body in ({}, {"name": ""}, {"name": "  "}, {"name": "x" * 121}, {"name": "A", "id": "x"}):
        assert field_errors(call(client, "PATCH", f"/accounts/{team}", OWNER, body))
    assert stored(team)["name"] == "Acme Ltd"


def test_roles_are_changed_within_the_rules(client: FlaskClient, team: str) -> None:
    data = answered(
        call(client, "PATCH", f"/accounts/{team}/members/{MEMBER}", ADMIN, {"role": "admin"})
    )
    assert {m["user_id"]: m["role"] for m in data["account"]["members"]}[MEMBER] == "admin"
    assert stored(team)["members"][MEMBER] == "admin"

    last_owner = call(
        client, "PATCH", f"/accounts/{team}/members/{OWNER}", OWNER, {"role": "admin"}
    )
    refused(last_owner, 409, "MEMBERSHIP_CONFLICT")
    nobody = call(client, "PATCH", f"/accounts/{team}/members/{STRANGER}", OWNER, {"role": "admin"})
    refused(nobody, 409, "MEMBERSHIP_CONFLICT")
    for body in ({}, {"role": "god"}, {"role": None}, {"role": "admin", "user_id": OWNER}):
        errors = field_errors(
            call(client, "PATCH", f"/accounts/{team}/members/{MEMBER}", OWNER, body)
        )
        assert set(errors) <= {"role", "user_id"}
        assert errors
    assert stored(team)["members"] == {OWNER: "owner", ADMIN: "admin", MEMBER: "admin"}


def test_a_manager_removes_a_member_and_frees_the_seat(client: FlaskClient, team: str) -> None:
    data = answered(call(client, "DELETE", f"/accounts/{team}/members/{MEMBER}", ADMIN))

    assert data["removed"] == MEMBER
    assert data["account"]["seats"]["members"] == 2
    assert data["account"]["seats"]["free"] == 3
    assert MEMBER not in stored(team)["members"]
    refused(call(client, "GET", f"/accounts/{team}", MEMBER), 404, "ACCOUNT_NOT_FOUND")
    unknown_field = call(client, "DELETE", f"/accounts/{team}/members/{ADMIN}", OWNER, {"x": 1})
    assert "x" in field_errors(unknown_field)


def test_deleting_oneself_is_leaving_and_the_last_owner_cannot(
    client: FlaskClient, team: str
) -> None:
    data = answered(call(client, "DELETE", f"/accounts/{team}/members/{MEMBER}", MEMBER))
    assert data == {"removed": MEMBER, "account": None}
    assert MEMBER not in stored(team)["members"]

    last = call(client, "DELETE", f"/accounts/{team}/members/{OWNER}", OWNER)
    assert refused(last, 409, "MEMBERSHIP_CONFLICT")["details"] == {"reason": "last_owner"}
    assert stored(team)["members"][OWNER] == "owner"


def test_an_owner_transfers_the_ownership(client: FlaskClient, team: str) -> None:
    data = answered(call(client, "POST", f"/accounts/{team}/transfer", OWNER, {"user_id": MEMBER}))

    assert data["account"]["role"] == "admin"
    assert stored(team)["members"] == {OWNER: "admin", ADMIN: "admin", MEMBER: "owner"}
    refused(
        call(client, "POST", f"/accounts/{team}/transfer", MEMBER, {"user_id": STRANGER}),
        409,
        "MEMBERSHIP_CONFLICT",
    )
    for body in ({}, {"user_id": ""}, {"user_id": 7}, {"user_id": OWNER, "role": "owner"}):
        assert field_errors(call(client, "POST", f"/accounts/{team}/transfer", MEMBER, body))
    assert stored(team)["members"] == {OWNER: "admin", ADMIN: "admin", MEMBER: "owner"}


def test_a_manager_sets_and_clears_a_members_cap(client: FlaskClient, team: str) -> None:
    path = f"/accounts/{team}/caps/{MEMBER}/{METRIC}"
    data = answered(call(client, "PUT", path, ADMIN, {"cap": 4}))
    assert data["account"]["caps"] == [{"user_id": MEMBER, "metric": METRIC, "cap": 4}]
    assert [(u, m, c) for u, m, c in stored(team)["caps"]] == [(MEMBER, METRIC, 4)]

    answered(call(client, "PUT", path, ADMIN, {"cap": None}))
    assert stored(team)["caps"] == []

    for body in ({}, {"cap": -1}, {"cap": "5"}, {"cap": 1.5}, {"cap": True}, {"cap": 2**63}):
        assert "cap" in field_errors(call(client, "PUT", path, OWNER, body))
    unknown_metric = call(client, "PUT", f"/accounts/{team}/caps/{MEMBER}/nope", OWNER, {"cap": 1})
    assert "metric" in field_errors(unknown_metric)
    not_member = call(
        client, "PUT", f"/accounts/{team}/caps/{STRANGER}/{METRIC}", OWNER, {"cap": 1}
    )
    refused(not_member, 409, "MEMBERSHIP_CONFLICT")
    assert stored(team)["caps"] == []


# -- invitations ------------------------------------------------------------------------------


def invite(client: FlaskClient, team: str, email: str, user: str = OWNER) -> dict[str, Any]:
    body = {"email": email, "role": "member"}
    data: dict[str, Any] = answered(
        call(client, "POST", f"/accounts/{team}/invitations", user, body), 201
    )
    return data


def token_of(data: dict[str, Any]) -> str:
    """The token of an invitation's link: the page's path ends with it, the API's has it in its
    query."""
    url = urlsplit(data["accept_url"])
    query = parse_qs(url.query)
    return query["token"][0] if "token" in query else url.path.rsplit("/", 1)[1]


def test_an_invitation_is_emailed_with_its_link_and_accepted_by_its_address(
    client: FlaskClient, team: str, sent: list[OutgoingEmail]
) -> None:
    data = invite(client, team, "Newbie@Example.com", user=ADMIN)

    invitation = data["invitation"]
    assert (invitation["email"], invitation["role"], invitation["invited_by"]) == (
        "Newbie@Example.com",
        "member",
        ADMIN,
    )
    assert data["emailed"] is True
    assert urlsplit(data["accept_url"]).path.startswith("/profile/invitations/")
    assert [email.to for email in sent] == ["Newbie@Example.com"]
    assert data["accept_url"] in sent[0].text
    assert "Admin-1" in sent[0].text

    # The address is compared without case: the host knows the user as newbie@example.com.
    joined = answered(
        call(client, "POST", "/invitations/accept", "newbie", {"token": token_of(data)})
    )

    assert (joined["account"]["id"], joined["account"]["role"]) == (team, "member")
    assert stored(team)["members"]["newbie"] == "member"


def test_an_invitation_answers_even_when_no_email_can_be_sent(
    make_app: AppFactory, clock: Clock
) -> None:
    app = make_app(BILLING_USER_INFO=user_info, BILLING_EMAIL_SENDER=False)
    with app.app_context():
        team = get_state(app).accounts.create_team(OWNER, "Quiet").id
        data = invite(app.test_client(), team, "quiet@example.com")
    assert data["emailed"] is False
    assert token_of(data)


def test_without_the_page_the_link_is_the_apis_own(make_app: AppFactory) -> None:
    app = make_app(BILLING_USER_INFO=user_info, BILLING_PROFILE_PAGE_ENABLED=False)
    with app.app_context():
        team = get_state(app).accounts.create_team(OWNER, "Headless").id
        data = invite(app.test_client(), team, "paged@example.com")
    assert urlsplit(data["accept_url"]).path == "/api/invitations/accept"
    client = app.test_client()
    joined = answered(
        call(client, "POST", "/invitations/accept", "paged", {"token": token_of(data)})
    )
    assert joined["account"]["id"] == team


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "email"),
        ({"email": "not-an-address"}, "email"),
        ({"email": "a@b.co", "role": "owner"}, "role"),
        ({"email": "a@b.co", "role": "boss"}, "role"),
        ({"email": "x" * 320 + "@example.com"}, "email"),
        ({"email": "a@b.co", "account_id": "team:other"}, "account_id"),
    ],
)
def test_an_invitation_body_is_validated(
    client: FlaskClient, team: str, body: Any, field: str
) -> None:
    before = stored(team)
    assert field in field_errors(call(client, "POST", f"/accounts/{team}/invitations", OWNER, body))
    assert stored(team) == before


def test_no_invitation_beyond_the_seats(client: FlaskClient, team: str) -> None:
    invite(client, team, "four@example.com")
    invite(client, team, "five@example.com")
    before = stored(team)

    full = call(
        client, "POST", f"/accounts/{team}/invitations", OWNER, {"email": "six@example.com"}
    )

    assert refused(full, 409, "SEATS_EXHAUSTED")["details"] == {
        "seats": 5,
        "members": 3,
        "pending_invitations": 2,
    }
    assert stored(team) == before


def test_a_manager_revokes_an_invitation_which_then_cannot_be_accepted(
    client: FlaskClient, team: str
) -> None:
    data = invite(client, team, "late@example.com")
    invitation_id = data["invitation"]["id"]

    revoked = answered(
        call(client, "DELETE", f"/accounts/{team}/invitations/{invitation_id}", ADMIN)
    )

    assert revoked["revoked"] == invitation_id
    assert revoked["account"]["invitations"] == []
    assert revoked["account"]["seats"]["pending_invitations"] == 0
    again = call(client, "DELETE", f"/accounts/{team}/invitations/{invitation_id}", ADMIN)
    refused(again, 404, "INVITATION_INVALID")
    before = stored(team)
    accepted = call(client, "POST", "/invitations/accept", "late", {"token": token_of(data)})
    refused(accepted, 404, "INVITATION_INVALID")
    assert stored(team) == before


def test_an_invitation_is_refused_to_another_address_used_once_and_expires(
    client: FlaskClient, team: str, clock: Clock
) -> None:
    token = token_of(invite(client, team, "right@example.com"))
    before = stored(team)

    wrong = call(client, "POST", "/invitations/accept", "wrong", {"token": token})
    refused(wrong, 404, "INVITATION_INVALID")
    assert stored(team) == before

    answered(call(client, "POST", "/invitations/accept", "right", {"token": token}))
    after = stored(team)
    replay = call(client, "POST", "/invitations/accept", "right", {"token": token})
    refused(replay, 404, "INVITATION_INVALID")
    assert stored(team) == after

    expiring = token_of(invite(client, team, "slow@example.com"))
    clock.advance(hours=72, seconds=1)
    before = stored(team)
    expired = call(client, "POST", "/invitations/accept", "slow", {"token": expiring})
    refused(expired, 404, "INVITATION_INVALID")
    assert stored(team) == before
    refused(
        call(client, "POST", "/invitations/accept", "slow", {"token": "made-up"}),
        404,
        "INVITATION_INVALID",
    )


def test_an_accept_body_is_validated(client: FlaskClient) -> None:
    for body in (
        {},
        {"token": ""},
        {"token": 5},
        {"token": "x" * 201},
        {"token": "t", "role": "owner"},
    ):
        assert field_errors(call(client, "POST", "/invitations/accept", "someone", body))


# -- CSRF: writes a browser's session cookie authenticates --------------------------------------


def test_every_cookie_authenticated_write_needs_the_csrf_token(
    app: Flask, billing: ProfileBilling, team: str
) -> None:
    issued = billing.accounts.invite(OWNER, team, "owner-1@example.com")
    client = app.test_client()
    token = client.post(f"/session-login/{OWNER}").get_json()["csrf_token"]
    before = stored(team)
    writes = [
        ("POST", "/accounts", {"name": "Forged"}),
        *[(m, p, b) for m, p, b in endpoints(team, issued.invitation.id) if m != "GET"],
        ("POST", "/invitations/accept", {"token": issued.token}),
    ]

    for method, path, body in writes:
        response = client.open(f"/api{path}", method=method, json=body)
        refused(response, 400, "CSRF_FAILED")

    assert stored(team) == before
    assert [a["id"] for a in answered(client.get("/api/accounts"))["accounts"]] == [
        "user:owner-1",
        team,
    ]
    renamed = client.patch(
        f"/api/accounts/{team}", json={"name": "With token"}, headers={"X-CSRFToken": token}
    )
    assert answered(renamed)["account"]["name"] == "With token"


# -- the existing endpoints act for the request's account ---------------------------------------


def test_the_subscription_and_usage_follow_the_hosts_account_loader(
    client: FlaskClient, billing: ProfileBilling, team: str
) -> None:
    billing.consume(MEMBER, METRIC, 4, account_id=team)
    billing.consume(MEMBER, METRIC, 1)  # the member's own account, which the team's view omits

    @billing.account_loader
    def the_team(user_id: str) -> str | None:
        return team if user_id == MEMBER else None

    headers = as_user(MEMBER)
    current = answered(client.get("/api/subscription/current", headers=headers))["subscription"]
    usage = answered(client.get("/api/subscription/usage", headers=headers))
    own = answered(client.get("/api/subscription/current", headers=as_user(STRANGER)))

    assert current["plan"]["plan_type"] == "starter"
    assert current["usage"]["analyses"]["used"] == 4  # the API's name of the metric
    assert usage["subscription"]["plan"]["plan_type"] == "starter"
    assert usage["total_usage"][METRIC] == 4
    assert own["subscription"]["plan"]["plan_type"] == "free"


# -- text no row can hold -----------------------------------------------------------------------


def test_a_nul_or_a_lone_surrogate_is_a_field_error_not_a_database_fault(
    client: FlaskClient, team: str
) -> None:
    before = stored(team)
    for text in ("a\x00b", "a\ud800b"):
        for method, path, body, field in [
            ("POST", "/accounts", {"name": text}, "name"),
            ("PATCH", f"/accounts/{team}", {"name": text}, "name"),
            ("POST", f"/accounts/{team}/transfer", {"user_id": text}, "user_id"),
            ("POST", f"/accounts/{team}/invitations", {"email": f"{text}@example.com"}, "email"),
            ("POST", "/invitations/accept", {"token": text}, "token"),
        ]:
            assert field in field_errors(call(client, method, path, OWNER, body)), (path, text)
    for method, path, body, field in [
        ("GET", "/accounts/team:a%00b", None, "account_id"),
        ("PATCH", f"/accounts/{team}/members/a%00b", {"role": "admin"}, "user_id"),
        ("DELETE", f"/accounts/{team}/members/a%00b", None, "user_id"),
        ("PUT", f"/accounts/{team}/caps/a%00b/{METRIC}", {"cap": 1}, "user_id"),
        ("DELETE", f"/accounts/{team}/invitations/a%00b", None, "invitation_id"),
        ("GET", "/accounts/team:" + "x" * 400, None, "account_id"),
    ]:
        assert field in field_errors(call(client, method, path, OWNER, body)), path
    assert stored(team) == before


# -- where the API is mounted -------------------------------------------------------------------


def test_the_accounts_api_can_be_moved_renamed_or_switched_off(make_app: AppFactory) -> None:
    moved = make_app(BILLING_ACCOUNTS_API_PREFIX="/v2/", BILLING_ACCOUNTS_API_NAME="teams_api")
    assert "teams_api" in moved.blueprints
    answer = moved.test_client().get("/v2/accounts", headers=as_user("mover"))
    assert answered(answer)["current"] == "user:mover"
    document = moved.test_client().get("/api/billing/openapi.json").get_json()
    assert {"/v2/accounts", "/v2/invitations/accept"} <= set(document["paths"])

    off = make_app(BILLING_ACCOUNTS_API_ENABLED=False)
    assert off.test_client().get("/api/accounts", headers=as_user("mover")).status_code == 404
    document = off.test_client().get("/api/billing/openapi.json").get_json()
    assert not [path for path in document["paths"] if "accounts" in path or "invitations" in path]
