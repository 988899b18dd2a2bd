"""A team's notifications reach exactly the right people, each once, by email: the pool's notices
its owners and admins (never a plain member), a member's own cap that member alone (never the
owner), a full team's seats its owners; in English and in Russian; on both databases.

Time moves by the injectable clock (BILLING_CLOCK), never by waiting.
"""

# Russian text is what these tests check: its letters are meant, not look-alikes of Latin ones.
# ruff: noqa: RUF001

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask_mailman import Mail as Mailman
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.exc import IntegrityError

from flask_profile_billing import ProfileBilling, QuotaExceeded, migrate, signals
from flask_profile_billing.domain.accounts import Role
from flask_profile_billing.store.models import notifications
from tests.support.host_app import AppFactory, Clock, billing_of
from tests.test_notification_emails import MAIL_CONFIG, RecordingSender, outbox, spaced, user_info

OWNER, ADMIN, CAPPED, UNCAPPED = "owner-1", "admin-1", "capped-1", "member-2"
POOL = 10  # the team plan's analyses: its mark (80 %) is 8
CAP = 5  # the capped member's analyses: their mark is 4
SEATS = 5


def _plans() -> dict[str, Any]:
    return {
        "metrics": {
            "analysis": {
                "kind": "periodic",
                "unit": {
                    "one": "analysis",
                    "other": "analyses",
                    "ru": {
                        "one": "анализ",
                        "few": "анализа",
                        "many": "анализов",
                        "other": "анализа",
                    },
                },
            }
        },
        "plans": [
            {"code": "free", "name": "Free", "default": True, "limits": {"analysis": 2}},
            {
                "code": "team",
                "name": "Team",
                "price_monthly": 10,
                "limits": {"analysis": POOL},
                "seats": SEATS,
            },
        ],
    }


