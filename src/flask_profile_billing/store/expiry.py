"""One maintenance batch: end lapsed subscriptions, start the free ones that follow them, and write
what the expiry itself writes: each user's activity entry and ``expired`` notification.

A batch takes up to ``batch_size`` current subscriptions whose paid period is over, ends each at
its expiry, inserts the free subscription that follows it from that moment, adds the
``subscription.expired`` entry to the user's activity feed and claims the ``expired``
notification (``INSERT ... SELECT ... ON CONFLICT DO NOTHING``: once per user, subscription and
period), all in the caller's transaction and all in SQL: no row is read into Python to be written
back. A user who meanwhile got a current subscription keeps it (the unique index on current
subscriptions decides, and the insert yields).

What comes back is what the batch must announce: the user ids (to forget their cached reads), and,
only when ``detailed`` (a receiver of the per-user signals is connected), each ended subscription
as stored with the user's current one and the id of the notification claimed for it. Reading the
rows back as objects costs more than the statement itself, so nobody pays for it unless someone
listens.

PostgreSQL does it in ONE statement of data-modifying CTEs: it locks the lapsed rows skipping those
another worker holds (``FOR UPDATE SKIP LOCKED``, so several maintenance runs share the work
instead of waiting). The rows are found by primary key (``= ANY(ARRAY(...))``), never by joining
the lapsed set to the table: a join would make each batch scan every current subscription. SQLite
has no data-modifying CTEs: a few statements in the caller's transaction, whose ``BEGIN
IMMEDIATE`` makes concurrent runs take turns; the batch's ids go from one to the next as one JSON
parameter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, column, func, select, text

from ..domain.accounts import PERSONAL_PREFIX
from ..domain.notifications import NotificationKind
from ..domain.subscriptions import EndReason, Subscription, SubscriptionStatus
from .models import subscriptions
from .notifications import new_row
from .subscriptions import (
    IS_CURRENT,
    LAPSED_SQL,
    LAPSED_STATUS_SQL,
    add_others_current,
    free_values,
    lapsed,
    to_subscription,
)
from .types import BigId, UTCDateTime

# The activity feed is a user's: an expiry's entry goes to the personal account's user (the
# account key without its prefix; SQL strings count from 1). A team's has no feed yet.
_PERSONAL_FROM = len(PERSONAL_PREFIX) + 1


@dataclass(frozen=True, slots=True)
class ExpiryRecords:
    """What a batch writes for each ended subscription besides the subscriptions themselves."""

    activity_type: str
    title_template: str
    """The entry's title, ``{plan}`` standing for the plan's name."""
    plan_names: Mapping[str, str]
    """Plan code to name; a code not in it stands for its own name."""
    notify_since: datetime
    """The ``expired`` notification is claimed for periods that ended at or after this moment
    only: an expiry found long after the end is not news."""
    notify_pending: bool
    """Claim the notification ``pending`` (an email follows) instead of ``sent``."""


@dataclass(slots=True)
class ExpiredBatch:
    account_ids: list[str] = field(default_factory=list)
    """The accounts whose subscription the batch ended; empty when none was left."""
    pairs: list[tuple[Subscription, Subscription | None]] = field(default_factory=list)
    """With ``detailed`` only: each ended subscription (as stored now) with the user's current
    one, the free follower or the subscription the user got meanwhile (None when there is none)."""
    notice_ids: dict[str, int] = field(default_factory=dict)
    """With ``detailed`` only: user id to the id of the ``expired`` notification the batch
    claimed for them."""


# The ISO 8601 text of an aware UTC time as Python's ``datetime.isoformat()`` writes it (the
# microseconds only when there are some), which the activity entries of single expiries hold too.
_PG_ISO = (
    "to_char({value} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
    "CASE WHEN date_trunc('second', {value}) = {value} THEN '' "
    "ELSE to_char({value} AT TIME ZONE 'UTC', '.US') END || '+00:00'"
)
# SQLite holds naive UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff'.
_SQLITE_ISO = (
    "replace(substr({value}, 1, 19), ' ', 'T') || "
    "CASE WHEN CAST(substr({value}, 21) AS INTEGER) = 0 THEN '' "
    "ELSE '.' || substr({value}, 21, 6) END || '+00:00'"
)


def _pg_statement(detailed: bool) -> Any:
    table = "billing_subscriptions"
    if detailed:
        returned = ", ".join(f"s.{column.name}" for column in subscriptions.c)
        result = (
            ", ".join(f"ended.{column.name}" for column in subscriptions.c)
            + ", followers.id AS follower_id, notices.id AS notice_id"
        )
        notices_returning = "RETURNING id, account_id"
    else:
        returned = "s.id, s.account_id, s.plan_code, s.expires_at"
        result = "ended.account_id"
        notices_returning = ""
    sql = f"""
