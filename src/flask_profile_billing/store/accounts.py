"""The account tables: accounts, team members and their roles, member caps and invitations.

A personal account's row is written on first access, with its free subscription; its user is its
owner without a member row. Team accounts have one member row per member. Changes to one team's
members run under the account row's lock (``lock_account``), so seat counts and the last owner are
decided on what is current.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, and_, case, delete, func, select, update

from .dialect import dialect_insert, insert_ignoring_conflict
from .models import (
    account_members,
    accounts,
    invitations,
    member_caps,
    member_counters,
    subscriptions,
    usage_counters,
)
from .subscriptions import IS_CURRENT, plan_in_force


@dataclass(frozen=True, slots=True)
class AccountRecord:
    id: str
    kind: str
    name: str | None
    created_by: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MemberRecord:
    user_id: str
    role: str
    joined_at: datetime


@dataclass(frozen=True, slots=True)
class InvitationRecord:
    id: str
    account_id: str
    email: str
    role: str
    invited_by: str
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None
    accepted_by: str | None
    revoked_at: datetime | None


def ensure_account(
    connection: Connection, account_id: str, kind: str, created_by: str | None, now: datetime
) -> None:
    """The account's row, written unless it exists: concurrent first accesses write one."""
    insert_ignoring_conflict(
        connection,
        accounts,
        {
            "id": account_id,
            "kind": kind,
            "name": None,
            "created_by": created_by,
            "created_at": now,
        },
        ["id"],
    )


def insert_team(
    connection: Connection, account_id: str, name: str, owner_user_id: str, now: datetime
) -> None:
    connection.execute(
        accounts.insert().values(
            id=account_id, kind="team", name=name, created_by=owner_user_id, created_at=now
        )
    )
    connection.execute(
        account_members.insert().values(
            account_id=account_id, user_id=owner_user_id, role="owner", joined_at=now
        )
    )


def find_account(connection: Connection, account_id: str) -> AccountRecord | None:
    row = connection.execute(select(accounts).where(accounts.c.id == account_id)).first()
    return None if row is None else AccountRecord(**row._mapping)


def lock_account(connection: Connection, account_id: str) -> AccountRecord | None:
    """The account's row, locked until the transaction ends (SQLite's ``BEGIN IMMEDIATE`` already
    serialises every writer)."""
    row = connection.execute(
        select(accounts).where(accounts.c.id == account_id).with_for_update()
    ).first()
    return None if row is None else AccountRecord(**row._mapping)


def rename_account(connection: Connection, account_id: str, name: str) -> None:
    connection.execute(update(accounts).where(accounts.c.id == account_id).values(name=name))


def role_of(connection: Connection, account_id: str, user_id: str) -> str | None:
    return connection.execute(
        select(account_members.c.role).where(
            account_members.c.account_id == account_id, account_members.c.user_id == user_id
        )
    ).scalar_one_or_none()


def teams_of(connection: Connection, user_id: str) -> list[tuple[AccountRecord, str]]:
    """The team accounts ``user_id`` is a member of, with the role, oldest membership first."""
    rows = connection.execute(
        select(accounts, account_members.c.role)
        .join(account_members, account_members.c.account_id == accounts.c.id)
        .where(account_members.c.user_id == user_id)
        .order_by(account_members.c.joined_at, accounts.c.id)
    )
    return [
        (
            AccountRecord(row.id, row.kind, row.name, row.created_by, row.created_at),
            row.role,
        )
        for row in rows
    ]


def members_of(connection: Connection, account_id: str) -> list[MemberRecord]:
    rows = connection.execute(
        select(account_members.c.user_id, account_members.c.role, account_members.c.joined_at)
        .where(account_members.c.account_id == account_id)
        .order_by(account_members.c.joined_at, account_members.c.user_id)
    )
    return [MemberRecord(row.user_id, row.role, row.joined_at) for row in rows]


def count_members(connection: Connection, account_id: str) -> int:
    return int(
        connection.execute(
            select(func.count()).where(account_members.c.account_id == account_id)
        ).scalar_one()
    )


def count_owners(connection: Connection, account_id: str) -> int:
    return int(
        connection.execute(
            select(func.count()).where(
                account_members.c.account_id == account_id, account_members.c.role == "owner"
            )
        ).scalar_one()
    )


