"""The extension's tables. They refer to the host's user by id only and never touch its user table.

The models use their own declarative base, so a host's ``db.create_all()`` does not create them:
``ProfileBilling.create_all()`` or the bundled migrations do (see docs/guide.md, "Database tables").
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..domain.accounts import MAX_ACCOUNT_ID_LENGTH
from .types import BigId, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
USER_ID = String(255)
# An account key: "user:" and a user id, or "team:" and a random id (see domain/accounts.py).
ACCOUNT_ID = String(MAX_ACCOUNT_ID_LENGTH)
# The current subscription of an account is the one that has not ended.
_IS_CURRENT = text("ended_at IS NULL")


# None is SQL NULL, not JSON null: as the one-statement reservation writes it, and what IS NULL
# finds. Named on each column too: SQLAlchemy 2.0.23 and older cannot look a string annotation's
# ``dict[str, Any]`` up in the type_annotation_map (and these annotations are strings).
JSON_OBJECT = JSON(none_as_null=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON_OBJECT,
    }


class PlanRow(Base):
    """A plan of the catalog, mirrored from configuration so subscriptions can refer to it."""

    __tablename__ = "billing_plans"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    price_monthly: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    price_yearly: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(String(3))
    limits: Mapped[dict[str, Any]] = mapped_column(JSON_OBJECT)
    features: Mapped[dict[str, Any]] = mapped_column(JSON_OBJECT)
    sort_order: Mapped[int] = mapped_column(Integer, default=0)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime]


class SubscriptionRow(Base):
    """An account's subscription; history is kept, the current one is the row with no ``ended_at``."""

    __tablename__ = "billing_subscriptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ACCOUNT_ID)
    plan_code: Mapped[str] = mapped_column(ForeignKey("billing_plans.code"))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    period_anchor: Mapped[datetime]
    cancelled_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (
        # At most one current subscription per account, enforced by the database: concurrent first
        # requests race on this index and exactly one insert wins.
        Index(
            "uq_billing_subscriptions_current_account",
            "account_id",
            unique=True,
            postgresql_where=_IS_CURRENT,
            sqlite_where=_IS_CURRENT,
        ),
        Index("ix_billing_subscriptions_account_id", "account_id"),
        # Maintenance looks for current subscriptions whose paid period is over.
        Index(
            "ix_billing_subscriptions_current_expires_at",
            "expires_at",
            postgresql_where=_IS_CURRENT,
            sqlite_where=_IS_CURRENT,
        ),
    )


class UsageCounterRow(Base):
    """How much of a periodic metric an account used in one billing period.

    A new period is a new row, so a "reset" is exact and needs no job.
    """

    __tablename__ = "billing_usage_counters"

    account_id: Mapped[str] = mapped_column(ACCOUNT_ID, primary_key=True)
    metric: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    period_end: Mapped[datetime]
    """Kept so that reports can find every account's current period in SQL, whatever the rule."""
    used: Mapped[int] = mapped_column(BigId, default=0)

    # Maintenance deletes the counters of periods that ended before the retention.
    __table_args__ = (Index("ix_billing_usage_counters_period_end", "period_end"),)


class UsageEventRow(Base):
    """One charged action: the usage log, and the record that makes retries free."""

    __tablename__ = "billing_usage_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ACCOUNT_ID)
    actor_user_id: Mapped[str] = mapped_column(USER_ID)
    """The user who acted: for a personal account, its user."""
    metric: Mapped[str] = mapped_column(String(64))
    amount: Mapped[int] = mapped_column(Integer)
    period_start: Mapped[datetime]
    resources: Mapped[dict[str, Any] | None] = mapped_column(JSON_OBJECT)
    event_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON_OBJECT)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("account_id", "idempotency_key"),
        Index("ix_billing_usage_events_account_id_created_at", "account_id", "created_at"),
        Index("ix_billing_usage_events_metric_created_at", "metric", "created_at"),
    )


class UsageDailyRow(Base):
    """What an account was charged for a metric on one UTC day: statistics read these, not the log.

    Kept exact by the same statement as the charge, and by refunds.
    """

    __tablename__ = "billing_usage_daily"

    account_id: Mapped[str] = mapped_column(ACCOUNT_ID, primary_key=True)
    metric: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    total: Mapped[int] = mapped_column(BigId)


class ProfileRow(Base):
    """The editable profile fields of a user; email and name stay in the host's user table."""

    __tablename__ = "billing_profiles"

    user_id: Mapped[str] = mapped_column(USER_ID, primary_key=True)
    first_name: Mapped[str | None] = mapped_column(String(100))
    company: Mapped[str | None] = mapped_column(String(200))
    country: Mapped[str | None] = mapped_column(String(2))
    timezone: Mapped[str | None] = mapped_column(String(64))
    avatar_url: Mapped[str | None] = mapped_column(String(2048))
    phone: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ActivityRow(Base):
    """An entry of a user's activity feed: plan changes, profile edits, refusals, host events.

    Charged actions are not copied here: the feed reads them from the usage log.
    """

    __tablename__ = "billing_activity"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(USER_ID)
    type: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    event_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON_OBJECT)
    occurred_at: Mapped[datetime]

    __table_args__ = (Index("ix_billing_activity_user_id_occurred_at", "user_id", "occurred_at"),)