WITH plan_names AS (
    -- Parsed once per statement, not once per row.
    SELECT CAST(:plan_names AS jsonb) AS names
),
lapsed AS (
    SELECT id FROM {table}
    WHERE ended_at IS NULL AND {LAPSED_SQL.format(table=table)}
    LIMIT :batch_size
    FOR UPDATE SKIP LOCKED
),
ended AS (
    UPDATE {table} s
    SET ended_at = s.expires_at,
        end_reason = :expired_reason,
        status = {LAPSED_STATUS_SQL.format(table="s")}
    WHERE s.id = ANY(ARRAY(SELECT id FROM lapsed)) AND s.ended_at IS NULL
    RETURNING {returned}
),
followers AS (
    INSERT INTO {table}
        (account_id, plan_code, status, started_at, expires_at, period_anchor)
    SELECT account_id, :default_plan, :active, expires_at, NULL, expires_at FROM ended
    ON CONFLICT (account_id) WHERE ended_at IS NULL DO NOTHING
    RETURNING id, account_id, plan_code
),
feed AS (
    INSERT INTO billing_activity (user_id, type, title, metadata, occurred_at)
    SELECT substr(ended.account_id, {_PERSONAL_FROM}), :activity_type,
           replace(:title_template, '{{plan}}',
                   COALESCE(plan_names.names ->> ended.plan_code, ended.plan_code)),
           json_build_object(
               'plan', ended.plan_code,
               'expired_at', {_PG_ISO.format(value="ended.expires_at")},
               'now_on', COALESCE(
                   followers.plan_code,
                   (SELECT other.plan_code FROM {table} other
                    WHERE other.account_id = ended.account_id AND other.ended_at IS NULL
                      AND other.id <> ended.id))),
           ended.expires_at
    FROM ended CROSS JOIN plan_names
    LEFT JOIN followers ON followers.account_id = ended.account_id
    WHERE ended.account_id LIKE '{PERSONAL_PREFIX}%'
),
notices AS (
    INSERT INTO billing_notifications
        (account_id, kind, subject, period_key, status, attempts, next_attempt_at, created_at,
         sent_at)
    SELECT account_id, :notice_kind, CAST(id AS TEXT),
           CAST(CAST(floor(extract(epoch FROM expires_at)) AS BIGINT) AS TEXT),
           :notice_status, 0, :next_attempt_at, :now, :sent_at
    FROM ended WHERE expires_at >= :notify_since
    ON CONFLICT (account_id, kind, subject, period_key, recipient_user_id) DO NOTHING
    {notices_returning}
)
SELECT {result}
FROM ended
"""
    if detailed:
        sql += (
            "LEFT JOIN followers ON followers.account_id = ended.account_id\n"
            "LEFT JOIN notices ON notices.account_id = ended.account_id\n"
        )
    # Typed like the model: ``now`` must be aware, and timestamps come back in UTC.
    statement = text(sql).bindparams(
        bindparam("now", type_=UTCDateTime()),
        bindparam("next_attempt_at", type_=UTCDateTime()),
        bindparam("sent_at", type_=UTCDateTime()),
        bindparam("notify_since", type_=UTCDateTime()),
    )
    if detailed:
        return statement.columns(
            *subscriptions.c, column("follower_id", BigId), column("notice_id", BigId)
        )
    return statement.columns(column("account_id"))


_PG_DETAILED = _pg_statement(detailed=True)
_PG_USER_IDS = _pg_statement(detailed=False)


def end_lapsed_batch(
    connection: Connection,
    *,
    now: datetime,
    batch_size: int,
    default_plan: str,
    records: ExpiryRecords,
    detailed: bool = False,
) -> ExpiredBatch:
    """End up to ``batch_size`` subscriptions lapsed at ``now``, start their free followers on
    ``default_plan`` and write their ``records``, in the caller's write transaction; an empty
    batch when none is left."""
    notice = new_row(
        account_id="",
        kind=NotificationKind.EXPIRED,
        subject="",
        period_key="",
        now=now,
        pending=records.notify_pending,
    )
    parameters = {
        "now": now,
        "batch_size": batch_size,
        "default_plan": default_plan,
        "expired_reason": EndReason.EXPIRED.value,
        "cancelled": SubscriptionStatus.CANCELLED.value,
        "expired": SubscriptionStatus.EXPIRED.value,
        "active": SubscriptionStatus.ACTIVE.value,
        "activity_type": records.activity_type,
        "title_template": records.title_template,
        "plan_names": json.dumps(dict(records.plan_names)),
        "notice_kind": NotificationKind.EXPIRED.value,
        "notice_status": notice["status"],
        "next_attempt_at": notice["next_attempt_at"],
        "sent_at": notice["sent_at"],
        "notify_since": records.notify_since,
    }
    if connection.dialect.name == "postgresql":
        return _in_one_statement(connection, parameters, default_plan, detailed)
    return _in_several_statements(connection, parameters, default_plan, detailed)


def _in_one_statement(
    connection: Connection, parameters: dict[str, Any], default_plan: str, detailed: bool
) -> ExpiredBatch:
    if not detailed:
        account_ids = list(connection.execute(_PG_USER_IDS, parameters).scalars().all())
        return ExpiredBatch(account_ids=account_ids)
    rows = connection.execute(_PG_DETAILED, parameters).all()
    ended = [to_subscription(row) for row in rows]
    current = {
        lapsed_one.account_id: _follower(lapsed_one, default_plan, row.follower_id)
        for lapsed_one, row in zip(ended, rows, strict=True)
        if row.follower_id is not None
    }
    add_others_current(connection, ended, current)
    return ExpiredBatch(
        account_ids=[lapsed_one.account_id for lapsed_one in ended],
        pairs=[(lapsed_one, current.get(lapsed_one.account_id)) for lapsed_one in ended],
        notice_ids={row.account_id: row.notice_id for row in rows if row.notice_id is not None},
    )


# SQLite: the batch's ids travel as one JSON array (no limit on bound parameters).
_BATCH_IDS = "SELECT value FROM json_each(:ids)"

_SQLITE_END = text(
    f"""
