"""The bill pusher's decision (pure): what it sends for outside payments, when it sends nothing, when it
stops for an operator (docs/pusher.md#bills)."""

from __future__ import annotations

from typing import Any

import pytest

from moment_sync.bill_push_plan import (
    OUTSIDE_PAID_KEY,
    BillLedgerView,
    Blocked,
    Book,
    Disagrees,
    SendAmountPaid,
    VoidAtMoment,
    plan_bill_push,
)
from moment_sync.moment_client import BillStatus, MomentBill

DUE = 1000


def ledger(**changes: Any) -> BillLedgerView:
    fields: dict[str, Any] = {
        "amount_due": DUE,
        "currency": "ZAR",
        "moment_paid": 0,
        "outside_paid": 0,
        "outside_booked": 0,
        "intents_outside": (),
        "voided": False,
    }
    fields.update(changes)
    return BillLedgerView(**fields)


def moment(amount_paid: int = 0, recorded: int | None = None, **changes: Any) -> MomentBill:
    status = BillStatus.PAID if amount_paid >= DUE else BillStatus.UNPAID
    fields: dict[str, Any] = {
        "id": "bill_1",
        "external_reference": "FEE",
        "status": status,
        "currency": "ZAR",
        "amount_due": DUE,
        "amount_paid": amount_paid,
        "amount_remaining": max(0, DUE - amount_paid),
        "customer_id": "bcus_1",
        "account_id": None,
        "overpayment_allowed": False,
        "metadata": {} if recorded is None else {OUTSIDE_PAID_KEY: str(recorded)},
    }
    fields.update(changes)
    return MomentBill(**fields)


@pytest.mark.parametrize(
    ("known", "shown", "expected"),
    [
        # nothing outside, Moment's own payments seen or not: nothing to send, ever
        (ledger(), moment(0), Book(0)),
        (ledger(moment_paid=300), moment(300), Book(300)),
        (ledger(moment_paid=0), moment(300), Book(300)),  # a payment whose webhook is on its way
        # cash at the counter: on top of what Moment shows
        (ledger(outside_paid=200), moment(0), SendAmountPaid(200, 200)),
        (ledger(moment_paid=300, outside_paid=200), moment(300), SendAmountPaid(500, 200)),
        (ledger(outside_paid=200), moment(300), SendAmountPaid(500, 200)),  # Moment's unseen 300 kept
        # a Moment payment a PATCH overwrote (seen by webhook since): put back
        (
            ledger(moment_paid=300, outside_paid=200, outside_booked=200),
            moment(200, 200),
            SendAmountPaid(500, 200),
        ),
        # booked and in step
        (ledger(moment_paid=300, outside_paid=200, outside_booked=200), moment(500, 200), Book(500)),
        # more cash after a booked push: only the new part is added
        (ledger(outside_paid=500, outside_booked=200), moment(200, 200), SendAmountPaid(500, 500)),
    ],
)
def test_the_amount_sent_counts_every_payment_once(
    known: BillLedgerView, shown: MomentBill, expected: object
) -> None:
    assert plan_bill_push(known, shown) == expected


def test_an_open_intent_that_landed_is_read_from_moments_record_not_counted_again() -> None:
    # The PATCH of 200 landed (Moment says so beside the amount), its answer was lost: nothing booked.
    known = ledger(outside_paid=200, outside_booked=0, intents_outside=(200,))
    assert plan_bill_push(known, moment(200, recorded=200)) == Book(200)
    # Had it not landed, Moment's record still says 0 outside: it is sent once.
    assert plan_bill_push(known, moment(0)) == SendAmountPaid(200, 200)
    # More cash since the lost PATCH: only that is added.
    known = ledger(outside_paid=350, outside_booked=0, intents_outside=(200,))
    assert plan_bill_push(known, moment(250, recorded=200)) == SendAmountPaid(400, 350)


def test_a_record_of_outside_payments_the_ledger_never_sent_is_a_disagreement() -> None:
    decision = plan_bill_push(ledger(outside_paid=200), moment(500, recorded=500))
    assert isinstance(decision, Disagrees) and "'500' of outside payments" in decision.detail


@pytest.mark.parametrize(
    ("known", "shown", "reason"),
    [
        (ledger(outside_paid=100), moment(DUE), "is paid"),  # settled at Moment, cash on top
        (ledger(outside_paid=DUE + 1), moment(0), "would pass amount_due"),
        (ledger(moment_paid=600, outside_paid=500), moment(600), "would pass amount_due"),
    ],
)
def test_what_moment_does_not_say_it_takes_is_blocked(
    known: BillLedgerView, shown: MomentBill, reason: str
) -> None:
    decision = plan_bill_push(known, shown)
    assert isinstance(decision, Blocked) and reason in decision.detail


def test_above_amount_due_is_sent_when_moments_payment_rules_allow_overpayment() -> None:
    assert plan_bill_push(
        ledger(outside_paid=DUE + 1), moment(0, overpayment_allowed=True)
    ) == SendAmountPaid(DUE + 1, DUE + 1)
    # Unknown rules count as not allowed.
    assert isinstance(
        plan_bill_push(ledger(outside_paid=DUE + 1), moment(0, overpayment_allowed=None)), Blocked
    )


def test_a_void_goes_after_the_outside_payments_and_is_booked_once_moment_shows_it() -> None:
    assert plan_bill_push(ledger(outside_paid=200, voided=True), moment(0)) == SendAmountPaid(200, 200)
    assert plan_bill_push(
        ledger(outside_paid=200, voided=True, intents_outside=(200,)), moment(200, 200)
    ) == (VoidAtMoment())
    voided = moment(200, 200, status=BillStatus.VOIDED)
    assert plan_bill_push(ledger(outside_paid=200, voided=True), voided) == Book(200, voided_at_moment=True)


@pytest.mark.parametrize(
    ("shown", "detail"),
    [
        (moment(0, status=BillStatus.VOIDED), "voided; the ledger's is not"),
        (moment(0, amount_due=999), "is 999 ZAR"),
        (moment(0, currency="USD"), "1000 USD"),
    ],
)
def test_a_moment_bill_that_is_not_the_ledgers_is_a_disagreement(shown: MomentBill, detail: str) -> None:
    decision = plan_bill_push(ledger(), shown)
    assert isinstance(decision, Disagrees) and detail in decision.detail


def test_outside_payments_a_patch_moment_did_not_take_are_never_counted_as_at_moment() -> None:
    # Moment answered a PATCH of 300 (cash) without taking it: the bill had gone paid (1000) at Moment,
    # whose webhook the ledger has not seen; its metadata names the 300 all the same.
    view = ledger(outside_paid=300, ignored_outside=(300,))
    decision = plan_bill_push(view, moment(amount_paid=1000, recorded=300))
    assert isinstance(decision, Blocked) and "without taking its amount_paid" in decision.detail
    # the same figures from a PATCH whose landing is merely unknown: booked (it landed, then Moment's 700)
    assert plan_bill_push(ledger(outside_paid=300, intents_outside=(300,)), moment(1000, 300)) == Book(1000)


def test_the_view_reads_intents_moment_did_not_take_apart() -> None:
    head = {
        "amount_due": DUE,
        "currency": "ZAR",
        "outside_paid": 500,
        "push_intents": [{"outside_paid": 300, "ignored": True}, {"outside_paid": 500}],
    }
    view = BillLedgerView.of(head)
    assert (view.intents_outside, view.ignored_outside) == ((500,), (300,))
