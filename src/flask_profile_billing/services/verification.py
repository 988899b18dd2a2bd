"""Checks of the ledger's invariants, for ``flask billing verify`` and monitoring.

Each check is one set-based query over a whole table group (grouped sums compared in the
database), so it costs the same few statements on a large database as on a small one. A check
that finds nothing wrong reports an empty list; the report lists every drift found, up to
``limit`` per check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..store import accounts as stored_accounts
from ..store import usage as stored_usage
from ..store.accounts import PoolDrift, SeatOverflow
from ..store.transactions import read_connection
from ..store.usage import CounterDrift
from .runtime import Runtime

DEFAULT_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Report:
    """What the checks found; ``ok`` when nothing."""

    checked_since: datetime | None
    """The periods checked start at or after this (the retention's reach); None: all of them."""
    limit: int
    """Each list holds at most this many drifts."""
    pools: list[PoolDrift] = field(default_factory=list)
    """Team pools that are not the sum of their members' counters."""
    counters: list[CounterDrift] = field(default_factory=list)
    """Usage counters that are not the sum of their usage events' amounts."""
    seats: list[SeatOverflow] = field(default_factory=list)
    """Teams with more members than their plan's seats."""

    @property
    def drift_count(self) -> int:
        return len(self.pools) + len(self.counters) + len(self.seats)

    @property
    def ok(self) -> bool:
        return self.drift_count == 0


class VerificationService:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def run(self, limit: int = DEFAULT_LIMIT) -> Report:
        """Run every check, each in its own read of the database."""
        runtime = self._runtime
        now = runtime.now()
        retention = runtime.settings.maintenance.retention_days
        # The retention deletes events by their date and counters once their period has ended,
        # so an older period may have lost part of its events: only the periods wholly inside
        # the retention are compared.
        since = None if retention is None else now - timedelta(days=retention)
        catalog = runtime.catalog
        seats = {plan.code: plan.seats for plan in catalog.plans.values() if plan.seats is not None}
        engine = runtime.engine
        with read_connection(engine) as connection:
            pools = stored_accounts.pool_drifts(connection, limit, since)
        with read_connection(engine) as connection:
            counters = stored_usage.counter_drifts(connection, since, limit)
        with read_connection(engine) as connection:
            overflows = stored_accounts.seat_overflows(
                connection, now, catalog.default_plan.code, seats, limit
            )
        return Report(since, limit, pools, counters, overflows)
