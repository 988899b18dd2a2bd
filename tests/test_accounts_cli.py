"""``flask billing accounts|members|caps ...`` and ``flask billing verify``, on both databases.

Staff commands act as the team's first owner, so the service's rules still hold: a refusal (an
unknown account or user, no free seat, the last owner) exits non-zero with a one-line message and
changes nothing. ``verify`` exits 0 on a ledger that charges and refunds kept consistent, and 1
naming the drift after a raw UPDATE breaks one of its sums.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import Result
from flask import Flask
from sqlalchemy import text

from flask_profile_billing import ProfileBilling, QuotaExceeded
from flask_profile_billing.domain.accounts import Role
from flask_profile_billing.state import get_state
from tests.support.host_app import AppFactory, Clock, billing_of

OWNER, ADMIN, MEMBER, OTHER = "owner-1", "admin-1", "member-1", "other-1"


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["billing", *args])


def succeeded(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def failed(result: Result) -> str:
    """A refusal: exit code 1 and a one-line error, no traceback."""
    assert result.exit_code == 1, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.output.startswith("Error: "), result.output
    assert result.output.count("\n") == 1, result.output
    return result.output


def members(app: Flask, account_id: str) -> dict[str, str]:
    owner = get_state(app).accounts.first_owner(account_id)
    team = get_state(app).accounts.team(owner, account_id)
    return {member.user_id: member.role.value for member in team.members}


def execute(app: Flask, statement: str, **parameters: object) -> None:
    with get_state(app).runtime.engine.begin() as connection:
        connection.execute(text(statement), parameters)


@pytest.fixture
def team(app: Flask, billing: ProfileBilling) -> str:
    """A team on the free plan (2 seats) with its owner and one admin."""
    succeeded(run(app, "accounts", "create", "--owner", OWNER, "--name", "Acme", "--key", "acme"))
    billing.accounts.add_member(OWNER, "team:acme", ADMIN, Role.ADMIN)
    return "team:acme"


# -- accounts ----------------------------------------------------------------------------------


def test_accounts_create_makes_a_team_owned_by_the_user(app: Flask) -> None:
    output = succeeded(
        run(app, "accounts", "create", "--owner", OWNER, "--name", "Acme", "--key", "acme")
    )
    assert output == f"Team team:acme (Acme) created, owned by user {OWNER}.\n"
    assert members(app, "team:acme") == {OWNER: "owner"}

    random_key = succeeded(run(app, "accounts", "create", "--owner", OWNER, "--name", "Beta"))
    assert random_key.startswith("Team team:")
    assert "(Beta)" in random_key


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--owner", "ghost-1", "--name", "Acme"], "Error: no user with id 'ghost-1'"),
        (["--owner", OWNER, "--name", "  "], "Error: a team name has 1 to 120 characters"),
        (["--owner", OWNER, "--name", "X", "--key", "a b"], "Error: a team key has 1 to 64"),
    ],
)
def test_accounts_create_refuses_bad_input(app: Flask, args: list[str], message: str) -> None:
    assert failed(run(app, "accounts", "create", *args)).startswith(message)
    assert get_state(app).accounts.all_teams() == []


def test_accounts_create_refuses_a_taken_key(app: Flask, team: str) -> None:
    output = failed(
        run(app, "accounts", "create", "--owner", OTHER, "--name", "B", "--key", "acme")
    )
    assert output == "Error: that team key is taken\n"
    assert members(app, team) == {OWNER: "owner", ADMIN: "admin"}


def test_accounts_list_shows_every_team_or_a_users_accounts(app: Flask, team: str) -> None:
    listed = json.loads(succeeded(run(app, "accounts", "list", "--format", "json")))
    assert [(row["account_id"], row["name"], row["members"]) for row in listed] == [
        (team, "Acme", 2)
    ]
    table = succeeded(run(app, "accounts", "list", "--user", ADMIN)).splitlines()
    assert table[0].split() == ["account_id", "kind", "name", "role"]
    assert [line.split() for line in table[1:]] == [
        [f"user:{ADMIN}", "personal", "owner"],
        [team, "team", "Acme", "admin"],
    ]
    assert failed(run(app, "accounts", "list", "--user", "ghost-1")) == (
        "Error: no user with id 'ghost-1'\n"
    )


def test_accounts_show_lists_members_seats_caps_and_usage(
    app: Flask, billing: ProfileBilling, team: str
) -> None:
    billing.accounts.set_cap(OWNER, team, ADMIN, "analysis", 5)
    billing.consume(ADMIN, "analysis", 3, account_id=team)
    billing.consume(OWNER, "export", 1, account_id=team)

    lines = succeeded(run(app, "accounts", "show", "acme")).splitlines()

    assert lines[0] == "Team team:acme (Acme)"
    assert lines[1].startswith("Plan: Free (active)")
    assert lines[2] == "Seats: 2 taken of 2 (2 members, 0 pending invitations)"
    header, *rows = [line.split() for line in lines[4:]]
    metrics = header[2:]
    used = {row[0]: dict(zip(["role", *metrics], row[1:], strict=True)) for row in rows}
    assert used[OWNER] == {"role": "owner", "analysis": "0", "export": "1"}
    assert used[ADMIN] == {"role": "admin", "analysis": "3/5", "export": "0"}


@pytest.mark.parametrize("account", ["team:nope", "nope", "user:owner-1"])
def test_accounts_show_refuses_an_unknown_team(app: Flask, team: str, account: str) -> None:
    output = failed(run(app, "accounts", "show", account))
    assert output.startswith("Error: no team account"), output


# -- members -----------------------------------------------------------------------------------


def test_members_add_role_and_remove(app: Flask, team: str, make_app: AppFactory) -> None:
    execute(
        app, "UPDATE billing_subscriptions SET plan_code = 'starter' WHERE account_id = :a", a=team
    )

    assert succeeded(run(app, "members", "add", team, MEMBER)) == (
        f"User {MEMBER} joined {team} as member.\n"
    )
    succeeded(run(app, "members", "add", team, OTHER, "--role", "owner"))
    assert succeeded(run(app, "members", "role", team, MEMBER, "admin")) == (
        f"User {MEMBER} is admin of {team}.\n"
    )
    assert members(app, team) == {OWNER: "owner", ADMIN: "admin", MEMBER: "admin", OTHER: "owner"}

    assert succeeded(run(app, "members", "remove", team, MEMBER)) == (
        f"User {MEMBER} removed from {team}.\n"
    )
    # With a second owner, the first one may go; the command then acts as the one left.
    succeeded(run(app, "members", "remove", team, OWNER))
    succeeded(run(app, "members", "role", team, ADMIN, "member"))
    assert members(app, team) == {ADMIN: "member", OTHER: "owner"}


def test_members_add_refuses_when_every_seat_is_taken(app: Flask, team: str) -> None:
    output = failed(run(app, "members", "add", team, MEMBER))
    assert output == ("Error: all 2 seats are taken: 2 members and 0 pending invitations\n")
    assert MEMBER not in members(app, team)


def test_members_refuse_to_leave_a_team_without_an_owner(app: Flask, team: str) -> None:
    for args in (["remove", team, OWNER], ["role", team, OWNER, "admin"]):
        output = failed(run(app, "members", *args))
        assert output == "Error: a team keeps at least one owner: transfer the ownership first\n"
    assert members(app, team) == {OWNER: "owner", ADMIN: "admin"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "team:nope", MEMBER], "Error: no team account 'team:nope'\n"),
        (["add", "team:acme", "ghost-1"], "Error: no user with id 'ghost-1'\n"),
        (["add", "team:acme", ADMIN], "Error: already a member\n"),
        (["remove", "team:acme", OTHER], "Error: no such member\n"),
        (["role", "team:acme", OTHER, "admin"], "Error: no such member\n"),
        (["remove", "team:nope", ADMIN], "Error: no team account 'team:nope'\n"),
    ],
)
def test_members_refuse_unknown_accounts_and_users(
    app: Flask, team: str, args: list[str], message: str
) -> None:
    execute(
        app, "UPDATE billing_subscriptions SET plan_code = 'starter' WHERE account_id = :a", a=team
    )
    assert failed(run(app, "members", *args)) == message
    assert members(app, team) == {OWNER: "owner", ADMIN: "admin"}


def test_members_role_refuses_an_unknown_role(app: Flask, team: str) -> None:
    result = run(app, "members", "role", team, ADMIN, "boss")
    assert result.exit_code == 2
    assert "'boss' is not one of" in result.output
    assert members(app, team) == {OWNER: "owner", ADMIN: "admin"}


# -- caps --------------------------------------------------------------------------------------


def test_caps_set_and_clear(app: Flask, billing: ProfileBilling, team: str) -> None:
    assert succeeded(run(app, "caps", "set", team, ADMIN, "analysis", "2")) == (
        f"User {ADMIN} may use 2 analysis per period in {team}.\n"
    )
    billing.consume(ADMIN, "analysis", 2, account_id=team)
    with pytest.raises(QuotaExceeded) as refused:
        billing.consume(ADMIN, "analysis", 1, account_id=team)
    assert refused.value.details()["scope"] == "member"

    assert succeeded(run(app, "caps", "clear", team, ADMIN, "analysis")) == (
        f"User {ADMIN} has no cap on analysis in {team}.\n"
    )
    billing.consume(ADMIN, "analysis", 1, account_id=team)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set", "team:acme", OTHER, "analysis", "1"], "Error: no such member\n"),
        (["set", "team:nope", ADMIN, "analysis", "1"], "Error: no team account 'team:nope'\n"),
        (["set", "team:acme", ADMIN, "nothing", "1"], "Error: unknown metric 'nothing'"),
        (["set", "team:acme", ADMIN, "active_vacancies", "1"], "Error: 'active_vacancies' is not"),
        (["clear", "team:acme", "ghost-1", "analysis"], "Error: no user with id 'ghost-1'\n"),
    ],
)
def test_caps_refuse_unknown_members_and_metrics(
    app: Flask, team: str, args: list[str], message: str
) -> None:
    assert failed(run(app, "caps", *args)).startswith(message)
    owner = get_state(app).accounts.first_owner(team)
    assert get_state(app).accounts.team(owner, team).caps == {}


def test_caps_set_refuses_a_negative_cap(app: Flask, team: str) -> None:
    result = run(app, "caps", "set", team, ADMIN, "analysis", "--", "-1")
    assert result.exit_code == 2
    assert "-1 is not in the range x>=0" in result.output


# -- verify ------------------------------------------------------------------------------------


@pytest.fixture
def ledger(app: Flask, billing: ProfileBilling, team: str, clock: Clock) -> str:
    """Personal and team charges and refunds, over two periods: a consistent ledger."""
    billing.consume("solo-1", "analysis", 3)
    refunded = billing.consume("solo-1", "analysis", 2, idempotency_key="k1")
    billing.release(refunded)
    billing.consume("solo-1", "export", 1)
    billing.consume(OWNER, "analysis", 4, account_id=team)
    billing.consume(ADMIN, "analysis", 2, account_id=team)
    billing.release(billing.consume(ADMIN, "analysis", 1, account_id=team))
    clock.advance(days=40)
    billing.consume(ADMIN, "analysis", 5, account_id=team)
    billing.consume("solo-1", "analysis", 1)
    return team


def test_verify_passes_on_a_consistent_ledger(app: Flask, ledger: str) -> None:
    output = succeeded(run(app, "verify"))
    assert output.startswith("No drift: team pools match their members' counters")


def test_verify_names_a_team_pool_that_drifted(app: Flask, ledger: str) -> None:
    execute(
        app,
        "UPDATE billing_usage_counters SET used = used + 1 "
        "WHERE account_id = :a AND metric = 'analysis' AND used = 6",
        a=ledger,
    )
    output = run(app, "verify")
    assert output.exit_code == 1
    lines = output.output.splitlines()
    assert (
        f"Drift: team pool {ledger} analysis of the period from 2025-10-01 00:00 UTC is 7, "
        "its members' counters sum to 6." in lines
    )
    # The pool is also a usage counter, whose events still sum to 6.
    assert (
        f"Drift: usage counter {ledger} analysis of the period from 2025-10-01 00:00 UTC is "
        "7, its usage events sum to 6." in lines
    )
    assert lines[-1] == "Error: 2 drifts found"


def test_verify_names_a_member_counter_that_drifted(app: Flask, ledger: str) -> None:
    execute(
        app,
        "UPDATE billing_member_counters SET used = used - 1 "
        "WHERE account_id = :a AND user_id = :u AND used = 5",
        a=ledger,
        u=ADMIN,
    )
    output = run(app, "verify")
    assert output.exit_code == 1
    assert output.output.splitlines() == [
        f"Drift: team pool {ledger} analysis of the period from 2025-11-01 00:00 UTC is 5, "
        "its members' counters sum to 4.",
        "Error: 1 drifts found",
    ]


def test_verify_names_a_counter_its_events_do_not_sum_to(app: Flask, ledger: str) -> None:
    execute(
        app,
        "UPDATE billing_usage_events SET amount = amount + 2 "
        "WHERE account_id = 'user:solo-1' AND metric = 'export'",
    )
    output = run(app, "verify")
    assert output.exit_code == 1
    assert output.output.splitlines() == [
        "Drift: usage counter user:solo-1 export of the period from 2025-10-01 00:00 UTC is 1, "
        "its usage events sum to 3.",
        "Error: 1 drifts found",
    ]


def test_verify_names_events_without_their_counter(app: Flask, ledger: str) -> None:
    execute(
        app,
        "DELETE FROM billing_usage_counters WHERE account_id = 'user:solo-1' AND metric = 'export'",
    )
    output = run(app, "verify")
    assert output.exit_code == 1
    assert (
        "Drift: usage counter user:solo-1 export of the period from 2025-10-01 00:00 UTC is "
        "0, its usage events sum to 1." in output.output.splitlines()
    )


def test_verify_names_a_team_with_more_members_than_seats(
    app: Flask, ledger: str, clock: Clock
) -> None:
    execute(
        app,
        "INSERT INTO billing_account_members (account_id, user_id, role, joined_at) "
        "VALUES (:a, :u, 'member', :t)",
        a=ledger,
        u=MEMBER,
        t=clock.now,
    )
    output = run(app, "verify")
    assert output.exit_code == 1
    assert output.output.splitlines() == [
        f"Drift: team {ledger} has 3 members, its plan 'free' has 2 seats.",
        "Error: 1 drifts found",
    ]


def test_verify_leaves_out_periods_older_than_the_retention(
    make_app: AppFactory, clock: Clock
) -> None:
    """Retention deletes a period's events before its counter: such a period is not a drift."""
    app = make_app(BILLING_RETENTION_DAYS=30)
    with app.app_context():
        billing = billing_of(app)
        billing.consume("solo-1", "analysis", 3)
        clock.advance(days=35)
        execute(app, "DELETE FROM billing_usage_events")
        output = succeeded(run(app, "verify"))
        assert output.startswith(
            f"Periods checked: those starting from {(clock.now - timedelta(days=30)):%Y-%m-%d %H:%M} UTC"
        )
        assert "No drift" in output


