"""The notifications' emails: sent by maintenance through the host's flask-mailman or Flask-Mail (or
a sender of its own), in the user's language and time zone, retried when the sender fails, and
never sent twice, not by a second run, not by two runs at once, not after a worker died mid-send.

Time moves by the injectable clock (BILLING_CLOCK), never by waiting.
"""

# Russian text is what these tests check: its letters are meant, not look-alikes of Latin ones.
# ruff: noqa: RUF001, RUF002

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_mail import Mail as FlaskMail
from flask_mailman import Mail as Mailman
from sqlalchemy import func, select

from flask_profile_billing import (
    BillingConfigError,
    OutgoingEmail,
    ProfileBilling,
    QuotaExceeded,
    signals,
)
from flask_profile_billing.state import get_state
from flask_profile_billing.store.models import notifications
from tests.support.host_app import AppFactory, Clock, billing_of
from tests.support.host_app import db as host_db
from tests.support.mail_worker import mail_config
from tests.support.smtp import SmtpServer
from tests.support.subscriptions import run_together

HOUR = timedelta(hours=1)
LOW_MARK = 16  # 80 % of the free plan's 20 analyses
PROFILE_URL = "https://app.example.com/profile"


def user_info(user: Any) -> dict[str, Any]:
    """The host's users: ``<id>@example.com``, named after their id; "nomail..." have no address,
    "mallory" a name with markup in it."""
    if user.id.startswith("nomail"):
        return {"email": None}
    name = "<b>Mallory</b>" if user.id == "mallory" else user.id.capitalize()
    return {"email": f"{user.id}@example.com", "first_name": name}


def language_of(user: Any) -> str | None:
    """The host's choice of language: Russian for "ivan...", the default for the others."""
    return "ru" if user.id.startswith("ivan") else None


MAIL_CONFIG: dict[str, Any] = {
    "MAIL_BACKEND": "locmem",
    "MAIL_DEFAULT_SENDER": "billing@example.com",
    "BILLING_USER_INFO": user_info,
    "BILLING_EMAIL_LOCALE": language_of,
    "BILLING_EMAIL_PROFILE_URL": PROFILE_URL,
}


class RecordingSender:
    """A host's own sender: fails its first ``failures`` calls, records the rest."""

    def __init__(self, failures: int = 0, pause: float = 0.0) -> None:
        self.failures = failures
        self.pause = pause
        self.calls = 0
        self.sent: list[OutgoingEmail] = []
        self._lock = threading.Lock()

    def __call__(self, email: OutgoingEmail) -> None:
        with self._lock:
            self.calls += 1
            failing = self.calls <= self.failures
        if failing:
            raise ConnectionError("the mail server is down")
        time.sleep(self.pause)  # lets a concurrent run interleave
        with self._lock:
            self.sent.append(email)


@pytest.fixture
def mailman_app(make_app: AppFactory) -> Iterator[Flask]:
    """A host app with flask-mailman's in-memory backend, initialised after the billing
    extension (as a host may): the sender is found all the same."""
    app = make_app(**MAIL_CONFIG)
    Mailman(app)
    with app.app_context():
        yield app


def outbox(app: Flask) -> list[Any]:
    """flask-mailman's locmem backend keeps what it sent on the extension's state."""
    return list(getattr(app.extensions["mailman"], "outbox", []))


def spaced(text: str) -> str:
    """``text`` with CLDR's narrow no-break spaces ("2025\u202fг.") as plain ones."""
    return text.replace("\u202f", " ").replace("\xa0", " ")


def html_of(message: Any) -> str:
    [(content, mimetype)] = message.alternatives
    assert mimetype == "text/html"
    return str(content)


def email_rows(app: Flask) -> list[tuple[str, str, str, int, bool]]:
    """(user, kind, status, attempts, has sent_at) of every notification, in claim order."""
    columns = notifications.c
    query = select(
        func.substr(columns.account_id, 6),
        columns.kind,
        columns.status,
        columns.attempts,
        columns.sent_at,
    ).order_by(columns.id)
    with app.app_context(), app.extensions["sqlalchemy"].engine.connect() as connection:
        return [
            (user, kind, status, attempts, sent_at is not None)
            for user, kind, status, attempts, sent_at in connection.execute(query)
        ]


