"""The payment providers' webhooks: verify a delivery, read its event, apply it once to its payment.

A delivery is authenticated by its provider's own check over the raw body and headers before
anything else is read (the shared-secret HMAC for a provider without one). A provider whose
deliveries are not signed has its event confirmed by its API first, and only for payments we
started with it, so an anonymous sender cannot choose what we ask the API about. Every delivery
that passes those checks is recorded; of the deliveries of one provider event exactly one is
``processed`` (the others are duplicates), and it moves its payment from ``pending`` with a
conditional UPDATE, so a late, repeated or out-of-order webhook changes nothing.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl
from uuid import uuid4

from sqlalchemy import Connection, Row

from ..domain.subscriptions import Subscription
from ..errors import PaymentProviderError, WebhookRefused
from ..payments import signatures
from ..payments.providers import (
    EVENT_TYPES,
    PAYMENT_CANCELLED,
    PAYMENT_CHARGED_BACK,
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
    RECURRING_CANCEL_SCHEDULED,
    RECURRING_ENDED,
    RECURRING_PAID,
    RECURRING_RESUMED,
    RECURRING_TYPES,
    REVERSAL_TYPES,
    HmacWebhookVerifier,
    InvalidEvent,
    PaymentConfirmer,
    PaymentNotFound,
    PaymentProvider,
    ProviderEvent,
    SourceChecker,
    WebhookVerifier,
)
from ..store import payments as stored_payments
from ..store import recurring as stored_recurring
from ..store import webhooks as deliveries
from ..store.transactions import read_connection, write_transaction
from .payments import MAX_PROVIDER_PAYMENT_ID, PaymentService, PaymentStatus
from .recurring import RecurringService
from .runtime import Runtime

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
    then: Callable[[], Subscription | None] | None = None
    """What else to do once the decision is committed (plan changes run their own
    transactions): end a refunded period, follow a subscription's schedule, a grace."""


