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

``paid`` is the short step between the provider's confirmation and the plan grant
(``services.payment_grants``): a payment that stays ``paid`` was confirmed but its grant did not
finish (the process died in between); grant it by hand with ``flask billing grant``.

A delivery goes: sender, verify, parse (confirm with the provider's API when it does not sign),
then in one transaction claim, load, decide (``domain.payments.decide``), apply; what the
decision asks for after the commit (a grant, the end of a paid period) follows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl
from uuid import uuid4

from sqlalchemy import Connection

from ..domain.payments import (
    After,
    Arrangement,
    ArrangementMove,
    Decision,
    DeliveryOutcome,
    EventRecords,
    FollowSchedule,
    KeepReferences,
    NewPayment,
    PaymentFollowUp,
    PaymentMove,
    PaymentNote,
    StopReplaced,
    decide,
)
from ..domain.subscriptions import Subscription
from ..errors import BillingUnavailable, PaymentProviderError, WebhookRefused
from ..payments import signatures
from ..payments.providers import (
    EVENT_TYPES,
    PAYMENT_SUCCEEDED,
    RECURRING_PAID,
    RECURRING_TYPES,
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
from .payment_grants import PaymentGrantService
from .payments import MAX_PROVIDER_PAYMENT_ID, PaymentService
from .recurring import RecurringService
from .runtime import Runtime

log = logging.getLogger(__name__)

# Column sizes of billing_webhook_deliveries / billing_payments: longer values are refused as
# invalid events up front, never left to fail in the database as a 500.
_MAX_EVENT_ID = 255
_MAX_EVENT_TYPE = 64
_MAX_PAYMENT_ID = 64


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """What one webhook delivery did; the view answers it with a 200."""

    outcome: DeliveryOutcome
    event_id: str
    event_type: str
    reason: str | None = None
    subscription: Subscription | None = None
    """The user's new subscription when the delivery granted a plan."""


class WebhookService:
    def __init__(
        self,
        runtime: Runtime,
        payments: PaymentService,
        grants: PaymentGrantService,
        recurring: RecurringService,
    ) -> None:
        self._runtime = runtime
        self._payments = payments
        self._grants = grants
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
        provider = self._sender(provider_name, source_address)
        self._verify(provider, headers, raw_body)
        payload_text = _storable(raw_body.decode("utf-8", errors="replace"))
        event = self._parse(provider, raw_body, headers, payload_text)
        if isinstance(provider, PaymentConfirmer):
            confirmed = self._confirm_ours(provider, event, payload_text)
            if isinstance(confirmed, WebhookResult):
                return confirmed
            event = confirmed
        return self._process(provider.name, event, payload_text)

    def _sender(self, provider_name: str, source_address: str | None) -> PaymentProvider:
        """The configured provider of that name, if the delivery comes from where it sends from.
        Checked before the signature, as for any unknown URL: it tells a caller no more than the
        route."""
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
        return provider

    def _verify(
        self, provider: PaymentProvider, headers: Mapping[str, str], raw_body: bytes
    ) -> None:
        """The provider's check of the raw delivery; nothing is stored when it fails."""
        try:
            self._verifier(provider).verify(headers, raw_body, self._runtime.now())
        except signatures.InvalidSignature as error:
            raise WebhookRefused(str(error), error_code="INVALID_SIGNATURE") from None

    def _parse(
        self,
        provider: PaymentProvider,
        raw_body: bytes,
        headers: Mapping[str, str],
        payload_text: str,
    ) -> ProviderEvent:
        """The delivery's event; an authentic body that is not one is stored ``rejected``."""
        try:
            return _parse_event(provider, raw_body, headers.get("Content-Type", ""))
        except _NotJson as error:
            self._record_rejected(provider.name, payload_text)
            raise WebhookRefused(str(error), error_code="INVALID_JSON") from None
        except InvalidEvent as error:
            self._record_rejected(provider.name, payload_text)
            raise WebhookRefused(str(error), error_code="INVALID_EVENT") from None

    def _confirm_ours(
        self, provider: PaymentProvider, event: ProviderEvent, payload_text: str
    ) -> ProviderEvent | WebhookResult:
        """The event as the API of a provider that does not sign reports it, or the delivery's
        result when it is refused for good.

        Only payments we started are worth a call to the provider's API: an id of no row of ours
        costs an anonymous sender one database read, never an outbound request. Nor a write: like
        a delivery with a wrong signature, it is not stored."""
        assert isinstance(provider, PaymentConfirmer)
        if not self._is_ours(provider.name, event):
            return self._rejected_unconfirmed(provider.name, event, None, "no such payment")
        try:
            return self._confirmed(provider, event, payload_text)
        except PaymentNotFound as error:
            return self._rejected_unconfirmed(provider.name, event, payload_text, str(error))

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
                DeliveryOutcome.REJECTED,
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
        """Claim the event, then load the records it names, decide, and apply the decision, all
        in the delivery's transaction; what follows the decision runs once it is committed."""
        now = self._runtime.now()
        delivery = {
            "provider": provider_name,
            "event_id": event.event_id,
            "event_type": event.event_type,
            "payload": payload_text,
            "received_at": now,
        }
        after: list[After] = []
        replaced: list[Arrangement] = []
        with write_transaction(self._runtime.engine) as connection:
            # Of concurrent or replayed deliveries of one event exactly one claim wins.
            claimed = deliveries.claim(connection, delivery)
            if claimed is None:
                deliveries.record(connection, delivery, DeliveryOutcome.DUPLICATE)
                return WebhookResult(DeliveryOutcome.DUPLICATE, event.event_id, event.event_type)
            for _ in range(_MAX_ROUNDS):
                records = _load(connection, provider_name, event)
                decision = decide(event, records, now)
                applied = _apply(connection, decision, now)
                if applied is None:
                    # A concurrent writer moved a record first: decide again on what it left.
                    log.debug("webhook event %s: its records moved meanwhile", event.event_id)
                    continue
                after.extend(decision.after)
                replaced.extend(applied)
                if not decision.again:
                    break
            else:
                raise BillingUnavailable(
                    "The payment changed concurrently too often; deliver the event again"
                )
            if decision.outcome is not DeliveryOutcome.PROCESSED:
                # Leaving 'processed' frees the event for a later delivery, which is harmless: it
                # meets the same settled payment or the same mismatch, and changes nothing either.
                deliveries.set_outcome(connection, claimed, decision.outcome)
        if decision.outcome is DeliveryOutcome.REJECTED:
            log.warning(
                "webhook event %s from %r rejected: %s",
                event.event_id,
                provider_name,
                decision.reason,
            )
        subscription = self._follow_up(after, replaced)
        return WebhookResult(
            decision.outcome, event.event_id, event.event_type, decision.reason, subscription
        )

    def _follow_up(self, after: list[After], replaced: list[Arrangement]) -> Subscription | None:
        """Run what a committed decision asks for (plan changes run their own transactions); the
        user's subscription when one of the steps changed it."""
        subscription: Subscription | None = None
        for step in after:
            if isinstance(step, FollowSchedule):
                followed = self._recurring.follow_schedule(step.arrangement, step.status)
                subscription = followed or subscription
            elif isinstance(step, StopReplaced):
                if replaced:
                    self._recurring.end_replaced(replaced)
                    replaced = []
            elif step.what is PaymentFollowUp.GRANT:
                subscription = self._grants.grant(step.payment)
            elif step.what is PaymentFollowUp.END_PAID_PERIOD:
                subscription = self._grants.end_paid_period(step.payment)
            else:
                self._recurring.renewal_failed(step.payment)
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
                DeliveryOutcome.REJECTED,
            )


_MAX_ROUNDS = 5
"""How many times a delivery decides again after a concurrent writer moved its records first: a
status only moves forward, so a few rounds see every writer through."""


def _load(connection: Connection, provider_name: str, event: ProviderEvent) -> EventRecords:
    """The stored records ``event`` names, for ``decide``."""
    new_id = uuid4().hex
    if event.event_type not in EVENT_TYPES:
        return EventRecords(new_id=new_id)
    if event.event_type in RECURRING_TYPES:
        assert event.recurring_reference is not None  # _check_sizes
        arrangement = stored_recurring.find(connection, provider_name, event.recurring_reference)
        first = renewal = None
        if arrangement is None and event.payment_id is not None:
            first = stored_payments.find_payment(
                connection, provider_name, payment_id=event.payment_id, provider_payment_id=None
            )
        if event.event_type == RECURRING_PAID:
            renewal = stored_payments.find_payment(
                connection,
                provider_name,
                payment_id=None,
                provider_payment_id=event.provider_payment_id,
            )
        return EventRecords(first, arrangement, renewal, new_id)
    payment = stored_payments.find_payment(
        connection,
        provider_name,
        payment_id=event.payment_id,
        provider_payment_id=event.provider_payment_id,
        refund_reference=event.refund_reference,
    )
    arrangement = None
    if event.event_type == PAYMENT_SUCCEEDED and event.recurring_reference is not None:
        arrangement = stored_recurring.find(connection, provider_name, event.recurring_reference)
    return EventRecords(payment, arrangement, None, new_id)


def _apply(connection: Connection, decision: Decision, now: datetime) -> list[Arrangement] | None:
    """Make the decision's writes; the arrangements its kept references replaced, or None (and
    nothing written) when a conditional write found its record moved on. A decision lists its
    conditional writes first, so the first write is the one that can find that."""
    replaced: list[Arrangement] = []
    for effect in decision.effects:
        if isinstance(effect, NewPayment):
            unique = ("provider", "provider_payment_id")
            if not stored_payments.insert_payment_once(connection, effect.payment, unique):
                return None
        elif isinstance(effect, PaymentMove):
            if not stored_payments.apply_move(connection, effect, now):
                return None
        elif isinstance(effect, ArrangementMove):
            if not stored_recurring.apply_move(connection, effect, now):
                return None
        elif isinstance(effect, PaymentNote):
            stored_payments.apply_note(connection, effect, now)
        else:
            replaced.extend(_keep_references(connection, effect, now))
    return replaced


def _keep_references(
    connection: Connection, keep: KeepReferences, now: datetime
) -> list[Arrangement]:
    """Record the arrangement a confirmation set up and the payment's references; the user's
    other arrangements with the provider end (the ones this replaced, for ``end_replaced`` once
    the transaction is committed)."""
    payment = keep.payment
    recurring_id = None
    replaced: list[Arrangement] = []
    if keep.arrangement is not None:
        stored = stored_recurring.insert_once(connection, keep.arrangement)
        if stored.account_id == payment.account_id:
            recurring_id = stored.id
            replaced = stored_recurring.end_others(
                connection, payment.account_id, stored.provider, stored.id, now
            )
    stored_payments.set_references(
        connection, payment.id, refund_reference=keep.refund_reference, recurring_id=recurring_id
    )
    return replaced


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
