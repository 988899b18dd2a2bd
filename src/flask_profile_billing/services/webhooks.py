"""The payment providers' webhooks: verify a delivery, read its event, apply it once to its payment.

A delivery is authenticated by its provider's own check over the raw body and headers before
anything else is read (the shared-secret HMAC for a provider without one). A provider whose
deliveries are not signed has its event confirmed by its API first. Every delivery is recorded; of
the deliveries of one provider event exactly one is ``processed`` (the others are duplicates), and
it moves its payment from ``pending`` with a conditional UPDATE, so a late, repeated or
out-of-order webhook changes nothing.

What a confirmation grants is read from our own payment row (plan, months, user), never from the
webhook: the event must name a payment we started with that provider, for its user when the
provider echoes one, for exactly its amount and currency. A confirmation that differs grants
nothing, is logged and kept in the payment's history.

``paid`` is the short step between the provider's confirmation and the plan grant (see ``_grant``):
a payment that stays ``paid`` was confirmed but its grant did not finish (the process died in
between); grant it by hand with ``flask billing grant``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Row

from ..domain.subscriptions import Subscription
from ..errors import PaymentProviderError, WebhookRefused
from ..payments import signatures
from ..payments.providers import (
    EVENT_TYPES,
    PAYMENT_CANCELLED,
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
    HmacWebhookVerifier,
    InvalidEvent,
    PaymentConfirmer,
    PaymentProvider,
    ProviderEvent,
    SourceChecker,
    WebhookVerifier,
)
from ..store import payments as stored_payments
from ..store import webhooks as deliveries
from ..store.transactions import write_transaction
from .payments import MAX_PROVIDER_PAYMENT_ID, PaymentService, PaymentStatus
from .runtime import Runtime
from .subscriptions import SubscriptionService

log = logging.getLogger(__name__)

# Column sizes of billing_webhook_deliveries / billing_payments: longer values are refused as
# invalid events up front, never left to fail in the database as a 500.
_MAX_EVENT_ID = 255
_MAX_EVENT_TYPE = 64
_MAX_PAYMENT_ID = 64


class DeliveryOutcome(StrEnum):
    """What a webhook delivery did, as stored in ``billing_webhook_deliveries.outcome``."""

    PROCESSED = deliveries.PROCESSED
    """The event changed a payment: at most one delivery per provider event has this outcome."""
    DUPLICATE = "duplicate"
    """Another delivery of the same event was processed first (a retry, a replay, a race)."""
    IGNORED = "ignored"
    """Authentic but nothing to do: an event type we do not handle, or a payment already settled."""
    REJECTED = "rejected"
    """Signed but refused: unreadable, an unknown payment, or an amount that does not match."""


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """What one webhook delivery did; the view answers it with a 200."""

    outcome: DeliveryOutcome
    event_id: str
    event_type: str
    reason: str | None = None
    subscription: Subscription | None = None
    """The user's new subscription when the delivery granted a plan."""


@dataclass(frozen=True, slots=True)
class _Decision:
    outcome: DeliveryOutcome
    reason: str | None = None
    grant: Row[Any] | None = None
    """The payment whose plan to grant, once the decision is committed."""