class WebhookService:
    def __init__(
        self, runtime: Runtime, payments: PaymentService, recurring: RecurringService
    ) -> None:
        self._runtime = runtime
        self._payments = payments
        self._recurring = recurring

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
        cannot confirm the event (502: the provider delivers it again); an event of a provider
        that confirms, naming no payment of ours or one its API does not know, is ``rejected``
        (for good: a 200). Everything else is a
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
            event = _parse_event(provider, raw_body, headers.get("Content-Type", ""))
        except _NotJson as error:
            self._record_rejected(provider.name, payload_text)
            raise WebhookRefused(str(error), error_code="INVALID_JSON") from None
        except InvalidEvent as error:
            self._record_rejected(provider.name, payload_text)
            raise WebhookRefused(str(error), error_code="INVALID_EVENT") from None
        if isinstance(provider, PaymentConfirmer):
            # Only payments we started are worth a call to the provider's API: an id of no row of
            # ours costs an anonymous sender one database read, never an outbound request.
            # Nor a write: like a delivery with a wrong signature, it is not stored.
            if not self._is_ours(provider.name, event):
                return self._rejected_unconfirmed(provider.name, event, None, "no such payment")
            try:
                event = self._confirmed(provider, event, payload_text)
            except PaymentNotFound as error:
                return self._rejected_unconfirmed(provider.name, event, payload_text, str(error))
        return self._process(provider.name, event, payload_text)

    def _is_ours(self, provider_name: str, event: ProviderEvent) -> bool:
        """Whether the payment an unconfirmed event names is one we started with the provider
        (an event that names none, such as an ignored type, has nothing to ask the API)."""
        if event.payment_id is None and event.provider_payment_id is None:
            return True
        with read_connection(self._runtime.engine) as connection:
            payment = stored_payments.find_payment(
                connection,
                provider_name,
                payment_id=event.payment_id,
                provider_payment_id=event.provider_payment_id,
            )
        return payment is not None

    def _rejected_unconfirmed(
        self, provider_name: str, event: ProviderEvent, payload_text: str | None, reason: str
    ) -> WebhookResult:
        """Refuse for good an event about a payment that is not ours, or one of ours that the
        provider's API does not know (then recorded with ``payload_text``): one log line, and a
        200, since delivering it again could not change the answer."""
        log.warning(
            "webhook event %s from %r rejected before confirmation: %s",
            event.event_id,
            provider_name,
            reason,
        )
        if payload_text is None:
            return WebhookResult(DeliveryOutcome.REJECTED, event.event_id, event.event_type, reason)
        with write_transaction(self._runtime.engine) as connection:
            deliveries.record(
                connection,
                {
                    "provider": provider_name,
                    "event_id": event.event_id,
                    "event_type": event.event_type,
                    "payload": payload_text,
                    "received_at": self._runtime.now(),
                },
                DeliveryOutcome.REJECTED.value,
            )
        return WebhookResult(DeliveryOutcome.REJECTED, event.event_id, event.event_type, reason)

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
        except PaymentNotFound:
            raise
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
        subscription = None if decision.grant is None else self._recurring.grant(decision.grant)
        if decision.then is not None:
            subscription = decision.then() or subscription
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
        if event.event_type in RECURRING_TYPES:
            return self._decide_recurring(connection, provider_name, event, now)
        payment = stored_payments.find_payment(
            connection,
            provider_name,
            payment_id=event.payment_id,
            provider_payment_id=event.provider_payment_id,
            refund_reference=event.refund_reference,
        )
        if payment is None:
            if event.event_type in REVERSAL_TYPES:
                # A shared provider account refunds other products' payments too.
                return _Decision(DeliveryOutcome.IGNORED, "not a payment of ours")
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
        if event.event_type in REVERSAL_TYPES:
            return self._decide_reversal(connection, payment, event, now)
        replaced: list[Row[Any]] = []
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
            # Whichever confirmation comes first grants; each may name what later events will
            # (a refund's reference, a subscription), so every one is kept.
            replaced = self._recurring.remember(connection, provider_name, payment, event)
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
            return _Decision(
                DeliveryOutcome.IGNORED,
                "the payment is no longer pending",
                then=self._ending(replaced),
            )
        if target is PaymentStatus.PAID:
            return _Decision(
                DeliveryOutcome.PROCESSED,
                grant=payment,
                then=self._after_grant(
                    self._ending(replaced),
                    self._schedule_to_follow(connection, provider_name, payment, event),
                ),
            )
        if payment.recurring_id is not None:  # a renewal the provider declined
            return _Decision(
                DeliveryOutcome.PROCESSED, then=lambda: self._after_declined_renewal(payment)
            )
        return _Decision(DeliveryOutcome.PROCESSED)

    @staticmethod
    def _schedule_to_follow(
        connection: Connection, provider_name: str, payment: Row[Any], event: ProviderEvent
    ) -> Row[Any] | None:
        """The arrangement a first payment set up, when the provider already said it ends
        (cancelled at the period's end, or deleted) before this confirmation arrived: the plan
        about to be granted follows it, so the end state does not depend on the delivery order."""
        if event.recurring_reference is None:
            return None
        arrangement = stored_recurring.find(connection, provider_name, event.recurring_reference)
        if (
            arrangement is None
            or arrangement.user_id != payment.user_id
            or arrangement.status not in (stored_recurring.CANCELLING, stored_recurring.ENDED)
        ):
            return None
        return arrangement

    def _after_grant(
        self, ending: Callable[[], None] | None, ended: Row[Any] | None
    ) -> Callable[[], Subscription | None] | None:
        """What runs once a first payment's grant is done: end the arrangements it replaced, and
        cancel the plan just granted when its arrangement already ends."""
        if ending is None and ended is None:
            return None

        def then() -> Subscription | None:
            if ending is not None:
                ending()
            if ended is None:
                return None
            return self._recurring.follow_schedule(ended, ended.status)

        return then

    def _ending(self, replaced: list[Row[Any]]) -> Callable[[], None] | None:
        """What ends the arrangements a new one replaced, once committed; None when none did."""
        if not replaced:
            return None
        return lambda: self._recurring.end_replaced(replaced)

    def _after_declined_renewal(self, payment: Row[Any]) -> None:
        self._recurring.renewal_failed(payment)

    def _decide_reversal(
        self, connection: Connection, payment: Row[Any], event: ProviderEvent, now: datetime
    ) -> _Decision:
        """A refund or chargeback of ``payment``: a granted payment's period is ended (after
        commit), a pending one can never be granted, a repeat or a partial refund changes
        nothing; each is kept in the payment's history."""
        target = (
            PaymentStatus.CHARGED_BACK
            if event.event_type == PAYMENT_CHARGED_BACK
            else PaymentStatus.REFUNDED
        )
        if event.currency != payment.currency:
            return self._refused(
                connection, payment, event, now, f"a reversal in {event.currency or '?'}"
            )
        if target is PaymentStatus.REFUNDED and event.amount < payment.amount:
            stored_payments.record_event(
                connection,
                payment.id,
                payment.status,
                payment.status,
                now,
                provider_event_id=event.event_id,
                reason=f"partial refund of {event.amount} {event.currency}: the period is kept",
            )
            return _Decision(DeliveryOutcome.IGNORED, "a partial refund")
        # A refund while the grant runs (paid) is followed by the grant itself (see grant); one
        # before the confirmation (pending) leaves nothing to grant.
        moved_from = next(
            (
                source
                for source in (PaymentStatus.SUCCEEDED, PaymentStatus.PAID, PaymentStatus.PENDING)
                if stored_payments.move(
                    connection,
                    payment.id,
                    source.value,
                    target.value,
                    now,
                    settle=source is PaymentStatus.PENDING,
                    provider_event_id=event.event_id,
                    reason="the paid period is ended"
                    if source is PaymentStatus.SUCCEEDED
                    else None,
                )
            ),
            None,
        )
        if moved_from is PaymentStatus.SUCCEEDED:
            reversed_payment = stored_payments.get_payment(connection, payment.id)
            assert reversed_payment is not None
            return _Decision(
                DeliveryOutcome.PROCESSED,
                then=lambda: self._recurring.end_paid_period(reversed_payment),
            )
        if moved_from is not None:
            return _Decision(DeliveryOutcome.PROCESSED)
        current = stored_payments.get_payment(connection, payment.id)
        status = current.status if current is not None else payment.status
        stored_payments.record_event(
            connection,
            payment.id,
            status,
            status,
            now,
            provider_event_id=event.event_id,
            reason=f"{event.event_type} of a {status} payment: nothing to end",
        )
        return _Decision(DeliveryOutcome.IGNORED, f"the payment is {status}")

    def _decide_recurring(
        self, connection: Connection, provider_name: str, event: ProviderEvent, now: datetime
    ) -> _Decision:
        """An event about a recurring arrangement (a Stripe subscription): a paid renewal, or a
        change of its schedule."""
        assert event.recurring_reference is not None  # _check_sizes
        arrangement = stored_recurring.find(connection, provider_name, event.recurring_reference)
        if arrangement is None and event.payment_id is not None:
            # Delivered before the first payment's confirmation: that payment (named in the
            # subscription's metadata) is what the arrangement copies.
            first = stored_payments.find_payment(
                connection, provider_name, payment_id=event.payment_id, provider_payment_id=None
            )
            if first is not None and event.user_id in (None, first.user_id):
                self._recurring.remember(connection, provider_name, first, event)
                arrangement = stored_recurring.find(
                    connection, provider_name, event.recurring_reference
                )
        if arrangement is None:
            return _Decision(DeliveryOutcome.IGNORED, "not a recurring arrangement of ours")
        if event.user_id is not None and event.user_id != arrangement.user_id:
            return _Decision(DeliveryOutcome.REJECTED, "the event is for another user")
        if event.event_type == RECURRING_PAID:
            return self._decide_renewal(connection, provider_name, arrangement, event, now)
        status = {
            RECURRING_CANCEL_SCHEDULED: stored_recurring.CANCELLING,
            RECURRING_RESUMED: stored_recurring.ACTIVE,
            RECURRING_ENDED: stored_recurring.ENDED,
        }[event.event_type]
        only_from = (
            [stored_recurring.ACTIVE, stored_recurring.CANCELLING]
            if status != stored_recurring.ENDED
            else None
        )
        if not stored_recurring.set_status(
            connection,
            arrangement.id,
            status,
            now,
            event_at=event.occurred_at or now,
            only_from=only_from,
        ):
            return _Decision(
                DeliveryOutcome.IGNORED, "the arrangement ended, or a newer change was applied"
            )
        return _Decision(
            DeliveryOutcome.PROCESSED,
            then=lambda: self._recurring.follow_schedule(arrangement, status),
        )

    def _decide_renewal(
        self,
        connection: Connection,
        provider_name: str,
        arrangement: Row[Any],
        event: ProviderEvent,
        now: datetime,
    ) -> _Decision:
        """A renewal the provider charged (a paid invoice): recorded as a payment of the
        arrangement's plan, months and amount, once per provider payment, and granted."""
        assert event.provider_payment_id is not None  # _check_sizes
        matches = (event.amount, event.currency) == (arrangement.amount, arrangement.currency)
        values = {
            "id": uuid4().hex,
            "user_id": arrangement.user_id,
            "provider": provider_name,
            "provider_payment_id": event.provider_payment_id,
            "plan_code": arrangement.plan_code,
            "months": arrangement.months,
            "amount": arrangement.amount,
            "currency": arrangement.currency,
            "status": PaymentStatus.PENDING.value,
            "created_at": now,
            "settled_at": None,
            "refund_reference": event.refund_reference,
            "recurring_id": arrangement.id,
        }
        if not stored_payments.insert_payment_once(
            connection, values, ("provider", "provider_payment_id")
        ):
            return _Decision(DeliveryOutcome.IGNORED, "this renewal was recorded before")
        if not matches:
            reason = (
                f"paid {event.amount} {event.currency}, expected "
                f"{arrangement.amount} {arrangement.currency}"
            )
            stored_payments.move(
                connection,
                values["id"],
                PaymentStatus.PENDING.value,
                PaymentStatus.FAILED.value,
                now,
                settle=True,
                provider_event_id=event.event_id,
                reason=f"rejected: {reason}",
            )
            return _Decision(DeliveryOutcome.REJECTED, reason)
        stored_payments.move(
            connection,
            values["id"],
            PaymentStatus.PENDING.value,
            PaymentStatus.PAID.value,
            now,
            settle=True,
            provider_event_id=event.event_id,
            reason="renewal",
        )
        granted = stored_payments.get_payment(connection, values["id"])
        return _Decision(DeliveryOutcome.PROCESSED, grant=granted)

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
    """The body is neither a JSON object nor a form (400, like every other JSON endpoint of the
    API)."""


FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
_MAX_FORM_FIELDS = 1000


def _decode_payload(raw_body: bytes, content_type: str) -> dict[str, Any]:
    """The delivery's fields: a JSON object, or a form's fields (each the first of its name, as
    text) for providers that post forms (Robokassa's Result URL, CloudPayments' default)."""
    if content_type.split(";", 1)[0].strip().lower() == FORM_MEDIA_TYPE:
        try:
            fields = parse_qsl(
                raw_body.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=True,
                max_num_fields=_MAX_FORM_FIELDS,
            )
        except (UnicodeDecodeError, ValueError):
            raise _NotJson("The form body must be UTF-8 name=value pairs") from None
        payload: dict[str, Any] = {}
        for name, value in fields:
            payload.setdefault(name, value)
        return payload
    try:
        decoded = json.loads(raw_body)
    except (ValueError, RecursionError):
        raise _NotJson("The request body must be a JSON object or a form") from None
    if not isinstance(decoded, dict):
        raise _NotJson("The request body must be a JSON object or a form")
    return decoded


def _parse_event(provider: PaymentProvider, raw_body: bytes, content_type: str) -> ProviderEvent:
    payload = _decode_payload(raw_body, content_type)
    try:
        event = provider.parse_event(payload)
    except InvalidEvent:
        raise
    except (LookupError, TypeError, ValueError, ArithmeticError, AttributeError) as error:
        # An adapter that trips over an odd payload is still an unreadable event, not a 500.
        log.warning("payment provider %r could not read an event", provider.name, exc_info=True)
        raise InvalidEvent(f"unreadable event: {error}") from None
    _check_sizes(event)
    return event