def reach_low_mark(billing: ProfileBilling, user: str) -> None:
    for _ in range(LOW_MARK):
        billing.consume(user, "analysis")


def use_up_and_get_refused(billing: ProfileBilling, user: str) -> None:
    while billing.allowance(user, "analysis").remaining:
        billing.consume(user, "analysis")
    with pytest.raises(QuotaExceeded):
        billing.consume(user, "analysis")


# --- each kind, once, in English and in Russian ---------------------------------------------------


def test_each_kind_is_emailed_once_in_english(mailman_app: Flask, clock: Clock) -> None:
    billing = billing_of(mailman_app)

    reach_low_mark(billing, "alice")
    assert billing.run_maintenance().emails_sent == 1
    use_up_and_get_refused(billing, "alice")
    assert billing.run_maintenance().emails_sent == 1
    ends_at = billing.change_plan("alice", "starter").expires_at
    assert ends_at == datetime(2025, 11, 13, 10, 0, tzinfo=UTC)
    clock.set(ends_at - timedelta(days=3) + HOUR)
    assert billing.run_maintenance().emails_sent == 1
    clock.set(ends_at + HOUR)
    assert billing.run_maintenance().emails_sent == 1
    second = billing.run_maintenance()

    assert second.emails_sent == 0
    emails = outbox(mailman_app)
    assert [(email.to, email.from_email, email.subject) for email in emails] == [
        (["alice@example.com"], "billing@example.com", "Only 4 analyses left this period"),
        (["alice@example.com"], "billing@example.com", "Limit reached: Analyses"),
        (
            ["alice@example.com"],
            "billing@example.com",
            "Your Starter subscription ends on November 13, 2025",
        ),
        (["alice@example.com"], "billing@example.com", "Your Starter subscription has ended"),
    ]
    low, blocked, expiring, expired = (email.body for email in emails)
    assert "Only 4 analyses left until November 1, 2025.\nAnalyses: 16 of 20 used.\n" in low
    assert (
        "Limit reached: 20 analyses of this period are used. The quota resets on November 1, 2025."
        in blocked
    )
    assert "Your Starter subscription ends in 3 days, on November 13, 2025.\n" in expiring
    assert "After that you will be on the Free plan." in expiring
    assert (
        "Your Starter subscription ended on November 13, 2025. You are now on the Free plan."
        in expired
    )
    for email in emails:
        assert email.body.startswith("Hello, Alice,\n\n")
        assert f"Your plan and quotas: {PROFILE_URL}" in email.body
        html = html_of(email)
        assert '<html lang="en">' in html
        assert f'<a href="{PROFILE_URL}"' in html
    assert "<strong>Only 4 analyses left until November 1, 2025.</strong>" in html_of(emails[0])
    assert [row[1:] for row in email_rows(mailman_app)] == [
        ("quota_low", "sent", 1, True),
        ("quota_blocked", "sent", 1, True),
        ("expiring", "sent", 1, True),
        ("expired", "sent", 1, True),
    ]