UPDATE billing_subscriptions
SET ended_at = expires_at,
    end_reason = :expired_reason,
    status = {LAPSED_STATUS_SQL.format(table="billing_subscriptions")}
WHERE id IN (
    SELECT id FROM billing_subscriptions
    WHERE ended_at IS NULL AND {LAPSED_SQL.format(table="billing_subscriptions")}
    LIMIT :batch_size
)
RETURNING id, account_id
"""
).bindparams(bindparam("now", type_=UTCDateTime()))

# ``WHERE`` before ``ON CONFLICT`` is what tells SQLite's parser the upsert from a join's ``ON``.
_SQLITE_FOLLOWERS = text(
    f"""
INSERT INTO billing_subscriptions
    (account_id, plan_code, status, started_at, expires_at, period_anchor)
SELECT account_id, :default_plan, :active, expires_at, NULL, expires_at
FROM billing_subscriptions WHERE id IN ({_BATCH_IDS})
ON CONFLICT (account_id) WHERE ended_at IS NULL DO NOTHING
"""
)

_SQLITE_FEED = text(
    f"""
INSERT INTO billing_activity (user_id, type, title, metadata, occurred_at)
SELECT substr(ended.account_id, {_PERSONAL_FROM}), :activity_type,
       replace(:title_template, '{{plan}}',
               COALESCE((SELECT value FROM json_each(:plan_names) WHERE key = ended.plan_code),
                        ended.plan_code)),
       json_object('plan', ended.plan_code,
                   'expired_at', {_SQLITE_ISO.format(value="ended.expires_at")},
                   'now_on', followed_by.plan_code),
       ended.expires_at