def _check_sizes(event: ProviderEvent) -> None:
    """Refuse identifiers the tables cannot hold (too long, or control characters such as NUL,
    which PostgreSQL's text refuses), whatever the adapter let through."""
    handled = event.event_type in EVENT_TYPES
    if event.event_type in RECURRING_TYPES:
        if event.recurring_reference is None:
            raise InvalidEvent("the event names no recurring arrangement")
        if event.event_type == RECURRING_PAID and event.provider_payment_id is None:
            raise InvalidEvent("a paid renewal names its payment")
    elif handled and not (event.payment_id or event.provider_payment_id or event.refund_reference):
        raise InvalidEvent("the event names no payment")
    limits = {
        "event_id": (event.event_id, _MAX_EVENT_ID),
        "event_type": (event.event_type, _MAX_EVENT_TYPE),
        "payment_id": (event.payment_id, _MAX_PAYMENT_ID),
        "provider_payment_id": (event.provider_payment_id, MAX_PROVIDER_PAYMENT_ID),
        "refund_reference": (event.refund_reference, MAX_PROVIDER_PAYMENT_ID),
        "recurring_reference": (event.recurring_reference, MAX_PROVIDER_PAYMENT_ID),
        "customer_reference": (event.customer_reference, MAX_PROVIDER_PAYMENT_ID),
    }
    for name, (value, longest) in limits.items():
        if value is None and name not in {"event_id", "event_type"}:
            continue
        if not value or len(value) > longest or any(char < " " for char in value):
            raise InvalidEvent(f"{name} must be 1 to {longest} printable characters")


def _storable(payload_text: str) -> str:
    """The body as text a database column can hold: PostgreSQL's text refuses NUL."""
    return payload_text.replace("\x00", "\ufffd")
