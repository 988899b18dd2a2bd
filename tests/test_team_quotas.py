"""A team's pool and its members' caps: one charge moves both or neither, a refusal names the limit
that refused with its numbers, a refund gives both back, and only a member can spend.

Through the functions and through a guarded route whose account the host's ``account_loader``
chooses, on both databases (on PostgreSQL with calendar months the charge is one statement).
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from sqlalchemy import func, select

from flask_profile_billing import ProfileBilling, QuotaExceeded
from flask_profile_billing.domain.accounts import Role, UnknownAccountError
from flask_profile_billing.state import get_state
from flask_profile_billing.store.models import (
    accounts,
    member_counters,
    usage_counters,
    usage_events,
)
from tests.support.host_app import Clock, as_user

OWNER, CAPPED, FREE_RIDER, STRANGER = "owner-1", "capped-1", "member-2", "stranger-1"
POOL = 10  # the team's plan limit of analyses, set below


@pytest.fixture
def team(app: Flask, billing: ProfileBilling) -> str:
    account = billing.accounts.create_team(OWNER, "Acme")
    billing.change_plan(OWNER, "starter", account_id=account.id)
    billing.accounts.add_member(OWNER, account.id, CAPPED, Role.MEMBER)
    billing.accounts.add_member(OWNER, account.id, FREE_RIDER, Role.MEMBER)
    billing.accounts.set_cap(OWNER, account.id, CAPPED, "analysis", 3)
    return account.id


@pytest.fixture
def make_small_app(make_app: Any) -> Any:
    """An app whose starter plan has a pool of POOL analyses."""

    def factory() -> Flask:
        app: Flask = make_app(BILLING_PLANS=_plans())
        return app

    return factory


@pytest.fixture
def app(make_small_app: Any) -> Any:
    app = make_small_app()
    with app.app_context():
        yield app


def _plans() -> dict[str, Any]:
    return {
        "metrics": {"analysis": {"kind": "periodic"}, "export": {"kind": "periodic"}},
        "plans": [
            {"code": "free", "name": "Free", "default": True, "limits": {"analysis": 2}},
            {
                "code": "starter",
                "name": "Starter",
                "price_monthly": 10,
                "limits": {"analysis": POOL},
                "seats": 5,
            },
        ],
    }


def counters(account_id: str) -> tuple[int, dict[str, int], int]:
    """The pool, each member's counter and the number of usage events, as stored."""
    engine = get_state().runtime.engine
    with engine.connect() as connection:
        pool = connection.execute(
            select(func.coalesce(func.sum(usage_counters.c.used), 0)).where(
                usage_counters.c.account_id == account_id
            )
        ).scalar_one()
        members = dict(
            connection.execute(
                select(member_counters.c.user_id, member_counters.c.used).where(
                    member_counters.c.account_id == account_id
                )
            ).all()
        )
        events = connection.execute(
            select(func.count()).where(usage_events.c.account_id == account_id)
        ).scalar_one()
    return int(pool), {k: int(v) for k, v in members.items() if v}, int(events)


def test_a_members_charge_moves_the_pool_and_their_counter(
    billing: ProfileBilling, team: str
) -> None:
    reservation = billing.consume(CAPPED, "analysis", account_id=team)
    billing.consume(FREE_RIDER, "analysis", 2, account_id=team)
    assert counters(team) == (3, {CAPPED: 1, FREE_RIDER: 2}, 2)
    assert reservation.actor_user_id == CAPPED
    engine = get_state().runtime.engine
    with engine.connect() as connection:
        actors = set(connection.execute(select(usage_events.c.actor_user_id)).scalars())
    assert actors == {CAPPED, FREE_RIDER}


