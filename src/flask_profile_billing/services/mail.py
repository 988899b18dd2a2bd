"""The notifications' emails: rendered in the user's language and time zone, sent by maintenance,
retried, and never sent twice.

Emails are on when a sender is available (``BILLING_EMAIL_SENDER``): by default flask-mailman or
Flask-Mail, whichever extension the host initialised (flask-mailman when both are), or any callable
that takes an ``OutgoingEmail``. Without one, the notifications are announced by their signals only
and stored as ``sent`` at once.

With a sender, each notification is claimed ``pending`` (``NotificationService.emails_enabled``) and
the next maintenance run sends it, so an email follows its notice within the scheduler's interval.
A run takes the due ones in batches of at most BILLING_EMAIL_BATCH_SIZE (the ids selected with their
limit, then exactly those moved to ``sending``), so two workers never take the same one; then
renders and sends each and records the outcome: ``sent``; ``pending`` again with a later next
attempt when the sender raised, until BILLING_EMAIL_MAX_ATTEMPTS, then ``failed``; ``failed`` at
once when the user has no address; ``skipped`` when the notice no longer applies (its period is
over, a plan change made it untrue, another email said it). The scheduler's run keeps its lease
before each email and stops when it lost it. A worker that dies between taking a batch and
recording its outcomes leaves that batch ``sending``; after BILLING_EMAIL_UNCERTAIN_AFTER_SECONDS
the next run makes those ``uncertain`` (reported, logged, ``email_uncertain``), and sends them again
only with BILLING_EMAIL_RESEND_UNCERTAIN: at most once by default, at least once by choice.

The From address is BILLING_EMAIL_FROM, else the host's MAIL_DEFAULT_SENDER; with a mail extension
and neither, ``init_app`` raises.

The emails are rendered by ``presentation.emails`` from ``profile_billing/email/<kind>.txt`` and
``<kind>.html`` (a host's own override them), in the locale of BILLING_EMAIL_LOCALE (else
BILLING_LOCALE, else English), with dates in the user's time zone (the profile's).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from email.utils import formataddr
from enum import Enum
from typing import Any

from flask import url_for
from sqlalchemy import Connection
from werkzeug.routing import BuildError

from .. import signals
from ..domain.accounts import AccountKind, account_kind, personal_user_id
from ..domain.catalog import MetricKind, render
from ..domain.limits import Allowance
from ..domain.notifications import (
    Notification,
    NotificationKind,
    NotificationStatus,
    period_key,
    retry_delay,
    team_recipient_roles,
)
from ..domain.periods import Period
from ..domain.subscriptions import Subscription, SubscriptionStatus
from ..errors import BillingConfigError, UnknownUserError
from ..presentation.emails import render_email
from ..presentation.translator import Translator, counted, metric_title, translator_of
from ..store import accounts as stored_accounts
from ..store import notifications as stored
from ..store import profiles as stored_profiles
from ..store.transactions import read_connection, write_transaction
from .email_senders import (
    EmailSender,
    EmailSenders,
    FlaskMailmanSender,
    FlaskMailSender,
    OutgoingEmail,
    SendOne,
)
from .leases import LeaseLost
from .profiles import ProfileService, describe_host_user
from .quotas import QuotaService
from .runtime import Runtime
from .subscriptions import SubscriptionService
from .users import load_host_user

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EmailRun:
    """What the email step of one maintenance run did (or with ``dry_run`` would do)."""

    sent: int = 0
    """Emails sent (a dry run: how many are due)."""
    failed: int = 0
    """Emails failed for good."""
    uncertain: int = 0
    """Emails found stranded in ``sending`` and marked ``uncertain``."""
    resent: int = 0
    """Emails found stranded and due again (BILLING_EMAIL_RESEND_UNCERTAIN)."""


def default_from(config: Mapping[str, Any]) -> str | None:
    """The host's MAIL_DEFAULT_SENDER, which flask-mailman and Flask-Mail both read; Flask-Mail
    also takes a (name, address) pair."""
    value = config.get("MAIL_DEFAULT_SENDER")
    if isinstance(value, tuple | list) and len(value) == 2:
        return formataddr((str(value[0]), str(value[1])))
    return str(value) if value else None


class _Outcome(Enum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    SKIPPED = "skipped"


class _NotSent(Exception):
    """The email of a notification is not to be sent: ``outcome`` says what to record."""

    def __init__(self, outcome: _Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome


class MailService:
    def __init__(
        self,
        runtime: Runtime,
        senders: EmailSenders,
        subscriptions: SubscriptionService,
        quotas: QuotaService,
        profiles: ProfileService,
    ) -> None:
        self._runtime = runtime
        self._senders = senders
        self._subscriptions = subscriptions
        self._quotas = quotas
        self._profiles = profiles

    @property
    def sender(self) -> EmailSender | None:
        """Read at each use, so a mail extension initialised after this one is found too."""
        return self._senders.sender

    @property
    def enabled(self) -> bool:
        return self._senders.enabled

    @property
    def from_address(self) -> str | None:
        """BILLING_EMAIL_FROM, else the mail extension's MAIL_DEFAULT_SENDER (read at each use)."""
        configured = self._runtime.settings.email.from_address
        return configured or default_from(self._runtime.app.config)

    def check_from_address(self) -> None:
        """``BillingConfigError`` when the emails go through a mail extension and nothing gives
        them a From address: every one of them would fail. A sender of the host's own may do
        without (its own queue knows where mail comes from)."""
        if isinstance(self.sender, FlaskMailmanSender | FlaskMailSender) and not self.from_address:
            raise BillingConfigError(
                "The notification emails have no From address: set MAIL_DEFAULT_SENDER for "
                "your mail extension (or BILLING_EMAIL_FROM), or turn the emails off with "
                "BILLING_EMAIL_SENDER = False."
            )

    # -- the maintenance step ------------------------------------------------------------------

    def send_due(
        self,
        now: datetime,
        after_batch: Callable[[], None] | None,
        dry_run: bool,
        keep_lease: Callable[[], None] | None = None,
    ) -> EmailRun:
        """Settle the emails stranded in ``sending`` (``uncertain``, or due again with
        BILLING_EMAIL_RESEND_UNCERTAIN), then send the emails due at ``now``, in batches of
        BILLING_EMAIL_BATCH_SIZE (emails take longer than rows, so not in maintenance's batches).
        With ``dry_run``, count what is due and stranded and change nothing.

        ``keep_lease`` (the scheduler's run) is called before each email: it renews the lease
        when due and raises ``LeaseLost`` when another worker took the job over, and then this
        run stops before its next email, its batch's unsent ones given back."""
        sender = self.sender
        engine = self._runtime.engine
        settings = self._runtime.settings.email
        if dry_run:
            if sender is None:
                return EmailRun()
            with read_connection(engine) as connection:
                due = stored.count_due_emails(connection, now=now)
                stranded = stored.count_stranded(connection, now=now)
            resend = settings.resend_uncertain
            return EmailRun(
                sent=due, uncertain=0 if resend else stranded, resent=stranded if resend else 0
            )
        if sender is None:
            return EmailRun()
        try:
            # Checked again here: the mail extension may have been set up after this one.
            self.check_from_address()
        except BillingConfigError:
            log.exception("the notification emails wait, unsent")
            return EmailRun()
        uncertain, resent = self._settle_stranded(now, after_batch)
        sent = failed = 0
        while True:
            if keep_lease is not None:
                keep_lease()
            # The moment a taken email counts as stranded, from the clock of the taking: a long
            # run takes its last batch long after its `now`.
            taken_at = max(now, self._runtime.now())
            uncertain_at = taken_at + timedelta(seconds=settings.uncertain_after_seconds)
            with write_transaction(engine) as connection:
                taken = stored.take_due_emails(
                    connection, now=now, batch_size=settings.batch_size, uncertain_at=uncertain_at
                )
                # In the taking transaction: a team's notice either stays pending or has become
                # its recipients' own rows, never both, never neither.
                to_send = self._fan_out(connection, taken, now)
            if not taken:
                return EmailRun(sent=sent, failed=failed, uncertain=uncertain, resent=resent)
            outcomes = self._send_batch(sender, to_send, now, keep_lease)
            sent += outcomes.count(_Outcome.SENT)
            failed += outcomes.count(_Outcome.FAILED)
            if after_batch is not None:
                after_batch()

    def _fan_out(
        self, connection: Connection, taken: list[Notification], now: datetime
    ) -> list[Notification]:
        """The taken notifications to email as they are. A team's notice of its own recipients
        is not: it becomes one pending row per recipient (its owners and admins, or its owners
        for ``seats_full``, as they are now), each then sent, retried and recorded on its own,
        at most once, by this run's next batch; the team's row is done (``sent``), or
        ``skipped`` when nobody holds those roles."""
        kept: list[Notification] = []
        for notification in taken:
            if notification.recipient_user_id is not None or (
                account_kind(notification.account_id) is not AccountKind.TEAM
            ):
                kept.append(notification)
                continue
            roles = team_recipient_roles(notification.kind)
            named = stored.fan_out(connection, notification, roles=roles, now=now)
            status = NotificationStatus.SENT if named else NotificationStatus.SKIPPED
            stored.finish_email(connection, notification.id, status, now=now)
        return kept

    def _settle_stranded(
        self, now: datetime, after_batch: Callable[[], None] | None
    ) -> tuple[int, int]:
        """Make the emails stranded in ``sending`` ``uncertain`` (or due again), in batches, each
        announced with ``email_uncertain``; (left uncertain, to be sent again)."""
        settings = self._runtime.settings.email
        batch_size = settings.batch_size
        settled = 0
        while True:
            with write_transaction(self._runtime.engine) as connection:
                found = stored.settle_stranded(
                    connection, now=now, batch_size=batch_size, resend=settings.resend_uncertain
                )
            if not found:
                break
            settled += len(found)
            log.warning(
                "%s notification emails were taken for sending and never recorded: %s",
                len(found),
                "sending them again" if settings.resend_uncertain else "marked uncertain",
            )
            if signals.email_uncertain.receivers:
                for notification in found:
                    signals.email_uncertain.send(
                        self._runtime.app,
                        user_id=notification.user_id,
                        account_id=notification.account_id,
                        kind=notification.kind.value,
                        notification=notification,
                        resent=settings.resend_uncertain,
                    )
            if after_batch is not None:
                after_batch()
        return (0, settled) if settings.resend_uncertain else (settled, 0)

    def _send_batch(
        self,
        sender: EmailSender,
        taken: list[Notification],
        now: datetime,
        keep_lease: Callable[[], None] | None,
    ) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        batch = getattr(sender, "batch", None)
        opened: AbstractContextManager[SendOne] = (
            batch() if callable(batch) else nullcontext(sender)
        )
        attempted = 0
        try:
            with opened as send:
                for notification in taken:
                    if keep_lease is not None:
                        keep_lease()
                    # Counted before the attempt: an email whose outcome could not be recorded
                    # stays `sending` (it may have gone out) until it is found stranded.
                    attempted += 1
                    outcome = self._deliver(notification, send, now)
                    outcomes.append(outcome)
                    self._record(notification, outcome, now)
        except LeaseLost:
            # Another worker runs the job now: the emails this run did not attempt are its.
            with write_transaction(self._runtime.engine) as connection:
                stored.give_back(connection, [n.id for n in taken[attempted:]], now=now)
            raise
        except Exception:
            # The connection could not be opened, or an outcome not recorded: the emails not
            # attempted yet go back to `pending`, for the next attempt.
            log.exception("could not send the notification emails")
        for notification in taken[attempted:]:
            outcome = self._retry_or_fail(notification)
            self._record(notification, outcome, now)
            outcomes.append(outcome)
        return outcomes

    def _deliver(self, notification: Notification, send: SendOne, now: datetime) -> _Outcome:
        try:
            email = self.compose(notification, now)
        except _NotSent as not_sent:
            log.info("notification %s: no email (%s)", notification.id, not_sent)
            return not_sent.outcome
        except Exception:
            log.exception("could not render the email of notification %s", notification.id)
            return self._retry_or_fail(notification)
        try:
            send(email)
        except Exception:
            log.exception(
                "could not send the email of notification %s (attempt %s)",
                notification.id,
                notification.attempts,
            )
            return self._retry_or_fail(notification)
        return _Outcome.SENT

    def _retry_or_fail(self, notification: Notification) -> _Outcome:
        attempts = self._runtime.settings.email.max_attempts
        return _Outcome.FAILED if notification.attempts >= attempts else _Outcome.RETRY

    def _record(self, notification: Notification, outcome: _Outcome, now: datetime) -> None:
        retry_at = None
        if outcome is _Outcome.RETRY:
            first = timedelta(seconds=self._runtime.settings.email.retry_seconds)
            retry_at = now + retry_delay(notification.attempts, first)
        status = {
            _Outcome.SENT: NotificationStatus.SENT,
            _Outcome.RETRY: NotificationStatus.PENDING,
            _Outcome.FAILED: NotificationStatus.FAILED,
            _Outcome.SKIPPED: NotificationStatus.SKIPPED,
        }[outcome]
        with write_transaction(self._runtime.engine) as connection:
            stored.finish_email(connection, notification.id, status, now=now, retry_at=retry_at)

    # -- rendering -----------------------------------------------------------------------------

    def compose(self, notification: Notification, now: datetime) -> OutgoingEmail:
        """The email of ``notification`` at ``now``; ``_NotSent`` when there is none to send. A
        ``quota_low`` one with nothing left marks the period's ``quota_blocked`` covered."""
        recipients = _recipients(notification.account_id, notification.recipient_user_id)
        if not recipients:
            raise _NotSent(_Outcome.SKIPPED, "the account has nobody to tell")
        # One email per notification: to its one recipient.
        recipient = recipients[0]
        try:
            user = load_host_user(self._runtime, recipient)
        except UnknownUserError:
            raise _NotSent(_Outcome.FAILED, "the host does not know the user") from None
        host = describe_host_user(self._runtime, user)
        if not host.email:
            raise _NotSent(_Outcome.FAILED, "the user has no email address")
        translator = self.translator_for(user)
        zone = self._profiles.timezone_of(recipient)
        variables: dict[str, Any] = {
            "user": user,
            "name": self._first_name(recipient) or host.first_name,
            "email": host.email,
            "kind": notification.kind.value,
            "notification": notification,
            "timezone": zone,
            "profile_url": self._profile_url(),
            **self._details(notification, now, translator, zone),
        }
        kind = notification.kind
        if kind is NotificationKind.QUOTA_LOW and variables.get("remaining") == 0:
            # The last unit was used: "only 0 left" is "limit reached", said once (the later
            # refusal's notice is covered by this email, see `_still_applies`).
            kind = NotificationKind.QUOTA_BLOCKED
            with write_transaction(self._runtime.engine) as connection:
                stored.cover_limit_reached(
                    connection,
                    account_id=notification.account_id,
                    metric=notification.subject,
                    period_key=notification.period_key,
                    now=now,
                    recipient_user_id=notification.recipient_user_id,
                )
        if kind is NotificationKind.CAP_LOW and variables.get("remaining") == 0:
            # The member used the last unit of their cap: "only 0 left" is "your cap is reached",
            # said once, as for the pool.
            kind = NotificationKind.CAP_REACHED
            with write_transaction(self._runtime.engine) as connection:
                stored.cover_limit_reached(
                    connection,
                    account_id=notification.account_id,
                    metric=notification.subject,
                    period_key=notification.period_key,
                    now=now,
                    recipient_user_id=notification.recipient_user_id,
                    kind=NotificationKind.CAP_REACHED,
                )
        rendered = render_email(self._runtime.app.jinja_env, kind, translator, variables)
        return OutgoingEmail(
            to=host.email,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            from_address=self.from_address,
            locale=translator.locale,
            notification=notification,
        )

    def _first_name(self, user_id: str) -> str | None:
        """The first name the user set on the profile: it wins over the host's, as everywhere."""
        with read_connection(self._runtime.engine) as connection:
            row = stored_profiles.find(connection, user_id)
        return None if row is None else row.first_name

    def translator_for(self, user: Any) -> Translator:
        """The translator of ``user``'s emails: BILLING_EMAIL_LOCALE (a locale, or a callable of
        the host user), else BILLING_LOCALE, else English."""
        settings = self._runtime.settings
        chosen = settings.email.locale
        locale = chosen(user) if callable(chosen) else chosen
        locale = str(locale).replace("-", "_") if locale else settings.page.locale or "en"
        return translator_of(locale)

    def _details(
        self, notification: Notification, now: datetime, t: Translator, zone: tzinfo
    ) -> dict[str, Any]:
        """The variables of the notification's kind; ``_NotSent`` (skipped) when the notice no
        longer applies."""
        catalog = self._runtime.catalog
        default_plan = render(catalog.default_plan.name)
        kind = notification.kind
        if kind in (NotificationKind.EXPIRING, NotificationKind.EXPIRED):
            subscription = self._subscription(notification)
            plan = catalog.plans.get(subscription.plan_code) if subscription else None
            ends_at = notification.period_moment
            if kind is NotificationKind.EXPIRING:
                if (
                    subscription is None
                    or subscription.expires_at is None
                    or period_key(subscription.expires_at) != notification.period_key
                    or ends_at <= now
                ):
                    raise _NotSent(_Outcome.SKIPPED, "the period it announces changed or ended")
            else:
                within = self._runtime.settings.maintenance.notify_expired_within_days
                if ends_at < now - timedelta(days=within):
                    raise _NotSent(_Outcome.SKIPPED, "the period ended too long ago")
            return {
                "plan_name": render(plan.name) if plan else _plan_code_of(subscription),
                "default_plan_name": default_plan,
                "trial": subscription is not None
                and subscription.status is SubscriptionStatus.TRIAL,
                "ends_at": ends_at.astimezone(zone),
                "ends_on": t.day(ends_at.astimezone(zone)),
                "days_left": max(1, math.ceil((ends_at - now) / timedelta(days=1))),
            }
        if kind is NotificationKind.RENEWAL_FAILED:
            # The grace the decline gave is the period as it now stands.
            current = self._subscriptions.current(notification.account_id)
            if current.expires_at is None or current.expires_at <= now:
                raise _NotSent(_Outcome.SKIPPED, "the plan it speaks of has ended")
            plan = catalog.plans.get(current.plan_code)
            ends_at = current.expires_at
            return {
                "plan_name": render(plan.name) if plan else current.plan_code,
                "default_plan_name": default_plan,
                "ends_at": ends_at.astimezone(zone),
                "ends_on": t.day(ends_at.astimezone(zone)),
                "days_left": max(1, math.ceil((ends_at - now) / timedelta(days=1))),
            }
        if kind is NotificationKind.SEATS_FULL:
            return self._seat_details(notification)
        metric_name = notification.subject
        metric = catalog.metrics.get(metric_name)
        if metric is None:
            raise _NotSent(_Outcome.SKIPPED, f"the catalog has no metric {metric_name!r}")
        subscription_now = self._subscriptions.current(notification.account_id)
        period = self._runtime.period(subscription_now, now)
        if period_key(period.start) != notification.period_key:
            raise _NotSent(_Outcome.SKIPPED, "its usage period is over")
        if kind in (NotificationKind.CAP_LOW, NotificationKind.CAP_REACHED):
            allowance = self._member_allowance(notification, period)
            resets_at = period.end.astimezone(zone)
        elif metric.kind is MetricKind.GAUGE:
            allowance = self._quotas.capacity(notification.account_id, metric_name)
            resets_at = None
        else:
            allowance = self._quotas.allowance(notification.account_id, metric_name)
            resets_at = period.end.astimezone(zone)
        limit = allowance.limit
        self._still_applies(notification, allowance.used, limit)
        return {
            "metric": metric_name,
            "metric_title": metric_title(t, metric),
            "plan_name": render(catalog.plan(subscription_now.plan_code).name),
            "default_plan_name": default_plan,
            "allowance": allowance,
            "used": allowance.used,
            "limit": limit,
            "remaining": allowance.remaining,
            "used_amount": counted(t, metric, allowance.used),
            "limit_amount": None if limit is None else counted(t, metric, limit),
            "remaining_amount": (
                None if allowance.remaining is None else counted(t, metric, allowance.remaining)
            ),
            "resets_at": resets_at,
            "resets_on": None if resets_at is None else t.day(resets_at),
            "team_name": self._team_name(notification.account_id),
        }

    def _member_allowance(self, notification: Notification, period: Period) -> Allowance:
        """The recipient's own use of the metric this period under the cap the team set for
        them now; ``_NotSent`` (skipped) when they left the team."""
        member = notification.recipient_user_id
        metric = notification.subject
        with read_connection(self._runtime.engine) as connection:
            if member is None or (
                stored_accounts.role_of(connection, notification.account_id, member) is None
            ):
                raise _NotSent(_Outcome.SKIPPED, "the member left the team")
            cap = stored_accounts.cap_of(connection, notification.account_id, member, metric)
            used = stored_accounts.member_used(
                connection, notification.account_id, member, metric, period.start
            )
        return Allowance(metric, cap, used, period.end)

    def _seat_details(self, notification: Notification) -> dict[str, Any]:
        """A ``seats_full`` email's numbers, as they stand at sending: ``_NotSent`` (skipped)
        when a seat is free again or the plan's seat count changed since."""
        account_id = notification.account_id
        seats = self._runtime.catalog.plan(self._subscriptions.current(account_id).plan_code).seats
        if seats is None or str(seats) != notification.subject:
            raise _NotSent(_Outcome.SKIPPED, "the plan's seat count changed")
        now = self._runtime.now()
        with read_connection(self._runtime.engine) as connection:
            members = stored_accounts.count_members(connection, account_id)
            pending = stored_accounts.count_pending_invitations(connection, account_id, now)
        if members + pending < seats:
            raise _NotSent(_Outcome.SKIPPED, "a seat is free again")
        return {
            "team_name": self._team_name(account_id),
            "seats": seats,
            "members": members,
            "invited": pending,
        }

    def _team_name(self, account_id: str) -> str | None:
        if account_kind(account_id) is not AccountKind.TEAM:
            return None
        with read_connection(self._runtime.engine) as connection:
            record = stored_accounts.find_account(connection, account_id)
        return None if record is None else record.name

    def _still_applies(self, notification: Notification, used: int, limit: int | None) -> None:
        """``_NotSent`` (skipped) when a quota notice no longer holds for the usage as it now
        stands: the user moved to a plan without a limit or with a higher one (below the mark:
        no longer low; not used up: no longer reached), or the "limit reached" news already went
        out by the low notice's email, which said the limit was reached."""
        if limit is None:
            raise _NotSent(_Outcome.SKIPPED, "the metric has no limit on the plan now")
        if notification.kind in (NotificationKind.QUOTA_LOW, NotificationKind.CAP_LOW):
            mark = math.ceil(limit * self._runtime.settings.quota_low_threshold)
            if used < mark or limit <= 0:
                raise _NotSent(_Outcome.SKIPPED, "the usage is no longer at the mark")
            return
        if used < limit:
            raise _NotSent(_Outcome.SKIPPED, "the limit is no longer reached")
        with read_connection(self._runtime.engine) as connection:
            told = stored.covered(connection, notification.id)
        if told:
            raise _NotSent(_Outcome.SKIPPED, "the low notice's email said the limit is reached")

    def _subscription(self, notification: Notification) -> Subscription | None:
        wanted = notification.subject
        for subscription in self._subscriptions.history(notification.account_id):
            if str(subscription.id) == wanted:
                return subscription
        return None

    def _profile_url(self) -> str | None:
        settings = self._runtime.settings
        if settings.email.profile_url is not None:
            return settings.email.profile_url
        page = settings.page.blueprint
        if not page.enabled:
            return None
        try:
            return url_for(f"{page.name}.profile", _external=True)
        except (RuntimeError, BuildError):  # outside a request without SERVER_NAME
            return None


def _plan_code_of(subscription: Subscription | None) -> str:
    """The plan code of a subscription whose plan left the catalog."""
    return subscription.plan_code if subscription is not None else ""


def _recipients(account_id: str, recipient_user_id: str | None) -> list[str]:
    """The user a notification of ``account_id`` is emailed to: its own recipient when it names
    one, else a personal account's user. A team's notification of its own recipients never gets
    here: it was fanned out to one row per recipient when taken (``MailService._fan_out``)."""
    if recipient_user_id is not None:
        return [recipient_user_id]
    user_id = personal_user_id(account_id)
    return [] if user_id is None else [user_id]