def add_member(
    connection: Connection, account_id: str, user_id: str, role: str, now: datetime
) -> bool:
    """False when the user is a member already (nothing changes)."""
    inserted = insert_ignoring_conflict(
        connection,
        account_members,
        {"account_id": account_id, "user_id": user_id, "role": role, "joined_at": now},
        ["account_id", "user_id"],
    )
    return inserted is not None


def set_role(connection: Connection, account_id: str, user_id: str, role: str) -> bool:
    result = connection.execute(
        update(account_members)
        .where(account_members.c.account_id == account_id, account_members.c.user_id == user_id)
        .values(role=role)
    )
    return result.rowcount == 1


def remove_member(connection: Connection, account_id: str, user_id: str) -> bool:
    """Delete the membership and the member's caps: the seat is free when this commits. The
    member's counters stay: what they used is still the pool's."""
    connection.execute(
        delete(member_caps).where(
            member_caps.c.account_id == account_id, member_caps.c.user_id == user_id
        )
    )
    result = connection.execute(
        delete(account_members).where(
            account_members.c.account_id == account_id, account_members.c.user_id == user_id
        )
    )
    return result.rowcount == 1


# -- caps -------------------------------------------------------------------------------------


def set_cap(
    connection: Connection, account_id: str, user_id: str, metric: str, cap: int, now: datetime
) -> None:
    statement = dialect_insert(connection, member_caps).values(
        account_id=account_id, user_id=user_id, metric=metric, cap=cap, updated_at=now
    )
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=["account_id", "user_id", "metric"],
            set_={"cap": cap, "updated_at": now},
        )
    )


def remove_cap(connection: Connection, account_id: str, user_id: str, metric: str) -> bool:
    result = connection.execute(
        delete(member_caps).where(
            member_caps.c.account_id == account_id,
            member_caps.c.user_id == user_id,
            member_caps.c.metric == metric,
        )
    )
    return result.rowcount == 1


def caps_of(connection: Connection, account_id: str) -> dict[tuple[str, str], int]:
    """(user, metric) to cap, for every capped member of the account."""
    rows = connection.execute(
        select(member_caps.c.user_id, member_caps.c.metric, member_caps.c.cap).where(
            member_caps.c.account_id == account_id
        )
    )
    return {(row.user_id, row.metric): int(row.cap) for row in rows}


def member_usage(
    connection: Connection,
    account_id: str,
    metrics: Iterable[str],
    period_start: datetime,
    user_id: str | None = None,
) -> dict[tuple[str, str], int]:
    """(user, metric) to what the member used in the period; one member's only with ``user_id``."""
    counter = member_counters.c
    statement = select(counter.user_id, counter.metric, counter.used).where(
        counter.account_id == account_id,
        counter.metric.in_(list(metrics)),
        counter.period_start == period_start,
    )
    if user_id is not None:
        statement = statement.where(counter.user_id == user_id)
    return {(row.user_id, row.metric): int(row.used) for row in connection.execute(statement)}


# -- invitations ------------------------------------------------------------------------------


def insert_invitation(connection: Connection, record: InvitationRecord, token_hash: str) -> None:
    values = {
        "id": record.id,
        "account_id": record.account_id,
        "email": record.email,
        "role": record.role,
        "token_hash": token_hash,
        "invited_by": record.invited_by,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "accepted_at": None,
        "accepted_by": None,
        "revoked_at": None,
    }
    connection.execute(invitations.insert().values(**values))


def _pending(now: datetime) -> ColumnElement[bool]:
    return and_(
        invitations.c.accepted_at.is_(None),
        invitations.c.revoked_at.is_(None),
        invitations.c.expires_at > now,
    )


def pending_invitations(
    connection: Connection, account_id: str, now: datetime
) -> list[InvitationRecord]:
    rows = connection.execute(
        select(*_INVITATION_COLUMNS)
        .where(invitations.c.account_id == account_id, _pending(now))
        .order_by(invitations.c.created_at, invitations.c.id)
    )
    return [InvitationRecord(**row._mapping) for row in rows]


def count_pending_invitations(connection: Connection, account_id: str, now: datetime) -> int:
    return int(
        connection.execute(
            select(func.count()).where(invitations.c.account_id == account_id, _pending(now))
        ).scalar_one()
    )


