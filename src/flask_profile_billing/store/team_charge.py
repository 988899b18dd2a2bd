"""A team member's charge in ONE PostgreSQL statement: membership, the member's cap and the pool.

The statement checks that the user is a member of the account, locks the member's counter row for
the period (``FOR UPDATE``: the up-to-date row, whatever committed while it waited), compares it
with the member's cap, and only then adds to the pool's counter under the plan's limit, the member's
counter, the usage log (with the acting user) and the day's total. The member's row is locked
before the pool's, by every team charge, so concurrent charges cannot deadlock on the pair, and a
member's cap is compared with what is current: the pool and the member's counter move together or
not at all.

Refused by the pool, the statement reports the pool as it stands once its lock on the pool's row
was granted (``FOR UPDATE``, a lock it holds already), not as its snapshot saw it: a charge that
waited for others' charges would otherwise name numbers older than those that refused it.

A member's counter row must exist for its period before its lock can be taken: when it does not
(the member's first charge of a period), the statement charges nothing and says so, the caller
writes the row (``ensure_member_counter``) and runs it again. An idempotency key charged before is
recognised first, as in the personal statement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Connection, and_, select

from ..domain.periods import Period
from .dialect import insert_for, param
from .models import account_members, member_caps, member_counters
from .reservation import CatalogStatement, StatementCharge

_SQL = """
WITH membership AS (
    SELECT 1 AS ok FROM billing_account_members
    WHERE account_id = :account_id AND user_id = :actor_user_id
),
prior AS (
    SELECT id FROM billing_usage_events
    WHERE account_id = :account_id AND idempotency_key = :idempotency_key
),
member_cap AS (
    SELECT cap FROM billing_member_caps
    WHERE account_id = :account_id AND user_id = :actor_user_id AND metric = :metric
),
member_row AS (
    SELECT used FROM billing_member_counters
    WHERE account_id = :account_id AND user_id = :actor_user_id AND metric = :metric
      AND period_start = :period_start
    FOR UPDATE
),
member_fits AS (
    SELECT 1 AS ok FROM membership, member_row
    WHERE NOT EXISTS (SELECT 1 FROM prior)
      AND ((SELECT cap FROM member_cap) IS NULL
           OR member_row.used + :amount <= (SELECT cap FROM member_cap))
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
    FROM plan_limit, member_fits
    WHERE plan_limit.lim IS NULL OR :amount <= plan_limit.lim
    ON CONFLICT (account_id, metric, period_start) DO UPDATE
        SET used = billing_usage_counters.used + EXCLUDED.used
        WHERE (SELECT lim FROM plan_limit) IS NULL
           OR billing_usage_counters.used + EXCLUDED.used <= (SELECT lim FROM plan_limit)
    RETURNING used
),
member_counter AS (
    UPDATE billing_member_counters SET used = used + :amount
    WHERE account_id = :account_id AND user_id = :actor_user_id AND metric = :metric
      AND period_start = :period_start AND EXISTS (SELECT 1 FROM counter)
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
    FROM plan_limit, member_fits
    WHERE NOT EXISTS (SELECT 1 FROM counter)
    ON CONFLICT (account_id, kind, subject, period_key, recipient_user_id) DO NOTHING
    RETURNING id
)
SELECT EXISTS (SELECT 1 FROM membership) AS is_member,
       EXISTS (SELECT 1 FROM member_row) AS has_member_row,
       EXISTS (SELECT 1 FROM member_fits) AS member_fits,
       (SELECT cap FROM member_cap) AS member_cap,
       (SELECT used FROM member_row) AS member_used_before,
       (SELECT used FROM member_counter) AS member_used_after,
       (SELECT id FROM prior) AS prior_id,
       (SELECT id FROM low_notice) AS low_notice_id,
       (SELECT id FROM blocked_notice) AS blocked_notice_id,
       (SELECT code FROM plan_in_force) AS plan_code,
       (SELECT lim FROM plan_limit) AS lim,
       (SELECT used FROM counter) AS used_after,
       (SELECT id FROM event) AS event_id,
       CASE
           WHEN EXISTS (SELECT 1 FROM counter) THEN NULL
           WHEN EXISTS (SELECT 1 FROM member_fits) THEN
               (SELECT used FROM billing_usage_counters
                WHERE account_id = :account_id AND metric = :metric
                  AND period_start = :period_start
                FOR UPDATE)
           ELSE
               (SELECT used FROM billing_usage_counters
                WHERE account_id = :account_id AND metric = :metric
                  AND period_start = :period_start)
       END AS used_before
