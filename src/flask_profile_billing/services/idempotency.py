"""Idempotency keys of guarded requests, as payment APIs offer them.

The first request with a key claims it and runs; its response, once charged, is stored and a repeat
of the key gets that response back without the view running again. A repeat while the first still
runs is refused (409), and so is a key reused for another request (422). A request that ended
uncharged (refused, or failed and refunded) releases its key, so its retry runs anew. A key whose
holder died (its lock expired before it completed) is taken over by the next repeat, which first
refunds what the dead holder was charged.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..errors import IdempotencyConflict, IdempotencyKeyReused
from ..store import idempotency as keys
from ..store.transactions import UNAVAILABLE_ERRORS, read_connection, write_transaction
from .charge_returns import ChargeReturnService, PendingReturn
from .runtime import Runtime

log = logging.getLogger(__name__)

_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    """A guarded request that carries a key: who sent it, to which endpoint, and what it was."""

    user_id: str
    scope: str
    """The guarded endpoint: keys of one user are separate per endpoint."""
    key: str
    fingerprint: str
    """A digest of the method, path, query string and body."""


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
        raise _in_progress()

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
        try:
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
        except UNAVAILABLE_ERRORS:
            # The request itself succeeded and was charged: its answer still goes out. The key
            # stays locked until it expires, and a repeat then takes it over (and refunds this).
            log.exception("could not store the response of an idempotent request")
            return
        if not kept:
            log.warning(
                "an idempotent request finished after its key was taken over",
                extra={"user_id": request.user_id, "scope": request.scope},
            )

    def release(self, claim: KeyClaim) -> None:
        """Forget the key of a request that ended uncharged, so its retry runs anew."""
        request = claim.request
        try:
            with read_connection(self._runtime.engine) as connection:
                keys.release(
                    connection,
                    user_id=request.user_id,
                    scope=request.scope,
                    key=request.key,
                    token=claim.token,
                )
        except UNAVAILABLE_ERRORS:
            # Not fatal: the key stays locked until its lock expires; then a retry takes it over.
            log.exception("could not release an idempotency key")

    def prune_expired(self, now: datetime | None = None, *, dry_run: bool = False) -> int:
        """Delete the stored responses whose time is over (at ``now``); how many. With
        ``dry_run``, only count them."""
        moment = now or self._runtime.now()
        with read_connection(self._runtime.engine) as connection:
            if dry_run:
                return keys.count_expired(connection, moment)
            return keys.prune_expired(connection, moment)

    # -- internals -----------------------------------------------------------------------------

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
                raise _in_progress()
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
                PendingReturn(request.user_id, idempotency_key=record.token)
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


def _in_progress() -> IdempotencyConflict:
    return IdempotencyConflict(
        "A request with this Idempotency-Key is still being processed; retry shortly",
        retry_after_seconds=1,
    )