def test_verify_passes_after_maintenance_pruned_a_teams_old_period(
    make_app: AppFactory, clock: Clock
) -> None:
    """The retention deletes a team's old pool counter but keeps its members' counters: the old
    period is out of the check, not a drift."""
    app = make_app(BILLING_RETENTION_DAYS=30)
    with app.app_context():
        billing = billing_of(app)
        team = billing.accounts.create_team(OWNER, "Acme").id
        billing.consume(OWNER, "analysis", 2, account_id=team)
        clock.advance(days=70)
        billing.run_maintenance()
        billing.consume(OWNER, "analysis", 1, account_id=team)
        assert "No drift" in succeeded(run(app, "verify"))


def test_verify_counts_the_seats_of_the_plan_in_force_after_a_lapse(
    app: Flask, billing: ProfileBilling, team: str, clock: Clock
) -> None:
    """A paid plan that lapsed leaves the team on the default plan: its seats are the ones that
    count, before maintenance has ended the paid subscription."""
    billing.change_plan(OWNER, "starter", account_id=team)
    succeeded(run(app, "members", "add", team, MEMBER))
    assert "No drift" in succeeded(run(app, "verify"))

    clock.advance(days=40)

    output = run(app, "verify")
    assert output.exit_code == 1
    assert output.output.splitlines() == [
        f"Drift: team {team} has 3 members, its plan 'free' has 2 seats.",
        "Error: 1 drifts found",
    ]
