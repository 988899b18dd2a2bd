"""The payments seam (SPEC S7, S14): a plan change a user asks for goes through here, never straight
to a grant; a provider's signed webhook confirms the payment and only then is the plan changed.

Without a provider (``BILLING_PAYMENT_PROVIDER`` is None) payments are "coming soon": a paid plan
answers 402 ``PAYMENT_REQUIRED`` with the notice and the contact address. Plans priced "on request"
(the seed's Enterprise) answer the same way with a provider too. Moving to the default (free) plan
needs no payment and takes effect at the end of the paid period. A user has at most
``BILLING_MAX_PENDING_PAYMENTS`` payments pending; one more answers 429
``TOO_MANY_PENDING_PAYMENTS``.

A payment moves ``pending`` -> ``paid`` -> ``succeeded``, or ``pending`` -> ``failed`` / ``cancelled``.
Every move is a conditional UPDATE from the state it expects, so a late, repeated or out-of-order
webhook changes nothing. ``paid`` is the short step between the provider's confirmation and the
plan grant (see ``_grant``): a payment that stays ``paid`` was confirmed but its grant did not
finish (the process died in between); grant it by hand with ``flask billing grant``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import uuid4

from sqlalchemy import Connection, Row, select, text, update

from ..domain.catalog import Plan, amount_as_number
from ..domain.subscriptions import Subscription, SubscriptionStatus
from ..errors import ApiError, BillingConfigError
from ..payments import signatures
from ..payments.providers import (
    EVENT_TYPES,
    PAYMENT_CANCELLED,
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
    InvalidEvent,
    PaymentIntent,
    PaymentProvider,
    ProviderEvent,
    ProviderPayment,
)
from ..store.models import payments, webhook_deliveries
from ..store.payments import count_payments, insert_payment, lock_payments_of
from ..store.statements import insert_ignoring_conflict
from ..store.transactions import write_transaction
from .runtime import Runtime
from .subscriptions import SubscriptionService

logger = logging.getLogger(__name__)

ABANDONED_AFTER = timedelta(hours=24)
"""A payment still pending after this long is abandoned (providers' checkouts expire sooner): it
no longer counts against ``BILLING_MAX_PENDING_PAYMENTS``, so abandoned checkouts never lock a
user out of paying."""

PAYMENTS_NOTICE = "Payment will be available later; contact us for a manual extension."
_PROVIDER_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
# Column sizes of billing_webhook_deliveries / billing_payments: longer values are refused as
# invalid events up front, never left to fail in the database as a 500.
_MAX_EVENT_ID = 255
_MAX_EVENT_TYPE = 64
_MAX_PROVIDER_PAYMENT_ID = 255
_MAX_PAYMENT_ID = 64
_PROCESSED_ONLY = text("outcome = 'processed'")  # the predicate of the partial unique index


class PaymentStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    """Confirmed by the provider; the plan grant is under way (or was interrupted)."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class DeliveryOutcome(StrEnum):
    """What a webhook delivery did, as stored in ``billing_webhook_deliveries.outcome``."""

    PROCESSED = "processed"
    """The event changed a payment: at most one delivery per provider event has this outcome."""
    DUPLICATE = "duplicate"
    """Another delivery of the same event was processed first (a retry, a replay, a race)."""
    IGNORED = "ignored"
    """Authentic but nothing to do: an event type we do not handle, or a payment already settled."""
    REJECTED = "rejected"
    """Signed but refused: unreadable, an unknown payment, or an amount that does not match."""


@dataclass(frozen=True, slots=True)
class ChangeOutcome:
    """What a user's request to change plan did."""

    subscription: Subscription
    message: str
    payment: dict[str, Any] | None = None
    """Set when a payment was started: the client follows its ``confirmation_url``."""


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


class PaymentRequired(ApiError):
    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(402, "PAYMENT_REQUIRED", message, details)


class TooManyPendingPayments(ApiError):
    def __init__(self, pending: int, cap: int) -> None:
        super().__init__(
            429,
            "TOO_MANY_PENDING_PAYMENTS",
            f"You have {pending} payments in progress: finish one of them, or wait until the "
            "payment provider settles or cancels them, then try again",
            {"pending_payments": pending, "max_pending_payments": cap},
        )


class PaymentService:
    def __init__(
        self,
        runtime: Runtime,
        subscriptions: SubscriptionService,
        timezone_of: Callable[[str], tzinfo] = lambda _user_id: UTC,
    ) -> None:
        self._timezone_of = timezone_of
        self._runtime = runtime
        self._subscriptions = subscriptions
        # Checked here, which init_app reaches, so a wrong setting fails at start-up, not at the
        # first customer's payment.
        self._provider = _checked_provider(runtime.settings.payment_provider)

    @property
    def provider(self) -> PaymentProvider | None:
        return self._provider

    # -- a user's request ----------------------------------------------------------------------

    def request_change(self, user_id: str, plan_code: str, months: int) -> ChangeOutcome:
        """Start what a user's own request to move to ``plan_code`` may start; never a paid grant.

        The default plan: at the end of the paid period. A paid plan: a pending payment the user
        completes at the provider, or 402 when there is no provider or the price is on request.
        """
        plan = self._runtime.catalog.plan(plan_code)
        if plan.is_default:
            return self._downgrade(user_id, plan)
        price = plan.price_for(months)
        # A plan with no price, or a zero price, that is not the default one is not for sale by
        # self-service: granting it on request would be a free upgrade, so it goes to a human.
        if self._provider is None or price is None or price <= 0:
            raise self.payment_required(plan, months)
        return self._start_payment(user_id, plan, months, price, self._provider)

    def payment_required(self, plan: Plan, months: int) -> PaymentRequired:
        email = self._runtime.settings.payments_cta_email
        price = plan.price_for(months)
        on_request = price is None or price <= 0
        message = (
            f"The {plan.name} plan is priced on request: contact us."
            if on_request and self._provider is not None
            else PAYMENTS_NOTICE
        )
        return PaymentRequired(
            message,
            {
                "plan_type": plan.code,
                "duration_months": months,
                "reason": "price_on_request" if on_request else "coming_soon",
                "contact_email": email,
                "contact_url": f"mailto:{email}" if email else None,
            },
        )

    def _start_payment(
        self, user_id: str, plan: Plan, months: int, price: Decimal, provider: PaymentProvider
    ) -> ChangeOutcome:
        # Also creates the free subscription (and the plan rows the payment refers to) on first use.
        current = self._subscriptions.current(user_id)
        intent = PaymentIntent(
            id=uuid4().hex,
            user_id=user_id,
            plan_code=plan.code,
            plan_name=plan.name,
            months=months,
            amount=price,
            currency=plan.currency,
        )
        engine = self._runtime.engine
        cap = self._runtime.settings.max_pending_payments
        # The row exists before the provider hears of the payment, so no webhook can ever name a
        # payment we do not know; the provider is called outside any transaction, because a network
        # call must not hold database locks (on SQLite, the one write lock).
        with write_transaction(engine) as connection:
            # Count and insert under the user's lock: concurrent starts take turns, so each counts
            # the payments the others inserted and together they never pass the cap.
            lock_payments_of(connection, user_id)
            since = self._runtime.now() - ABANDONED_AFTER
            pending = count_payments(connection, user_id, PaymentStatus.PENDING.value, since)
            if pending >= cap:
                raise TooManyPendingPayments(pending, cap)
            insert_payment(
                connection,
                {
                    "id": intent.id,
                    "user_id": user_id,
                    "provider": provider.name,
                    "provider_payment_id": None,
                    "plan_code": plan.code,
                    "months": months,
                    "amount": price,
                    "currency": plan.currency,
                    "status": PaymentStatus.PENDING.value,
                    "created_at": self._runtime.now(),
                    "settled_at": None,
                },
            )
        try:
            started = _checked_start(provider.start(intent))
        except Exception as error:
            logger.exception(
                "payment provider %r could not start payment %s", provider.name, intent.id
            )
            with write_transaction(engine) as connection:
                _move(
                    connection,
                    intent.id,
                    PaymentStatus.PENDING,
                    PaymentStatus.FAILED,
                    self._runtime.now(),
                )
            raise ApiError(
                502,
                "PAYMENT_PROVIDER_ERROR",
                "The payment provider could not start the payment; try again later",
            ) from error
        with write_transaction(engine) as connection:
            connection.execute(
                update(payments)
                .where(payments.c.id == intent.id)
                .values(provider_payment_id=started.provider_payment_id)
            )
        return ChangeOutcome(
            current,
            f"Complete the payment to move to the {plan.name} plan",
            payment={
                "id": intent.id,
                "status": PaymentStatus.PENDING.value,
                "amount": amount_as_number(price),
                "currency": plan.currency,
                "plan_type": plan.code,
                "duration_months": months,
                "confirmation_url": started.confirmation_url,
            },
        )

    def _downgrade(self, user_id: str, plan: Plan) -> ChangeOutcome:
        current = self._subscriptions.current(user_id)
        if current.plan_code == plan.code:
            return ChangeOutcome(current, f"You are already on the {plan.name} plan")
        if current.expires_at is None:  # another plan that never lapses: switch at once
            changed = self._subscriptions.change_plan(user_id, plan.code)
            return ChangeOutcome(changed, f"Subscription changed to the {plan.name} plan")
        if current.status is not SubscriptionStatus.CANCELLED:
            current = self._subscriptions.cancel(user_id)
        assert current.expires_at is not None
        return ChangeOutcome(
            current,
            f"Your plan changes to {plan.name} after "
            f"{format_day(current.expires_at.astimezone(self._timezone_of(user_id)))}",
        )

    # -- the provider's webhook ----------------------------------------------------------------

    def handle_webhook(
        self, provider_name: str, raw_body: bytes, signature_header: str | None
    ) -> WebhookResult:
        """Verify, record and process one webhook delivery; each provider event is processed once.

        Refusals are ``ApiError``: 503 without a secret, 404 for another provider, 401 for a bad
        signature (nothing stored), 400/422 for a signed body that is not an event (stored as
        ``rejected``). Everything else is a ``WebhookResult``, answered with a 200 whatever the
        outcome: the delivery is authentic and recorded, and a retry could not change the answer,
        so a non-2xx would only make the provider retry for days.
        """
        settings = self._runtime.settings
        secret = settings.webhook_secret
        if not secret:
            raise ApiError(
                503,
                "WEBHOOKS_DISABLED",
                "Payment webhooks are disabled: BILLING_WEBHOOK_SECRET is not set",
            )
        provider = self._provider
        # Before the signature, as for any unknown URL: it tells a caller no more than the route.
        if provider is None or provider_name != provider.name:
            raise ApiError(
                404, "UNKNOWN_PROVIDER", "No payment provider of that name is configured"
            )
        try:
            signatures.verify(
                signature_header,
                raw_body,
                secret,
                self._runtime.now(),
                settings.webhook_tolerance_seconds,
            )
        except signatures.InvalidSignature as error:
            raise ApiError(401, "INVALID_SIGNATURE", str(error)) from None
        payload_text = _storable(raw_body.decode("utf-8", errors="replace"))
        try:
            event = _parse_event(provider, raw_body)
        except _NotJson as error:
            self._record_rejected(provider.name, payload_text)
            raise ApiError(400, "INVALID_JSON", str(error)) from None
        except InvalidEvent as error:
            self._record_rejected(provider.name, payload_text)
            raise ApiError(422, "INVALID_EVENT", str(error)) from None
        return self._process(provider.name, event, payload_text)

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
            # The partial unique index admits one 'processed' delivery per (provider, event_id):
            # of concurrent or replayed deliveries exactly one insert wins (PostgreSQL makes the
            # others wait for its commit; SQLite's BEGIN IMMEDIATE runs them one after another).
            claimed = insert_ignoring_conflict(
                connection,
                webhook_deliveries,
                {**delivery, "outcome": DeliveryOutcome.PROCESSED.value},
                ["provider", "event_id"],
                conflict_where=_PROCESSED_ONLY,
            )
            if claimed is None:
                connection.execute(
                    webhook_deliveries.insert().values(
                        **delivery, outcome=DeliveryOutcome.DUPLICATE.value
                    )
                )
                return WebhookResult(DeliveryOutcome.DUPLICATE, event.event_id, event.event_type)
            decision = self._decide(connection, provider_name, event, now)
            if decision.outcome is not DeliveryOutcome.PROCESSED:
                # Leaving 'processed' frees the event for a later delivery, which is harmless: it
                # meets the same settled payment or the same mismatch, and changes nothing either.
                connection.execute(
                    update(webhook_deliveries)
                    .where(webhook_deliveries.c.id == claimed.id)
                    .values(outcome=decision.outcome.value)
                )
        if decision.outcome is DeliveryOutcome.REJECTED:
            logger.warning(
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
        payment = _find_payment(connection, provider_name, event)
        if payment is None:
            return _Decision(DeliveryOutcome.REJECTED, "no such payment")
        if (
            event.provider_payment_id is not None
            and payment.provider_payment_id is not None
            and event.provider_payment_id != payment.provider_payment_id
        ):
            return _Decision(DeliveryOutcome.REJECTED, "the provider payment id does not match")
        if event.event_type == PAYMENT_SUCCEEDED:
            # Amount and currency never change after creation, so reading them first is safe; the
            # status does change, and the conditional UPDATE below decides on it.
            if event.amount != payment.amount or event.currency != payment.currency:
                return _Decision(
                    DeliveryOutcome.REJECTED,
                    f"paid {event.amount} {event.currency}, expected "
                    f"{payment.amount} {payment.currency}",
                )
            target = PaymentStatus.PAID
        elif event.event_type == PAYMENT_FAILED:
            target = PaymentStatus.FAILED
        else:
            assert event.event_type == PAYMENT_CANCELLED
            target = PaymentStatus.CANCELLED
        if not _move(connection, payment.id, PaymentStatus.PENDING, target, now):
            return _Decision(DeliveryOutcome.IGNORED, "the payment is no longer pending")
        return _Decision(
            DeliveryOutcome.PROCESSED, grant=payment if target is PaymentStatus.PAID else None
        )

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
            _move(
                connection,
                payment.id,
                PaymentStatus.PAID,
                PaymentStatus.SUCCEEDED,
                settled_at=None,
            )
        logger.info(
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
            connection.execute(
                webhook_deliveries.insert().values(
                    provider=provider_name,
                    event_id="",
                    event_type="",
                    payload=payload_text,
                    outcome=DeliveryOutcome.REJECTED.value,
                    received_at=self._runtime.now(),
                )
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
        logger.warning("payment provider %r could not read an event", provider.name, exc_info=True)
        raise InvalidEvent(f"unreadable event: {error}") from None
    _check_sizes(event)
    return event


def _check_sizes(event: ProviderEvent) -> None:
    """Refuse identifiers the tables cannot hold (too long, or control characters such as NUL,
    which PostgreSQL's text refuses), whatever the adapter let through."""
    if event.payment_id is None and event.provider_payment_id is None:
        raise InvalidEvent("the event names no payment")
    limits = {
        "event_id": (event.event_id, _MAX_EVENT_ID),
        "event_type": (event.event_type, _MAX_EVENT_TYPE),
        "payment_id": (event.payment_id, _MAX_PAYMENT_ID),
        "provider_payment_id": (event.provider_payment_id, _MAX_PROVIDER_PAYMENT_ID),
    }
    for name, (value, longest) in limits.items():
        if value is None and name in {"payment_id", "provider_payment_id"}:
            continue
        if not value or len(value) > longest or any(char < " " for char in value):
            raise InvalidEvent(f"{name} must be 1 to {longest} printable characters")


def _storable(payload_text: str) -> str:
    """The body as text a database column can hold: PostgreSQL's text refuses NUL."""
    return payload_text.replace("\x00", "\ufffd")


def _checked_start(started: ProviderPayment) -> ProviderPayment:
    """What the provider answered, if we can store it and send a user to it safely."""
    payment_id = started.provider_payment_id
    if not isinstance(payment_id, str) or not 0 < len(payment_id) <= _MAX_PROVIDER_PAYMENT_ID:
        raise ValueError(f"unusable provider payment id {payment_id!r}")
    # The client redirects the user there: only a web address, never javascript: or data:.
    if not isinstance(started.confirmation_url, str) or not started.confirmation_url.startswith(
        ("https://", "http://")
    ):
        raise ValueError(f"unusable confirmation URL {started.confirmation_url!r}")
    return started


def _find_payment(
    connection: Connection, provider_name: str, event: ProviderEvent
) -> Row[Any] | None:
    query = select(payments).where(payments.c.provider == provider_name)
    if event.payment_id is not None:
        query = query.where(payments.c.id == event.payment_id)
    else:
        query = query.where(payments.c.provider_payment_id == event.provider_payment_id)
    return connection.execute(query).one_or_none()


def _move(
    connection: Connection,
    payment_id: str,
    source: PaymentStatus,
    target: PaymentStatus,
    settled_at: datetime | None,
) -> bool:
    """Move a payment from ``source`` to ``target``; False (and no change) when it was not in
    ``source``. The row count decides, so of racing deliveries exactly one moves it."""
    values: dict[str, Any] = {"status": target.value}
    if settled_at is not None:
        values["settled_at"] = settled_at
    result = connection.execute(
        update(payments)
        .where(payments.c.id == payment_id, payments.c.status == source.value)
        .values(**values)
    )
    return result.rowcount == 1


def _checked_provider(provider: Any) -> PaymentProvider | None:
    if provider is None:
        return None
    if not isinstance(provider, PaymentProvider):
        raise BillingConfigError(
            "BILLING_PAYMENT_PROVIDER must be a PaymentProvider (name, start, parse_event), "
            f"not {provider!r}"
        )
    if not isinstance(provider.name, str) or not _PROVIDER_NAME.fullmatch(provider.name):
        raise BillingConfigError(
            "a payment provider's name must be 1 to 32 letters, digits, '-' or '_' "
            f"(it is part of the webhook URL), not {provider.name!r}"
        )
    return provider


def format_day(moment: datetime) -> str:
    """The seed's date format: 13.11.2025."""
    return moment.strftime("%d.%m.%Y")
