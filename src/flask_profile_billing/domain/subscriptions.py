"""Subscription status, derived from timestamps so that it is right even if no job ever ran."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from .accounts import personal_user_id


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    TRIAL = "trial"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class EndReason(StrEnum):
    """Why a subscription stopped being the current one."""

    EXPIRED = "expired"
    REPLACED = "replaced"


@dataclass(frozen=True, slots=True)
class Subscription:
    id: int
    account_id: str
    plan_code: str
    status: SubscriptionStatus
    """As stored; ``status_at`` is what it is at a given moment."""
    started_at: datetime
    expires_at: datetime | None
    """``None`` for a subscription that never lapses (the free one)."""
    period_anchor: datetime
    cancelled_at: datetime | None = None

    @property
    def user_id(self) -> str | None:
        """The user whose personal account holds the subscription; None for a team's."""
        return personal_user_id(self.account_id)

    def has_lapsed(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def status_at(self, now: datetime) -> SubscriptionStatus:
        return SubscriptionStatus.EXPIRED if self.has_lapsed(now) else self.status

    def is_active_at(self, now: datetime) -> bool:
        """Access is kept while the paid period runs, also after a cancel ("access kept until 13.11.2025")."""
        return not self.has_lapsed(now) and self.status is not SubscriptionStatus.EXPIRED

    def unused_paid_time_at(self, now: datetime) -> timedelta:
        """The paid time left at ``now``, which a change to another paid plan credits.

        Zero for a subscription that never lapses (nothing was paid for a period), for a trial
        (its time was given, not paid) and once the period is over. A cancelled subscription keeps
        its paid time until its end, so it still has some.
        """
        if (
            self.expires_at is None
            or self.status is SubscriptionStatus.TRIAL
            or not self.is_active_at(now)
        ):
            return timedelta(0)
        return self.expires_at - now

    def days_remaining_at(self, now: datetime) -> int | None:
        if self.expires_at is None:
            return None
        return max((self.expires_at - now).days, 0)