def test_the_members_cap_refuses_and_says_so(billing: ProfileBilling, team: str) -> None:
    billing.consume(CAPPED, "analysis", 3, account_id=team)
    with pytest.raises(QuotaExceeded) as refused:
        billing.consume(CAPPED, "analysis", account_id=team)
    details = refused.value.details()
    assert details["scope"] == "member"
    assert details["member"] == {"cap": 3, "used": 3, "remaining": 0}
    assert details["pool"] == {"limit": POOL, "used": 3, "remaining": POOL - 3}
    assert (details["limit"], details["used"]) == (3, 3)
    # The pool was not touched, and another member still spends from it.
    assert counters(team) == (3, {CAPPED: 3}, 1)
    billing.consume(FREE_RIDER, "analysis", account_id=team)


def test_the_pool_refuses_every_member_and_says_so(billing: ProfileBilling, team: str) -> None:
    billing.consume(FREE_RIDER, "analysis", POOL - 1, account_id=team)
    with pytest.raises(QuotaExceeded) as refused:
        billing.consume(CAPPED, "analysis", 2, account_id=team)
    details = refused.value.details()
    assert details["scope"] == "pool"
    assert details["pool"] == {"limit": POOL, "used": POOL - 1, "remaining": 1}
    assert details["member"] == {"cap": 3, "used": 0, "remaining": 3}
    assert counters(team) == (POOL - 1, {FREE_RIDER: POOL - 1}, 1)


def test_a_charge_above_the_cap_or_the_pool_in_one_go_is_refused_whole(
    billing: ProfileBilling, team: str
) -> None:
    with pytest.raises(QuotaExceeded) as by_cap:
        billing.consume(CAPPED, "analysis", 4, account_id=team)
    assert by_cap.value.details()["scope"] == "member"
    with pytest.raises(QuotaExceeded) as by_pool:
        billing.consume(FREE_RIDER, "analysis", POOL + 1, account_id=team)
    assert by_pool.value.details()["scope"] == "pool"
    assert counters(team) == (0, {}, 0)


def test_a_stranger_cannot_spend_from_the_team(billing: ProfileBilling, team: str) -> None:
    with pytest.raises(UnknownAccountError):
        billing.consume(STRANGER, "analysis", account_id=team)
    billing.accounts.remove_member(OWNER, team, FREE_RIDER)
    with pytest.raises(UnknownAccountError):
        billing.consume(FREE_RIDER, "analysis", account_id=team)
    with pytest.raises(UnknownAccountError):
        billing.consume(STRANGER, "analysis", account_id="user:owner-1")
    assert counters(team) == (0, {}, 0)


def test_a_refund_gives_back_the_pool_and_the_members_counter(
    billing: ProfileBilling, team: str
) -> None:
    billing.consume(CAPPED, "analysis", 2, account_id=team)
    with pytest.raises(RuntimeError), billing.charge(CAPPED, "analysis", account_id=team):
        raise RuntimeError("the work failed")
    assert counters(team) == (2, {CAPPED: 2}, 1)
    billing.consume(CAPPED, "analysis", account_id=team)  # the cap's last unit is back


def test_a_new_period_starts_every_counter_from_zero(
    billing: ProfileBilling, team: str, clock: Clock
) -> None:
    billing.consume(CAPPED, "analysis", 3, account_id=team)
    clock.advance(days=31)
    billing.change_plan(OWNER, "starter", account_id=team)  # the paid month is over
    billing.consume(CAPPED, "analysis", 3, account_id=team)
    assert billing.allowance(CAPPED, "analysis", account_id=team).used == 3


def test_the_personal_account_is_written_once_on_first_access(
    billing: ProfileBilling,
) -> None:
    billing.consume("solo-1", "analysis")
    billing.consume("solo-1", "analysis")
    engine = get_state().runtime.engine
    with engine.connect() as connection:
        rows = connection.execute(
            select(accounts.c.kind, accounts.c.created_by).where(accounts.c.id == "user:solo-1")
        ).all()
    assert [tuple(row) for row in rows] == [("personal", "solo-1")]


# -- through a guarded route ------------------------------------------------------------------