class PaymentRow(Base):
    """A payment for a plan, created when an account asks to upgrade and settled by the provider."""

    __tablename__ = "billing_payments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ACCOUNT_ID)
    provider: Mapped[str] = mapped_column(String(32))
    provider_payment_id: Mapped[str | None] = mapped_column(String(255))
    plan_code: Mapped[str] = mapped_column(ForeignKey("billing_plans.code"))
    months: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    settled_at: Mapped[datetime | None]
    refund_reference: Mapped[str | None] = mapped_column(String(255))
    """The provider's id by which its refunds and disputes name this payment, when it is not
    ``provider_payment_id`` (Stripe: the PaymentIntent)."""
    recurring_id: Mapped[str | None] = mapped_column(String(64))
    """The recurring arrangement (``billing_recurring``) this payment renews, or set up."""

    __table_args__ = (
        UniqueConstraint("provider", "provider_payment_id"),
        Index("ix_billing_payments_account_id", "account_id"),
        Index("ix_billing_payments_provider_refund_reference", "provider", "refund_reference"),
    )


class RecurringRow(Base):
    """A standing arrangement to charge an account for a plan every period: a Stripe subscription
    (Stripe charges, its paid invoices extend the period), or a payment method YooKassa saved at
    the first payment (maintenance charges it shortly before the period ends).

    Plan, cadence, amount and currency are ours, copied from the first payment: what a renewal
    grants and must cost, whatever a webhook says.
    """

    __tablename__ = "billing_recurring"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ACCOUNT_ID)
    provider: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str] = mapped_column(String(255))
    """The provider's id: the Stripe subscription, or the saved YooKassa payment method."""
    customer_reference: Mapped[str | None] = mapped_column(String(255))
    plan_code: Mapped[str] = mapped_column(ForeignKey("billing_plans.code"))
    months: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    """``active`` (renews), ``cancelling`` (ends with the period), ``failed`` (a renewal was
    declined: no more attempts) or ``ended``."""
    last_event_at: Mapped[datetime | None]
    """When the newest provider event applied to it happened: older ones are not applied."""
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("provider", "reference"),
        Index("ix_billing_recurring_account_id", "account_id"),
    )


class PaymentEventRow(Base):
    """One step in a payment's history: every status it took, and every confirmation refused.

    ``from_status`` is None for the payment's creation; ``to_status`` equals ``from_status`` for
    an event that changed nothing (a confirmation for another amount, kept with its ``reason``).
    """

    __tablename__ = "billing_payment_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("billing_payments.id"))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    provider_event_id: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(String(255))
    occurred_at: Mapped[datetime]

    __table_args__ = (Index("ix_billing_payment_events_payment_id", "payment_id"),)


class WebhookDeliveryRow(Base):
    """Every webhook delivery as received; at most one per provider event is ``processed``."""

    __tablename__ = "billing_webhook_deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime]

    __table_args__ = (
        # Replays and concurrent deliveries of one event race on this index: one is processed.
        Index(
            "uq_billing_webhook_deliveries_processed_event",
            "provider",
            "event_id",
            unique=True,
            postgresql_where=text("outcome = 'processed'"),
            sqlite_where=text("outcome = 'processed'"),
        ),
    )


