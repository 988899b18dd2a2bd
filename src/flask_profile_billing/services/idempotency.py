"""Idempotency keys of guarded requests, as payment APIs offer them.

The first request with a key claims it and runs; its response, once charged, is stored and a repeat
of the key gets that response back without the view running again. A repeat while the first still
runs is refused (409), and so is a key reused for another request (422). A request that ended
uncharged (refused, or failed and refunded) releases its key, so its retry runs anew.

A running request renews its lock while its view runs (``hold``), so a slow view keeps its key
however long it takes. A key whose holder died (it stopped renewing, and the lock ran out) is taken
over by the next repeat, which first refunds what the dead holder was charged. A refused repeat is
told how long the lock still holds (``Retry-After``).

Storing the response (or releasing the key) happens after the view ran: when the database cannot
take it at that moment, it is retried in the background, and the request's answer goes out as the
view gave it.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..errors import IdempotencyConflict, IdempotencyKeyReused
from ..store import idempotency as keys
from ..store.transactions import read_connection, write_transaction
from .charge_returns import ChargeReturnService, PendingReturn
from .retries import RetryQueue
from .runtime import Runtime

log = logging.getLogger(__name__)

_ATTEMPTS = 3
# A running request renews its lock this many times per lock period: two renewals may fail (the
# database briefly away) before a live holder's key can be taken over.
_RENEWALS_PER_LOCK = 3


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    """A guarded request that carries a key: who sent it, to which endpoint, and what it was."""

    user_id: str
    scope: str
    """The guarded endpoint: keys of one user are separate per endpoint."""
    key: str
    fingerprint: str
    """A digest of the method, path, query string and body."""
    account_id: str
    """The account the request charges: a takeover gives the dead holder's charge back to it."""


@dataclass(frozen=True, slots=True)
class KeyClaim:
    """The key is this request's until it completes or releases it.

    ``token`` also keys the charge's usage event, so a takeover can find and refund it.
    """

    request: IdempotentRequest
    token: str


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = b""
    """None when the response was not kept (streamed, or larger than the configured cap)."""


