"""Job leases: whoever claims a job's lease runs its tick; everyone else skips it.

See ``store.leases`` for the one statement that decides. A lease is renewed after each batch of
the run and released at its end; a worker that dies stops renewing, and once the lease runs out
(BILLING_SCHEDULER_LEASE_SECONDS) the next due tick is taken by another worker.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..store import leases as stored
from ..store.transactions import write_transaction
from .runtime import Runtime

log = logging.getLogger(__name__)


class LeaseLost(RuntimeError):
    """The lease ran out while its holder still worked, and another worker took the job over."""


@dataclass
class Lease:
    """A claimed lease of one job; ``renew`` after each batch, ``release`` when done."""

    runtime: Runtime
    name: str
    holder: str
    seconds: int
    renewed_at: datetime
    """When this holder last claimed or renewed it, by the runtime's clock."""

    def renew(self) -> None:
        """Extend the lease by its length from now; ``LeaseLost`` when another took it over."""
        now = self.runtime.now()
        self.renewed_at = now
        with write_transaction(self.runtime.engine) as connection:
            renewed = stored.renew(
                connection,
                name=self.name,
                holder=self.holder,
                lease_until=now + timedelta(seconds=self.seconds),
            )
        if not renewed:
            raise LeaseLost(f"the lease of {self.name!r} held by {self.holder} was taken over")

    def keep(self) -> None:
        """Renew the lease if a third of it has passed since it was last renewed, else nothing:
        cheap enough before every email. ``LeaseLost`` when another took it over, so a holder
        that stalled past its lease learns it before it acts again: a third of the lease is left
        when it renews in time, and when it did not, the renewal finds the lease gone."""
        if self.runtime.now() - self.renewed_at >= timedelta(seconds=self.seconds) / 3:
            self.renew()

    def release(self) -> None:
        with write_transaction(self.runtime.engine) as connection:
            stored.release(connection, name=self.name, holder=self.holder, now=self.runtime.now())


class JobLeases:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def claim(self, name: str, *, every_seconds: int, lease_seconds: int) -> Lease | None:
        """The lease of job ``name`` if it is due now and nobody holds a live lease (the job is
        then next due ``every_seconds`` from now); None otherwise."""
        now = self._runtime.now()
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        with write_transaction(self._runtime.engine) as connection:
            claimed = stored.claim(
                connection,
                name=name,
                holder=holder,
                now=now,
                lease_until=now + timedelta(seconds=lease_seconds),
                next_due_at=now + timedelta(seconds=every_seconds),
            )
        if not claimed:
            return None
        log.debug("job lease claimed", extra={"job": name, "holder": holder})
        return Lease(self._runtime, name, holder, lease_seconds, renewed_at=now)