@pytest.fixture
def team_app(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app(**MAIL_CONFIG, BILLING_PLANS=_plans())
    Mailman(app)
    with app.app_context():
        yield app


def make_team(billing: ProfileBilling, owner: str, admin: str, capped: str, uncapped: str) -> str:
    """A team on the paid plan with an owner, an admin, a capped and an uncapped member: four of
    its five seats taken."""
    account = billing.accounts.create_team(owner, "Acme")
    billing.change_plan(owner, "team", account_id=account.id)
    billing.accounts.add_member(owner, account.id, admin, Role.ADMIN)
    billing.accounts.add_member(owner, account.id, capped, Role.MEMBER)
    billing.accounts.add_member(owner, account.id, uncapped, Role.MEMBER)
    billing.accounts.set_cap(owner, account.id, capped, "analysis", CAP)
    return account.id


@pytest.fixture
def team(team_app: Flask) -> str:
    return make_team(billing_of(team_app), OWNER, ADMIN, CAPPED, UNCAPPED)


def sent(app: Flask) -> list[tuple[str, str]]:
    """(recipient, subject) of every email sent, in order."""
    return [(email.to[0].split("@")[0], spaced(email.subject)) for email in outbox(app)]


def rows(app: Flask, account_id: str) -> list[tuple[str, str, str]]:
    """(kind, recipient or "", status) of the account's notifications, in claim order."""
    columns = notifications.c
    query = (
        select(columns.kind, columns.recipient_user_id, columns.status)
        .where(columns.account_id == account_id)
        .order_by(columns.id)
    )
    with app.extensions["sqlalchemy"].engine.connect() as connection:
        return [(kind, recipient, status) for kind, recipient, status in connection.execute(query)]


# --- the pool's notices: the owners and the admins ------------------------------------------------


def test_the_pools_notices_reach_the_owner_and_the_admin_once_never_a_member(
    team_app: Flask, team: str
) -> None:
    billing = billing_of(team_app)
    for _ in range(8):  # the mark of the pool, by the uncapped member
        billing.consume(UNCAPPED, "analysis", account_id=team)

    assert billing.run_maintenance().emails_sent == 2
    assert billing.run_maintenance().emails_sent == 0
    billing.consume(UNCAPPED, "analysis", account_id=team)
    billing.consume(CAPPED, "analysis", account_id=team)
    with pytest.raises(QuotaExceeded) as refused:
        billing.consume(UNCAPPED, "analysis", account_id=team)
    assert refused.value.scope == "pool"
    with pytest.raises(QuotaExceeded):
        billing.consume(CAPPED, "analysis", account_id=team)  # the pool's notice is claimed
    assert billing.run_maintenance().emails_sent == 2
    assert billing.run_maintenance().emails_sent == 0

    assert sent(team_app) == [
        (ADMIN, "Only 2 analyses left this period"),
        (OWNER, "Only 2 analyses left this period"),
        (ADMIN, "Limit reached: Analyses"),
        (OWNER, "Limit reached: Analyses"),
    ]
    assert "Analyses: 8 of 10 used." in outbox(team_app)[0].body
    # The team's own row is done once it became its recipients' rows, each sent once.
    assert rows(team_app, team) == [
        ("quota_low", "", "sent"),
        ("quota_low", ADMIN, "sent"),
        ("quota_low", OWNER, "sent"),
        ("quota_blocked", "", "sent"),
        ("quota_blocked", ADMIN, "sent"),
        ("quota_blocked", OWNER, "sent"),
    ]


def test_a_recipient_whose_email_failed_is_retried_without_resending_to_the_other(
    make_app: AppFactory, clock: Clock
) -> None:
    sender = RecordingSender(failures=1)  # the first email, the admin's, fails once
    app = make_app(
        BILLING_EMAIL_SENDER=sender,
        BILLING_USER_INFO=user_info,
        BILLING_EMAIL_RETRY_SECONDS=60,
        BILLING_PLANS=_plans(),
    )
    with app.app_context():
        billing = billing_of(app)
        team = make_team(billing, OWNER, ADMIN, CAPPED, UNCAPPED)
        for _ in range(8):
            billing.consume(UNCAPPED, "analysis", account_id=team)
        first = billing.run_maintenance()
        clock.advance(seconds=60)
        second = billing.run_maintenance()
        clock.advance(days=1)
        billing.run_maintenance()

        assert (first.emails_sent, second.emails_sent) == (1, 1)
        assert [email.to for email in sender.sent] == [
            f"{OWNER}@example.com",
            f"{ADMIN}@example.com",
        ]
        assert rows(app, team) == [
            ("quota_low", "", "sent"),
            ("quota_low", ADMIN, "sent"),
            ("quota_low", OWNER, "sent"),
        ]


def test_a_team_notice_goes_to_whoever_is_admin_when_its_email_is_due(
    team_app: Flask, team: str
) -> None:
    billing = billing_of(team_app)
    for _ in range(8):
        billing.consume(UNCAPPED, "analysis", account_id=team)
    billing.accounts.change_role(OWNER, team, ADMIN, Role.MEMBER)
    billing.accounts.change_role(OWNER, team, UNCAPPED, Role.ADMIN)

    billing.run_maintenance()

    assert sent(team_app) == [
        (UNCAPPED, "Only 2 analyses left this period"),
        (OWNER, "Only 2 analyses left this period"),
    ]


# --- a member's own cap: that member alone ---------------------------------------------------------


def test_a_members_cap_notices_reach_that_member_alone_once(team_app: Flask, team: str) -> None:
    billing = billing_of(team_app)
    low: list[dict[str, Any]] = []
    exceeded: list[dict[str, Any]] = []
    due: list[dict[str, Any]] = []
    with (
        signals.cap_low.connected_to(lambda app, **kw: low.append(kw)),
        signals.quota_exceeded.connected_to(lambda app, **kw: exceeded.append(kw)),
        signals.notification_due.connected_to(lambda app, **kw: due.append(kw)),
    ):
        for _ in range(4):  # their mark
            billing.consume(CAPPED, "analysis", account_id=team)
        assert billing.run_maintenance().emails_sent == 1
        billing.consume(CAPPED, "analysis", account_id=team)
        for _ in range(2):
            with pytest.raises(QuotaExceeded) as refused:
                billing.consume(CAPPED, "analysis", account_id=team)
            assert refused.value.scope == "member"
        assert billing.run_maintenance().emails_sent == 1
        assert billing.run_maintenance().emails_sent == 0

    assert sent(team_app) == [
        (CAPPED, "Your limit in Acme: only 1 analysis left"),
        (CAPPED, "Your limit in Acme is reached: Analyses"),
    ]
    low_email, reached_email = (email.body for email in outbox(team_app))
    assert "Only 1 analysis of your own limit in the team Acme is left until" in low_email
    assert "Analyses: you used 4 of the 5 the team gives you." in low_email
    assert "Your own limit in the team Acme is used up until" in reached_email
    assert "Analyses: you used 5 of the 5 the team gives you." in reached_email
    assert rows(team_app, team) == [("cap_low", CAPPED, "sent"), ("cap_reached", CAPPED, "sent")]
    assert [(kw["user_id"], kw["allowance"].used, kw["allowance"].limit) for kw in low] == [
        (CAPPED, 4, CAP)
    ]
    assert [kw["scope"] for kw in exceeded] == ["member", "member"]
    assert [(kw["user_id"], kw["kind"]) for kw in due] == [
        (CAPPED, "cap_low"),
        (CAPPED, "cap_reached"),
    ]


def test_using_the_last_unit_of_a_cap_and_being_refused_is_one_email(
    team_app: Flask, team: str
) -> None:
    billing = billing_of(team_app)
    billing.consume(CAPPED, "analysis", CAP, account_id=team)
    with pytest.raises(QuotaExceeded):
        billing.consume(CAPPED, "analysis", account_id=team)

    billing.run_maintenance()

    assert sent(team_app) == [(CAPPED, "Your limit in Acme is reached: Analyses")]


def test_only_the_charge_that_crosses_a_cap_mark_costs_a_statement_more(
    team_app: Flask, team: str, statements: list[str]
) -> None:
    billing = billing_of(team_app)
    billing.consume(UNCAPPED, "analysis", account_id=team)
    billing.consume(CAPPED, "analysis", account_id=team)  # each member's counter row exists
    counts = []
    for user in (UNCAPPED, CAPPED, CAPPED, CAPPED):  # the capped one crosses 4 at the last
        statements.clear()
        billing.consume(user, "analysis", account_id=team)
        # Round trips that do work: SQLite's BEGIN IMMEDIATE of a transaction is not one.
        counts.append(len([s for s in statements if not s.lstrip().upper().startswith("BEGIN")]))

    uncapped, capped, _, crossing = counts
    assert uncapped == capped
    assert crossing == capped + 1
    assert rows(team_app, team) == [("cap_low", CAPPED, "pending")]


# --- seats ------------------------------------------------------------------------------------------


def test_the_last_seat_taken_tells_the_owner_once_a_day(
    team_app: Flask, team: str, clock: Clock
) -> None:
    billing = billing_of(team_app)
    full: list[dict[str, Any]] = []
    with signals.seats_full.connected_to(lambda app, **kw: full.append(kw)):
        invitation = billing.accounts.invite(ADMIN, team, "newcomer@example.com").invitation
        billing.accounts.revoke_invitation(OWNER, team, invitation.id)
        billing.accounts.invite(OWNER, team, "newcomer@example.com")  # full again, same day
        billing.run_maintenance()
        clock.advance(days=1)
        billing.accounts.remove_member(OWNER, team, UNCAPPED)
        billing.accounts.add_member(OWNER, team, "latecomer-1", Role.MEMBER)
        billing.run_maintenance()
        assert billing.run_maintenance().emails_sent == 0

    assert sent(team_app) == [
        (OWNER, "All seats of Acme are taken"),
        (OWNER, "All seats of Acme are taken"),
    ]
    for email in outbox(team_app):  # the invitation of the day before still holds its seat
        assert "Seats: 5; members: 4; pending invitations: 1." in email.body
    assert [(kw["account_id"], kw["seats"], kw["members"], kw["invited"]) for kw in full] == [
        (team, SEATS, 4, 1),
        (team, SEATS, 4, 1),
    ]


def test_a_seats_full_email_whose_seat_was_freed_meanwhile_is_skipped(
    team_app: Flask, team: str
) -> None:
    billing = billing_of(team_app)
    invitation = billing.accounts.invite(OWNER, team, "newcomer@example.com").invitation
    billing.accounts.revoke_invitation(OWNER, team, invitation.id)

    billing.run_maintenance()

    assert sent(team_app) == []
    assert rows(team_app, team) == [("seats_full", "", "sent"), ("seats_full", OWNER, "skipped")]


# --- in Russian -------------------------------------------------------------------------------------


def test_the_team_emails_in_russian(team_app: Flask) -> None:
    billing = billing_of(team_app)
    team = make_team(billing, "ivan-owner", "admin-1", "ivan-capped", "member-2")
    for _ in range(4):
        billing.consume("ivan-capped", "analysis", account_id=team)
    billing.consume("member-2", "analysis", 4, account_id=team)  # the pool's mark: 8
    billing.accounts.invite("ivan-owner", team, "newcomer@example.com")

    billing.run_maintenance()

    emails = {
        (email.to[0], spaced(email.subject)): spaced(email.body) for email in outbox(team_app)
    }
    assert set(emails) == {
        ("ivan-capped@example.com", "Ваш лимит в команде «Acme»: осталось всего 1 анализ"),
        ("ivan-owner@example.com", "Осталось всего 2 анализа в этом периоде"),
        ("admin-1@example.com", "Only 2 analyses left this period"),
        ("ivan-owner@example.com", "Все места в команде «Acme» заняты"),
    }
    capped = emails[
        ("ivan-capped@example.com", "Ваш лимит в команде «Acme»: осталось всего 1 анализ")
    ]
    assert "Анализы: вы использовали 4 из 5, выделенных вам командой." in capped
    assert "Попросите владельца или администратора команды увеличить ваш лимит." in capped
    seats = emails[("ivan-owner@example.com", "Все места в команде «Acme» заняты")]
    assert "Мест: 5; участников: 4; ожидающих приглашений: 1." in seats


# --- the migration ----------------------------------------------------------------------------------


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def _notice(recipient: str | None, kind: str = "quota_low") -> dict[str, Any]:
    return {
        "account_id": "team:t1",
        "recipient_user_id": recipient,
        "kind": kind,
        "subject": "analysis",
        "period_key": "1759276800",
        "status": "sent",
        "attempts": 0,
    }


def _insert_notices(engine: Engine, rows: list[dict[str, Any]]) -> None:
    statement = text(
        "INSERT INTO billing_notifications (account_id, recipient_user_id, kind, subject, "
        "period_key, status, attempts, created_at) VALUES (:account_id, :recipient_user_id, "
        ":kind, :subject, :period_key, :status, :attempts, CURRENT_TIMESTAMP)"
    )
    with engine.begin() as connection:
        connection.execute(statement, rows)


def _recipients(engine: Engine) -> list[tuple[str, Any]]:
    query = text("SELECT kind, recipient_user_id FROM billing_notifications ORDER BY id")
    with engine.connect() as connection:
        return [(kind, recipient) for kind, recipient in connection.execute(query)]


def test_the_migration_makes_the_recipient_part_of_the_key_and_back(engine: Engine) -> None:
    migrate.upgrade(engine, "0008")
    _insert_notices(engine, [_notice(None), _notice(None, "quota_blocked")])

    migrate.upgrade(engine, "0009")
    _insert_notices(engine, [_notice(OWNER), _notice(ADMIN)])  # one per recipient now
    with pytest.raises(IntegrityError):
        _insert_notices(engine, [_notice("")])  # the account's own, claimed already
    assert _recipients(engine) == [
        ("quota_low", ""),
        ("quota_blocked", ""),
        ("quota_low", OWNER),
        ("quota_low", ADMIN),
    ]

    migrate.downgrade(engine, "0008")
    assert _recipients(engine) == [("quota_low", None), ("quota_blocked", None)]
    with pytest.raises(IntegrityError):
        _insert_notices(engine, [_notice(OWNER)])  # one per (account, kind, subject, period)
