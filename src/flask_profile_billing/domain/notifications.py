"""Notifications: what a user is told about their plan and quotas, and the key that makes each once.

A notification is identified by (account, kind, subject, period, recipient): the subscription and
the end of its paid period for ``expiring`` and ``expired``, the metric and the start of its usage
period for ``quota_low``, ``quota_blocked``, ``cap_low`` and ``cap_reached``, the seat count and
the day for ``seats_full``. The recipient is empty for the account's own recipients (a personal
account's user, a team's owners and admins) and names the member for a member's own cap.
Whoever claims that key first (the charge, the refusal, the
expiry, or a maintenance sweep) sends it; everyone after finds it claimed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from .accounts import personal_user_id


class NotificationKind(StrEnum):
    EXPIRING = "expiring"
    """The paid period (or trial) ends within BILLING_NOTIFY_EXPIRING_DAYS."""
    QUOTA_LOW = "quota_low"
    """A metric reached BILLING_QUOTA_LOW_THRESHOLD of its limit in the current period."""
    QUOTA_BLOCKED = "quota_blocked"
    """An action was refused: the limit of a metric is used up."""
    EXPIRED = "expired"
    """The paid period (or trial) ended and the user is back on the default plan."""
    RENEWAL_FAILED = "renewal_failed"
    """The saved payment method was declined when the plan was to be renewed: the period is
    extended by BILLING_RENEWAL_GRACE_DAYS, then the user is back on the default plan."""
    CAP_LOW = "cap_low"
    """A team member's charge took their own use of a metric to BILLING_QUOTA_LOW_THRESHOLD of
    the cap the team set for them; told to that member only."""
    CAP_REACHED = "cap_reached"
    """A team member's charge was refused by their own cap; told to that member only."""
    SEATS_FULL = "seats_full"
    """An invitation or a new member took a team's last seat; told to its owners."""


TEAM_RECIPIENT_ROLES: dict[NotificationKind, tuple[str, ...]] = {
    NotificationKind.SEATS_FULL: ("owner",),
}
"""The roles of a team's members who get a notification of the team's own recipients, by kind;
every other kind (the pool's, the plan's) goes to the owners and admins."""
MANAGER_ROLES = ("owner", "admin")


def team_recipient_roles(kind: NotificationKind) -> tuple[str, ...]:
    """Who in a team is told a notification of the team's own recipients (``kind``)."""
    return TEAM_RECIPIENT_ROLES.get(kind, MANAGER_ROLES)


class NotificationStatus(StrEnum):
    PENDING = "pending"
    """An email is to be sent (or retried, at ``next_attempt_at``)."""
    SENDING = "sending"
    """Taken by a maintenance run that is sending its email now (at most one batch per run at a
    time). Never taken again while so: its email may be going out. If its outcome is not recorded
    by BILLING_EMAIL_UNCERTAIN_AFTER_SECONDS (the run died or stalled), it becomes
    ``uncertain``, or ``pending`` again with BILLING_EMAIL_RESEND_UNCERTAIN."""
    SENT = "sent"
    """The email was sent, or there was no email to send (the signals are the whole delivery)."""
    FAILED = "failed"
    """The email could not be sent: every attempt failed, or the user has no address. It is not
    tried again."""
    UNCERTAIN = "uncertain"
    """Its email was being sent when its run died or stalled: it may or may not have gone out.
    Not sent again (at most once), unless the host opts in (BILLING_EMAIL_RESEND_UNCERTAIN). A
    run that was only slow still records the outcome over it."""
    SKIPPED = "skipped"
    """The email was not sent because it no longer applied when its turn came (the period it
    speaks of was over)."""


@dataclass(frozen=True, slots=True)
class Notification:
    """A claimed notification, as its signal and its email receive it."""

    id: int
    account_id: str
    kind: NotificationKind
    subject: str
    """The subscription id (``expiring``, ``expired``), the metric (``quota_*``, ``cap_*``), the
    declined renewal payment's id (``renewal_failed``) or the seat count (``seats_full``)."""
    period_key: str
    """The end of the paid period, the start of the usage period or (``seats_full``) of the UTC
    day, as Unix seconds."""
    created_at: datetime
    status: NotificationStatus = NotificationStatus.SENT
    attempts: int = 0
    recipient_user_id: str | None = None
    """Whom it tells; None: the account's own recipients (a personal account: its user)."""

    @property
    def user_id(self) -> str | None:
        """The user it tells: its recipient, else the personal account's user (None for a team)."""
        return self.recipient_user_id or personal_user_id(self.account_id)

    @property
    def period_moment(self) -> datetime:
        """``period_key`` as an aware UTC datetime."""
        return datetime.fromtimestamp(int(self.period_key), UTC)

    def as_signal_arguments(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "account_id": self.account_id,
            "kind": self.kind.value,
            "subject": self.subject,
            "period": self.period_moment,
            "notification": self,
        }


def retry_delay(attempts: int, first_delay: timedelta) -> timedelta:
    """How long to wait before the next attempt at an email after ``attempts`` failed ones:
    ``first_delay``, doubled after each further failure, at most a day."""
    doublings = min(max(attempts - 1, 0), 20)  # past a day long before this; no overflow
    return min(first_delay * (1 << doublings), timedelta(days=1))


def period_key(moment: datetime) -> str:
    """The key of a period from its boundary: whole Unix seconds (the SQL sweeps compute the same)."""
    return str(int(moment.timestamp()))
