"""Accounts and their members: who may act for which account, roles, invitations, seats and caps.

Each rule is asked of the service a face calls, on both databases: a stranger's account answers as
an unknown one, an invitation is used once by its own address before it expires, every seat
counts (members and pending invitations), removing a member frees their seat in the same
transaction, and a team always keeps an owner.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask
from sqlalchemy import func, select

from flask_profile_billing import ProfileBilling
from flask_profile_billing.domain.accounts import (
    AccountPermissionError,
    InvitationError,
    MembershipError,
    Role,
    SeatsExhausted,
    TooManyMembersForPlan,
    UnknownAccountError,
    personal_account_id,
)
from flask_profile_billing.errors import InvalidRequest
from flask_profile_billing.state import get_state
from flask_profile_billing.store.models import account_members, invitations, subscriptions
from tests.support.host_app import Clock

OWNER, ADMIN, MEMBER, STRANGER = "owner-1", "admin-1", "member-1", "stranger-1"


@pytest.fixture
def team(billing: ProfileBilling) -> str:
    """A team on the starter plan (5 seats) with an owner, an admin and a member."""
    accounts = billing.accounts
    account = accounts.create_team(OWNER, "Acme")
    billing.change_plan(OWNER, "starter", account_id=account.id)
    accounts.add_member(OWNER, account.id, ADMIN, Role.ADMIN)
    accounts.add_member(OWNER, account.id, MEMBER, Role.MEMBER)
    return account.id


def members(billing: ProfileBilling, account_id: str) -> dict[str, str]:
    engine = get_state().runtime.engine
    with engine.connect() as connection:
        rows = connection.execute(
            select(account_members.c.user_id, account_members.c.role).where(
                account_members.c.account_id == account_id
            )
        )
        return {row.user_id: row.role for row in rows}


# -- who acts for which account ---------------------------------------------------------------


def test_every_user_acts_for_their_personal_account_by_default(billing: ProfileBilling) -> None:
    assert billing.accounts.resolve("u1") == personal_account_id("u1") == "user:u1"
    assert [a.id for a in billing.accounts.accounts_of("u1")] == ["user:u1"]


def test_a_stranger_cannot_act_for_a_team_or_another_users_personal_account(
    billing: ProfileBilling, team: str
) -> None:
    accounts = billing.accounts
    for account_id in (team, "user:owner-1", "team:nope", "nonsense"):
        with pytest.raises(UnknownAccountError):
            accounts.resolve(STRANGER, account_id)
        with pytest.raises(UnknownAccountError):
            accounts.team(STRANGER, account_id)
    assert accounts.resolve(MEMBER, team) == team


def test_a_member_sees_their_teams_with_their_role(billing: ProfileBilling, team: str) -> None:
    listed = billing.accounts.accounts_of(ADMIN)
    assert [(a.id, a.role) for a in listed] == [("user:admin-1", Role.OWNER), (team, Role.ADMIN)]
    assert listed[1].name == "Acme"


def test_a_member_sees_no_invitations_and_only_their_own_cap(
    billing: ProfileBilling, team: str
) -> None:
    accounts = billing.accounts
    accounts.set_cap(OWNER, team, MEMBER, "analysis", 3)
    accounts.set_cap(OWNER, team, ADMIN, "analysis", 7)
    accounts.invite(OWNER, team, "new@example.com")
    seen = accounts.team(MEMBER, team)
    assert seen.invitations == []
    assert seen.caps == {(MEMBER, "analysis"): 3}
    managed = accounts.team(ADMIN, team)
    assert len(managed.invitations) == 1
    assert managed.caps == {(MEMBER, "analysis"): 3, (ADMIN, "analysis"): 7}


# -- roles ------------------------------------------------------------------------------------


def test_a_member_cannot_manage_the_team(billing: ProfileBilling, team: str) -> None:
    accounts = billing.accounts
    with pytest.raises(AccountPermissionError):
        accounts.invite(MEMBER, team, "x@example.com")
    with pytest.raises(AccountPermissionError):
        accounts.set_cap(MEMBER, team, MEMBER, "analysis", 100)
    with pytest.raises(AccountPermissionError):
        accounts.change_role(MEMBER, team, MEMBER, Role.ADMIN)
    with pytest.raises(AccountPermissionError):
        accounts.remove_member(MEMBER, team, ADMIN)
    assert members(billing, team) == {OWNER: "owner", ADMIN: "admin", MEMBER: "member"}


def test_an_admin_cannot_make_or_remove_an_owner(billing: ProfileBilling, team: str) -> None:
    accounts = billing.accounts
    with pytest.raises(AccountPermissionError):
        accounts.change_role(ADMIN, team, MEMBER, Role.OWNER)
    with pytest.raises(AccountPermissionError):
        accounts.remove_member(ADMIN, team, OWNER)
    accounts.change_role(ADMIN, team, MEMBER, Role.ADMIN)
    assert members(billing, team)[MEMBER] == "admin"


def test_the_last_owner_can_neither_leave_nor_be_demoted(
    billing: ProfileBilling, team: str
) -> None:
    accounts = billing.accounts
    with pytest.raises(MembershipError) as leaving:
        accounts.leave(OWNER, team)
    assert leaving.value.details() == {"reason": "last_owner"}
    with pytest.raises(MembershipError):
        accounts.change_role(OWNER, team, OWNER, Role.ADMIN)
    assert members(billing, team)[OWNER] == "owner"


def test_ownership_is_transferred_to_a_member(billing: ProfileBilling, team: str) -> None:
    accounts = billing.accounts
    with pytest.raises(MembershipError):
        accounts.transfer_ownership(OWNER, team, STRANGER)
    accounts.transfer_ownership(OWNER, team, MEMBER)
    assert members(billing, team) == {OWNER: "admin", ADMIN: "admin", MEMBER: "owner"}
    accounts.leave(OWNER, team)
    assert OWNER not in members(billing, team)


def test_a_member_leaves_and_the_team_is_no_longer_theirs(
    billing: ProfileBilling, team: str
) -> None:
    billing.accounts.leave(MEMBER, team)
    with pytest.raises(UnknownAccountError):
        billing.accounts.resolve(MEMBER, team)


# -- seats ------------------------------------------------------------------------------------


def test_an_invitation_beyond_the_seats_is_refused_with_the_counts(
    billing: ProfileBilling, team: str
) -> None:
    accounts = billing.accounts  # starter: 5 seats, 3 members
    accounts.invite(OWNER, team, "a@example.com")
    accounts.invite(OWNER, team, "b@example.com")
    with pytest.raises(SeatsExhausted) as refused:
        accounts.invite(OWNER, team, "c@example.com")
    assert refused.value.details() == {"seats": 5, "members": 3, "pending_invitations": 2}
    # A new invitation to an invited address replaces the pending one: no seat more.
    accounts.invite(OWNER, team, "A@example.com")
    assert accounts.team(OWNER, team).seats.pending_invitations == 2


def test_removing_a_member_frees_their_seat_at_once(billing: ProfileBilling, team: str) -> None:
    accounts = billing.accounts
    accounts.invite(OWNER, team, "a@example.com")
    accounts.invite(OWNER, team, "b@example.com")
    with pytest.raises(SeatsExhausted):
        accounts.invite(OWNER, team, "c@example.com")
    accounts.set_cap(OWNER, team, MEMBER, "analysis", 3)
    accounts.remove_member(OWNER, team, MEMBER)
    accounts.invite(OWNER, team, "c@example.com")
    assert (MEMBER, "analysis") not in accounts.team(OWNER, team).caps


def test_a_plan_with_fewer_seats_than_members_is_refused_listing_them(
    billing: ProfileBilling, team: str
) -> None:
    # The default plan has 2 seats; the team has 3 members.
    with pytest.raises(TooManyMembersForPlan) as refused:
        billing.change_plan(OWNER, "free", account_id=team)
    details = refused.value.details()
    assert details["seats"] == 2
    assert sorted(details["members"]) == sorted([OWNER, ADMIN, MEMBER])
    billing.accounts.remove_member(OWNER, team, MEMBER)
    billing.change_plan(OWNER, "free", account_id=team)


def test_concurrent_invitations_never_take_more_seats_than_the_plan_has(
    app: Flask, billing: ProfileBilling, team: str
) -> None:
    accounts = billing.accounts
    start = threading.Barrier(8)

    def invite(n: int) -> bool:
        start.wait()
        try:
            with app.app_context():
                accounts.invite(OWNER, team, f"p{n}@example.com")
        except SeatsExhausted:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        invited = list(pool.map(invite, range(8)))
    assert sum(invited) == 2
    assert accounts.team(OWNER, team).seats.taken == 5


# -- invitations ------------------------------------------------------------------------------


def test_an_invitation_is_accepted_once_by_its_own_address(
    billing: ProfileBilling, team: str
) -> None:
    accounts = billing.accounts
    issued = accounts.invite(ADMIN, team, "New.Person@example.com", Role.ADMIN)
    with pytest.raises(InvitationError):
        accounts.accept("someone-else", "other@example.com", issued.token)
    joined = accounts.accept("new-1", "new.person@EXAMPLE.com", issued.token)
    assert (joined.id, joined.role, joined.name) == (team, Role.ADMIN, "Acme")
    assert members(billing, team)["new-1"] == "admin"
    with pytest.raises(InvitationError):  # replayed
        accounts.accept("new-1", "new.person@example.com", issued.token)
    with pytest.raises(InvitationError):  # by another user of the same address
        accounts.accept("new-2", "new.person@example.com", issued.token)


def test_an_expired_or_revoked_invitation_cannot_be_accepted(
    billing: ProfileBilling, team: str, clock: Clock
) -> None:
    accounts = billing.accounts
    expiring = accounts.invite(OWNER, team, "late@example.com")
    revoked = accounts.invite(OWNER, team, "gone@example.com")
    accounts.revoke_invitation(OWNER, team, revoked.invitation.id)
    with pytest.raises(InvitationError):
        accounts.accept("gone-1", "gone@example.com", revoked.token)
    clock.advance(hours=72, seconds=1)
    with pytest.raises(InvitationError):
        accounts.accept("late-1", "late@example.com", expiring.token)
    with pytest.raises(InvitationError):
        accounts.accept("late-1", "late@example.com", "not-a-token")
    assert set(members(billing, team)) == {OWNER, ADMIN, MEMBER}
    # Expired invitations hold no seat.
    assert accounts.team(OWNER, team).seats.pending_invitations == 0


def test_concurrent_acceptances_of_one_invitation_add_one_member(
    app: Flask, billing: ProfileBilling, team: str
) -> None:
    accounts = billing.accounts
    issued = accounts.invite(OWNER, team, "race@example.com")
    start = threading.Barrier(6)

    def accept(n: int) -> bool:
        start.wait()
        try:
            with app.app_context():
                accounts.accept(f"racer-{n}", "race@example.com", issued.token)
        except (InvitationError, MembershipError):
            return False
        return True

    with ThreadPoolExecutor(6) as pool:
        accepted = list(pool.map(accept, range(6)))
    assert sum(accepted) == 1
    assert len(members(billing, team)) == 4
    engine = get_state().runtime.engine
    with engine.connect() as connection:
        used = connection.execute(
            select(func.count()).where(invitations.c.accepted_at.is_not(None))
        ).scalar_one()
    assert used == 1


def test_the_token_is_not_stored(billing: ProfileBilling, team: str) -> None:
    issued = billing.accounts.invite(OWNER, team, "t@example.com")
    engine = get_state().runtime.engine
    with engine.connect() as connection:
        hashes = list(connection.execute(select(invitations.c.token_hash)).scalars())
    assert issued.token not in hashes
    assert len(hashes) == 1


def test_bad_team_input_is_refused_with_field_errors(billing: ProfileBilling, team: str) -> None:
    accounts = billing.accounts
    with pytest.raises(InvalidRequest) as bad_name:
        accounts.create_team(OWNER, "   ")
    assert "name" in bad_name.value.fields
    with pytest.raises(InvalidRequest) as bad_email:
        accounts.invite(OWNER, team, "not an email")
    assert "email" in bad_email.value.fields
    with pytest.raises(InvalidRequest) as bad_cap:
        accounts.set_cap(OWNER, team, MEMBER, "analysis", -1)
    assert "cap" in bad_cap.value.fields


def test_a_stranger_touching_a_team_writes_nothing(billing: ProfileBilling, team: str) -> None:
    """Not even the free subscription a first access would create: the membership is asked
    before anything else."""
    accounts = billing.accounts
    engine = get_state().runtime.engine
    with engine.connect() as connection:
        before = connection.execute(select(func.count()).select_from(subscriptions)).scalar_one()
    for attempt in (
        lambda: accounts.team(STRANGER, "team:nobody"),
        lambda: accounts.invite(STRANGER, "team:nobody", "x@example.com"),
        lambda: accounts.add_member(STRANGER, "team:nobody", STRANGER, Role.MEMBER),
        lambda: accounts.invite(STRANGER, team, "x@example.com"),
    ):
        with pytest.raises(UnknownAccountError):
            attempt()
    with engine.connect() as connection:
        after = connection.execute(select(func.count()).select_from(subscriptions)).scalar_one()
    assert after == before