def find_invitation_by_token(connection: Connection, token_hash: str) -> InvitationRecord | None:
    row = connection.execute(
        select(*_INVITATION_COLUMNS).where(invitations.c.token_hash == token_hash)
    ).first()
    return None if row is None else InvitationRecord(**row._mapping)


def claim_invitation(
    connection: Connection, invitation_id: str, user_id: str, now: datetime
) -> bool:
    """Mark the invitation accepted if it is still pending: of concurrent acceptances of one
    token, one claims it."""
    result = connection.execute(
        update(invitations)
        .where(invitations.c.id == invitation_id, _pending(now))
        .values(accepted_at=now, accepted_by=user_id)
    )
    return result.rowcount == 1


def revoke_invitation(
    connection: Connection, account_id: str, invitation_id: str, now: datetime
) -> bool:
    result = connection.execute(
        update(invitations)
        .where(
            invitations.c.id == invitation_id,
            invitations.c.account_id == account_id,
            _pending(now),
        )
        .values(revoked_at=now)
    )
    return result.rowcount == 1


def revoke_pending_for_email(
    connection: Connection, account_id: str, email: str, now: datetime
) -> int:
    """Revoke the pending invitations of one address: a new one replaces them."""
    result = connection.execute(
        update(invitations)
        .where(
            invitations.c.account_id == account_id,
            func.lower(invitations.c.email) == email.lower(),
            _pending(now),
        )
        .values(revoked_at=now)
    )
    return int(result.rowcount)


_INVITATION_COLUMNS = [column for column in invitations.c if column.name != "token_hash"]


# -- verification -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolDrift:
    """A team's pool counter that is not the sum of its members' counters."""

    account_id: str
    metric: str
    period_start: datetime
    pool: int
    members: int


def pool_drifts(
    connection: Connection, limit: int = 100, since: datetime | None = None
) -> list[PoolDrift]:
    """Every (team, metric, period) whose pool differs from the sum of its members' counters, in
    either direction (a pool without member counters counts their sum as 0). ``since``: only the
    periods that start at or after it (the retention deletes the pools of old periods, not the
    member counters)."""
    member_sums_query = select(
        member_counters.c.account_id,
        member_counters.c.metric,
        member_counters.c.period_start,
        func.sum(member_counters.c.used).label("members"),
    ).group_by(
        member_counters.c.account_id, member_counters.c.metric, member_counters.c.period_start
    )
    if since is not None:
        member_sums_query = member_sums_query.where(member_counters.c.period_start >= since)
    member_sums = member_sums_query.subquery()
    pool = usage_counters.c
    joined = pool.account_id == member_sums.c.account_id
    joined = and_(
        joined,
        pool.metric == member_sums.c.metric,
        pool.period_start == member_sums.c.period_start,
    )
    team_pools = (
        select(
            pool.account_id,
            pool.metric,
            pool.period_start,
            pool.used.label("pool"),
            func.coalesce(member_sums.c.members, 0).label("members"),
        )
        .select_from(usage_counters.outerjoin(member_sums, joined))
        .where(
            pool.account_id.like("team:%"),
            pool.used != func.coalesce(member_sums.c.members, 0),
        )
    )
    orphans = (
        select(
            member_sums.c.account_id,
            member_sums.c.metric,
            member_sums.c.period_start,
            func.coalesce(pool.used, 0).label("pool"),
            member_sums.c.members,
        )
        .select_from(member_sums.outerjoin(usage_counters, joined))
        .where(pool.account_id.is_(None), member_sums.c.members != 0)
    )
    if since is not None:
        team_pools = team_pools.where(pool.period_start >= since)
    statement = team_pools.union_all(orphans).limit(limit)
    return [
        PoolDrift(row[0], row[1], row[2], int(row[3]), int(row[4]))
        for row in connection.execute(statement)
    ]


@dataclass(frozen=True, slots=True)
class SeatOverflow:
    """A team with more members than the seats of its plan in force."""

    account_id: str
    plan_code: str
    members: int
    seats: int


