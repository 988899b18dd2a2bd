"""Payments as rules: the statuses of payments, recurring arrangements and webhook deliveries,
the moves each allows, and what a provider's event does to the records it names.

Pure Python (no Flask, no database): ``decide`` takes an event and the stored records it names
and returns a ``Decision``, plain data: the delivery's outcome, the writes to make in the
delivery's transaction (``effects``: status moves, each with its history entry, notes, new
records) and what to do once that transaction is committed (``after``: grant the plan, end a paid
period, follow an arrangement's schedule). ``services.webhooks`` loads the records, asks, and has
the store apply the answer; every move the store makes is conditional on the status the decision
was made on, so a move that a concurrent writer beat is decided again on fresh records.

A new event kind goes in the kinds below (and ``EVENT_TYPES``), in ``decide``, and in the table
of ``tests/test_payment_decisions.py``; a provider adapter (``payments/``) only maps its payloads
to these kinds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

# -- the provider's events ----------------------------------------------------------------------

PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_FAILED = "payment.failed"
PAYMENT_CANCELLED = "payment.cancelled"
PAYMENT_REFUNDED = "payment.refunded"
"""The money of a payment went back to the payer (``amount``: how much, in total so far)."""
PAYMENT_CHARGED_BACK = "payment.charged_back"
"""The payer disputed the payment with their bank (a chargeback)."""
RECURRING_PAID = "recurring.paid"
"""A renewal of a recurring arrangement (a Stripe subscription's invoice) was paid."""
RECURRING_CANCEL_SCHEDULED = "recurring.cancel_scheduled"
"""The arrangement ends at the end of its current period (Stripe's ``cancel_at_period_end``)."""
RECURRING_RESUMED = "recurring.resumed"
"""A scheduled end was undone: the arrangement renews again."""
RECURRING_ENDED = "recurring.ended"
"""The arrangement is over at the provider: it renews no more."""
SETTLING_TYPES = (PAYMENT_SUCCEEDED, PAYMENT_FAILED, PAYMENT_CANCELLED)
"""The events that settle a pending payment."""
REVERSAL_TYPES = (PAYMENT_REFUNDED, PAYMENT_CHARGED_BACK)
"""The events that take a payment's money back."""
RECURRING_TYPES = (RECURRING_PAID, RECURRING_CANCEL_SCHEDULED, RECURRING_RESUMED, RECURRING_ENDED)
"""The events about a recurring arrangement rather than one payment."""
EVENT_TYPES = SETTLING_TYPES + REVERSAL_TYPES + RECURRING_TYPES
"""The event types the extension acts on; a provider may report others, which are recorded and ignored."""


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """A webhook body normalised: the same fields whatever the provider's payload looked like."""

    event_id: str
    """Unique per event at the provider: a retried delivery repeats it, so it is processed once."""
    event_type: str
    """``payment.succeeded``, ``payment.failed``, ``payment.cancelled``, or another type to ignore."""
    payment_id: str | None
    """Our payment id when the provider echoes it; else the payment is found by the provider's id."""
    provider_payment_id: str | None
    amount: Decimal
    currency: str
    account_id: str | None = None
    """The user the provider says the payment is for (echoed metadata), when it says so: it must
    be the user of our payment, or the event is rejected."""
    refund_reference: str | None = None
    """The provider's id by which its refunds and disputes name the payment (Stripe: the
    PaymentIntent), when it differs from ``provider_payment_id``."""
    recurring_reference: str | None = None
    """The recurring arrangement the event is about or set up: a Stripe subscription's id, or
    the id of a payment method YooKassa saved for renewals."""
    customer_reference: str | None = None
    """The provider's customer (Stripe: ``cus_...``), kept with the arrangement."""
    occurred_at: datetime | None = None
    """When the provider says the event happened: of two changes of one arrangement delivered out
    of order, the older is not applied over the newer."""


class PaymentStatus(StrEnum):
    """Where a payment is (``billing_payments.status``)."""

    PENDING = "pending"
    """Started with the provider; no confirmation yet."""
    PAID = "paid"
    """Confirmed by the provider; the plan grant is under way (or was interrupted)."""
    SUCCEEDED = "succeeded"
    """Confirmed and granted."""
    FAILED = "failed"
    """The provider refused it, or a renewal was paid with another amount."""
    CANCELLED = "cancelled"
    """The user gave up, or the provider cancelled (a declined renewal)."""
    REFUNDED = "refunded"
    """The money went back to the payer; the period it bought was ended."""
    CHARGED_BACK = "charged_back"
    """The payer disputed it with their bank; the period it bought was ended."""


PAYMENT_MOVES: Mapping[PaymentStatus, frozenset[PaymentStatus]] = {
    PaymentStatus.PENDING: frozenset(
        {
            PaymentStatus.PAID,
            PaymentStatus.FAILED,
            PaymentStatus.CANCELLED,
            PaymentStatus.REFUNDED,
            PaymentStatus.CHARGED_BACK,
        }
    ),
    PaymentStatus.PAID: frozenset(
        {PaymentStatus.SUCCEEDED, PaymentStatus.REFUNDED, PaymentStatus.CHARGED_BACK}
    ),
    PaymentStatus.SUCCEEDED: frozenset({PaymentStatus.REFUNDED, PaymentStatus.CHARGED_BACK}),
    PaymentStatus.FAILED: frozenset(),
    PaymentStatus.CANCELLED: frozenset(),
    PaymentStatus.REFUNDED: frozenset(),
    PaymentStatus.CHARGED_BACK: frozenset(),
}
"""The statuses each payment status may move to; the last four are final."""

REVERSED_STATUSES = frozenset({PaymentStatus.REFUNDED, PaymentStatus.CHARGED_BACK})
"""The statuses of a payment whose money went back."""


class ArrangementStatus(StrEnum):
    """Where a recurring arrangement is (``billing_recurring.status``)."""

    ACTIVE = "active"
    """Renews: the provider charges the subscription, or maintenance charges the saved method."""
    CANCELLING = "cancelling"
    """Ends with the current period (a Stripe subscription set to cancel at the period's end)."""
    FAILED = "failed"
    """A renewal was declined: the method is not charged again (the user pays anew)."""
    ENDED = "ended"
    """Over: renews no more."""


_RENEWING = frozenset(
    {
        ArrangementStatus.ACTIVE,
        ArrangementStatus.CANCELLING,
        ArrangementStatus.FAILED,
        ArrangementStatus.ENDED,
    }
)
ARRANGEMENT_MOVES: Mapping[ArrangementStatus, frozenset[ArrangementStatus]] = {
    ArrangementStatus.ACTIVE: _RENEWING,
    ArrangementStatus.CANCELLING: _RENEWING,
    ArrangementStatus.FAILED: frozenset({ArrangementStatus.FAILED, ArrangementStatus.ENDED}),
    ArrangementStatus.ENDED: frozenset(),
}
"""The statuses each arrangement status may move to. A move to the same status is allowed (a
repeated schedule change still records the event's time); an ended arrangement never changes."""


def arrangement_sources(target: ArrangementStatus) -> frozenset[ArrangementStatus]:
    """The statuses an arrangement may move to ``target`` from."""
    return frozenset(source for source, targets in ARRANGEMENT_MOVES.items() if target in targets)


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


DELIVERY_MOVES: Mapping[DeliveryOutcome, frozenset[DeliveryOutcome]] = {
    DeliveryOutcome.PROCESSED: frozenset({DeliveryOutcome.IGNORED, DeliveryOutcome.REJECTED}),
    DeliveryOutcome.DUPLICATE: frozenset(),
    DeliveryOutcome.IGNORED: frozenset(),
    DeliveryOutcome.REJECTED: frozenset(),
}
"""A delivery is claimed ``processed`` and leaves it when its decision is not to process it
(which frees the event for a later delivery: it meets the same records and changes nothing)."""


# -- the records -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Payment:
    """A payment as stored (``billing_payments``)."""

    id: str
    account_id: str
    provider: str
    provider_payment_id: str | None
    plan_code: str
    months: int
    amount: Decimal
    currency: str
    status: PaymentStatus
    created_at: datetime
    settled_at: datetime | None = None
    refund_reference: str | None = None
    """The provider's id by which its refunds and disputes name the payment."""
    recurring_id: str | None = None
    """The arrangement the payment renews, or set up."""


@dataclass(frozen=True, slots=True)
class Arrangement:
    """A recurring arrangement as stored (``billing_recurring``): what renews a user's plan."""

    id: str
    account_id: str
    provider: str
    reference: str
    """The provider's id of it: a Stripe subscription, a saved YooKassa payment method."""
    customer_reference: str | None
    plan_code: str
    months: int
    amount: Decimal
    currency: str
    status: ArrangementStatus
    last_event_at: datetime | None
    """When the newest applied provider event about it happened."""
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class EventRecords:
    """What is stored about the records an event names, loaded in the delivery's transaction."""

    payment: Payment | None = None
    """The payment the event names; for an event about an arrangement we do not know yet, the
    first payment its metadata names."""
    arrangement: Arrangement | None = None
    """The arrangement the event names (``recurring_reference``)."""
    renewal: Payment | None = None
    """For a paid renewal: the payment already recorded for its provider payment id."""
    new_id: str = ""
    """The id a record the decision creates gets (made by the caller: the domain draws no
    random numbers)."""


# -- the decision ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentMove:
    """Move ``payment`` from its status to ``target``, with a history entry; conditional on the
    status it is in."""

    payment: Payment
    target: PaymentStatus
    event_id: str | None
    settle: bool = False
    """Set ``settled_at`` too."""
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentNote:
    """A history entry that changes nothing (``from_status == to_status``): a refusal, a partial
    refund, a reversal of a payment with nothing to end."""

    payment: Payment
    event_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ArrangementMove:
    """Move ``arrangement`` from its status to ``target``, recording ``event_at`` as its newest
    event; conditional on its status and on no newer event having been applied."""

    arrangement: Arrangement
    target: ArrangementStatus
    event_at: datetime


@dataclass(frozen=True, slots=True)
class NewPayment:
    """Record ``payment`` (``pending``), unless one with its provider payment id is recorded:
    conditional, so of concurrent deliveries one records a renewal."""

    payment: Payment


@dataclass(frozen=True, slots=True)
class KeepReferences:
    """Keep what a confirmation tells about ``payment``: the reference its refunds will name, and
    the arrangement it set up (recorded unless its reference is known; when it is the user's, it
    replaces their other renewing arrangements with the provider)."""

    payment: Payment
    refund_reference: str | None
    arrangement: Arrangement | None


Effect = PaymentMove | PaymentNote | ArrangementMove | NewPayment | KeepReferences
"""A write in the delivery's transaction. The conditional ones come first in a decision."""


class PaymentFollowUp(StrEnum):
    """What a committed decision does next with a payment (plan changes have their own
    transactions, so they follow the delivery's)."""

    GRANT = "grant"
    """Give the payment's plan for its months, then move it ``paid`` -> ``succeeded``."""
    END_PAID_PERIOD = "end paid period"
    """End the period the reversed payment bought, and stop its arrangement renewing."""
    RENEWAL_FAILED = "renewal failed"
    """The renewal was declined: give the grace once, stop charging the method."""


@dataclass(frozen=True, slots=True)
class AfterPayment:
    """Do ``what`` with ``payment`` once the delivery's transaction is committed."""

    what: PaymentFollowUp
    payment: Payment


@dataclass(frozen=True, slots=True)
class FollowSchedule:
    """Make the user's subscription follow ``arrangement``'s new ``status``."""

    arrangement: Arrangement
    status: ArrangementStatus


@dataclass(frozen=True, slots=True)
class StopReplaced:
    """Tell the providers to stop renewing the arrangements the kept references replaced."""


After = AfterPayment | FollowSchedule | StopReplaced
"""What runs once the delivery's transaction is committed (plan changes have their own)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What an event does: its delivery's outcome (with why, when not processed), the writes of
    its transaction, and what follows the commit."""

    outcome: DeliveryOutcome
    reason: str | None = None
    effects: tuple[Effect, ...] = ()
    after: tuple[After, ...] = ()
    again: bool = False
    """Apply the effects, then load the records and decide again: an event about an arrangement
    that arrived before the first payment's confirmation sets the arrangement up first."""


def decide(event: ProviderEvent, records: EventRecords, now: datetime) -> Decision:
    """What ``event`` does to the stored ``records`` it names, at ``now``."""
    if event.event_type not in EVENT_TYPES:
        return Decision(DeliveryOutcome.IGNORED, f"event type {event.event_type!r} is not handled")
    if event.event_type in RECURRING_TYPES:
        return _decide_recurring(event, records, now)
    payment = records.payment
    if payment is None:
        if event.event_type in REVERSAL_TYPES:
            # A shared provider account refunds other products' payments too.
            return Decision(DeliveryOutcome.IGNORED, "not a payment of ours")
        return Decision(DeliveryOutcome.REJECTED, "no such payment")
    if (
        event.provider_payment_id is not None
        and payment.provider_payment_id is not None
        and event.provider_payment_id != payment.provider_payment_id
    ):
        return _refused(payment, event, "the provider payment id does not match")
    if event.account_id is not None and event.account_id != payment.account_id:
        return _refused(payment, event, "the event is for another user than the payment")
    if event.event_type in REVERSAL_TYPES:
        return _decide_reversal(event, payment)
    if event.event_type == PAYMENT_SUCCEEDED:
        return _decide_confirmation(event, payment, records, now)
    target = PaymentStatus.FAILED if event.event_type == PAYMENT_FAILED else PaymentStatus.CANCELLED
    if payment.status is not PaymentStatus.PENDING:
        return Decision(DeliveryOutcome.IGNORED, "the payment is no longer pending")
    move = PaymentMove(payment, target, event.event_id, settle=True)
    # A renewal the provider declined gives the grace.
    after = (
        (AfterPayment(PaymentFollowUp.RENEWAL_FAILED, payment),)
        if payment.recurring_id is not None
        else ()
    )
    return Decision(DeliveryOutcome.PROCESSED, effects=(move,), after=after)


def _decide_confirmation(
    event: ProviderEvent, payment: Payment, records: EventRecords, now: datetime
) -> Decision:
    """A payment the provider confirmed: granted once, whichever confirmation comes first. What
    each confirmation names (a refund's reference, a subscription) is kept, since later events
    name the payment by it."""
    if event.amount != payment.amount or event.currency != payment.currency:
        return _refused(
            payment,
            event,
            f"paid {event.amount} {event.currency}, expected {payment.amount} {payment.currency}",
        )
    keep = KeepReferences(payment, event.refund_reference, _set_up(event, payment, records, now))
    if payment.status is not PaymentStatus.PENDING:
        return Decision(
            DeliveryOutcome.IGNORED,
            "the payment is no longer pending",
            effects=(keep,),
            after=(StopReplaced(),),
        )
    move = PaymentMove(payment, PaymentStatus.PAID, event.event_id, settle=True)
    after: list[After] = [AfterPayment(PaymentFollowUp.GRANT, payment), StopReplaced()]
    ending = records.arrangement
    if (
        ending is not None
        and ending.account_id == payment.account_id
        and ending.status in (ArrangementStatus.CANCELLING, ArrangementStatus.ENDED)
    ):
        # The provider already said the arrangement ends (the events crossed): the plan about to
        # be granted follows it, so the end state does not depend on the delivery order.
        after.append(FollowSchedule(ending, ending.status))
    return Decision(DeliveryOutcome.PROCESSED, effects=(move, keep), after=tuple(after))


def _set_up(
    event: ProviderEvent, payment: Payment, records: EventRecords, now: datetime
) -> Arrangement | None:
    """The arrangement a confirmation of ``payment`` set up, as it would be recorded: the
    payment's plan, months, amount and currency, never the event's."""
    if event.recurring_reference is None:
        return None
    return Arrangement(
        id=records.new_id,
        account_id=payment.account_id,
        provider=payment.provider,
        reference=event.recurring_reference,
        customer_reference=event.customer_reference,
        plan_code=payment.plan_code,
        months=payment.months,
        amount=payment.amount,
        currency=payment.currency,
        status=ArrangementStatus.ACTIVE,
        last_event_at=None,
        created_at=now,
        updated_at=now,
    )


def _decide_reversal(event: ProviderEvent, payment: Payment) -> Decision:
    """A refund or chargeback of ``payment``: a granted payment's period is ended (after
    commit), a pending one can never be granted, a repeat or a partial refund changes nothing;
    each is kept in the payment's history."""
    target = (
        PaymentStatus.CHARGED_BACK
        if event.event_type == PAYMENT_CHARGED_BACK
        else PaymentStatus.REFUNDED
    )
    if event.currency != payment.currency:
        return _refused(payment, event, f"a reversal in {event.currency or '?'}")
    if target is PaymentStatus.REFUNDED and event.amount < payment.amount:
        reason = f"partial refund of {event.amount} {event.currency}: the period is kept"
        note = PaymentNote(payment, event.event_id, reason)
        return Decision(DeliveryOutcome.IGNORED, "a partial refund", effects=(note,))
    if target not in PAYMENT_MOVES[payment.status]:
        reason = f"{event.event_type} of a {payment.status} payment: nothing to end"
        note = PaymentNote(payment, event.event_id, reason)
        return Decision(
            DeliveryOutcome.IGNORED, f"the payment is {payment.status}", effects=(note,)
        )
    if payment.status is PaymentStatus.SUCCEEDED:
        move = PaymentMove(payment, target, event.event_id, reason="the paid period is ended")
        ended = AfterPayment(PaymentFollowUp.END_PAID_PERIOD, replace(payment, status=target))
        return Decision(DeliveryOutcome.PROCESSED, effects=(move,), after=(ended,))
    # A refund while the grant runs (paid) is followed by the grant itself; one before the
    # confirmation (pending) leaves nothing to grant.
    settle = payment.status is PaymentStatus.PENDING
    move = PaymentMove(payment, target, event.event_id, settle=settle)
    return Decision(DeliveryOutcome.PROCESSED, effects=(move,))


_SCHEDULES = {
    RECURRING_CANCEL_SCHEDULED: ArrangementStatus.CANCELLING,
    RECURRING_RESUMED: ArrangementStatus.ACTIVE,
    RECURRING_ENDED: ArrangementStatus.ENDED,
}


def _decide_recurring(event: ProviderEvent, records: EventRecords, now: datetime) -> Decision:
    """An event about a recurring arrangement (a Stripe subscription): a paid renewal, or a
    change of its schedule."""
    arrangement = records.arrangement
    first = records.payment
    if arrangement is None:
        if first is not None and event.account_id in (None, first.account_id):
            # Delivered before the first payment's confirmation: that payment (named in the
            # subscription's metadata) is what the arrangement copies.
            keep = KeepReferences(
                first, event.refund_reference, _set_up(event, first, records, now)
            )
            # Like the confirmation would: the arrangement replaces the user's earlier ones, and
            # the provider stops renewing them.
            return Decision(
                DeliveryOutcome.PROCESSED, effects=(keep,), after=(StopReplaced(),), again=True
            )
        return Decision(DeliveryOutcome.IGNORED, "not a recurring arrangement of ours")
    if event.account_id is not None and event.account_id != arrangement.account_id:
        return Decision(DeliveryOutcome.REJECTED, "the event is for another user")
    if event.event_type == RECURRING_PAID:
        return _decide_renewal(event, arrangement, records, now)
    target = _SCHEDULES[event.event_type]
    event_at = event.occurred_at or now
    newer = arrangement.last_event_at is not None and arrangement.last_event_at > event_at
    if newer or target not in ARRANGEMENT_MOVES[arrangement.status]:
        return Decision(
            DeliveryOutcome.IGNORED, "the arrangement ended, or a newer change was applied"
        )
    move = ArrangementMove(arrangement, target, event_at)
    return Decision(
        DeliveryOutcome.PROCESSED, effects=(move,), after=(FollowSchedule(arrangement, target),)
    )


def _decide_renewal(
    event: ProviderEvent, arrangement: Arrangement, records: EventRecords, now: datetime
) -> Decision:
    """A renewal the provider charged (a paid invoice): recorded as a payment of the
    arrangement's plan, months and amount, once per provider payment, and granted."""
    if records.renewal is not None:
        return Decision(DeliveryOutcome.IGNORED, "this renewal was recorded before")
    renewal = renewal_of(
        arrangement,
        records.new_id,
        now,
        provider_payment_id=event.provider_payment_id,
        refund_reference=event.refund_reference,
    )
    if (event.amount, event.currency) != (arrangement.amount, arrangement.currency):
        reason = (
            f"paid {event.amount} {event.currency}, expected "
            f"{arrangement.amount} {arrangement.currency}"
        )
        failed = PaymentMove(
            renewal, PaymentStatus.FAILED, event.event_id, settle=True, reason=f"rejected: {reason}"
        )
        return Decision(DeliveryOutcome.REJECTED, reason, effects=(NewPayment(renewal), failed))
    paid = PaymentMove(renewal, PaymentStatus.PAID, event.event_id, settle=True, reason="renewal")
    return Decision(
        DeliveryOutcome.PROCESSED,
        effects=(NewPayment(renewal), paid),
        after=(
            AfterPayment(
                PaymentFollowUp.GRANT, replace(renewal, status=PaymentStatus.PAID, settled_at=now)
            ),
        ),
    )


def renewal_of(
    arrangement: Arrangement,
    payment_id: str,
    now: datetime,
    *,
    provider_payment_id: str | None = None,
    refund_reference: str | None = None,
) -> Payment:
    """A renewal of ``arrangement``, pending: the arrangement's plan, months, amount and
    currency (copied from its first payment), never what a provider reports."""
    return Payment(
        id=payment_id,
        account_id=arrangement.account_id,
        provider=arrangement.provider,
        provider_payment_id=provider_payment_id,
        plan_code=arrangement.plan_code,
        months=arrangement.months,
        amount=arrangement.amount,
        currency=arrangement.currency,
        status=PaymentStatus.PENDING,
        created_at=now,
        refund_reference=refund_reference,
        recurring_id=arrangement.id,
    )


def _refused(payment: Payment, event: ProviderEvent, reason: str) -> Decision:
    """Reject an event about ``payment``, kept in the payment's history (its status unchanged)."""
    note = PaymentNote(payment, event.event_id, f"rejected: {reason}")
    return Decision(DeliveryOutcome.REJECTED, reason, effects=(note,))