@pytest.fixture
def client(app: Flask, billing: ProfileBilling) -> FlaskClient:
    @billing.account_loader
    def account_from_header(user_id: str) -> str | None:
        return request.headers.get("X-Account")

    return app.test_client()


def test_a_guard_charges_the_account_the_host_chooses(
    client: FlaskClient, billing: ProfileBilling, team: str
) -> None:
    for _ in range(3):
        assert (
            client.post("/analyze", headers=as_user(CAPPED, **{"X-Account": team})).status_code
            == 200
        )
    refused = client.post("/analyze", headers=as_user(CAPPED, **{"X-Account": team}))
    assert refused.status_code == 429
    body = refused.get_json()
    assert body["details"]["scope"] == "member"
    assert body["details"]["member"]["cap"] == 3
    assert refused.headers["X-Quota-Remaining"] == "0"
    # Without the header the request spends from the user's personal account.
    assert client.post("/analyze", headers=as_user(CAPPED)).status_code == 200
    assert counters(team) == (3, {CAPPED: 3}, 3)
    assert counters("user:capped-1")[0] == 1


def test_a_guard_answers_404_for_an_account_the_user_is_not_in(
    client: FlaskClient, team: str
) -> None:
    for account in (team, "user:owner-1", "team:missing"):
        answer = client.post("/analyze", headers=as_user(STRANGER, **{"X-Account": account}))
        assert answer.status_code == 404
        assert answer.get_json()["error"] == "ACCOUNT_NOT_FOUND"
    assert counters(team) == (0, {}, 0)


def test_the_refusal_page_names_the_members_cap_and_the_pool(
    client: FlaskClient, team: str
) -> None:
    headers = {"X-User": CAPPED, "X-Account": team, "Accept": "text/html"}
    for _ in range(3):
        client.post("/analyze", headers=headers)
    page = client.post("/analyze", headers=headers)
    assert page.status_code == 429
    text = page.get_data(as_text=True)
    assert "Your limit in this team is reached: 3" in text
    assert "Your limit in this team: 3 of 3 used." in text
    assert f"The team&#39;s plan: 3 of {POOL} used." in text


def test_the_profile_api_shows_the_billing_of_the_requests_account(
    client: FlaskClient, billing: ProfileBilling, team: str
) -> None:
    billing.consume(FREE_RIDER, "analysis", 4, account_id=team)
    as_team = client.get("/api/profile/me", headers=as_user(CAPPED, **{"X-Account": team}))
    assert as_team.status_code == 200
    body = as_team.get_json()["data"]
    assert body["plan"]["id"] == "starter"
    assert body["quotas"]["analysis"]["used"] == 4
    personal = client.get("/api/profile/me", headers=as_user(CAPPED)).get_json()["data"]
    assert personal["plan"]["id"] == "free"
    assert personal["quotas"]["analysis"]["used"] == 0
    # Read again after another member's charge: a team's read is never served stale.
    billing.consume(FREE_RIDER, "analysis", account_id=team)
    again = client.get("/api/profile/me", headers=as_user(CAPPED, **{"X-Account": team}))
    assert again.get_json()["data"]["quotas"]["analysis"]["used"] == 5


def test_a_members_guarded_charge_costs_one_statement_on_postgresql(
    client: FlaskClient, team: str, statements: list[str], database_url: str
) -> None:
    headers = as_user(CAPPED, **{"X-Account": team})
    assert client.post("/analyze", headers=headers).status_code == 200  # the period's rows
    statements.clear()

    assert client.post("/analyze", headers=headers).status_code == 200

    # PostgreSQL: membership, cap, both counters, the event and the day's total in one statement.
    # SQLite: one write transaction: BEGIN, membership and cap, subscription, event, the member's
    # counter, the pool, the day's total.
    expected = 1 if database_url.startswith("postgresql") else 7
    assert len(statements) == expected, statements
    assert counters(team) == (2, {CAPPED: 2}, 2)