def test_each_kind_is_emailed_in_russian_with_dates_in_the_users_time_zone(
    mailman_app: Flask, clock: Clock
) -> None:
    billing = billing_of(mailman_app)
    state = mailman_app.extensions["profile_billing"]
    # Los Angeles is behind UTC: the quota's reset (1 November, 00:00 UTC) and the end of the
    # paid period (13 November, 03:00 UTC) fall on the day before there.
    state.profiles.update("ivan", {"timezone": "America/Los_Angeles"})
    clock.set(datetime(2025, 10, 13, 3, 0, tzinfo=UTC))

    reach_low_mark(billing, "ivan")
    billing.run_maintenance()
    use_up_and_get_refused(billing, "ivan")
    billing.run_maintenance()
    ends_at = billing.change_plan("ivan", "starter").expires_at
    assert ends_at == datetime(2025, 11, 13, 3, 0, tzinfo=UTC)
    clock.set(ends_at - timedelta(days=5) + HOUR)
    billing.run_maintenance()
    clock.set(ends_at + HOUR)
    billing.run_maintenance()
    billing.run_maintenance()

    emails = outbox(mailman_app)
    assert [spaced(email.subject) for email in emails] == [
        "Осталось всего 4 анализа в этом периоде",
        "Лимит исчерпан: Анализы",
        "Подписка Starter закончится 12 ноября 2025 г.",
        "Подписка Starter закончилась",
    ]
    low, blocked, expiring, expired = (spaced(email.body) for email in emails)
    assert "Осталось всего 4 анализа до 31 октября 2025 г.\nАнализы: использовано 16 из 20." in low
    assert (
        "Лимит исчерпан: использовано 20 анализов за этот период. "
        "Квота обновится 31 октября 2025 г." in blocked
    )
    assert "Ваша подписка Starter закончится 12 ноября 2025 г. — через 5 дней." in expiring
    assert "Подписка Starter закончилась 12 ноября 2025 г., теперь у вас тариф Free." in expired
    for email in emails:
        assert email.to == ["ivan@example.com"]
        assert email.body.startswith("Здравствуйте, Ivan!\n\n")
        assert "Это служебное сообщение о вашей подписке." in email.body
        assert '<html lang="ru">' in html_of(email)


@pytest.mark.parametrize(
    ("user", "days", "words"),
    [
        ("ivan", 1, "закончится 13 ноября 2025 г. — через 1 день."),
        ("ivan", 3, "закончится 13 ноября 2025 г. — через 3 дня."),
        ("ivan", 5, "закончится 13 ноября 2025 г. — через 5 дней."),
        ("alice", 1, "ends in 1 day, on November 13, 2025."),
    ],
)
def test_the_days_left_take_the_plural_form_of_the_language(
    mailman_app: Flask, clock: Clock, user: str, days: int, words: str
) -> None:
    billing = billing_of(mailman_app)
    ends_at = billing.change_plan(user, "starter").expires_at
    assert ends_at is not None
    clock.set(ends_at - timedelta(days=days) + HOUR)

    billing.run_maintenance()

    [email] = outbox(mailman_app)
    assert words in spaced(email.body)


def test_flask_mail_sends_them_too(make_app: AppFactory) -> None:
    app = make_app(**MAIL_CONFIG)
    mail = FlaskMail(app)  # TESTING suppresses the SMTP connection; the messages are recorded
    with app.app_context(), mail.record_messages() as sent:
        billing = billing_of(app)
        reach_low_mark(billing, "alice")
        billing.run_maintenance()
        billing.run_maintenance()

    [message] = sent
    assert message.recipients == ["alice@example.com"]
    assert message.sender == "billing@example.com"
    assert message.subject == "Only 4 analyses left this period"
    assert message.body is not None
    assert "Only 4 analyses left until November 1, 2025." in message.body
    assert message.html is not None
    assert '<html lang="en">' in message.html


def test_the_users_name_is_escaped_in_the_html(mailman_app: Flask) -> None:
    billing = billing_of(mailman_app)
    reach_low_mark(billing, "mallory")
    billing.run_maintenance()

    [email] = outbox(mailman_app)
    assert email.body.startswith("Hello, <b>Mallory</b>,")
    assert "Hello, &lt;b&gt;Mallory&lt;/b&gt;," in html_of(email)
    assert "<b>Mallory</b>" not in html_of(email)


def test_the_hosts_own_templates_win(make_app: AppFactory, tmp_path: Path) -> None:
    folder = tmp_path / "profile_billing" / "email"
    folder.mkdir(parents=True)
    (folder / "quota_low.txt").write_text(
        "{% block subject %}{{ remaining }} {{ metric }} to go{% endblock %}"
        "{% block body %}Used {{ used }} of {{ limit }}, until {{ resets_on }}.{% endblock %}",
        encoding="utf-8",
    )
    (folder / "quota_low.html").write_text("{# text only #}", encoding="utf-8")
    app = make_app(**MAIL_CONFIG)
    app.template_folder = str(tmp_path)
    Mailman(app)
    with app.app_context():
        billing = billing_of(app)
        reach_low_mark(billing, "alice")
        billing.run_maintenance()

        [email] = outbox(app)
    assert email.subject == "4 analysis to go"
    assert email.body == "Used 16 of 20, until November 1, 2025.\n"
    assert email.alternatives == []