def seat_overflows(
    connection: Connection,
    now: datetime,
    default_plan: str,
    seats: Mapping[str, int],
    limit: int = 100,
) -> list[SeatOverflow]:
    """Every team whose members outnumber the seats of its plan in force at ``now`` (``seats``:
    plan code to seats, for the plans that limit them; a team without a current subscription is on
    ``default_plan``). One grouped query: the seats are compared in the database."""
    if not seats:
        return []
    plan = func.coalesce(plan_in_force(now, default_plan), default_plan)
    plan_seats = case(seats, value=plan)
    member = account_members.c
    statement = (
        select(member.account_id, plan.label("plan_code"), func.count().label("members"))
        .select_from(
            account_members.outerjoin(
                subscriptions,
                and_(subscriptions.c.account_id == member.account_id, IS_CURRENT),
            )
        )
        .group_by(member.account_id, plan)
        .having(func.count() > plan_seats)
        .order_by(member.account_id)
        .limit(limit)
    )
    return [
        SeatOverflow(row.account_id, row.plan_code, int(row.members), seats[row.plan_code])
        for row in connection.execute(statement)
    ]


@dataclass(frozen=True, slots=True)
class TeamListing:
    id: str
    name: str | None
    members: int
    created_at: datetime


def all_teams(connection: Connection) -> list[TeamListing]:
    """Every team account with its number of members, oldest first."""
    statement = (
        select(
            accounts.c.id,
            accounts.c.name,
            accounts.c.created_at,
            func.count(account_members.c.user_id),
        )
        .select_from(
            accounts.outerjoin(account_members, account_members.c.account_id == accounts.c.id)
        )
        .where(accounts.c.kind == "team")
        .group_by(accounts.c.id, accounts.c.name, accounts.c.created_at)
        .order_by(accounts.c.created_at, accounts.c.id)
    )
    return [
        TeamListing(row[0], row[1], int(row[3]), row[2]) for row in connection.execute(statement)
    ]


# -- member counters ----------------------------------------------------------------------------


def ensure_member_counter(
    connection: Connection,
    account_id: str,
    user_id: str,
    metric: str,
    period_start: datetime,
    period_end: datetime,
) -> None:
    """The member's counter of the period, written at 0 unless it exists (the one-statement
    charge locks it, so it must be there first)."""
    insert_ignoring_conflict(
        connection,
        member_counters,
        {
            "account_id": account_id,
            "user_id": user_id,
            "metric": metric,
            "period_start": period_start,
            "period_end": period_end,
            "used": 0,
        },
        ["account_id", "user_id", "metric", "period_start"],
    )


def cap_of(connection: Connection, account_id: str, user_id: str, metric: str) -> int | None:
    cap = connection.execute(
        select(member_caps.c.cap).where(
            member_caps.c.account_id == account_id,
            member_caps.c.user_id == user_id,
            member_caps.c.metric == metric,
        )
    ).scalar_one_or_none()
    return None if cap is None else int(cap)


def consume_member(
    connection: Connection,
    account_id: str,
    user_id: str,
    metric: str,
    period_start: datetime,
    amount: int,
    cap: int | None,
) -> int | None:
    """Add ``amount`` to the member's (existing) counter if it stays within ``cap``; the new
    total, or None when the cap refuses. The row stays locked until the transaction ends."""
    counter = member_counters.c
    condition = and_(
        counter.account_id == account_id,
        counter.user_id == user_id,
        counter.metric == metric,
        counter.period_start == period_start,
    )
    if cap is not None:
        condition = and_(condition, counter.used + amount <= cap)
    used = connection.execute(
        update(member_counters)
        .where(condition)
        .values(used=counter.used + amount)
        .returning(counter.used)
    ).scalar_one_or_none()
    return None if used is None else int(used)


def member_used(
    connection: Connection, account_id: str, user_id: str, metric: str, period_start: datetime
) -> int:
    counter = member_counters.c
    used = connection.execute(
        select(counter.used).where(
            counter.account_id == account_id,
            counter.user_id == user_id,
            counter.metric == metric,
            counter.period_start == period_start,
        )
    ).scalar_one_or_none()
    return int(used or 0)


def give_back_member(
    connection: Connection,
    account_id: str,
    user_id: str,
    metric: str,
    period_start: datetime,
    amount: int,
) -> bool:
    """Return ``amount`` to the member's counter (a refund of their charge); never below zero."""
    counter = member_counters.c
    result = connection.execute(
        update(member_counters)
        .where(
            counter.account_id == account_id,
            counter.user_id == user_id,
            counter.metric == metric,
            counter.period_start == period_start,
            counter.used >= amount,
        )
        .values(used=counter.used - amount)
    )
    return result.rowcount == 1