"""


@dataclass(frozen=True, slots=True)
class TeamChargeResult:
    is_member: bool
    has_member_row: bool
    """False: the member's counter of the period is missing; nothing was charged."""
    plan_code: str | None
    """None: the account has no subscription yet (the caller creates one and tries again)."""
    limit: int | None
    used: int
    """The pool after the charge; as it stands when refused or replayed."""
    member_cap: int | None
    member_used: int
    """The member's counter after the charge; as it stands when refused."""
    event_id: int | None
    charged: bool
    refused_by_member_cap: bool = False
    replayed: bool = False
    notice_id: int | None = None


class TeamChargeStatement(CatalogStatement):
    """A team member's statement."""

    def __init__(self, limits_by_plan: Mapping[str, int | None], default_plan: str) -> None:
        super().__init__(_SQL, limits_by_plan, default_plan)

    def run(self, connection: Connection, charge: StatementCharge) -> TeamChargeResult:
        row = self.execute(connection, charge)
        if row is None:
            return _replayed()
        charged = row.used_after is not None
        used = row.used_after if charged else (row.used_before or 0)
        member_used = row.member_used_after if charged else (row.member_used_before or 0)
        notice_id = row.low_notice_id if charged else row.blocked_notice_id
        return TeamChargeResult(
            is_member=bool(row.is_member),
            has_member_row=bool(row.has_member_row),
            plan_code=row.plan_code,
            limit=None if row.lim is None else int(row.lim),
            used=int(used),
            member_cap=None if row.member_cap is None else int(row.member_cap),
            member_used=int(member_used),
            event_id=None if row.event_id is None else int(row.event_id),
            charged=charged,
            refused_by_member_cap=bool(row.is_member and row.has_member_row)
            and not row.member_fits,
            notice_id=None if notice_id is None else int(notice_id),
        )


def _replayed() -> TeamChargeResult:
    return TeamChargeResult(
        is_member=True,
        has_member_row=True,
        plan_code=None,
        limit=None,
        used=0,
        member_cap=None,
        member_used=0,
        event_id=None,
        charged=False,
        replayed=True,
    )


# -- the transactional path (SQLite, periods that depend on the subscription) -----------------


def membership_and_cap(
    connection: Connection, account_id: str, user_id: str, metric: str
) -> tuple[bool, int | None]:
    """Whether ``user_id`` is a member of the account, and their cap of ``metric`` (None: not
    capped), in one read."""
    member, cap = account_members.c, member_caps.c
    row = connection.execute(
        select(member.role, cap.cap)
        .select_from(
            account_members.outerjoin(
                member_caps,
                and_(
                    cap.account_id == member.account_id,
                    cap.user_id == member.user_id,
                    cap.metric == metric,
                ),
            )
        )
        .where(member.account_id == account_id, member.user_id == user_id)
    ).one_or_none()
    if row is None:
        return False, None
    return True, None if row.cap is None else int(row.cap)


def charge_member(
    connection: Connection,
    *,
    account_id: str,
    user_id: str,
    metric: str,
    period: Period,
    amount: int,
    cap: int | None,
) -> int | None:
    """Add ``amount`` to the member's counter of the period, writing it when it is the member's
    first charge of the period, if the result stays within ``cap``: the new total, or None when
    the cap refuses. One statement, which leaves the row locked until the transaction ends. The
    caller refuses ``amount > cap`` before calling, because the insert branch cannot check it."""
    statement = _charge_member_statement(connection.dialect.name, capped=cap is not None)
    parameters: dict[str, Any] = {
        "p_account_id": account_id,
        "p_user_id": user_id,
        "p_metric": metric,
        "p_period_start": period.start,
        "p_period_end": period.end,
        "p_amount": amount,
    }
    if cap is not None:
        parameters["p_cap"] = cap
    used = connection.execute(statement, parameters).scalar_one_or_none()
    return None if used is None else int(used)


@cache
def _charge_member_statement(dialect: str, *, capped: bool) -> Any:
    counter = member_counters.c
    amount = param(counter.used, "amount")
    statement = insert_for(dialect, member_counters).values(
        account_id=param(counter.account_id),
        user_id=param(counter.user_id),
        metric=param(counter.metric),
        period_start=param(counter.period_start),
        period_end=param(counter.period_end),
        used=amount,
    )
    cap = param(counter.used, "cap")
    return statement.on_conflict_do_update(
        index_elements=[counter.account_id, counter.user_id, counter.metric, counter.period_start],
        set_={"used": counter.used + amount},
        where=(counter.used + amount <= cap) if capped else None,
    ).returning(counter.used)
