"""A whole quota reservation in ONE PostgreSQL statement, sent in autocommit mode: one round trip.

The statement finds the plan in force (a paid period that is over counts as the default plan: the
rule of ``store.subscriptions.LAPSED_SQL``), takes the metric's limit for that plan from a VALUES
list of the in-memory catalog, adds the amount to the period's counter only if it stays within the
limit, and logs the usage event and adds to the day's total only if the counter moved. A retry with
an idempotency key already charged is recognised before the limit is consulted (so the retry of the
request that used the last unit is a replay, not a refusal) and charges nothing; two concurrent
first uses of one key both pass that check, and the second then violates the events' unique key,
which aborts its whole statement: nothing is charged twice.

The same statement claims the period's ``quota_low`` notification when the charge takes usage to the
mark (the rule of ``domain.limits.crossed_threshold``), and the ``quota_blocked`` one when it refuses,
each only if not claimed before (``ON CONFLICT DO NOTHING``): a notice costs no statement of its own.

A refusal reports the counter as it stands once its lock on the counter's row was granted
(``FOR UPDATE``, a lock the refused upsert holds already), not as the statement's snapshot saw it:
a charge that waited for others' charges of the last units would otherwise name numbers older than
those that refused it.

Only for rules whose periods do not depend on the subscription (calendar months); the general
path in ``services.quotas`` serves the others and SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, text
from sqlalchemy.exc import IntegrityError

from ..domain.periods import Period
from .subscriptions import LAPSED_SQL

_NOTICE_COLUMNS = (
    "account_id, kind, subject, period_key, status, attempts, next_attempt_at, created_at, sent_at"
)
_NOTICE_VALUES = (
    ":account_id, {kind}, :metric, :notice_period_key, :notice_status, 0, "
    "CAST(:notice_next_attempt_at AS TIMESTAMPTZ), :now, CAST(:notice_sent_at AS TIMESTAMPTZ)"
)

_SQL = """
WITH prior AS (
    SELECT id FROM billing_usage_events
    WHERE account_id = :account_id AND idempotency_key = :idempotency_key
),
plan_in_force AS (
    SELECT CASE WHEN {lapsed} THEN :default_plan ELSE s.plan_code END AS code
    FROM billing_subscriptions s
    WHERE s.account_id = :account_id AND s.ended_at IS NULL
),
plan_limit AS (
    SELECT l.lim FROM plan_in_force p JOIN (VALUES {limits}) AS l(code, lim) ON l.code = p.code
),
counter AS (
    INSERT INTO billing_usage_counters (account_id, metric, period_start, period_end, used)
    SELECT :account_id, :metric, :period_start, :period_end, :amount
    FROM plan_limit
    WHERE NOT EXISTS (SELECT 1 FROM prior) AND (plan_limit.lim IS NULL OR :amount <= plan_limit.lim)
    ON CONFLICT (account_id, metric, period_start) DO UPDATE
        SET used = billing_usage_counters.used + EXCLUDED.used
        WHERE (SELECT lim FROM plan_limit) IS NULL
           OR billing_usage_counters.used + EXCLUDED.used <= (SELECT lim FROM plan_limit)
    RETURNING used
),
event AS (
    INSERT INTO billing_usage_events
        (account_id, actor_user_id, metric, amount, period_start, resources, metadata,
         idempotency_key, created_at)
    SELECT :account_id, :actor_user_id, :metric, :amount, :period_start,
           CAST(:resources AS JSON), CAST(:metadata AS JSON), :idempotency_key, :now
    FROM counter
    RETURNING id
),
daily AS (
    INSERT INTO billing_usage_daily (account_id, metric, day, total)
    SELECT :account_id, :metric, :day, :amount FROM counter
    ON CONFLICT (account_id, metric, day) DO UPDATE
        SET total = billing_usage_daily.total + EXCLUDED.total
),
low_notice AS (
    INSERT INTO billing_notifications ({notice_columns})
    SELECT {low_notice_values}
    FROM counter, plan_limit
    WHERE plan_limit.lim > 0
      AND counter.used - :amount < CEIL(plan_limit.lim * CAST(:ratio AS DOUBLE PRECISION))
      AND CEIL(plan_limit.lim * CAST(:ratio AS DOUBLE PRECISION)) <= counter.used
    ON CONFLICT (account_id, kind, subject, period_key, recipient_user_id) DO NOTHING
    RETURNING id
),
blocked_notice AS (
    INSERT INTO billing_notifications ({notice_columns})
    SELECT {blocked_notice_values}
    FROM plan_limit
    WHERE NOT EXISTS (SELECT 1 FROM prior) AND NOT EXISTS (SELECT 1 FROM counter)
    ON CONFLICT (account_id, kind, subject, period_key, recipient_user_id) DO NOTHING
    RETURNING id
)
SELECT (SELECT id FROM prior) AS prior_id,
       (SELECT id FROM low_notice) AS low_notice_id,
       (SELECT id FROM blocked_notice) AS blocked_notice_id,
       (SELECT code FROM plan_in_force) AS plan_code,
       (SELECT lim FROM plan_limit) AS lim,
       (SELECT used FROM counter) AS used_after,
       (SELECT id FROM event) AS event_id,
       CASE
           WHEN EXISTS (SELECT 1 FROM counter) THEN NULL
           WHEN EXISTS (SELECT 1 FROM prior) THEN
               (SELECT used FROM billing_usage_counters
                WHERE account_id = :account_id AND metric = :metric
                  AND period_start = :period_start)
           ELSE
               (SELECT used FROM billing_usage_counters
                WHERE account_id = :account_id AND metric = :metric
                  AND period_start = :period_start
                FOR UPDATE)
       END AS used_before
