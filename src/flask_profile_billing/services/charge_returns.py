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

from dataclasses import dataclass

from ..store.transactions import write_transaction
from ..store.usage import refund_event
from .retries import RetryQueue
from .runtime import Runtime


@dataclass(frozen=True, slots=True)
class PendingReturn:
    """A charge to give back, found by its usage event id or by the user's idempotency key."""

    account_id: str
    event_id: int | None = None
    idempotency_key: str | None = None


class ChargeReturnService:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._waiting = RetryQueue(runtime.app, "billing-charge-returns")

    def give_back(self, charge: PendingReturn) -> None:
        """Give a charge back now, or later if the database is unavailable."""
        failure = f"charge return of user {charge.account_id} (event {charge.event_id}) deferred"
        self._waiting.run_or_queue(lambda: self._apply(charge), failure)

    def return_later(self, charge: PendingReturn) -> None:
        """Queue a return for the background retrier (the database just failed us)."""
        self._waiting.queue(lambda: self._apply(charge))

    @property
    def pending(self) -> int:
        """How many returns wait for the database."""
        return self._waiting.pending

    def retry_pending(self) -> int:
        """Try every waiting return once now; how many are still waiting."""
        return self._waiting.retry_pending()

    def _apply(self, charge: PendingReturn) -> None:
        with write_transaction(self._runtime.engine) as connection:
            returned = refund_event(
                connection,
                account_id=charge.account_id,
                event_id=charge.event_id,
                idempotency_key=charge.idempotency_key,
            )
        if returned:
            self._runtime.cache.forget_account(charge.account_id)