class IdempotencyService:
    def __init__(self, runtime: Runtime, charge_returns: ChargeReturnService) -> None:
        self._runtime = runtime
        self._charge_returns = charge_returns
        # Completions and releases the database could not take when they were due.
        self._waiting = RetryQueue(runtime.app, "billing-idempotency")

    def begin(self, request: IdempotentRequest) -> KeyClaim | StoredResponse:
        """Claim the key for ``request``, or the stored response of its first use.

        Raises ``IdempotencyConflict`` while the first use runs and ``IdempotencyKeyReused`` when
        the key was used for a different request.
        """
        for _ in range(_ATTEMPTS):
            outcome = self._try_begin(request)
            if outcome is not None:
                return outcome
        # The key kept changing hands under us: another request with it is clearly in flight.
        raise _in_progress(None, self._runtime.now())

    @contextmanager
    def hold(self, claim: KeyClaim) -> Iterator[None]:
        """Keep ``claim``'s key locked while the block runs (the view): a background thread
        renews the lock a few times per ``BILLING_IDEMPOTENCY_LOCK_SECONDS``, so only a holder
        that stopped (a worker killed mid-request) loses its key to a repeat."""
        stop = threading.Event()
        lock_seconds = self._runtime.settings.idempotency_lock_seconds
        interval = lock_seconds / _RENEWALS_PER_LOCK

        def renew_until_stopped() -> None:
            while not stop.wait(interval):
                try:
                    if not self._renew(claim, lock_seconds):
                        return  # completed, released or taken over: nothing left to hold
                except Exception:  # a renewal that failed is tried again at the next tick
                    log.warning("could not renew an idempotency key's lock", exc_info=True)

        heartbeat = threading.Thread(
            target=renew_until_stopped, name="billing-idempotency-lock", daemon=True
        )
        heartbeat.start()
        try:
            yield
        finally:
            stop.set()

    @property
    def pending(self) -> int:
        """How many completions and releases wait for the database."""
        return self._waiting.pending

    def retry_pending(self) -> int:
        """Try every waiting completion and release once now; how many are still waiting."""
        return self._waiting.retry_pending()

    def complete(self, claim: KeyClaim, response: StoredResponse) -> None:
        """Store the charged response of ``claim``'s request for its repeats."""
        settings = self._runtime.settings
        body = response.body
        if body is not None and len(body) > settings.idempotency_max_response_bytes:
            body = None
        headers: dict[str, list[str]] = {}
        for name, value in response.headers:
            headers.setdefault(name, []).append(value)
        request = claim.request

        def store() -> None:
            with read_connection(self._runtime.engine) as connection:
                kept = keys.complete(
                    connection,
                    user_id=request.user_id,
                    scope=request.scope,
                    key=request.key,
                    token=claim.token,
                    status=response.status,
                    headers=headers,
                    body=body,
                )
            if not kept:
                log.warning(
                    "an idempotent request finished after its key was taken over",
                    extra={"user_id": request.user_id, "scope": request.scope},
                )

        # The request itself succeeded and was charged: its answer goes out whatever happens
        # here. Until the response is stored, repeats are told to wait (the key stays locked).
        self._waiting.run_or_queue(store, "could not store the response of an idempotent request")

    def release(self, claim: KeyClaim) -> None:
        """Forget the key of a request that ended uncharged, so its retry runs anew."""
        request = claim.request

        def forget() -> None:
            with read_connection(self._runtime.engine) as connection:
                keys.release(
                    connection,
                    user_id=request.user_id,
                    scope=request.scope,
                    key=request.key,
                    token=claim.token,
                )

        # Until it lands, a retry is told to wait (and, past the lock, takes the key over).
        self._waiting.run_or_queue(forget, "could not release an idempotency key")

    def prune_expired(self, now: datetime | None = None, *, dry_run: bool = False) -> int:
        """Delete the stored responses whose time is over (at ``now``); how many. With
        ``dry_run``, only count them."""
        moment = now or self._runtime.now()
        with read_connection(self._runtime.engine) as connection:
            if dry_run:
                return keys.count_expired(connection, moment)
            return keys.prune_expired(connection, moment)

    # -- internals -----------------------------------------------------------------------------

    def _renew(self, claim: KeyClaim, lock_seconds: int) -> bool:
        request = claim.request
        locked_until = self._runtime.now() + timedelta(seconds=lock_seconds)
        # Called from the heartbeat's own thread: the engine is the app's.
        with self._runtime.app.app_context(), read_connection(self._runtime.engine) as connection:
            return keys.renew(
                connection,
                user_id=request.user_id,
                scope=request.scope,
                key=request.key,
                token=claim.token,
                locked_until=locked_until,
            )

    def _try_begin(self, request: IdempotentRequest) -> KeyClaim | StoredResponse | None:
        settings = self._runtime.settings
        now = self._runtime.now()
        claim = keys.RunningClaim(
            fingerprint=request.fingerprint,
            token=uuid.uuid4().hex,
            now=now,
            locked_until=now + timedelta(seconds=settings.idempotency_lock_seconds),
            expires_at=now + timedelta(seconds=settings.idempotency_ttl_seconds),
        )
        user_id, scope, key = request.user_id, request.scope, request.key
        with write_transaction(self._runtime.engine) as connection:
            if keys.insert_running(connection, user_id=user_id, scope=scope, key=key, claim=claim):
                return KeyClaim(request, claim.token)
            record = keys.find(connection, user_id=user_id, scope=scope, key=key)
            if record is None:
                return None  # released between the two statements: try again
            expired = record.expires_at <= now
            if not expired and record.fingerprint != request.fingerprint:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was already used for a different request"
                )
            if not expired and record.state == keys.COMPLETED:
                return _stored(record)
            stalled = record.locked_until is not None and record.locked_until <= now
            if not expired and not stalled:
                raise _in_progress(record, now)
            if not keys.take_over(
                connection,
                user_id=user_id,
                scope=scope,
                key=key,
                replaced_token=record.token,
                claim=claim,
            ):
                return None
        if record.state == keys.RUNNING:
            # Its holder stopped (a worker that died mid-request): whatever it was charged is
            # given back before this request is charged in its place.
            self._charge_returns.give_back(
                PendingReturn(request.account_id, idempotency_key=record.token)
            )
        return KeyClaim(request, claim.token)


def _stored(record: keys.KeyRecord) -> StoredResponse:
    if record.response_body is None:
        raise IdempotencyConflict(
            "This request was already processed and charged; its response was too large to "
            "keep, so it cannot be repeated",
            error_code="IDEMPOTENT_RESPONSE_NOT_STORED",
        )
    headers = [
        (name, value)
        for name, values in (record.response_headers or {}).items()
        for value in values
    ]
    assert record.response_status is not None
    return StoredResponse(record.response_status, headers, bytes(record.response_body))


def _in_progress(record: keys.KeyRecord | None, now: datetime) -> IdempotencyConflict:
    """409 for a repeat of a running request, with ``Retry-After`` the time its lock still holds:
    the holder answers sooner if it is alive, and a repeat after that takes over a dead one (a
    shorter wait would have a client give up while the key is still locked)."""
    seconds = 1
    if record is not None and record.locked_until is not None:
        seconds = max(1, math.ceil((record.locked_until - now).total_seconds()))
    return IdempotencyConflict(
        "A request with this Idempotency-Key is still being processed; retry shortly",
        retry_after_seconds=seconds,
    )
