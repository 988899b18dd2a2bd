"""Giving quota charges back, including when the database cannot take the return right now.

A request that fails is not charged: its charge is returned before the answer leaves. When the
database is down at that moment (the very fault that often made the request fail), the return is
kept in this process and retried in the background until the database takes it. A return deletes
the charge's usage event and takes its amount off the counters in one transaction that finds the
event first, so retrying a return whose first attempt did commit (the connection dropped before
the answer) changes nothing.

"Return" here is about quota, never money: a refund is the provider giving a payment's money back
(``services.webhooks``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from ..store.transactions import UNAVAILABLE_ERRORS, write_transaction
from ..store.usage import refund_event
from .runtime import Runtime

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 0.5
LAST_RETRY_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class PendingReturn:
    """A charge to give back, found by its usage event id or by the user's idempotency key."""

    user_id: str
    event_id: int | None = None
    idempotency_key: str | None = None


class ChargeReturnService:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._pending: list[PendingReturn] = []
        self._lock = threading.Lock()
        self._retrier: threading.Thread | None = None

    def give_back(self, charge: PendingReturn) -> None:
        """Give a charge back now, or later if the database is unavailable."""
        try:
            self._apply(charge)
        except UNAVAILABLE_ERRORS as error:
            log.error(
                "charge return deferred: the database is unavailable (%s); retrying in the background",
                type(error).__name__,
                extra={"user_id": charge.user_id, "event_id": charge.event_id},
            )
            self.return_later(charge)

    def return_later(self, charge: PendingReturn) -> None:
        """Queue a return for the background retrier (the database just failed us)."""
        with self._lock:
            self._pending.append(charge)
            if self._retrier is None or not self._retrier.is_alive():
                self._retrier = threading.Thread(
                    target=self._retry_until_done, name="billing-charge-returns", daemon=True
                )
                self._retrier.start()

    @property
    def pending(self) -> int:
        """How many returns wait for the database."""
        with self._lock:
            return len(self._pending)

    def retry_pending(self) -> int:
        """Try every waiting return once now; how many are still waiting."""
        with self._lock:
            batch, self._pending = self._pending, []
        failed: list[PendingReturn] = []
        for charge in batch:
            try:
                with self._runtime.app.app_context():
                    self._apply(charge)
            except UNAVAILABLE_ERRORS:
                failed.append(charge)
        with self._lock:
            self._pending[:0] = failed
            return len(self._pending)

    def _retry_until_done(self) -> None:
        delay = FIRST_RETRY_SECONDS
        stop = threading.Event()
        while True:
            stop.wait(delay)
            try:
                left = self.retry_pending()
            except Exception:  # a bug must not kill the retrier and strand the returns
                log.exception("charge return retry failed")
                left = self.pending
            if left == 0:
                with self._lock:
                    if not self._pending:
                        self._retrier = None
                        return
            delay = min(delay * 2, LAST_RETRY_SECONDS)

    def _apply(self, charge: PendingReturn) -> None:
        with write_transaction(self._runtime.engine) as connection:
            returned = refund_event(
                connection,
                user_id=charge.user_id,
                event_id=charge.event_id,
                idempotency_key=charge.idempotency_key,
            )
        if returned:
            self._runtime.cache.forget_user(charge.user_id)