class WebhookService:
    def __init__(
        self, runtime: Runtime, subscriptions: SubscriptionService, payments: PaymentService
    ) -> None:
        self._runtime = runtime
        self._subscriptions = subscriptions
        self._payments = payments

    def handle(
        self,
        provider_name: str,
        raw_body: bytes,
        headers: Mapping[str, str],
        source_address: str | None = None,
    ) -> WebhookResult:
        """Verify, record and process one webhook delivery; each provider event is processed once.

        Refusals are ``WebhookRefused``: ``UNKNOWN_PROVIDER`` for a provider that is not
        configured, ``UNTRUSTED_SOURCE`` from an address the provider does not send from,
        ``WEBHOOKS_DISABLED`` for a provider of the shared-secret scheme without
        ``BILLING_WEBHOOK_SECRET``, ``INVALID_SIGNATURE`` for a delivery that fails the provider's
        check (nothing stored), ``INVALID_JSON``/``INVALID_EVENT`` for an authentic body that is
        not an event (stored as ``rejected``). ``PaymentProviderError`` when the provider's API
        cannot confirm the event (502: the provider delivers it again). Everything else is a
        ``WebhookResult``, answered with a 200 whatever the outcome: the delivery is authentic and
        recorded, and a retry could not change the answer, so a non-2xx would only make the
        provider retry for days.
        """
        # Before the signature, as for any unknown URL: it tells a caller no more than the route.
        provider = self._payments.provider_named(provider_name)
        if provider is None:
            raise WebhookRefused(
                "No payment provider of that name is configured", error_code="UNKNOWN_PROVIDER"
            )
        if isinstance(provider, SourceChecker) and not provider.accepts_source(source_address):
            log.warning("webhook for %r from untrusted address %r", provider.name, source_address)
            raise WebhookRefused(
                "Deliveries are not accepted from this address", error_code="UNTRUSTED_SOURCE"
            )
        try:
            self._verifier(provider).verify(headers, raw_body, self._runtime.now())
        except signatures.InvalidSignature as error:
            raise WebhookRefused(str(error), error_code="INVALID_SIGNATURE") from None
        payload_text = _storable(raw_body.decode("utf-8", errors="replace"))
        try:
            event = _parse_event(provider, raw_body)
        except _NotJson as error:
            self._record_rejected(provider.name, payload_text)
            raise WebhookRefused(str(error), error_code="INVALID_JSON") from None
        except InvalidEvent as error:
            self._record_rejected(provider.name, payload_text)
            raise WebhookRefused(str(error), error_code="INVALID_EVENT") from None
        if isinstance(provider, PaymentConfirmer):
            event = self._confirmed(provider, event, payload_text)
        return self._process(provider.name, event, payload_text)

    def _verifier(self, provider: PaymentProvider) -> WebhookVerifier:
        """The provider's own check, else the shared-secret HMAC (``BILLING_WEBHOOK_SECRET``)."""
        if isinstance(provider, WebhookVerifier):
            return provider
        settings = self._runtime.settings.payments
        if not settings.webhook_secret:
            raise WebhookRefused(
                "Payment webhooks are disabled: BILLING_WEBHOOK_SECRET is not set",
                error_code="WEBHOOKS_DISABLED",
            )
        return HmacWebhookVerifier(settings.webhook_secret, settings.webhook_tolerance_seconds)

    def _confirmed(
        self, provider: PaymentConfirmer, event: ProviderEvent, payload_text: str
    ) -> ProviderEvent:
        """The event as the provider's API reports its payment now: outside any transaction, since
        it is a network call."""
        name = getattr(provider, "name", "?")
        try:
            confirmed = provider.confirm(event)
        except InvalidEvent as error:
            self._record_rejected(name, payload_text)
            raise WebhookRefused(str(error), error_code="INVALID_EVENT") from None
        except Exception as error:
            log.exception("payment provider %r could not confirm event %s", name, event.event_id)
            raise PaymentProviderError(
                "The payment provider could not confirm the event; deliver it again later"
            ) from error
        _check_sizes(confirmed)
        return confirmed

    def _process(
        self, provider_name: str, event: ProviderEvent, payload_text: str
    ) -> WebhookResult:
        now = self._runtime.now()
        delivery = {
            "provider": provider_name,
            "event_id": event.event_id,
            "event_type": event.event_type,
            "payload": payload_text,
            "received_at": now,
        }
        with write_transaction(self._runtime.engine) as connection:
            # Of concurrent or replayed deliveries of one event exactly one claim wins.
            claimed = deliveries.claim(connection, delivery)
            if claimed is None:
                deliveries.record(connection, delivery, DeliveryOutcome.DUPLICATE.value)
                return WebhookResult(DeliveryOutcome.DUPLICATE, event.event_id, event.event_type)
            decision = self._decide(connection, provider_name, event, now)
            if decision.outcome is not DeliveryOutcome.PROCESSED:
                # Leaving 'processed' frees the event for a later delivery, which is harmless: it
                # meets the same settled payment or the same mismatch, and changes nothing either.
                deliveries.set_outcome(connection, claimed, decision.outcome.value)
        if decision.outcome is DeliveryOutcome.REJECTED:
            log.warning(
                "webhook event %s from %r rejected: %s",
                event.event_id,
                provider_name,
                decision.reason,
            )
        subscription = None if decision.grant is None else self._grant(decision.grant)
        return WebhookResult(
            decision.outcome, event.event_id, event.event_type, decision.reason, subscription
        )

    def _decide(
        self, connection: Connection, provider_name: str, event: ProviderEvent, now: datetime
    ) -> _Decision:
        """Apply ``event`` to its payment inside the delivery's transaction."""
        if event.event_type not in EVENT_TYPES:
            return _Decision(
                DeliveryOutcome.IGNORED, f"event type {event.event_type!r} is not handled"
            )
        payment = stored_payments.find_payment(
            connection,
            provider_name,
            payment_id=event.payment_id,
            provider_payment_id=event.provider_payment_id,
        )
        if payment is None:
            return _Decision(DeliveryOutcome.REJECTED, "no such payment")
        if (
            event.provider_payment_id is not None
            and payment.provider_payment_id is not None
            and event.provider_payment_id != payment.provider_payment_id
        ):
            return self._refused(
                connection, payment, event, now, "the provider payment id does not match"
            )
        if event.user_id is not None and event.user_id != payment.user_id:
            return self._refused(
                connection, payment, event, now, "the event is for another user than the payment"
            )
        if event.event_type == PAYMENT_SUCCEEDED:
            # Amount and currency never change after creation, so reading them first is safe; the
            # status does change, and the conditional UPDATE below decides on it.
            if event.amount != payment.amount or event.currency != payment.currency:
                return self._refused(
                    connection,
                    payment,
                    event,
                    now,
                    f"paid {event.amount} {event.currency}, expected "
                    f"{payment.amount} {payment.currency}",
                )
            target = PaymentStatus.PAID
        elif event.event_type == PAYMENT_FAILED:
            target = PaymentStatus.FAILED
        else:
            assert event.event_type == PAYMENT_CANCELLED
            target = PaymentStatus.CANCELLED
        if not stored_payments.move(
            connection,
            payment.id,
            PaymentStatus.PENDING.value,
            target.value,
            now,
            settle=True,
            provider_event_id=event.event_id,
        ):
            return _Decision(DeliveryOutcome.IGNORED, "the payment is no longer pending")
        return _Decision(
            DeliveryOutcome.PROCESSED, grant=payment if target is PaymentStatus.PAID else None
        )

    @staticmethod
    def _refused(
        connection: Connection, payment: Row[Any], event: ProviderEvent, now: datetime, reason: str
    ) -> _Decision:
        """Reject an event about ``payment``, and keep the refusal in the payment's history (its
        status unchanged)."""
        stored_payments.record_event(
            connection,
            payment.id,
            payment.status,
            payment.status,
            now,
            provider_event_id=event.event_id,
            reason=f"rejected: {reason}",
        )
        return _Decision(DeliveryOutcome.REJECTED, reason)

    def _grant(self, payment: Row[Any]) -> Subscription:
        """Give the paid plan, after the claim (delivery 'processed', payment pending -> paid) is
        committed.

        ``change_plan`` runs its own transactions (with retries and signals), so it cannot share the
        claim's. Claim first, grant second: once the claim is committed no other delivery can reach
        this line for the payment, so a plan is granted at most once even if the process dies
        anywhere. The opposite order could grant twice (a crash after the grant, then a retry). The
        price of this order is a payment left ``paid`` by a crash in between: confirmed, not yet
        granted, visible in ``billing_payments``, and granted by hand.
        """
        subscription = self._subscriptions.change_plan(
            payment.user_id, payment.plan_code, payment.months
        )
        with write_transaction(self._runtime.engine) as connection:
            stored_payments.move(
                connection,
                payment.id,
                PaymentStatus.PAID.value,
                PaymentStatus.SUCCEEDED.value,
                self._runtime.now(),
                reason=f"{payment.plan_code} granted for {payment.months} months",
            )
        log.info(
            "payment %s settled: user %r is on %r for %s months",
            payment.id,
            payment.user_id,
            payment.plan_code,
            payment.months,
        )
        return subscription

    def _record_rejected(self, provider_name: str, payload_text: str) -> None:
        """Keep a signed delivery we could not read, for whoever debugs the provider's side."""
        with write_transaction(self._runtime.engine) as connection:
            deliveries.record(
                connection,
                {
                    "provider": provider_name,
                    "event_id": "",
                    "event_type": "",
                    "payload": payload_text,
                    "received_at": self._runtime.now(),
                },
                DeliveryOutcome.REJECTED.value,
            )


