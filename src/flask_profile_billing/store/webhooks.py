"""The statements on ``billing_webhook_deliveries``: every delivery as received, and its outcome.

At most one delivery per provider event has the outcome ``processed``: a partial unique index says
so, and of concurrent or replayed deliveries exactly one claim wins (PostgreSQL makes the others
wait for its commit; SQLite's ``BEGIN IMMEDIATE`` runs them one after another).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, text, update

from ..domain.payments import DeliveryOutcome
from .dialect import insert_ignoring_conflict
from .models import webhook_deliveries

PROCESSED = DeliveryOutcome.PROCESSED.value
"""The outcome of the one delivery that acted on its event."""
_PROCESSED_ONLY = text(f"outcome = '{PROCESSED}'")  # the predicate of the partial unique index


def claim(connection: Connection, delivery: Mapping[str, Any]) -> int | None:
    """Record ``delivery`` (every column but ``id`` and ``outcome``) as the one ``processed``
    delivery of its event; its id, or None (nothing written) when another delivery of the event
    holds that outcome."""
    row = insert_ignoring_conflict(
        connection,
        webhook_deliveries,
        {**delivery, "outcome": PROCESSED},
        ["provider", "event_id"],
        conflict_where=_PROCESSED_ONLY,
    )
    return None if row is None else int(row.id)


def record(connection: Connection, delivery: Mapping[str, Any], outcome: DeliveryOutcome) -> None:
    """Record ``delivery`` (every column but ``id`` and ``outcome``) with ``outcome``."""
    connection.execute(webhook_deliveries.insert().values(**delivery, outcome=outcome.value))


def set_outcome(connection: Connection, delivery_id: int, outcome: DeliveryOutcome) -> None:
    """Change the outcome of a claimed delivery (leaving ``processed`` frees its event)."""
    connection.execute(
        update(webhook_deliveries)
        .where(webhook_deliveries.c.id == delivery_id)
        .values(outcome=outcome.value)
    )
