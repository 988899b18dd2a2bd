"""The job lease: one conditional statement decides which worker runs a scheduled job's tick.

``claim`` is an ``INSERT ... ON CONFLICT DO UPDATE ... WHERE``: it creates the job's row the first
time, and otherwise takes the row only when the job is due and no live lease is held. On PostgreSQL
a concurrent claimer waits for the row and then re-checks the condition against the row as
committed, so it finds the lease taken; on SQLite writers take turns. Either way one claimer gets
the row back, and everyone else gets nothing. No session-level lock is involved, so a pooler in
transaction mode (PgBouncer) changes nothing, and a holder that dies simply stops renewing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, and_, or_, update

from .dialect import dialect_insert
from .models import job_leases

_LEASES = job_leases.c


def claim(
    connection: Connection,
    *,
    name: str,
    holder: str,
    now: datetime,
    lease_until: datetime,
    next_due_at: datetime,
) -> bool:
    """Take the lease of job ``name`` for ``holder`` if the job is due at ``now`` and nobody holds
    a live lease; the job is then next due at ``next_due_at``. True when this call took it."""
    values = {
        "name": name,
        "holder": holder,
        "lease_until": lease_until,
        "next_due_at": next_due_at,
        "last_started_at": now,
    }
    statement = dialect_insert(connection, job_leases).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[_LEASES.name],
        set_={
            "holder": statement.excluded.holder,
            "lease_until": statement.excluded.lease_until,
            "next_due_at": statement.excluded.next_due_at,
            "last_started_at": statement.excluded.last_started_at,
        },
        where=and_(
            _LEASES.next_due_at <= now,
            or_(_LEASES.lease_until.is_(None), _LEASES.lease_until < now),
        ),
    ).returning(_LEASES.name)
    return connection.execute(statement).first() is not None


def renew(connection: Connection, *, name: str, holder: str, lease_until: datetime) -> bool:
    """Extend ``holder``'s lease of ``name`` to ``lease_until``; False when it no longer holds it
    (its lease ran out and another worker took the job over)."""
    result = connection.execute(
        update(job_leases)
        .where(_LEASES.name == name, _LEASES.holder == holder, _LEASES.lease_until.is_not(None))
        .values(lease_until=lease_until)
    )
    return result.rowcount == 1


def release(connection: Connection, *, name: str, holder: str, now: datetime) -> bool:
    """End ``holder``'s lease of ``name`` (the run finished); False when it no longer held it."""
    result = connection.execute(
        update(job_leases)
        .where(_LEASES.name == name, _LEASES.holder == holder, _LEASES.lease_until.is_not(None))
        .values(lease_until=None, last_finished_at=now)
    )
    return result.rowcount == 1
