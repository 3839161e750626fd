"""Payments Moment applied to bills (`data.bill_id`) through the real reconciler handler, stream
records read back from moto: applied once per application id, the guard across bills and balances,
a voided bill, an unknown bill id linked later, overpayment (docs/ledger.md#bills)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from moment_sync.ledger import bill_service
from moment_sync.ledger.bills import BillRef
from moment_sync.redrive import redrive, redrive_linked
from support.ledger import LedgerHarness, payment
from support.webhooks import NOW


@pytest.fixture
def harness(dynamodb: Any) -> LedgerHarness:
    harness = LedgerHarness(dynamodb)
    harness.open_customer("UCR1", moment_id="bcus_1")
    return harness


def raise_bill(
    harness: LedgerHarness, ref: str = "FEE", amount_due: int = 1000, moment_id: str | None = "bill_1"
) -> BillRef:
    change = {"customer": "UCR1", "currency": "ZAR", "amount_due": amount_due}
    bill_service.put_bill(harness.ledger, ref, change, NOW)
    bill = BillRef(ref)
    if moment_id:
        harness.ledger.link_bill(bill, moment_id)
    return bill


def bill_head(harness: LedgerHarness, bill: BillRef) -> dict[str, Any]:
    head = harness.ledger.get_bill(bill)
    assert head is not None
    return head


def deliver(harness: LedgerHarness, webhook_id: str, body: bytes) -> dict[str, Any]:
    harness.receive(webhook_id, body)
    assert harness.invoke(harness.next_batch()) == []
    return harness.event(webhook_id)


def test_a_bill_payment_raises_amount_paid_once_per_application_id(harness: LedgerHarness) -> None:
    bill = raise_bill(harness)
    event = deliver(harness, "msg_1", payment("ob_1", 400, customer_id="bcus_1", bill_id="bill_1"))
    assert (event["status"], event["entry_id"], event["balance_key"]) == (
        "applied",
        "payment:ob_1",
        "BILL#FEE",
    )
    head = bill_head(harness, bill)
    assert (head["amount_paid"], head["amount_paid_moment"], head["status"]) == (400, 400, "unpaid")

    # The same record again (the stream retried a batch), and the same application under a new message id.
    harness.receive("msg_2", payment("ob_1", 400, customer_id="bcus_1", bill_id="bill_1"))
    records = harness.next_batch()
    assert harness.invoke(records) == [] and harness.invoke(records) == []
    assert (harness.event("msg_2")["status"], harness.event("msg_2")["duplicate_of"]) == (
        "duplicate",
        "msg_1",
    )
    head = bill_head(harness, bill)
    assert head["amount_paid"] == 400
    assert [entry["id"] for entry in bill_service.read_bill(harness.ledger, bill)["entries"]] == [
        "payment:ob_1"
    ]
    # Never a balance: the customer named beside the bill id is untouched.
    assert harness.head(harness.open_customer("UCR1"))["balance"] == 0


def test_a_moment_payment_alone_never_makes_the_bill_pending_and_paying_it_off_marks_it_paid(
    harness: LedgerHarness,
) -> None:
    bill = raise_bill(harness)
    harness.ledger.record_bill_push(bill, bill_head(harness, bill), 0, NOW)
    assert harness.ledger.pending_bill_pushes(NOW + 60) == []
    deliver(harness, "msg_1", payment("ob_1", 600, bill_id="bill_1"))
    deliver(harness, "msg_2", payment("ob_2", 400, bill_id="bill_1"))
    head = bill_head(harness, bill)
    assert (head["amount_paid"], head["status"], head["bill_order"][:2]) == (1000, "paid", "1#")
    # Moment counted these itself: no PATCH is due.
    assert harness.ledger.pending_bill_pushes(NOW + 60) == []
    assert bill_service.read_bill(harness.ledger, bill)["sync"]["state"] == "synced"


def test_an_overpayment_is_kept_visible(harness: LedgerHarness, capsys: pytest.CaptureFixture[str]) -> None:
    bill = raise_bill(harness)
    deliver(harness, "msg_1", payment("ob_1", 1250, bill_id="bill_1"))
    view = bill_service.read_bill(harness.ledger, bill)
    assert (view["status"], view["amount_paid"], view["amount_remaining"], view["amount_overpaid"]) == (
        "paid",
        1250,
        0,
        250,
    )
    assert '"BillOverpaid"' in capsys.readouterr().out


@pytest.mark.parametrize("first", ["balance", "bill"])
def test_one_application_id_changes_a_bill_or_a_balance_never_both(
    harness: LedgerHarness, first: str
) -> None:
    bill = raise_bill(harness)
    customer = harness.open_customer("UCR1")
    as_balance = payment("ob_1", 300, customer_id="bcus_1")
    as_bill = payment("ob_1", 300, customer_id="bcus_1", bill_id="bill_1")
    bodies = [as_balance, as_bill] if first == "balance" else [as_bill, as_balance]
    applied = deliver(harness, "msg_1", bodies[0])
    second = deliver(harness, "msg_2", bodies[1])
    assert applied["status"] == "applied"
    assert (second["status"], second["reason"], second["conflicts_with"]) == (
        "parked",
        "application_conflict",
        "msg_1",
    )
    moved = (harness.head(customer)["balance"] != 0, bill_head(harness, bill)["amount_paid"] != 0)
    assert moved == ((True, False) if first == "balance" else (False, True))


def test_a_payment_for_a_voided_bill_is_parked_with_its_own_reason(
    harness: LedgerHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    bill = raise_bill(harness)
    bill_service.void_bill(harness.ledger, "FEE", NOW)
    event = deliver(harness, "msg_1", payment("ob_1", 300, bill_id="bill_1"))
    assert (event["status"], event["reason"]) == ("parked", "bill_voided")
    assert "refund" in event["reason_detail"]
    assert bill_head(harness, bill)["amount_paid"] == 0
    assert '"EventParked_bill_voided"' in capsys.readouterr().out


def test_a_payment_applied_before_the_void_and_sent_again_after_it_is_a_duplicate(
    harness: LedgerHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by the simulation: Moment sent an applied payment again under a new message id after the
    merchant voided the bill, and it was parked `bill_voided` (alarmed: money to refund) though the
    money was applied once already; an operator following the runbook would refund it. The ledger-wide
    guard decides first: it is a duplicate."""
    bill = raise_bill(harness)
    body = payment("ob_1", 300, customer_id="bcus_1", bill_id="bill_1")
    assert deliver(harness, "msg_1", body)["status"] == "applied"
    bill_service.void_bill(harness.ledger, "FEE", NOW)
    capsys.readouterr()
    again = deliver(harness, "msg_2", body)
    assert (again["status"], again.get("reason"), again.get("duplicate_of")) == ("duplicate", None, "msg_1")
    assert "EventParked_bill_voided" not in capsys.readouterr().out
    assert bill_head(harness, bill)["amount_paid"] == 300
    # Another amount under that application id is still a conflict, not a refund to make.
    other = deliver(harness, "msg_3", payment("ob_1", 500, customer_id="bcus_1", bill_id="bill_1"))
    assert (other["status"], other["reason"]) == ("parked", "application_conflict")


