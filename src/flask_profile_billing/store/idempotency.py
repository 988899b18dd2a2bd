"""Statements of the idempotency keys table: claiming a key, completing it, releasing it, pruning.

Every decision is a conditional statement on the key's row, so two requests with one key never both
believe they hold it: the insert of a new key races on the primary key, and a takeover (of an
expired key, or of a running key whose holder stopped renewing it) names the token it replaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, select, update

from .dialect import insert_ignoring_conflict
from .models import idempotency_keys

RUNNING = "running"
COMPLETED = "completed"

_KEYS = idempotency_keys.c


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key's row as stored."""

    fingerprint: str
    state: str
    token: str
    locked_until: datetime | None
    expires_at: datetime
    response_status: int | None
    response_headers: dict[str, Any] | None
    response_body: bytes | None


def _is_key(user_id: str, scope: str, key: str) -> Any:
    return and_(_KEYS.user_id == user_id, _KEYS.scope == scope, _KEYS.key == key)


@dataclass(frozen=True, slots=True)
class RunningClaim:
    """What a request that claims a key writes: its request's digest, its token and its times."""

    fingerprint: str
    token: str
    now: datetime
    locked_until: datetime
    expires_at: datetime

    def values(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "state": RUNNING,
            "token": self.token,
            "locked_until": self.locked_until,
            "response_status": None,
            "response_headers": None,
            "response_body": None,
            "created_at": self.now,
            "expires_at": self.expires_at,
        }


def insert_running(
    connection: Connection, *, user_id: str, scope: str, key: str, claim: RunningClaim
) -> bool:
    """Claim a key nobody used: True when this insert created its row."""
    row = insert_ignoring_conflict(
        connection,
        idempotency_keys,
        {"user_id": user_id, "scope": scope, "key": key, **claim.values()},
        ["user_id", "scope", "key"],
    )
    return row is not None


def find(connection: Connection, *, user_id: str, scope: str, key: str) -> KeyRecord | None:
    row = connection.execute(
        select(
            _KEYS.fingerprint,
            _KEYS.state,
            _KEYS.token,
            _KEYS.locked_until,
            _KEYS.expires_at,
            _KEYS.response_status,
            _KEYS.response_headers,
            _KEYS.response_body,
        ).where(_is_key(user_id, scope, key))
    ).one_or_none()
    return None if row is None else KeyRecord(*row)


def take_over(
    connection: Connection,
    *,
    user_id: str,
    scope: str,
    key: str,
    replaced_token: str,
    claim: RunningClaim,
) -> bool:
    """Start the key afresh for ``claim``, if it is still held by ``replaced_token``."""
    result = connection.execute(
        update(idempotency_keys)
        .where(_is_key(user_id, scope, key), _KEYS.token == replaced_token)
        .values(**claim.values())
    )
    return result.rowcount == 1


def complete(
    connection: Connection,
    *,
    user_id: str,
    scope: str,
    key: str,
    token: str,
    status: int,
    headers: dict[str, Any],
    body: bytes | None,
) -> bool:
    """Keep the response of the request holding ``token``; False if it lost the key meanwhile."""
    result = connection.execute(
        update(idempotency_keys)
        .where(_is_key(user_id, scope, key), _KEYS.token == token)
        .values(
            state=COMPLETED,
            locked_until=None,
            response_status=status,
            response_headers=headers,
            response_body=body,
        )
    )
    return result.rowcount == 1


def renew(
    connection: Connection,
    *,
    user_id: str,
    scope: str,
    key: str,
    token: str,
    locked_until: datetime,
) -> bool:
    """Extend the lock of the running request holding ``token``; False once it completed, released
    or lost the key (a late renewal then changes nothing)."""
    result = connection.execute(
        update(idempotency_keys)
        .where(_is_key(user_id, scope, key), _KEYS.token == token, _KEYS.state == RUNNING)
        .values(locked_until=locked_until)
    )
    return result.rowcount == 1


def release(connection: Connection, *, user_id: str, scope: str, key: str, token: str) -> None:
    """Forget a key whose request was not charged, so that a retry runs anew."""
    connection.execute(
        delete(idempotency_keys).where(_is_key(user_id, scope, key), _KEYS.token == token)
    )


def prune_expired(connection: Connection, now: datetime) -> int:
    """Delete the keys whose stored responses expired; how many."""
    result = connection.execute(delete(idempotency_keys).where(_KEYS.expires_at <= now))
    return int(result.rowcount)


def count_expired(connection: Connection, now: datetime) -> int:
    """How many keys ``prune_expired`` would delete at ``now``."""
    query = select(func.count()).select_from(idempotency_keys).where(_KEYS.expires_at <= now)
    return int(connection.execute(query).scalar_one())