class IdempotencyKeyRow(Base):
    """The first response of a guarded request sent with an ``Idempotency-Key``.

    A key belongs to one user and one guarded endpoint. While the first request runs the row is
    ``running`` and locked until ``locked_until`` (a worker that died stops holding it then); once
    the request is charged and answered, the row is ``completed`` with the response to replay,
    until ``expires_at``.
    """

    __tablename__ = "billing_idempotency_keys"

    user_id: Mapped[str] = mapped_column(USER_ID, primary_key=True)
    scope: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the method, path, query string and body: a repeat must be the same request."""
    state: Mapped[str] = mapped_column(String(16))
    token: Mapped[str] = mapped_column(String(32))
    """Who holds a running key: only that request may complete or release it."""
    charge_event_id: Mapped[int | None] = mapped_column(BigId)
    """The usage event charged for the running request, given back if its worker died."""
    locked_until: Mapped[datetime | None]
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict[str, Any] | None] = mapped_column(JSON_OBJECT)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]

    __table_args__ = (Index("ix_billing_idempotency_keys_expires_at", "expires_at"),)


# The tables, for the services' Core statements.
plans = cast(Table, PlanRow.__table__)
subscriptions = cast(Table, SubscriptionRow.__table__)
usage_counters = cast(Table, UsageCounterRow.__table__)
usage_events = cast(Table, UsageEventRow.__table__)
usage_daily = cast(Table, UsageDailyRow.__table__)
profiles = cast(Table, ProfileRow.__table__)
activity = cast(Table, ActivityRow.__table__)
payments = cast(Table, PaymentRow.__table__)
webhook_deliveries = cast(Table, WebhookDeliveryRow.__table__)
payment_events = cast(Table, PaymentEventRow.__table__)
idempotency_keys = cast(Table, IdempotencyKeyRow.__table__)
recurring = cast(Table, RecurringRow.__table__)


class JobLeaseRow(Base):
    """One scheduled job (maintenance): when it is next due, and who runs it now.

    A worker runs the job only after claiming this row with one conditional statement that checks
    both that the job is due and that nobody holds a live lease, so any number of schedulers run
    each tick once. The holder renews its lease after each batch; if it dies, the lease runs out
    and another takes over.
    """

    __tablename__ = "billing_job_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None]
    next_due_at: Mapped[datetime]
    last_started_at: Mapped[datetime | None]
    last_finished_at: Mapped[datetime | None]


class NotificationRow(Base):
    """A notification claimed for an account: at most one per (account, kind, subject, period,
    recipient).

    ``subject`` is the subscription id, the metric or the seat count; ``period_key`` the end of
    the paid period or
    the start of the usage period, in Unix seconds. ``status`` follows the email: ``pending`` until
    it is sent, ``sent`` (also when there is no email to send), ``failed`` when every attempt failed.
    """

    __tablename__ = "billing_notifications"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ACCOUNT_ID)
    recipient_user_id: Mapped[str] = mapped_column(USER_ID, default="", server_default="")
    """Who is told; empty: the account's own recipients (a personal account: its user; a team:
    its owners and admins, each given a row of their own when the email is due). Never NULL, so
    that it can be part of the unique key: NULLs are all distinct in a unique key."""
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(64))
    period_key: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint(
            "account_id",
            "kind",
            "subject",
            "period_key",
            "recipient_user_id",
            name="uq_billing_notifications_once",
        ),
        # The email sweep looks for pending notifications whose next attempt is due.
        Index(
            "ix_billing_notifications_pending_next_attempt_at",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index("ix_billing_notifications_created_at", "created_at"),
    )


job_leases = cast(Table, JobLeaseRow.__table__)
notifications = cast(Table, NotificationRow.__table__)


class AccountRow(Base):
    """A billing account: a user's personal one (``user:<id>``) or a team (``team:<random>``)."""

    __tablename__ = "billing_accounts"

    id: Mapped[str] = mapped_column(ACCOUNT_ID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    """``personal`` or ``team``."""
    name: Mapped[str | None] = mapped_column(String(120))
    created_by: Mapped[str | None] = mapped_column(USER_ID)
    created_at: Mapped[datetime]


class AccountMemberRow(Base):
    """A user's membership of an account, with the role that says what they may do."""

    __tablename__ = "billing_account_members"

    account_id: Mapped[str] = mapped_column(
        ACCOUNT_ID, ForeignKey("billing_accounts.id"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(USER_ID, primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    joined_at: Mapped[datetime]

    # A user's accounts are looked up by the user.
    __table_args__ = (Index("ix_billing_account_members_user_id", "user_id"),)


class MemberCapRow(Base):
    """How much of a metric one member may spend from the account's pool per period."""

    __tablename__ = "billing_member_caps"

    account_id: Mapped[str] = mapped_column(ACCOUNT_ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(USER_ID, primary_key=True)
    metric: Mapped[str] = mapped_column(String(64), primary_key=True)
    cap: Mapped[int] = mapped_column(BigId)
    updated_at: Mapped[datetime]


class MemberCounterRow(Base):
    """How much of a periodic metric one member spent from the account's pool in one period."""

    __tablename__ = "billing_member_counters"

    account_id: Mapped[str] = mapped_column(ACCOUNT_ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(USER_ID, primary_key=True)
    metric: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    period_end: Mapped[datetime]
    used: Mapped[int] = mapped_column(BigId, default=0)

    # Maintenance deletes the counters of periods that ended before the retention.
    __table_args__ = (Index("ix_billing_member_counters_period_end", "period_end"),)


class InvitationRow(Base):
    """An invitation to join an account, sent to an address; only the hash of its token is kept."""

    __tablename__ = "billing_invitations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ACCOUNT_ID, ForeignKey("billing_accounts.id"))
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by: Mapped[str] = mapped_column(USER_ID)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]
    accepted_by: Mapped[str | None] = mapped_column(USER_ID)
    revoked_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_billing_invitations_account_id", "account_id"),)


accounts = cast(Table, AccountRow.__table__)
account_members = cast(Table, AccountMemberRow.__table__)
member_caps = cast(Table, MemberCapRow.__table__)
member_counters = cast(Table, MemberCounterRow.__table__)
invitations = cast(Table, InvitationRow.__table__)