class _NotJson(InvalidEvent):
    """The body is not a JSON object (400, like every other JSON endpoint of the API)."""


def _parse_event(provider: PaymentProvider, raw_body: bytes) -> ProviderEvent:
    try:
        payload = json.loads(raw_body)
    except (ValueError, RecursionError):
        raise _NotJson("The request body must be a JSON object") from None
    if not isinstance(payload, dict):
        raise _NotJson("The request body must be a JSON object")
    try:
        event = provider.parse_event(payload)
    except InvalidEvent:
        raise
    except (LookupError, TypeError, ValueError, ArithmeticError) as error:
        # An adapter that trips over an odd payload is still an unreadable event, not a 500.
        log.warning("payment provider %r could not read an event", provider.name, exc_info=True)
        raise InvalidEvent(f"unreadable event: {error}") from None
    _check_sizes(event)
    return event


def _check_sizes(event: ProviderEvent) -> None:
    """Refuse identifiers the tables cannot hold (too long, or control characters such as NUL,
    which PostgreSQL's text refuses), whatever the adapter let through."""
    handled = event.event_type in EVENT_TYPES
    if handled and event.payment_id is None and event.provider_payment_id is None:
        raise InvalidEvent("the event names no payment")
    limits = {
        "event_id": (event.event_id, _MAX_EVENT_ID),
        "event_type": (event.event_type, _MAX_EVENT_TYPE),
        "payment_id": (event.payment_id, _MAX_PAYMENT_ID),
        "provider_payment_id": (event.provider_payment_id, MAX_PROVIDER_PAYMENT_ID),
    }
    for name, (value, longest) in limits.items():
        if value is None and name in {"payment_id", "provider_payment_id"}:
            continue
        if not value or len(value) > longest or any(char < " " for char in value):
            raise InvalidEvent(f"{name} must be 1 to {longest} printable characters")


def _storable(payload_text: str) -> str:
    """The body as text a database column can hold: PostgreSQL's text refuses NUL."""
    return payload_text.replace("\x00", "\ufffd")
