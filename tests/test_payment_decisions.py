"""What a provider's event does to the records it names, decided without a database.

Every payment status meets every event kind, and every arrangement status every event about an
arrangement: the tables below are the expected decisions, written out (outcome, the writes of the
delivery's transaction, what follows its commit), including the events that are ignored or
refused. A status or an event kind added without its rows fails ``test_*_table_is_complete``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from flask_profile_billing.domain import payments
from flask_profile_billing.domain.payments import (
    ARRANGEMENT_MOVES,
    DELIVERY_MOVES,
    EVENT_TYPES,
    PAYMENT_MOVES,
    RECURRING_TYPES,
    Arrangement,
    ArrangementStatus,
    DeliveryOutcome,
    EventRecords,
    Payment,
    PaymentFollowUp,
    PaymentStatus,
    ProviderEvent,
    arrangement_sources,
    decide,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PRICE = Decimal("9.90")
UNKNOWN = "payment.disputed_in_a_way_we_do_not_handle"
"""An event type no rule handles."""
PARTIAL_REFUND = "payment.refunded (partial)"
"""A ``payment.refunded`` of less than was paid: a row of its own in the table."""

PAYMENT = Payment(
    id="pay-1",
    account_id="user:alice",
    provider="stripe",
    provider_payment_id="pi_1",
    plan_code="pro",
    months=1,
    amount=PRICE,
    currency="EUR",
    status=PaymentStatus.PENDING,
    created_at=NOW - timedelta(minutes=5),
)
ARRANGEMENT = Arrangement(
    id="rec-1",
    account_id="user:alice",
    provider="stripe",
    reference="sub_1",
    customer_reference="cus_1",
    plan_code="pro",
    months=1,
    amount=PRICE,
    currency="EUR",
    status=ArrangementStatus.ACTIVE,
    last_event_at=NOW - timedelta(days=1),
    created_at=NOW - timedelta(days=30),
    updated_at=NOW - timedelta(days=1),
)


def event(kind: str, **changes: object) -> ProviderEvent:
    """An event of ``kind`` about PAYMENT (a payment event) or ARRANGEMENT (a recurring one), as
    the provider would report it for them; ``changes`` make it differ."""
    recurring = kind.startswith("recurring.")
    partial = kind == PARTIAL_REFUND
    base = ProviderEvent(
        event_id="evt-1",
        event_type="payment.refunded" if partial else kind,
        payment_id=None if recurring else "pay-1",
        provider_payment_id="pi_2" if kind == "recurring.paid" else None if recurring else "pi_1",
        amount=PRICE - 1 if partial else PRICE,
        currency="EUR",
        account_id="user:alice",
        recurring_reference="sub_1" if recurring else None,
        occurred_at=NOW if recurring else None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def summary(decision: payments.Decision) -> tuple[str, str | None, str, str]:
    """A decision as one line of the table: outcome, reason, writes, what follows."""
    effects = []
    for effect in decision.effects:
        if isinstance(effect, payments.PaymentMove):
            settled = " settled" if effect.settle else ""
            effects.append(f"{effect.payment.status}->{effect.target}{settled}")
        elif isinstance(effect, payments.ArrangementMove):
            effects.append(f"arrangement {effect.arrangement.status}->{effect.target}")
        elif isinstance(effect, payments.PaymentNote):
            effects.append(f"note {effect.payment.status}: {effect.reason}")
        elif isinstance(effect, payments.NewPayment):
            effects.append("new payment")
        else:
            assert isinstance(effect, payments.KeepReferences)
            effects.append("keep references")
    after = []
    for step in decision.after:
        if isinstance(step, payments.FollowSchedule):
            after.append(f"follow {step.status}")
        elif isinstance(step, payments.AfterPayment):
            after.append(step.what.value)
        else:
            after.append("stop replaced")
    return decision.outcome.value, decision.reason, ", ".join(effects), ", ".join(after)


P = PaymentStatus
NOT_PENDING = "the payment is no longer pending"
PAYMENT_KINDS = [
    "payment.succeeded",
    "payment.failed",
    "payment.cancelled",
    "payment.refunded",
    PARTIAL_REFUND,
    "payment.charged_back",
    UNKNOWN,
]


def _ignored_reversal(status: PaymentStatus, kind: str) -> tuple[str, str, str, str]:
    return (
        "ignored",
        f"the payment is {status}",
        f"note {status}: {kind} of a {status} payment: nothing to end",
        "",
    )


def _partial(status: PaymentStatus) -> tuple[str, str, str, str]:
    reason = f"note {status}: partial refund of 8.90 EUR: the period is kept"
    return ("ignored", "a partial refund", reason, "")


_UNHANDLED = ("ignored", f"event type {UNKNOWN!r} is not handled", "", "")

PAYMENT_TABLE: dict[tuple[PaymentStatus, str], tuple[str, str | None, str, str]] = {
    # pending: the confirmation grants, a failure or cancellation settles, a reversal ends it.
    (P.PENDING, "payment.succeeded"): (
        "processed",
        None,
        "pending->paid settled, keep references",
        "grant, stop replaced",
    ),
    (P.PENDING, "payment.failed"): ("processed", None, "pending->failed settled", ""),
    (P.PENDING, "payment.cancelled"): ("processed", None, "pending->cancelled settled", ""),
    (P.PENDING, "payment.refunded"): ("processed", None, "pending->refunded settled", ""),
    (P.PENDING, PARTIAL_REFUND): _partial(P.PENDING),
    (P.PENDING, "payment.charged_back"): ("processed", None, "pending->charged_back settled", ""),
    (P.PENDING, UNKNOWN): _UNHANDLED,
    # paid: the grant is under way; a reversal is followed by the grant itself.
    (P.PAID, "payment.succeeded"): ("ignored", NOT_PENDING, "keep references", "stop replaced"),
    (P.PAID, "payment.failed"): ("ignored", NOT_PENDING, "", ""),
    (P.PAID, "payment.cancelled"): ("ignored", NOT_PENDING, "", ""),
    (P.PAID, "payment.refunded"): ("processed", None, "paid->refunded", ""),
    (P.PAID, PARTIAL_REFUND): _partial(P.PAID),
    (P.PAID, "payment.charged_back"): ("processed", None, "paid->charged_back", ""),
    (P.PAID, UNKNOWN): _UNHANDLED,
    # succeeded: a reversal ends the paid period once committed.
    (P.SUCCEEDED, "payment.succeeded"): (
        "ignored",
        NOT_PENDING,
        "keep references",
        "stop replaced",
    ),
    (P.SUCCEEDED, "payment.failed"): ("ignored", NOT_PENDING, "", ""),
    (P.SUCCEEDED, "payment.cancelled"): ("ignored", NOT_PENDING, "", ""),
    (P.SUCCEEDED, "payment.refunded"): (
        "processed",
        None,
        "succeeded->refunded",
        "end paid period",
    ),
    (P.SUCCEEDED, PARTIAL_REFUND): _partial(P.SUCCEEDED),
    (P.SUCCEEDED, "payment.charged_back"): (
        "processed",
        None,
        "succeeded->charged_back",
        "end paid period",
    ),
    (P.SUCCEEDED, UNKNOWN): _UNHANDLED,
}
for _final in (P.FAILED, P.CANCELLED, P.REFUNDED, P.CHARGED_BACK):
    # A settled payment stays as it is; a reversal of it is kept in its history.
    PAYMENT_TABLE.update(
        {
            (_final, "payment.succeeded"): (
                "ignored",
                NOT_PENDING,
                "keep references",
                "stop replaced",
            ),
            (_final, "payment.failed"): ("ignored", NOT_PENDING, "", ""),
            (_final, "payment.cancelled"): ("ignored", NOT_PENDING, "", ""),
            (_final, "payment.refunded"): _ignored_reversal(_final, "payment.refunded"),
            (_final, PARTIAL_REFUND): _partial(_final),
            (_final, "payment.charged_back"): _ignored_reversal(_final, "payment.charged_back"),
            (_final, UNKNOWN): _UNHANDLED,
        }
    )


def test_the_payment_table_is_complete() -> None:
    assert set(PAYMENT_TABLE) == {(status, kind) for status in P for kind in PAYMENT_KINDS}
    assert set(EVENT_TYPES) - set(RECURRING_TYPES) <= set(PAYMENT_KINDS)


@pytest.mark.parametrize(("status", "kind"), list(PAYMENT_TABLE), ids=str)
def test_a_payment_event_decides_as_the_table_says(status: PaymentStatus, kind: str) -> None:
    records = EventRecords(payment=replace(PAYMENT, status=status), new_id="new-1")
    decision = decide(event(kind), records, NOW)
    assert summary(decision) == PAYMENT_TABLE[status, kind]
    for effect in decision.effects:
        if isinstance(effect, payments.PaymentMove):
            assert effect.target in PAYMENT_MOVES[effect.payment.status]
            assert effect.event_id == "evt-1"


A = ArrangementStatus
SCHEDULE_KINDS = [
    "recurring.cancel_scheduled",
    "recurring.resumed",
    "recurring.ended",
    "recurring.paid",
]
_NOT_APPLIED = ("ignored", "the arrangement ended, or a newer change was applied", "", "")
_RENEWED = ("processed", None, "new payment, pending->paid settled", "grant")

ARRANGEMENT_TABLE: dict[tuple[ArrangementStatus, str], tuple[str, str | None, str, str]] = {
    (A.ACTIVE, "recurring.cancel_scheduled"): (
        "processed",
        None,
        "arrangement active->cancelling",
        "follow cancelling",
    ),
    (A.ACTIVE, "recurring.resumed"): (
        "processed",
        None,
        "arrangement active->active",
        "follow active",
    ),
    (A.ACTIVE, "recurring.ended"): ("processed", None, "arrangement active->ended", "follow ended"),
    (A.ACTIVE, "recurring.paid"): _RENEWED,
    (A.CANCELLING, "recurring.cancel_scheduled"): (
        "processed",
        None,
        "arrangement cancelling->cancelling",
        "follow cancelling",
    ),
    (A.CANCELLING, "recurring.resumed"): (
        "processed",
        None,
        "arrangement cancelling->active",
        "follow active",
    ),
    (A.CANCELLING, "recurring.ended"): (
        "processed",
        None,
        "arrangement cancelling->ended",
        "follow ended",
    ),
    (A.CANCELLING, "recurring.paid"): _RENEWED,
    # A declined renewal stops the method; only the provider's end still applies.
    (A.FAILED, "recurring.cancel_scheduled"): _NOT_APPLIED,
    (A.FAILED, "recurring.resumed"): _NOT_APPLIED,
    (A.FAILED, "recurring.ended"): ("processed", None, "arrangement failed->ended", "follow ended"),
    (A.FAILED, "recurring.paid"): _RENEWED,
    (A.ENDED, "recurring.cancel_scheduled"): _NOT_APPLIED,
    (A.ENDED, "recurring.resumed"): _NOT_APPLIED,
    (A.ENDED, "recurring.ended"): _NOT_APPLIED,
    (A.ENDED, "recurring.paid"): _RENEWED,
}


def test_the_arrangement_table_is_complete() -> None:
    assert set(ARRANGEMENT_TABLE) == {(status, kind) for status in A for kind in SCHEDULE_KINDS}
    assert set(RECURRING_TYPES) == set(SCHEDULE_KINDS)


@pytest.mark.parametrize(("status", "kind"), list(ARRANGEMENT_TABLE), ids=str)
def test_an_arrangement_event_decides_as_the_table_says(
    status: ArrangementStatus, kind: str
) -> None:
    records = EventRecords(arrangement=replace(ARRANGEMENT, status=status), new_id="new-1")
    decision = decide(event(kind), records, NOW)
    assert summary(decision) == ARRANGEMENT_TABLE[status, kind]
    for effect in decision.effects:
        if isinstance(effect, payments.ArrangementMove):
            assert effect.target in ARRANGEMENT_MOVES[effect.arrangement.status]
            assert effect.event_at == NOW


# -- the refusals and the cases a status alone does not decide ---------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("payment.succeeded", ("rejected", "no such payment", "", "")),
        ("payment.failed", ("rejected", "no such payment", "", "")),
        ("payment.cancelled", ("rejected", "no such payment", "", "")),
        # A shared provider account refunds other products' payments too.
        ("payment.refunded", ("ignored", "not a payment of ours", "", "")),
        ("payment.charged_back", ("ignored", "not a payment of ours", "", "")),
    ],
)
def test_an_event_about_no_payment_of_ours(kind: str, expected: tuple[str, str, str, str]) -> None:
    assert summary(decide(event(kind), EventRecords(), NOW)) == expected


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"provider_payment_id": "pi_other"}, "the provider payment id does not match"),
        ({"account_id": "user:mallory"}, "the event is for another user than the payment"),
        ({"amount": PRICE - 1}, "paid 8.90 EUR, expected 9.90 EUR"),
        ({"currency": "USD"}, "paid 9.90 USD, expected 9.90 EUR"),
    ],
)
def test_a_confirmation_that_differs_is_refused_and_kept_in_the_history(
    changes: dict[str, object], reason: str
) -> None:
    records = EventRecords(payment=PAYMENT)
    decision = decide(event("payment.succeeded", **changes), records, NOW)
    assert summary(decision) == ("rejected", reason, f"note pending: rejected: {reason}", "")


def test_a_reversal_in_another_currency_is_refused() -> None:
    records = EventRecords(payment=replace(PAYMENT, status=P.SUCCEEDED))
    decision = decide(event("payment.refunded", currency="USD"), records, NOW)
    reason = "a reversal in USD"
    assert summary(decision) == ("rejected", reason, f"note succeeded: rejected: {reason}", "")


def test_a_declined_renewal_gives_the_grace() -> None:
    renewal = replace(PAYMENT, recurring_id="rec-1")
    decision = decide(event("payment.cancelled"), EventRecords(payment=renewal), NOW)
    assert summary(decision) == ("processed", None, "pending->cancelled settled", "renewal failed")


def test_a_confirmation_sets_up_its_arrangement_from_the_payment_not_the_event() -> None:
    delivered = event("payment.succeeded", recurring_reference="sub_9", refund_reference="pi_r")
    decision = decide(delivered, EventRecords(payment=PAYMENT, new_id="new-1"), NOW)
    keep = decision.effects[-1]
    assert isinstance(keep, payments.KeepReferences)
    assert keep.refund_reference == "pi_r"
    assert keep.arrangement == Arrangement(
        id="new-1",
        account_id="user:alice",
        provider="stripe",
        reference="sub_9",
        customer_reference=None,
        plan_code="pro",
        months=1,
        amount=PRICE,
        currency="EUR",
        status=A.ACTIVE,
        last_event_at=None,
        created_at=NOW,
        updated_at=NOW,
    )


@pytest.mark.parametrize(
    ("status", "follows"),
    [
        (A.ACTIVE, ""),
        (A.FAILED, ""),
        (A.CANCELLING, ", follow cancelling"),
        (A.ENDED, ", follow ended"),
    ],
)
def test_a_confirmation_after_its_arrangement_ended_follows_the_end(
    status: ArrangementStatus, follows: str
) -> None:
    records = EventRecords(payment=PAYMENT, arrangement=replace(ARRANGEMENT, status=status))
    delivered = event("payment.succeeded", recurring_reference="sub_1")
    decision = decide(delivered, records, NOW)
    assert summary(decision)[3] == "grant, stop replaced" + follows


def test_an_arrangement_of_another_user_is_not_followed() -> None:
    theirs = replace(ARRANGEMENT, account_id="user:bob", status=A.ENDED)
    records = EventRecords(payment=PAYMENT, arrangement=theirs)
    delivered = event("payment.succeeded", recurring_reference="sub_1")
    assert summary(decide(delivered, records, NOW))[3] == "grant, stop replaced"


def test_an_older_schedule_change_is_not_applied_over_a_newer_one() -> None:
    records = EventRecords(arrangement=replace(ARRANGEMENT, last_event_at=NOW))
    older = event("recurring.cancel_scheduled", occurred_at=NOW - timedelta(seconds=1))
    assert summary(decide(older, records, NOW)) == _NOT_APPLIED
    same_time = event("recurring.cancel_scheduled", occurred_at=NOW)
    assert decide(same_time, records, NOW).outcome is DeliveryOutcome.PROCESSED


def test_an_event_about_an_unknown_arrangement() -> None:
    delivered = event("recurring.ended")
    assert summary(decide(delivered, EventRecords(), NOW)) == (
        "ignored",
        "not a recurring arrangement of ours",
        "",
        "",
    )


def test_an_arrangement_event_before_the_first_confirmation_sets_it_up_then_decides_again() -> None:
    delivered = event("recurring.cancel_scheduled", payment_id="pay-1")
    decision = decide(delivered, EventRecords(payment=PAYMENT, new_id="new-1"), NOW)
    assert decision.again
    assert summary(decision) == ("processed", None, "keep references", "stop replaced")
    for_another = replace(delivered, account_id="user:mallory")
    assert not decide(for_another, EventRecords(payment=PAYMENT), NOW).again


def test_an_arrangement_event_for_another_user_is_refused() -> None:
    delivered = event("recurring.ended", account_id="user:mallory")
    decision = decide(delivered, EventRecords(arrangement=ARRANGEMENT), NOW)
    assert summary(decision) == ("rejected", "the event is for another user", "", "")


def test_a_renewal_is_recorded_once_with_the_arrangements_terms() -> None:
    recorded = replace(PAYMENT, id="pay-2", provider_payment_id="pi_2")
    again = EventRecords(arrangement=ARRANGEMENT, renewal=recorded)
    assert summary(decide(event("recurring.paid"), again, NOW)) == (
        "ignored",
        "this renewal was recorded before",
        "",
        "",
    )
    first = decide(event("recurring.paid"), EventRecords(arrangement=ARRANGEMENT, new_id="n"), NOW)
    new = first.effects[0]
    assert isinstance(new, payments.NewPayment)
    assert (new.payment.id, new.payment.plan_code, new.payment.recurring_id) == (
        "n",
        "pro",
        "rec-1",
    )
    assert first.after == (
        payments.AfterPayment(
            PaymentFollowUp.GRANT, replace(new.payment, status=P.PAID, settled_at=NOW)
        ),
    )


def test_a_renewal_paid_with_another_amount_is_refused() -> None:
    delivered = event("recurring.paid", amount=PRICE + 1)
    decision = decide(delivered, EventRecords(arrangement=ARRANGEMENT, new_id="n"), NOW)
    reason = "paid 10.90 EUR, expected 9.90 EUR"
    assert summary(decision) == (
        "rejected",
        reason,
        "new payment, pending->failed settled",
        "",
    )


def test_the_moves_tables() -> None:
    final = {P.FAILED, P.CANCELLED, P.REFUNDED, P.CHARGED_BACK}
    assert {status for status, targets in PAYMENT_MOVES.items() if not targets} == final
    assert arrangement_sources(A.FAILED) == {A.ACTIVE, A.CANCELLING, A.FAILED}
    assert arrangement_sources(A.ENDED) == {A.ACTIVE, A.CANCELLING, A.FAILED}
    assert ARRANGEMENT_MOVES[A.ENDED] == frozenset()
    assert DELIVERY_MOVES[DeliveryOutcome.PROCESSED] == {
        DeliveryOutcome.IGNORED,
        DeliveryOutcome.REJECTED,
    }


def test_the_payments_domain_is_pure_python() -> None:
    import ast
    from pathlib import Path

    import flask_profile_billing.domain.payments as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
        )
    }
    assert imported <= {"__future__", "collections", "dataclasses", "datetime", "decimal", "enum"}
