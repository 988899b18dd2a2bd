"""Accounts on the profile page, without JavaScript: the switcher, a new team, the team card's
forms (invite, revoke, role, remove, caps, transfer, leave), the invitation's accept page, usage
per member, refusals next to their form, a stranger's posts refused with nothing changed, CSRF on
every form, and the Russian page. On both databases."""

# Russian texts are compared letter for letter.
# ruff: noqa: RUF001

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from flask_profile_billing import ProfileBilling
from flask_profile_billing.domain.accounts import Role
from flask_profile_billing.state import get_state
from flask_profile_billing.store.models import account_members, invitations, member_caps
from tests.support.host_app import AppFactory, Clock, billing_of
from tests.test_profile_page import Markup, parse

PAGE = "/profile/"
HTML = {"Accept": "text/html"}
OWNER, ADMIN, MEMBER, STRANGER, NEWCOMER = "owner", "admin", "member", "stranger", "newcomer"


def emails(user: Any) -> dict[str, str]:
    """Every test user's address is ``<id>@example.com``."""
    return {"email": f"{user.id}@example.com"}


@pytest.fixture
def app(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app(BILLING_USER_INFO=emails)
    with app.app_context():
        yield app


@pytest.fixture
def billing(app: Flask) -> ProfileBilling:
    return billing_of(app)


@pytest.fixture
def team(billing: ProfileBilling) -> str:
    """ "Acme" on the starter plan (5 seats): an owner, an admin and a member."""
    accounts = billing.accounts
    account = accounts.create_team(OWNER, "Acme")
    billing.change_plan(OWNER, "starter", account_id=account.id)
    accounts.add_member(OWNER, account.id, ADMIN, Role.ADMIN)
    accounts.add_member(OWNER, account.id, MEMBER, Role.MEMBER)
    return account.id


class Browser:
    """One user's cookie jar: the session keeps their account choice, as a browser's does.

    Each request runs in an application context of its own, as when served: the test's context
    (pushed for the fixtures) would otherwise share ``g`` between requests and users."""

    def __init__(self, app: Flask, user: str) -> None:
        self.app = app
        self.client: FlaskClient = app.test_client()
        self.user = user

    def get(self, path: str = PAGE, **headers: str) -> TestResponse:
        with self.app.app_context():
            return self.client.get(path, headers={"X-User": self.user, **HTML, **headers})

    def send(self, path: str, form: dict[str, str]) -> TestResponse:
        with self.app.app_context():
            return self.client.post(path, data=form, headers={"X-User": self.user, **HTML})

    def token(self) -> str:
        found = re.search(r'name="csrf_token" value="([^"]+)"', self.get().get_data(True))
        assert found is not None
        return found.group(1)

    def post(self, path: str, **form: str) -> TestResponse:
        form.setdefault("csrf_token", self.token())
        return self.send(path if path.startswith("/") else f"{PAGE}{path}", form)

    def page(self) -> Markup:
        response = self.get()
        assert response.status_code == 200, response.get_data(True)[:500]
        return parse(response)

    def switch(self, account_id: str) -> None:
        assert self.post("account", account_id=account_id).status_code == 303


def members(account_id: str) -> dict[str, str]:
    with get_state().runtime.engine.connect() as connection:
        rows = connection.execute(
            select(account_members.c.user_id, account_members.c.role).where(
                account_members.c.account_id == account_id
            )
        )
        return {row.user_id: row.role for row in rows}


def team_rows() -> tuple[Any, ...]:
    """Everything a team form can change: members, invitations, caps."""
    with get_state().runtime.engine.connect() as connection:
        return tuple(
            sorted(tuple(str(v) for v in row) for row in connection.execute(select(table)))
            for table in (account_members, invitations, member_caps)
        )


def flashed(response: TestResponse, browser: Browser) -> str:
    assert response.status_code == 303, response.get_data(True)[:800]
    return browser.page().text


def current_choice(browser: Browser) -> str:
    """The account the switcher shows as chosen."""
    html = browser.get().get_data(True)
    switcher = re.search(r'<select id="pb-account-choice".*?</select>', html, re.S)
    assert switcher is not None
    chosen = re.findall(r'<option value="([^"]+)" selected>', switcher.group(0))
    assert len(chosen) == 1, switcher.group(0)
    return chosen[0]


def invitation_link(text: str) -> str:
    found = re.search(r"(/profile/invitations/[A-Za-z0-9_-]+)", text)
    assert found is not None, text
    return found.group(1)


# -- the switcher and a new team ----------------------------------------------------------------


def test_the_switcher_lists_the_users_accounts_and_keeps_the_choice(app: Flask, team: str) -> None:
    owner = Browser(app, OWNER)
    page = owner.page()
    options = [
        a["value"]
        for _, a in page.elements
        if _ == "option" and a.get("value", "").startswith(("user:", "team:"))
    ]
    assert options == ["user:owner", team]
    assert page.by_id("pb-team") is None  # the personal account is current at first
    text = flashed(owner.post("account", account_id=team), owner)
    assert "Account switched." in text
    page = owner.page()
    assert page.by_id("pb-team") is not None
    assert "Team Acme" in page.text
    assert "3 of 5 seats taken" in page.text
    assert current_choice(owner) == team


def test_switching_to_a_foreign_account_is_refused_and_the_personal_one_stays(
    app: Flask, team: str
) -> None:
    stranger = Browser(app, STRANGER)
    for account_id in (team, "user:owner", "team:nope", "nonsense"):
        text = flashed(stranger.post("account", account_id=account_id), stranger)
        assert "You are not a member of that account." in text
        assert stranger.page().by_id("pb-team") is None
    with stranger.app.app_context(), stranger.client.session_transaction() as session:
        assert "billing_account" not in session


def test_a_stale_choice_falls_back_to_the_personal_account(
    app: Flask, billing: ProfileBilling, team: str
) -> None:
    member = Browser(app, MEMBER)
    member.switch(team)
    assert member.page().by_id("pb-team") is not None
    billing.accounts.remove_member(OWNER, team, MEMBER)
    assert member.page().by_id("pb-team") is None
    assert current_choice(member) == "user:member"


def test_a_new_team_is_created_owned_and_current(app: Flask, billing: ProfileBilling) -> None:
    owner = Browser(app, OWNER)
    text = flashed(owner.post("teams", name="  Northwind  "), owner)
    assert "Team Northwind created." in text
    (_, created) = billing.accounts.accounts_of(OWNER)
    assert created.name == "Northwind"
    assert created.role is Role.OWNER
    assert owner.page().by_id("pb-team") is not None


def test_a_team_without_a_name_is_refused_next_to_the_form(
    app: Flask, billing: ProfileBilling
) -> None:
    owner = Browser(app, OWNER)
    response = owner.post("teams", name="   ")
    assert response.status_code == 400
    page = parse(response)
    error = page.by_id("pb-form-error-create")
    assert error is not None
    assert "Length must be between 1 and 120." in page.text
    assert page.by_id("pb-team-name")["aria-invalid"] == "true"  # type: ignore[index]
    assert len(billing.accounts.accounts_of(OWNER)) == 1


def test_a_team_name_is_escaped(app: Flask) -> None:
    owner = Browser(app, OWNER)
    owner.post("teams", name="<script>alert(1)</script>")
    html = owner.get().get_data(True)
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# -- invitations ------------------------------------------------------------------------------


def test_an_invitation_is_sent_accepted_by_its_address_and_the_team_becomes_current(
    app: Flask, team: str
) -> None:
    owner, newcomer = Browser(app, OWNER), Browser(app, NEWCOMER)
    owner.switch(team)
    text = flashed(
        owner.post("team/invite", account_id=team, email="newcomer@example.com", role="admin"),
        owner,
    )
    link = invitation_link(text)
    page = owner.page()
    assert page.having("data-pb-invitation", "newcomer@example.com")
    assert "4 of 5 seats taken" in page.text  # a pending invitation holds a seat
    shown = newcomer.get(link)
    assert shown.status_code == 200
    assert "Team Acme" in parse(shown).text
    assert "as Admin" in parse(shown).text
    accepted = newcomer.post(link)
    assert accepted.status_code == 303
    assert accepted.location.endswith(PAGE)
    assert members(team)[NEWCOMER] == "admin"
    page = newcomer.page()
    assert "You joined Acme." in page.text
    assert page.by_id("pb-team") is not None
    # One use: the link is spent.
    again = newcomer.get(link)
    assert again.status_code == 404
    assert "not valid any more" in parse(again).text


def test_an_invitation_for_another_address_or_expired_is_explained(
    app: Flask, billing: ProfileBilling, clock: Clock, team: str
) -> None:
    issued = billing.accounts.invite(OWNER, team, "newcomer@example.com")
    link = f"/profile/invitations/{issued.token}"
    stranger = Browser(app, STRANGER)
    response = stranger.get(link)
    assert response.status_code == 403
    assert "another email address than yours (stranger@example.com)" in parse(response).text
    assert not parse(response).having("data-pb-accept-form")
    refused = stranger.post(link)
    assert refused.status_code == 403
    assert STRANGER not in members(team)
    assert stranger.get("/profile/invitations/not-a-token").status_code == 404
    clock.advance(days=30)
    expired = Browser(app, NEWCOMER).get(link)
    assert expired.status_code == 404
    assert "expired" in parse(expired).text


def test_an_invitation_beyond_the_seats_is_refused_with_the_counts(
    app: Flask, billing: ProfileBilling, team: str
) -> None:
    billing.accounts.invite(OWNER, team, "a@example.com")
    billing.accounts.invite(OWNER, team, "b@example.com")
    owner = Browser(app, OWNER)
    owner.switch(team)
    response = owner.post("team/invite", account_id=team, email="c@example.com", role="member")
    assert response.status_code == 409
    page = parse(response)
    assert page.by_id("pb-form-error-invite") is not None
    assert "All 5 seats are taken: 3 members and 2 pending invitations." in page.text


def test_a_bad_email_or_role_is_a_field_error(app: Flask, team: str) -> None:
    owner = Browser(app, OWNER)
    owner.switch(team)
    bad_email = owner.post("team/invite", account_id=team, email="<b>x</b>", role="member")
    assert bad_email.status_code == 400
    assert "Not a valid email address." in parse(bad_email).text
    assert "<b>x</b>" not in bad_email.get_data(True)
    bad_role = owner.post("team/invite", account_id=team, email="x@example.com", role="owner")
    assert bad_role.status_code == 400
    assert "Choose a role." in parse(bad_role).text


def test_a_manager_revokes_an_invitation_and_its_seat_is_free(
    app: Flask, billing: ProfileBilling, team: str
) -> None:
    issued = billing.accounts.invite(OWNER, team, "x@example.com")
    admin = Browser(app, ADMIN)
    admin.switch(team)
    text = flashed(
        admin.post("team/revoke", account_id=team, invitation_id=issued.invitation.id), admin
    )
    assert "Invitation revoked." in text
    assert "No pending invitations." in text
    assert "3 of 5 seats taken" in text


# -- members, roles, caps, ownership ------------------------------------------------------------


def test_a_manager_changes_a_role_and_removes_a_member(app: Flask, team: str) -> None:
    owner = Browser(app, OWNER)
    owner.switch(team)
    assert "Role changed." in flashed(
        owner.post("team/role", account_id=team, user_id=MEMBER, role="admin"), owner
    )
    assert members(team)[MEMBER] == "admin"
    assert "was removed" in flashed(
        owner.post("team/remove", account_id=team, user_id=MEMBER), owner
    )
    assert MEMBER not in members(team)


def test_an_admin_cannot_make_an_owner_and_is_told_why(app: Flask, team: str) -> None:
    admin = Browser(app, ADMIN)
    admin.switch(team)
    role_forms = re.findall(
        r"<form[^>]*data-pb-role-form>.*?</form>", admin.get().get_data(True), re.S
    )
    assert len(role_forms) == 1  # the member's: an admin changes no owner's role
    assert '<option value="owner"' not in role_forms[0]
    response = admin.post("team/role", account_id=team, user_id=MEMBER, role="owner")
    assert response.status_code == 403
    assert "Your role in this team does not allow this." in parse(response).text
    assert members(team)[MEMBER] == "member"


def test_a_manager_sets_and_clears_a_members_cap(
    app: Flask, billing: ProfileBilling, team: str
) -> None:
    owner = Browser(app, OWNER)
    owner.switch(team)
    text = flashed(
        owner.post("team/cap", account_id=team, user_id=MEMBER, metric="analysis", cap="7"), owner
    )
    assert "The cap of member@example.com is set." in text
    assert billing.accounts.team(OWNER, team).caps == {(MEMBER, "analysis"): 7}
    row = re.search(r'data-pb-usage-of="member">(.*?)</tr>', owner.get().get_data(True), re.S)
    assert row is not None
    assert "0 of 7 (cap)" in row.group(1)
    flashed(
        owner.post("team/cap", account_id=team, user_id=MEMBER, metric="analysis", cap=""), owner
    )
    assert billing.accounts.team(OWNER, team).caps == {}


@pytest.mark.parametrize("cap", ["-1", "1.5", "seven", "١٢", "9" * 13])
def test_a_cap_that_is_not_a_whole_number_is_a_field_error(app: Flask, team: str, cap: str) -> None:
    owner = Browser(app, OWNER)
    owner.switch(team)
    response = owner.post("team/cap", account_id=team, user_id=MEMBER, metric="analysis", cap=cap)
    assert response.status_code == 400
    assert "A cap is a whole number, 0 or more" in parse(response).text
    unknown = owner.post("team/cap", account_id=team, user_id=MEMBER, metric="nope", cap="1")
    assert unknown.status_code == 400
    assert "Choose a metric." in parse(unknown).text


def test_an_owner_transfers_the_ownership_and_becomes_an_admin(app: Flask, team: str) -> None:
    owner = Browser(app, OWNER)
    owner.switch(team)
    text = flashed(owner.post("team/transfer", account_id=team, user_id=MEMBER), owner)
    assert "member@example.com is now an owner of the team." in text
    assert members(team) == {OWNER: "admin", ADMIN: "admin", MEMBER: "owner"}


def test_a_member_leaves_and_the_last_owner_is_told_why_not(app: Flask, team: str) -> None:
    owner, member = Browser(app, OWNER), Browser(app, MEMBER)
    owner.switch(team)
    page = owner.page()
    assert "You are the team's only owner" in page.text
    leave = page.having("aria-describedby", "pb-leave-why")
    assert leave
    assert "disabled" in leave[0]
    refused = owner.post("team/leave", account_id=team)
    assert refused.status_code == 409
    assert "A team keeps at least one owner" in parse(refused).text
    assert OWNER in members(team)
    member.switch(team)
    assert "You left the team." in flashed(member.post("team/leave", account_id=team), member)
    assert MEMBER not in members(team)
    assert member.page().by_id("pb-team") is None  # back on the personal account


# -- usage per member ---------------------------------------------------------------------------


def test_managers_see_everyones_usage_and_a_member_only_their_own(
    app: Flask, billing: ProfileBilling, team: str
) -> None:
    billing.consume(MEMBER, "analysis", 2, account_id=team)
    billing.consume(ADMIN, "analysis", 1, account_id=team)
    billing.accounts.set_cap(OWNER, team, MEMBER, "analysis", 5)
    owner, member = Browser(app, OWNER), Browser(app, MEMBER)
    owner.switch(team)
    member.switch(team)
    owner_page = owner.page()
    assert {a["data-pb-usage-of"] for a in owner_page.having("data-pb-usage-of")} == {
        OWNER,
        ADMIN,
        MEMBER,
    }
    assert "Usage by member" in owner_page.text
    assert "2 of 5 (cap)" in owner_page.text
    member_page = member.page()
    assert [a["data-pb-usage-of"] for a in member_page.having("data-pb-usage-of")] == [MEMBER]
    assert "Your usage" in member_page.text
    assert "2 of 5 (cap)" in member_page.text
    # The pool is the quotas card: 3 of the team's analyses are used.
    quota = member_page.by_id("pb-quota-analysis-text")
    assert quota is not None
    assert re.search(r"\b3 of\b", member_page.text)
    # A member sees no managing forms.
    for marker in (
        "data-pb-invite-form",
        "data-pb-cap-form",
        "data-pb-role-form",
        "data-pb-transfer-form",
    ):
        assert not member_page.having(marker), marker


# -- a stranger's posts, CSRF --------------------------------------------------------------------

TEAM_FORMS: list[tuple[str, dict[str, str]]] = [
    ("team/invite", {"email": "x@example.com", "role": "member"}),
    ("team/revoke", {"invitation_id": "INVITATION"}),
    ("team/role", {"user_id": MEMBER, "role": "owner"}),
    ("team/remove", {"user_id": MEMBER}),
    ("team/cap", {"user_id": MEMBER, "metric": "analysis", "cap": "0"}),
    ("team/transfer", {"user_id": STRANGER}),
    ("team/leave", {}),
]


def _form(billing: ProfileBilling, team: str, fields: dict[str, str]) -> dict[str, str]:
    pending = billing.accounts.team(OWNER, team).invitations
    return {
        name: (pending[0].id if value == "INVITATION" else value) for name, value in fields.items()
    } | {"account_id": team}


@pytest.mark.parametrize(("path", "fields"), TEAM_FORMS, ids=[p for p, _ in TEAM_FORMS])
def test_a_stranger_posting_to_a_teams_form_is_refused_and_nothing_changes(
    app: Flask, billing: ProfileBilling, team: str, path: str, fields: dict[str, str]
) -> None:
    billing.accounts.invite(OWNER, team, "pending@example.com")
    before = team_rows()
    stranger = Browser(app, STRANGER)
    response = stranger.post(path, **_form(billing, team, fields))
    assert response.status_code == 404
    assert team_rows() == before


@pytest.mark.parametrize(("path", "fields"), TEAM_FORMS, ids=[p for p, _ in TEAM_FORMS])
def test_every_team_form_needs_the_csrf_token(
    app: Flask,
    make_app: AppFactory,
    billing: ProfileBilling,
    team: str,
    path: str,
    fields: dict[str, str],
) -> None:
    billing.accounts.invite(OWNER, team, "pending@example.com")
    before = team_rows()
    owner = Browser(app, OWNER)
    response = owner.post(path, csrf_token="forged", **_form(billing, team, fields))
    assert response.status_code == 400
    assert team_rows() == before


def test_the_switcher_the_new_team_and_the_accept_forms_need_the_csrf_token(
    app: Flask, billing: ProfileBilling, team: str
) -> None:
    issued = billing.accounts.invite(OWNER, team, "newcomer@example.com")
    owner, newcomer = Browser(app, OWNER), Browser(app, NEWCOMER)
    assert owner.post("account", account_id=team, csrf_token="forged").status_code == 400
    assert owner.page().by_id("pb-team") is None
    assert owner.post("teams", name="Other", csrf_token="forged").status_code == 400
    assert len(billing.accounts.accounts_of(OWNER)) == 2
    link = f"/profile/invitations/{issued.token}"
    assert newcomer.post(link, csrf_token="forged").status_code == 400
    assert NEWCOMER not in members(team)


def test_the_forms_need_a_login(app: Flask, team: str) -> None:
    client = app.test_client()
    for path in ("account", "teams", "team/invite", "team/leave", "invitations/x"):
        with app.app_context():
            response = client.post(f"{PAGE}{path}", headers=HTML)
        assert response.status_code in (302, 401), path


# -- Russian -------------------------------------------------------------------------------------


def test_the_team_card_and_the_invitation_page_in_russian(
    make_app: AppFactory, clock: Clock
) -> None:
    app = make_app(BILLING_USER_INFO=emails, BILLING_LOCALE="ru")
    with app.app_context():
        billing = billing_of(app)
        account = billing.accounts.create_team(OWNER, "Acme")
        billing.change_plan(OWNER, "starter", account_id=account.id)
        issued = billing.accounts.invite(OWNER, account.id, "newcomer@example.com")
        owner = Browser(app, OWNER)
        text = flashed(owner.post("account", account_id=account.id), owner)
        for words in (
            "Аккаунт переключён.",
            "Команда Acme",
            "Участники",
            "Пригласить",
            "Ожидающие приглашения",
        ):
            assert words in text, words
        assert "занято мест: 2 из 5" in text
        for n in range(3):
            billing.accounts.invite(OWNER, account.id, f"{n}@example.com")
        refused = owner.post(
            "team/invite", account_id=account.id, email="z@example.com", role="member"
        )
        assert refused.status_code == 409
        assert (
            "Все места заняты (всего 5): участников — 1, ожидающих приглашений — 4."
            in parse(refused).text
        )
        page = Browser(app, NEWCOMER).get(f"/profile/invitations/{issued.token}")
        assert "Приглашение в команду" in parse(page).text
        assert "Принять приглашение" in parse(page).text


# -- a walk without JavaScript -------------------------------------------------------------------


def test_a_walk_without_javascript_follows_only_links_and_forms(app: Flask) -> None:
    """Create a team, invite, accept, cap: each step a form of the page the last one led to."""
    owner, newcomer = Browser(app, OWNER), Browser(app, NEWCOMER)

    def submit(browser: Browser, marker: str, **values: str) -> TestResponse:
        html = browser.get().get_data(True)
        form = re.search(rf'<form[^>]*action="([^"]+)"[^>]*{marker}[^>]*>(.*?)</form>', html, re.S)
        assert form is not None, marker
        fields = dict(
            re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(2))
        )
        response = browser.send(form.group(1), fields | values)
        assert response.status_code == 303, response.get_data(True)[:800]
        return browser.get(response.location)

    page = submit(owner, "data-pb-create-team", name="Walkers")
    assert "Team Walkers" in parse(page).text
    page = submit(owner, "data-pb-invite-form", email="newcomer@example.com", role="member")
    link = invitation_link(parse(page).text)
    accept_page = newcomer.get(link).get_data(True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', accept_page)
    assert token is not None
    assert "data-pb-accept-form" in accept_page
    joined = newcomer.send(link, {"csrf_token": token.group(1)})
    assert joined.status_code == 303
    page = submit(owner, "data-pb-cap-form", user_id=NEWCOMER, metric="analysis", cap="3")
    assert "0 of 3 (cap)" in page.get_data(True)


def test_an_invitation_is_emailed_with_its_link_when_a_sender_is_configured(
    make_app: AppFactory,
) -> None:
    sent: list[Any] = []
    app = make_app(BILLING_USER_INFO=emails, BILLING_EMAIL_SENDER=sent.append)
    with app.app_context():
        billing = billing_of(app)
        account = billing.accounts.create_team(OWNER, "Acme")
    owner, newcomer = Browser(app, OWNER), Browser(app, NEWCOMER)
    owner.switch(account.id)
    response = owner.post(
        "team/invite", account_id=account.id, email="newcomer@example.com", role="member"
    )
    text = flashed(response, owner)
    assert "Invitation sent to newcomer@example.com." in text
    assert "/profile/invitations/" not in text  # the link went to the invited address only
    (email,) = sent
    assert email.to == "newcomer@example.com"
    assert "Acme" in email.subject
    link = invitation_link(email.text)
    assert newcomer.post(link).status_code == 303
    with app.app_context():
        assert members(account.id)[NEWCOMER] == "member"
