"""The statements on ``billing_notifications``: claiming notifications, the sweeps that claim the
ones no request claimed, and the state of their emails.

A claim is ``INSERT ... ON CONFLICT DO NOTHING RETURNING``: the unique key (account, kind,
subject, period, recipient) lets exactly one claimer insert the row, and only that claimer gets it
back and sends it.
The sweeps claim whole batches with one ``INSERT ... SELECT`` each, the rows chosen in SQL (a window
of time, a share of a limit) and never loaded into Python first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    Row,
    String,
    and_,
    case,
    cast,
    extract,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from ..domain.notifications import Notification, NotificationKind, NotificationStatus
from .dialect import dialect_insert
from .models import account_members, notifications, subscriptions, usage_counters
from .subscriptions import IS_CURRENT, plan_in_force
from .types import UTCDateTime

_NOTES = notifications.c
_MEMBERS = account_members.c
_SUBS = subscriptions.c
_COUNTERS = usage_counters.c
_COLUMNS = [
    "account_id",
    "kind",
    "subject",
    "period_key",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
    "sent_at",
]
_ONCE = [
    _NOTES.account_id,
    _NOTES.kind,
    _NOTES.subject,
    _NOTES.period_key,
    _NOTES.recipient_user_id,
]
"""The unique key: a notification is claimed once per account, kind, subject, period and
recipient (empty: the account's own recipients)."""
_RETURNED = (
    _NOTES.id,
    _NOTES.account_id,
    _NOTES.kind,
    _NOTES.subject,
    _NOTES.period_key,
    _NOTES.created_at,
    _NOTES.status,
    _NOTES.attempts,
    _NOTES.recipient_user_id,
)


def to_notification(row: Row[Any]) -> Notification:
    return Notification(
        id=int(row.id),
        account_id=row.account_id,
        kind=NotificationKind(row.kind),
        subject=row.subject,
        period_key=row.period_key,
        created_at=row.created_at,
        status=NotificationStatus(row.status),
        attempts=int(row.attempts),
        recipient_user_id=row.recipient_user_id or None,
    )


def new_row(
    *,
    account_id: str,
    kind: NotificationKind,
    subject: str,
    period_key: str,
    now: datetime,
    pending: bool,
    recipient_user_id: str | None = None,
) -> dict[str, Any]:
    """The columns of a notification claimed at ``now``: ``pending`` (due for the next email
    sweep at once) when an email is to follow, else ``sent``. ``recipient_user_id`` None: the
    account's own recipients."""
    return {
        "account_id": account_id,
        "recipient_user_id": recipient_user_id or "",
        "kind": kind.value,
        "subject": subject,
        "period_key": period_key,
        "status": (NotificationStatus.PENDING if pending else NotificationStatus.SENT).value,
        "attempts": 0,
        "next_attempt_at": now if pending else None,
        "created_at": now,
        "sent_at": None if pending else now,
    }


def claim_rows(connection: Connection, rows: Sequence[dict[str, Any]]) -> list[Notification]:
    """Insert the notifications of ``rows`` (from ``new_row``) that nobody claimed yet; the ones
    this call inserted."""
    if not rows:
        return []
    statement = (
        dialect_insert(connection, notifications)
        .on_conflict_do_nothing(index_elements=_ONCE)
        .returning(*_RETURNED)
    )
    if len(rows) == 1:
        found = connection.execute(statement.values(**rows[0])).all()
    else:
        found = connection.execute(statement, list(rows)).all()
    return [to_notification(row) for row in found]


# -- the sweeps ----------------------------------------------------------------------------------


def epoch_text(connection: Connection, moment: Any) -> ColumnElement[Any]:
    """A timestamp column as whole Unix seconds in text: ``domain.notifications.period_key`` in SQL."""
    if connection.dialect.name == "postgresql":
        seconds = cast(func.floor(extract("epoch", moment)), BigInteger)
        return cast(seconds, String)
    # SQLite keeps naive UTC text, which strftime reads as UTC.
    return func.strftime("%s", moment)


def _claimed_columns(
    kind: NotificationKind, now: datetime, pending: bool
) -> list[ColumnElement[Any]]:
    values = new_row(account_id="", kind=kind, subject="", period_key="", now=now, pending=pending)
    return [
        literal(values["status"], String()).label("status"),
        literal(0, Integer()).label("attempts"),
        literal(values["next_attempt_at"], UTCDateTime()).label("next_attempt_at"),
        literal(now, UTCDateTime()).label("created_at"),
        literal(values["sent_at"], UTCDateTime()).label("sent_at"),
    ]


def _not_claimed(
    kind: NotificationKind,
    account_id: ColumnElement[Any],
    subject: ColumnElement[Any],
    period: ColumnElement[Any],
) -> ColumnElement[bool]:
    # ``OFFSET 0`` keeps PostgreSQL from turning the NOT EXISTS into an anti-join, which it plans
    # from the table's statistics: a sweep that just filled the table (thousands of notices, with
    # statistics from when it was nearly empty) got a nested loop over a full scan of it for every
    # candidate, each batch slower than the one before. As a subquery per candidate it is always
    # one probe of the unique key's index.
    claimed = (
        select(literal(1))
        .where(
            _NOTES.account_id == account_id,
            _NOTES.kind == kind.value,
            _NOTES.subject == subject,
            _NOTES.period_key == period,
            _NOTES.recipient_user_id == "",
        )
        .offset(0)
    )
    return ~claimed.exists()


def expiring_candidates(
    connection: Connection,
    *,
    now: datetime,
    until: datetime,
    pending: bool,
    batch_size: int,
    after: tuple[datetime, int] | None = None,
) -> Any:
    """Current subscriptions whose paid period ends after ``now`` and by ``until``, with no
    ``expiring`` notice claimed for that end yet: up to ``batch_size`` rows, as notification
    columns, in the order of (end, id).

    ``after`` is the (end, id) of the last subscription a previous batch of the same sweep
    claimed: the batch starts behind it (by the index of current subscriptions by expiry) instead
    of walking again over every subscription the sweep already claimed, which made a sweep's
    batches cost more and more (quadratic in the number due)."""
    subject = cast(_SUBS.id, String)
    period = epoch_text(connection, _SUBS.expires_at)
    kind = NotificationKind.EXPIRING
    behind = []
    if after is not None:
        after_end = literal(after[0], UTCDateTime())
        behind = [
            _SUBS.expires_at >= after_end,
            or_(_SUBS.expires_at > after_end, _SUBS.id > after[1]),
        ]
    return (
        select(
            _SUBS.account_id,
            literal(kind.value, String()).label("kind"),
            subject.label("subject"),
            period.label("period_key"),
            *_claimed_columns(kind, now, pending),
        )
        .where(
            IS_CURRENT,
            _SUBS.expires_at > now,
            _SUBS.expires_at <= until,
            *behind,
            _not_claimed(kind, _SUBS.account_id, subject, period),
        )
        .order_by(_SUBS.expires_at, _SUBS.id)
        .limit(batch_size)
    )


def quota_low_candidates(
    connection: Connection,
    *,
    now: datetime,
    marks: Mapping[tuple[str, str], int],
    default_plan: str,
    pending: bool,
    batch_size: int,
) -> Any | None:
    """Counters of the current period that reached the mark of the user's plan in force
    (``marks``: (plan, metric) -> the usage that warns), with no ``quota_low`` notice claimed for
    that period yet; None when no metric has a mark."""
    if not marks:
        return None
    plan = plan_in_force(now, default_plan)
    mark = case(
        *[
            (and_(plan == plan_code, _COUNTERS.metric == metric), literal(value, BigInteger()))
            for (plan_code, metric), value in marks.items()
        ],
        else_=None,
    )
    period = epoch_text(connection, _COUNTERS.period_start)
    kind = NotificationKind.QUOTA_LOW
    return (
        select(
            _COUNTERS.account_id,
            literal(kind.value, String()).label("kind"),
            _COUNTERS.metric.label("subject"),
            period.label("period_key"),
            *_claimed_columns(kind, now, pending),
        )
        .select_from(
            usage_counters.join(
                subscriptions, and_(_SUBS.account_id == _COUNTERS.account_id, IS_CURRENT)
            )
        )
        .where(
            _COUNTERS.period_start <= now,
            _COUNTERS.period_end > now,
            _COUNTERS.used >= mark,
            _not_claimed(kind, _COUNTERS.account_id, _COUNTERS.metric, period),
        )
        .limit(batch_size)
    )


def claim_selected(connection: Connection, candidates: Any) -> list[Notification]:
    """Claim the notifications ``candidates`` selects (one of the ``*_candidates`` selects), in
    one statement; the ones this call inserted."""
    statement = (
        dialect_insert(connection, notifications)
        .from_select(_COLUMNS, candidates)
        .on_conflict_do_nothing(index_elements=_ONCE)
        .returning(*_RETURNED)
    )
    return [to_notification(row) for row in connection.execute(statement)]


def count_selected(connection: Connection, candidates: Any) -> int:
    """How many notifications ``candidates`` would claim (a dry run)."""
    query = select(func.count()).select_from(candidates.subquery())
    return int(connection.execute(query).scalar_one())


# -- emails --------------------------------------------------------------------------------------


def take_due_emails(
    connection: Connection, *, now: datetime, batch_size: int, uncertain_at: datetime
) -> list[Notification]:
    """Take up to ``batch_size`` pending notifications whose next attempt is due, oldest first,
    and move them to ``sending``, counting the attempt: two workers never take the same one, and
    none is taken again before its outcome is recorded. A taken one's ``next_attempt_at`` is
    ``uncertain_at``: the moment it counts as ``uncertain`` if its outcome was never recorded.

    Two statements, never ``UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP
    LOCKED)``: PostgreSQL may plan that subquery as the inner side of a nested loop and run it
    again for every row of the outer one, each run skipping the rows the update already changed
    and finding ``n`` more, so one "batch" took hundreds of rows. The ids are selected (and
    locked) with their limit first, and exactly those are updated."""
    due = (
        select(_NOTES.id)
        .where(_NOTES.status == NotificationStatus.PENDING.value, _NOTES.next_attempt_at <= now)
        .order_by(_NOTES.next_attempt_at, _NOTES.id)
        .limit(batch_size)
    )
    if connection.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = list(connection.execute(due).scalars())
    if not ids:
        return []
    statement = (
        update(notifications)
        .where(
            _NOTES.id.in_(ids),
            # Checked again on the row itself, though the rows are locked (PostgreSQL) or the
            # transaction holds the database (SQLite): a taken row is never taken twice.
            _NOTES.status == NotificationStatus.PENDING.value,
        )
        .values(
            status=NotificationStatus.SENDING.value,
            attempts=_NOTES.attempts + 1,
            next_attempt_at=uncertain_at,
        )
        .returning(*_RETURNED)
    )
    found = [to_notification(row) for row in connection.execute(statement)]
    return sorted(found, key=lambda notification: notification.id)


def give_back(connection: Connection, notification_ids: Sequence[int], *, now: datetime) -> None:
    """Put taken notifications whose email was never attempted back to ``pending``, due at
    ``now``, their taking not counted as an attempt (the run lost its lease before them)."""
    if not notification_ids:
        return
    connection.execute(
        update(notifications)
        .where(
            _NOTES.id.in_(list(notification_ids)),
            _NOTES.status == NotificationStatus.SENDING.value,
        )
        .values(
            status=NotificationStatus.PENDING.value,
            attempts=_NOTES.attempts - 1,
            next_attempt_at=now,
        )
    )


def settle_stranded(
    connection: Connection, *, now: datetime, batch_size: int, resend: bool
) -> list[Notification]:
    """Up to ``batch_size`` notifications left ``sending`` past their ``uncertain_at`` (their run
    died or stalled before recording the outcome): made ``uncertain``, or with ``resend``
    ``pending`` again, due at ``now``. Ids first, then exactly those, as ``take_due_emails``.

    A ``sending`` row without that moment was taken by an earlier version of this code, which did
    not record it: stranded as well."""
    stranded = (
        select(_NOTES.id)
        .where(
            _NOTES.status == NotificationStatus.SENDING.value,
            or_(_NOTES.next_attempt_at.is_(None), _NOTES.next_attempt_at <= now),
        )
        .order_by(_NOTES.id)
        .limit(batch_size)
    )
    if connection.dialect.name == "postgresql":
        stranded = stranded.with_for_update(skip_locked=True)
    ids = list(connection.execute(stranded).scalars())
    if not ids:
        return []
    status = NotificationStatus.PENDING if resend else NotificationStatus.UNCERTAIN
    statement = (
        update(notifications)
        .where(_NOTES.id.in_(ids), _NOTES.status == NotificationStatus.SENDING.value)
        .values(status=status.value, next_attempt_at=now if resend else None)
        .returning(*_RETURNED)
    )
    found = [to_notification(row) for row in connection.execute(statement)]
    return sorted(found, key=lambda notification: notification.id)


def count_stranded(connection: Connection, *, now: datetime) -> int:
    """How many notifications ``settle_stranded`` would settle at ``now`` (a dry run)."""
    query = select(func.count()).where(
        _NOTES.status == NotificationStatus.SENDING.value,
        or_(_NOTES.next_attempt_at.is_(None), _NOTES.next_attempt_at <= now),
    )
    return int(connection.execute(query).scalar_one())


def count_due_emails(connection: Connection, *, now: datetime) -> int:
    """How many pending notifications are due for an email at ``now`` (a dry run)."""
    query = select(func.count()).where(
        _NOTES.status == NotificationStatus.PENDING.value, _NOTES.next_attempt_at <= now
    )
    return int(connection.execute(query).scalar_one())


def finish_email(
    connection: Connection,
    notification_id: int,
    status: NotificationStatus,
    *,
    now: datetime,
    retry_at: datetime | None = None,
) -> None:
    """Record the outcome of a taken notification's email: ``sent`` (at ``now``), ``failed``,
    ``skipped``, or ``pending`` again with its next attempt at ``retry_at``. An ``uncertain`` one
    (its run stalled past ``uncertain_at`` and was presumed dead) takes the outcome too: it is
    the truth, arrived late."""
    values: dict[str, Any] = {"status": status.value, "next_attempt_at": None}
    if status is NotificationStatus.SENT:
        values["sent_at"] = now
    elif status is NotificationStatus.PENDING:
        values["next_attempt_at"] = retry_at
    connection.execute(
        update(notifications)
        .where(
            _NOTES.id == notification_id,
            _NOTES.status.in_(
                [NotificationStatus.SENDING.value, NotificationStatus.UNCERTAIN.value]
            ),
        )
        .values(**values)
    )


def fan_out(
    connection: Connection, notification: Notification, *, roles: Sequence[str], now: datetime
) -> int:
    """Give a team's notification of its own recipients (just taken for sending) one pending row
    per member whose role is in ``roles``, due at ``now``, in one ``INSERT ... SELECT``; the
    number of members it names. A member who has the row already (a ``quota_low`` email told
    them the limit is reached) is not given another: the unique key includes the recipient."""
    values = new_row(
        account_id=notification.account_id,
        kind=notification.kind,
        subject=notification.subject,
        period_key=notification.period_key,
        now=now,
        pending=True,
    )
    recipients = (
        select(
            literal(notification.account_id, String()).label("account_id"),
            _MEMBERS.user_id.label("recipient_user_id"),
            literal(notification.kind.value, String()).label("kind"),
            literal(notification.subject, String()).label("subject"),
            literal(notification.period_key, String()).label("period_key"),
            literal(values["status"], String()).label("status"),
            literal(0, Integer()).label("attempts"),
            literal(now, UTCDateTime()).label("next_attempt_at"),
            literal(now, UTCDateTime()).label("created_at"),
            literal(None, UTCDateTime()).label("sent_at"),
        )
        .where(_MEMBERS.account_id == notification.account_id, _MEMBERS.role.in_(list(roles)))
        .order_by(_MEMBERS.user_id)
    )
    count = select(func.count()).where(
        _MEMBERS.account_id == notification.account_id, _MEMBERS.role.in_(list(roles))
    )
    named = int(connection.execute(count).scalar_one())
    if named:
        connection.execute(
            dialect_insert(connection, notifications)
            .from_select(["account_id", "recipient_user_id", *_COLUMNS[1:]], recipients)
            .on_conflict_do_nothing(index_elements=_ONCE)
        )
    return named


def covered(connection: Connection, notification_id: int) -> bool:
    """Whether a taken notification was skipped meanwhile: another email said what it says
    (``cover_limit_reached``)."""
    query = select(_NOTES.status).where(_NOTES.id == notification_id)
    return connection.execute(query).scalar_one_or_none() == NotificationStatus.SKIPPED.value


def cover_limit_reached(
    connection: Connection,
    *,
    account_id: str,
    metric: str,
    period_key: str,
    now: datetime,
    recipient_user_id: str | None = None,
    kind: NotificationKind = NotificationKind.QUOTA_BLOCKED,
) -> None:
    """A ``quota_low`` (``cap_low``) email is telling its recipient the limit (their cap) of
    ``metric`` is reached: the period's ``quota_blocked`` (``kind``: ``cap_reached``) notice for
    the same recipient is claimed now as done (a later refusal, or a later fan-out to a team's
    recipients, finds it claimed), or, when claimed already and waiting or taken for sending,
    skipped (``covered``)."""
    row = new_row(
        account_id=account_id,
        kind=kind,
        subject=metric,
        period_key=period_key,
        now=now,
        pending=False,
        recipient_user_id=recipient_user_id,
    )
    connection.execute(
        dialect_insert(connection, notifications)
        .values(**row)
        .on_conflict_do_nothing(index_elements=_ONCE)
    )
    connection.execute(
        update(notifications)
        .where(
            _NOTES.account_id == account_id,
            _NOTES.kind == kind.value,
            _NOTES.subject == metric,
            _NOTES.period_key == period_key,
            _NOTES.recipient_user_id == (recipient_user_id or ""),
            _NOTES.status.in_([NotificationStatus.PENDING.value, NotificationStatus.SENDING.value]),
        )
        .values(status=NotificationStatus.SKIPPED.value, next_attempt_at=None)
    )


def to_notification_values(notification_id: int, values: Mapping[str, Any]) -> Notification:
    """The notification inserted with ``values`` (from ``new_row``) as ``notification_id``."""
    return Notification(
        id=notification_id,
        account_id=values["account_id"],
        kind=NotificationKind(values["kind"]),
        subject=values["subject"],
        period_key=values["period_key"],
        created_at=values["created_at"],
        status=NotificationStatus(values["status"]),
        attempts=int(values["attempts"]),
        recipient_user_id=values.get("recipient_user_id") or None,
    )