FROM billing_subscriptions ended
LEFT JOIN billing_subscriptions followed_by
    ON followed_by.account_id = ended.account_id AND followed_by.ended_at IS NULL
WHERE ended.id IN ({_BATCH_IDS}) AND ended.account_id LIKE '{PERSONAL_PREFIX}%'
"""
)

_SQLITE_NOTICES = text(
    f"""
INSERT INTO billing_notifications
    (account_id, kind, subject, period_key, status, attempts, next_attempt_at, created_at, sent_at)
SELECT account_id, :notice_kind, CAST(id AS TEXT), strftime('%s', expires_at),
       :notice_status, 0, :next_attempt_at, :now, :sent_at
FROM billing_subscriptions
WHERE id IN ({_BATCH_IDS}) AND expires_at >= :notify_since
ON CONFLICT (account_id, kind, subject, period_key, recipient_user_id) DO NOTHING
RETURNING id, account_id
"""
).bindparams(
    bindparam("now", type_=UTCDateTime()),
    bindparam("next_attempt_at", type_=UTCDateTime()),
    bindparam("sent_at", type_=UTCDateTime()),
    bindparam("notify_since", type_=UTCDateTime()),
)


def _in_several_statements(
    connection: Connection, parameters: dict[str, Any], default_plan: str, detailed: bool
) -> ExpiredBatch:
    ended_rows = connection.execute(_SQLITE_END, parameters).all()
    if not ended_rows:
        return ExpiredBatch()
    ids = [row.id for row in ended_rows]
    parameters = {**parameters, "ids": json.dumps(ids)}
    connection.execute(_SQLITE_FOLLOWERS, parameters)
    connection.execute(_SQLITE_FEED, parameters)
    notices = connection.execute(_SQLITE_NOTICES, parameters).all()
    batch = ExpiredBatch(account_ids=[row.account_id for row in ended_rows])
    if detailed:
        subs = subscriptions.c
        ended = [
            to_subscription(row)
            for row in connection.execute(select(subscriptions).where(subs.id.in_(ids)))
        ]
        current: dict[str, Subscription] = {}
        add_others_current(connection, ended, current)
        batch.pairs = [(lapsed_one, current.get(lapsed_one.account_id)) for lapsed_one in ended]
        batch.notice_ids = {row.account_id: row.id for row in notices}
    return batch


def _follower(lapsed_one: Subscription, plan_code: str, follower_id: int) -> Subscription:
    """The free subscription inserted as ``follower_id`` after ``lapsed_one``."""
    values = free_values(lapsed_one.account_id, lapsed_one.expires_at, plan_code)
    values["status"] = SubscriptionStatus.ACTIVE
    return Subscription(id=follower_id, cancelled_at=None, **values)


def count_lapsed(connection: Connection, now: datetime) -> dict[SubscriptionStatus, int]:
    """How many current subscriptions have lapsed at ``now``, by stored status."""
    subs = subscriptions.c
    rows = connection.execute(
        select(subs.status, func.count()).where(IS_CURRENT, lapsed(now)).group_by(subs.status)
    )
    return {SubscriptionStatus(status): int(count) for status, count in rows}