"""


@dataclass(frozen=True, slots=True)
class OneStatementResult:
    plan_code: str | None
    """None: the user has no subscription yet (the caller creates one and tries again)."""
    limit: int | None
    used: int
    """After the charge; as it stands when refused or replayed."""
    event_id: int | None
    charged: bool
    replayed: bool = False
    notice_id: int | None = None
    """The notification this charge claimed: ``quota_low`` when charged, ``quota_blocked`` when
    refused."""


@dataclass(frozen=True, slots=True)
class NoticeColumns:
    """What the statement writes into a notification it claims."""

    ratio: float
    """BILLING_QUOTA_LOW_THRESHOLD."""
    period_key: str
    status: str
    next_attempt_at: datetime | None
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class StatementCharge:
    """One request's charge, as a charging statement receives it."""

    account_id: str
    actor_user_id: str
    metric: str
    amount: int
    period: Period
    now: datetime
    idempotency_key: str | None
    resources: Mapping[str, Any] | None
    metadata: Mapping[str, Any] | None
    notices: NoticeColumns


class CatalogStatement:
    """A charging statement of one metric of one catalog, built once and reused for every
    request: ``sql`` with the catalog's limits as a VALUES list, the lapsed-plan rule and the
    notification columns filled in (the team statement is one too)."""

    def __init__(self, sql: str, limits_by_plan: Mapping[str, int | None], default_plan: str):
        values = ", ".join(
            f"(:plan_{index}, CAST(:limit_{index} AS BIGINT))"
            for index in range(len(limits_by_plan))
        )
        self._statement = text(
            sql.format(
                limits=values,
                lapsed=LAPSED_SQL.format(table="s"),
                notice_columns=_NOTICE_COLUMNS,
                low_notice_values=_NOTICE_VALUES.format(kind=":low_kind"),
                blocked_notice_values=_NOTICE_VALUES.format(kind=":blocked_kind"),
            )
        )
        self._constants: dict[str, Any] = {
            "default_plan": default_plan,
            "low_kind": "quota_low",
            "blocked_kind": "quota_blocked",
        }
        for index, (code, limit) in enumerate(limits_by_plan.items()):
            self._constants[f"plan_{index}"] = code
            self._constants[f"limit_{index}"] = limit

    def execute(self, connection: Connection, charge: StatementCharge) -> Row[Any] | None:
        """The statement's row; None when the idempotency key was charged before (a replay)."""
        notices = charge.notices
        parameters = {
            **self._constants,
            "account_id": charge.account_id,
            "actor_user_id": charge.actor_user_id,
            "metric": charge.metric,
            "amount": charge.amount,
            "period_start": charge.period.start,
            "period_end": charge.period.end,
            "now": charge.now,
            "day": charge.now.astimezone(UTC).date(),
            "idempotency_key": charge.idempotency_key,
            "resources": json.dumps(dict(charge.resources)) if charge.resources else None,
            "metadata": json.dumps(dict(charge.metadata)) if charge.metadata else None,
            "ratio": notices.ratio,
            "notice_period_key": notices.period_key,
            "notice_status": notices.status,
            "notice_next_attempt_at": notices.next_attempt_at,
            "notice_sent_at": notices.sent_at,
        }
        try:
            row = connection.execute(self._statement, parameters).one()
        except IntegrityError as error:
            # Two first uses of one key both passed ``prior``; the second's event insert aborts
            # its whole statement: nothing was charged twice.
            if charge.idempotency_key is None or "idempotency_key" not in str(error.orig):
                raise
            return None
        return None if row.prior_id is not None else row


class OneStatementReservation(CatalogStatement):
    """The personal account's statement."""

    def __init__(self, limits_by_plan: Mapping[str, int | None], default_plan: str) -> None:
        super().__init__(_SQL, limits_by_plan, default_plan)

    def run(self, connection: Connection, charge: StatementCharge) -> OneStatementResult:
        row = self.execute(connection, charge)
        if row is None:
            return OneStatementResult(None, None, 0, None, charged=False, replayed=True)
        charged = row.used_after is not None
        used = row.used_after if charged else (row.used_before or 0)
        notice_id = row.low_notice_id if charged else row.blocked_notice_id
        return OneStatementResult(
            row.plan_code,
            None if row.lim is None else int(row.lim),
            int(used),
            None if row.event_id is None else int(row.event_id),
            charged,
            notice_id=None if notice_id is None else int(notice_id),
        )