def test_an_unknown_bill_id_is_unmatched_until_it_is_linked(harness: LedgerHarness) -> None:
    bill = raise_bill(harness, moment_id=None)
    event = deliver(harness, "msg_1", payment("ob_1", 300, bill_id="bill_9"))
    assert (event["status"], event["reason"], event["unmatched_moment_id"]) == (
        "parked",
        "unmatched",
        "bill_9",
    )
    # A bill id never resolves as a balance, nor a balance id as a bill.
    harness.ledger.link_bill(bill, "bill_9")
    assert harness.ledger.resolve_moment_id("bill_9") is None
    assert harness.ledger.resolve_bill_id("bcus_1") is None
    report = redrive_linked("bill_9", events=harness.events, ledger=harness.ledger, now=harness.clock)
    assert report.outcomes == {"applied": 1}
    assert bill_head(harness, bill)["amount_paid"] == 300


def test_a_bill_payment_in_another_currency_is_parked(harness: LedgerHarness) -> None:
    bill = raise_bill(harness)
    event = deliver(harness, "msg_1", payment("ob_1", 300, bill_id="bill_1", currency="USD"))
    assert (event["status"], event["reason"]) == ("parked", "currency_mismatch")
    assert bill_head(harness, bill)["amount_paid"] == 0


@dataclass
class MomentBillSeen:
    external_reference: str
    currency: str = "ZAR"
    amount_due: int = 1000
    customer_id: str | None = "bcus_1"
    account_id: str | None = None


class FakeBillDirectory:
    """Moment's answer to GET /billing/bills/{id} (only bill ids are asked here)."""

    def __init__(self, bills: dict[str, MomentBillSeen]) -> None:
        self.bills = bills
        self.asked: list[str] = []

    def external_reference(self, kind: Any, moment_id: str) -> str | None:
        raise AssertionError("a bill id is never looked up as a customer or an account")

    def account_owner(self, account_id: str) -> tuple[str, str | None]:
        raise AssertionError("not for bills")

    def bill(self, bill_id: str) -> MomentBillSeen | None:
        self.asked.append(bill_id)
        return self.bills.get(bill_id)


def test_the_redrive_links_an_unmatched_bill_id_from_moments_own_record(harness: LedgerHarness) -> None:
    bill = raise_bill(harness, moment_id=None)
    deliver(harness, "msg_1", payment("ob_1", 300, bill_id="bill_9"))
    deliver(harness, "msg_2", payment("ob_2", 200, bill_id="bill_9"))
    directory = FakeBillDirectory({"bill_9": MomentBillSeen("FEE")})
    report = redrive(
        ["msg_1"], events=harness.events, ledger=harness.ledger, directory=directory, now=harness.clock
    )
    assert report.linked == ["bill_9 -> bill FEE"]
    # The other payment naming it is re-driven at once, through the UnmatchedByMomentId index.
    assert (harness.event("msg_1")["status"], harness.event("msg_2")["status"]) == ("applied", "applied")
    head = bill_head(harness, bill)
    assert (head["moment_id"], head["amount_paid"]) == ("bill_9", 500)
    assert directory.asked == ["bill_9"]


@pytest.mark.parametrize(
    "seen",
    [
        MomentBillSeen("FEE", amount_due=999),
        MomentBillSeen("FEE", currency="USD"),
        MomentBillSeen("FEE", customer_id="bcus_someone_else"),
        MomentBillSeen("NOT-IN-LEDGER"),
    ],
    ids=["amount", "currency", "owner", "unknown-reference"],
)
def test_the_redrive_never_links_a_bill_that_is_not_the_ledgers(
    harness: LedgerHarness, seen: MomentBillSeen
) -> None:
    bill = raise_bill(harness, moment_id=None)
    deliver(harness, "msg_1", payment("ob_1", 300, bill_id="bill_9"))
    report = redrive(
        ["msg_1"],
        events=harness.events,
        ledger=harness.ledger,
        directory=FakeBillDirectory({"bill_9": seen}),
        now=harness.clock,
    )
    assert report.linked == [] and report.outcomes == {"parked:unmatched": 1}
    assert "moment_id" not in bill_head(harness, bill)