# --- retries and failures -------------------------------------------------------------------------


def test_a_failing_sender_is_retried_with_backoff_then_the_email_is_failed(
    make_app: AppFactory, clock: Clock
) -> None:
    sender = RecordingSender(failures=10)
    app = make_app(
        BILLING_EMAIL_SENDER=sender,
        BILLING_USER_INFO=user_info,
        BILLING_EMAIL_MAX_ATTEMPTS=3,
        BILLING_EMAIL_RETRY_SECONDS=60,
    )
    with app.app_context():
        billing = billing_of(app)
        reach_low_mark(billing, "alice")

        first = billing.run_maintenance()
        assert (first.emails_sent, first.emails_failed, sender.calls) == (0, 0, 1)
        assert email_rows(app) == [("alice", "quota_low", "pending", 1, False)]
        billing.run_maintenance()
        clock.advance(seconds=59)
        billing.run_maintenance()
        assert sender.calls == 1  # not before its next attempt is due
        clock.advance(seconds=1)
        billing.run_maintenance()
        assert sender.calls == 2
        clock.advance(seconds=119)  # the wait doubles
        billing.run_maintenance()
        assert sender.calls == 2
        clock.advance(seconds=1)
        last = billing.run_maintenance()
        clock.advance(days=1)
        billing.run_maintenance()

    assert (last.emails_sent, last.emails_failed) == (0, 1)
    assert sender.calls == 3
    assert sender.sent == []
    assert email_rows(app) == [("alice", "quota_low", "failed", 3, False)]


def test_an_email_whose_sender_recovers_is_sent_once(make_app: AppFactory, clock: Clock) -> None:
    sender = RecordingSender(failures=1)
    app = make_app(BILLING_EMAIL_SENDER=sender, BILLING_USER_INFO=user_info)
    with app.app_context():
        billing = billing_of(app)
        reach_low_mark(billing, "alice")
        billing.run_maintenance()
        clock.advance(minutes=5)
        recovered = billing.run_maintenance()
        clock.advance(days=2)
        billing.run_maintenance()

    assert recovered.emails_sent == 1
    assert [email.to for email in sender.sent] == ["alice@example.com"]
    assert email_rows(app) == [("alice", "quota_low", "sent", 2, True)]


def test_a_mail_server_that_cannot_be_reached_is_retried(
    make_app: AppFactory, clock: Clock
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    app = make_app(
        **{**MAIL_CONFIG, "MAIL_BACKEND": "smtp"},
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=closed_port,
        MAIL_TIMEOUT=5,
    )
    Mailman(app)
    with app.app_context():
        billing = billing_of(app)
        reach_low_mark(billing, "alice")
        unreachable = billing.run_maintenance()
        assert email_rows(app) == [("alice", "quota_low", "pending", 1, False)]
        app.extensions["mailman"].backend = "locmem"  # the server is back
        clock.advance(minutes=5)
        back = billing.run_maintenance()

    assert (unreachable.emails_sent, unreachable.emails_failed) == (0, 0)
    assert back.emails_sent == 1
    assert [email.to for email in outbox(app)] == [["alice@example.com"]]
    assert email_rows(app) == [("alice", "quota_low", "sent", 2, True)]


def test_emails_go_through_a_real_smtp_server_that_goes_away_and_comes_back(
    make_app: AppFactory, clock: Clock
) -> None:
    smtp = SmtpServer()
    smtp.start()
    try:
        app = make_app(**{**MAIL_CONFIG, **mail_config(smtp.port), "BILLING_USER_INFO": user_info})
        Mailman(app)
        with app.app_context():
            billing = billing_of(app)
            reach_low_mark(billing, "alice")
            reach_low_mark(billing, "bob")
            first = billing.run_maintenance()
            smtp.stop()  # the mail server goes away
            use_up_and_get_refused(billing, "alice")
            away = billing.run_maintenance()
            assert email_rows(app)[-1] == ("alice", "quota_blocked", "pending", 1, False)
            smtp.start()  # and comes back, on the same port
            clock.advance(minutes=5)
            back = billing.run_maintenance()
    finally:
        smtp.stop()

    assert (first.emails_sent, away.emails_sent, back.emails_sent) == (2, 0, 1)
    assert (away.emails_failed, back.emails_failed) == (0, 0)
    received = [(to, message["From"], message["Subject"]) for [to], message in smtp.messages]
    assert received == [
        ("alice@example.com", "billing@example.com", "Only 4 analyses left this period"),
        ("bob@example.com", "billing@example.com", "Only 4 analyses left this period"),
        ("alice@example.com", "billing@example.com", "Limit reached: Analyses"),
    ]
    _to, message = smtp.messages[0]
    assert message.get_content_type() == "multipart/alternative"
    text, html = (part.get_payload(decode=True).decode() for part in message.get_payload())
    assert text.startswith("Hello, Alice,")
    assert "<strong>Only 4 analyses left until November 1, 2025.</strong>" in html
    assert [row[2] for row in email_rows(app)] == ["sent", "sent", "sent"]


def test_a_user_without_an_address_fails_at_once_without_a_send(make_app: AppFactory) -> None:
    sender = RecordingSender()
    app = make_app(BILLING_EMAIL_SENDER=sender, BILLING_USER_INFO=user_info)
    with app.app_context():
        billing = billing_of(app)
        reach_low_mark(billing, "nomail")
        report = billing.run_maintenance()

    assert report.emails_failed == 1
    assert sender.calls == 0
    assert email_rows(app) == [("nomail", "quota_low", "failed", 1, False)]


def test_an_email_whose_period_is_over_is_skipped(make_app: AppFactory, clock: Clock) -> None:
    sender = RecordingSender()
    app = make_app(BILLING_EMAIL_SENDER=sender, BILLING_USER_INFO=user_info)
    with app.app_context():
        billing = billing_of(app)
        reach_low_mark(billing, "alice")
        clock.set(datetime(2025, 11, 2, tzinfo=UTC))  # maintenance did not run in October
        billing.run_maintenance()

    assert sender.calls == 0
    assert email_rows(app) == [("alice", "quota_low", "skipped", 1, False)]


def test_the_name_the_user_set_on_the_profile_wins_over_the_hosts(mailman_app: Flask) -> None:
    billing = billing_of(mailman_app)
    get_state(mailman_app).profiles.update("alice", {"first_name": "Ally"})
    reach_low_mark(billing, "alice")
    billing.run_maintenance()

    (email,) = outbox(mailman_app)
    assert email.body.startswith("Hello, Ally,\n\n")


@pytest.mark.parametrize("plan", ["enterprise", "starter"])
def test_quota_notices_that_a_plan_change_made_untrue_are_dropped(
    mailman_app: Flask, plan: str
) -> None:
    """Low and blocked on the free plan, then moved, before maintenance ran, to a plan without a
    limit (enterprise) or with a far higher one (starter): neither notice holds any more."""
    billing = billing_of(mailman_app)
    use_up_and_get_refused(billing, "alice")
    billing.change_plan("alice", plan)
    report = billing.run_maintenance()

    assert (report.emails_sent, report.emails_failed) == (0, 0)
    assert outbox(mailman_app) == []
    assert [row[1:3] for row in email_rows(mailman_app)] == [
        ("quota_low", "skipped"),
        ("quota_blocked", "skipped"),
    ]


def test_using_the_last_unit_and_being_refused_is_one_email(mailman_app: Flask) -> None:
    billing = billing_of(mailman_app)
    billing.consume("alice", "analysis", 20)  # from none to all in one charge: low at 0 left
    with pytest.raises(QuotaExceeded):
        billing.consume("alice", "analysis")
    report = billing.run_maintenance()

    assert report.emails_sent == 1
    (email,) = outbox(mailman_app)
    assert email.subject == "Limit reached: Analyses"
    assert "Limit reached: 20 analyses of this period are used." in email.body
    assert [row[1:3] for row in email_rows(mailman_app)] == [
        ("quota_low", "sent"),
        ("quota_blocked", "skipped"),
    ]


def test_a_refusal_after_the_last_unit_was_emailed_sends_nothing_more(mailman_app: Flask) -> None:
    billing = billing_of(mailman_app)
    billing.consume("alice", "analysis", 20)
    first = billing.run_maintenance()
    with pytest.raises(QuotaExceeded):
        billing.consume("alice", "analysis")
    second = billing.run_maintenance()

    assert (first.emails_sent, second.emails_sent) == (1, 0)
    assert [email.subject for email in outbox(mailman_app)] == ["Limit reached: Analyses"]


def test_the_from_address_defaults_to_the_mail_extensions_default_sender(
    make_app: AppFactory,
) -> None:
    sender = RecordingSender()
    app = make_app(
        BILLING_EMAIL_SENDER=sender,
        BILLING_USER_INFO=user_info,
        MAIL_DEFAULT_SENDER=("Billing", "billing@example.com"),  # Flask-Mail's (name, address)
    )
    with app.app_context():
        reach_low_mark(billing_of(app), "alice")
        billing_of(app).run_maintenance()

    assert [email.from_address for email in sender.sent] == ["Billing <billing@example.com>"]


def test_emails_through_a_mail_extension_without_any_from_address_fail_at_init(
    database_url: str,
) -> None:
    app = Flask("no_from_address")
    app.config.update(SQLALCHEMY_DATABASE_URI=database_url, MAIL_BACKEND="locmem")
    host_db.init_app(app)
    Mailman(app)

    with pytest.raises(BillingConfigError, match="MAIL_DEFAULT_SENDER"):
        ProfileBilling(app, host_db)


def test_a_mail_extension_set_up_later_without_a_from_address_leaves_the_emails_waiting(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(**{**MAIL_CONFIG, "MAIL_DEFAULT_SENDER": None})
    Mailman(app)
    with app.app_context():
        reach_low_mark(billing_of(app), "alice")
        report = billing_of(app).run_maintenance()

    assert (report.emails_sent, report.emails_failed) == (0, 0)
    assert outbox(app) == []
    assert email_rows(app) == [("alice", "quota_low", "pending", 0, False)]
    assert "no From address" in caplog.text


# --- never twice ----------------------------------------------------------------------------------


def test_two_concurrent_runs_send_each_email_once(make_app: AppFactory) -> None:
    sender = RecordingSender(pause=0.005)
    app = make_app(
        BILLING_EMAIL_SENDER=sender, BILLING_USER_INFO=user_info, BILLING_EMAIL_BATCH_SIZE=3
    )
    users = [f"user{number}" for number in range(12)]
    with app.app_context():
        billing = billing_of(app)
        for user in users:
            reach_low_mark(billing, user)

    def run() -> int:
        with app.app_context():
            return billing.run_maintenance().emails_sent

    sent_by_run = run_together(2, run)

    recipients = [email.to for email in sender.sent]
    assert sorted(recipients) == sorted(f"{user}@example.com" for user in users)
    assert sum(sent_by_run) == len(users)
    assert {row[2] for row in email_rows(app)} == {"sent"}


class DyingSender:
    """Stops the worker at its first email, while the mail server has the message (it may have
    gone out); sends the later ones. ``calls``: the addresses of every attempt."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, email: OutgoingEmail) -> None:
        self.calls.append(email.to)
        if len(self.calls) == 1:
            raise SystemExit("the worker was stopped")


def die_mid_send(app: Flask) -> None:
    """Reach alice's low mark and run maintenance with the app's ``DyingSender``: her email is
    left ``sending``."""
    with app.app_context():
        billing = billing_of(app)
        reach_low_mark(billing, "alice")
        with pytest.raises(SystemExit):
            billing.run_maintenance()


def test_a_worker_that_dies_mid_send_leaves_the_email_uncertain_never_sent_again(
    make_app: AppFactory, clock: Clock
) -> None:
    sender = DyingSender()
    app = make_app(BILLING_EMAIL_SENDER=sender, BILLING_USER_INFO=user_info)
    announced: list[tuple[str, str, bool]] = []

    def on_uncertain(sender: Flask, *, user_id: str, kind: str, resent: bool, **_: Any) -> None:
        announced.append((user_id, kind, resent))

    signals.email_uncertain.connect(on_uncertain, sender=app, weak=False)
    die_mid_send(app)
    with app.app_context():
        billing = billing_of(app)
        # Before BILLING_EMAIL_UNCERTAIN_AFTER_SECONDS: the run may still be sending it.
        clock.advance(minutes=59)
        early = billing.run_maintenance()
        assert (early.emails_uncertain, announced) == (0, [])
        assert email_rows(app) == [("alice", "quota_low", "sending", 1, False)]
        clock.advance(minutes=2)
        late = billing.run_maintenance()
        again = billing.run_maintenance()

    assert sender.calls == ["alice@example.com"]
    assert (late.emails_uncertain, late.emails_resent, late.emails_sent) == (1, 0, 0)
    assert announced == [("alice", "quota_low", False)]
    assert again.emails_uncertain == 0
    assert email_rows(app) == [("alice", "quota_low", "uncertain", 1, False)]
    result = app.test_cli_runner().invoke(args=["billing", "maintenance"])
    assert "uncertain" not in result.output  # said once, by the run that found it


def test_uncertain_emails_are_sent_again_when_the_host_opts_in(
    make_app: AppFactory, clock: Clock
) -> None:
    sender = DyingSender()
    app = make_app(
        BILLING_EMAIL_SENDER=sender,
        BILLING_USER_INFO=user_info,
        BILLING_EMAIL_RESEND_UNCERTAIN=True,
    )
    die_mid_send(app)
    with app.app_context():
        billing = billing_of(app)
        clock.advance(hours=2)
        report = billing.run_maintenance()

    assert sender.calls == ["alice@example.com", "alice@example.com"]
    assert (report.emails_resent, report.emails_uncertain, report.emails_sent) == (1, 0, 1)
    assert email_rows(app) == [("alice", "quota_low", "sent", 2, True)]


def test_the_cli_reports_the_uncertain_emails(make_app: AppFactory, clock: Clock) -> None:
    app = make_app(BILLING_EMAIL_SENDER=DyingSender(), BILLING_USER_INFO=user_info)
    die_mid_send(app)
    clock.advance(hours=2)
    dry = app.test_cli_runner().invoke(args=["billing", "maintenance", "--dry-run"])
    real = app.test_cli_runner().invoke(args=["billing", "maintenance"])

    assert "Emails stranded mid-send that would be marked uncertain: 1." in dry.output
    assert "marked uncertain (may not have gone out, not sent again): 1." in real.output


# --- on and off -----------------------------------------------------------------------------------


def test_a_dry_run_counts_the_emails_due_and_sends_none(mailman_app: Flask) -> None:
    billing = billing_of(mailman_app)
    reach_low_mark(billing, "alice")

    report = billing.run_maintenance(dry_run=True)

    assert report.emails_sent == 1
    assert outbox(mailman_app) == []
    assert email_rows(mailman_app) == [("alice", "quota_low", "pending", 0, False)]


def test_emails_can_be_switched_off_with_a_mail_extension_present(make_app: AppFactory) -> None:
    app = make_app(**{**MAIL_CONFIG, "BILLING_EMAIL_SENDER": False})
    Mailman(app)
    with app.app_context():
        billing = billing_of(app)
        reach_low_mark(billing, "alice")
        report = billing.run_maintenance()

    assert report.emails_sent == 0
    assert outbox(app) == []
    # The signal was the whole delivery: nothing waits for an email.
    assert email_rows(app) == [("alice", "quota_low", "sent", 0, True)]


def test_without_a_mail_extension_notifications_stay_signal_only(
    app: Flask, billing: ProfileBilling
) -> None:
    reach_low_mark(billing, "alice")

    assert billing.run_maintenance().emails_sent == 0
    assert email_rows(app) == [("alice", "quota_low", "sent", 0, True)]
