"""`forget` and bills: a forgotten customer's bills (its own and its accounts') lose their free text, the
bill description and each outside payment's description, and the webhooks that name only a bill lose
their bodies; the money (amounts, entries, statuses, ids) stays and still adds up."""

from __future__ import annotations

from typing import Any

import pytest

from moment_sync.forget import forget_customer
from moment_sync.ledger import bill_service
from moment_sync.ledger.bills import BillRef
from moment_sync.ledger.service import LedgerProblem
from moment_sync.reconciliation import EventStatus
from support.ledger import LedgerHarness, payment
from support.webhooks import NOW

FEE = {"currency": "ZAR", "amount_due": 120000, "due_date": "2026-01-31"}


@pytest.fixture
def harness(dynamodb: Any) -> LedgerHarness:
    return LedgerHarness(dynamodb, clock=lambda: NOW)


def raise_and_pay(harness: LedgerHarness, ref: str, owner: dict[str, str], who: str) -> BillRef:
    change = {**owner, **FEE, "description": f"Annual fee, {who}"}
    bill_service.put_bill(harness.ledger, ref, change, NOW)
    cash = {"id": f"{ref}-cash", "amount": 20000, "description": f"cash from {who}"}
    bill_service.pay_bill(harness.ledger, ref, cash, NOW)
    return BillRef(ref)


def read(harness: LedgerHarness, bill: BillRef) -> dict[str, Any]:
    return bill_service.read_bill(harness.ledger, bill)


def test_forget_erases_the_descriptions_of_the_customers_and_its_accounts_bills_and_keeps_the_money(
    harness: LedgerHarness,
) -> None:
    harness.open_customer("HOUSE1", moment_id="bcus_house1")
    harness.open_account("HOUSE1-GYM", "HOUSE1", moment_id="bacc_gym")
    harness.open_customer("OTHER", moment_id="bcus_other")
    own = raise_and_pay(harness, "FEE-HOUSE1", {"customer": "HOUSE1"}, "Thandi Nkosi")
    on_account = raise_and_pay(harness, "FEE-GYM", {"account": "HOUSE1-GYM"}, "thandi@example.com")
    other = raise_and_pay(harness, "FEE-OTHER", {"customer": "OTHER"}, "Sipho Dlamini")

    erasure = forget_customer(harness.ledger, harness.events, "HOUSE1", NOW)

    assert erasure.fields_erased["bill FEE-HOUSE1"] == ["description"]
    assert erasure.fields_erased["bill FEE-GYM"] == ["description"]
    assert erasure.bill_entries_erased == {
        "bill FEE-HOUSE1": ["outside_payment:FEE-HOUSE1-cash"],
        "bill FEE-GYM": ["outside_payment:FEE-GYM-cash"],
    }
    for bill in (own, on_account):
        shown = read(harness, bill)
        assert shown["description"] is None
        assert [entry["source"] for entry in shown["entries"]] == [{"payment_id": f"{bill.ref}-cash"}]
        # the money is untouched: what was paid, what remains, the entry's amount
        assert (shown["amount_paid"], shown["amount_remaining"], shown["status"]) == (20000, 100000, "unpaid")
        assert [entry["amount"] for entry in shown["entries"]] == [20000]
        assert "Thandi" not in str(harness.ledger.get_bill(bill)) + str(shown)
    untouched = read(harness, other)
    assert untouched["description"] == "Annual fee, Sipho Dlamini"
    assert untouched["entries"][0]["source"]["description"] == "cash from Sipho Dlamini"


def test_forget_erases_the_body_of_a_webhook_that_names_only_the_customers_bill(
    harness: LedgerHarness,
) -> None:
    harness.open_customer("HOUSE1", moment_id="bcus_house1")
    bill = raise_and_pay(harness, "FEE-HOUSE1", {"customer": "HOUSE1"}, "Thandi Nkosi")
    harness.ledger.link_bill(bill, "bill_house1")
    # Moment does not document whether a bill payment names the bill's customer: this one does not
    harness.receive("msg_bill", payment("ob_1", 5000, bill_id="bill_house1"))
    assert harness.invoke(harness.next_batch()) == []
    assert harness.event("msg_bill")["status"] == EventStatus.APPLIED

    erasure = forget_customer(harness.ledger, harness.events, "HOUSE1", NOW)

    assert erasure.webhook_bodies_erased == ["msg_bill"]
    event = harness.event("msg_bill")
    assert "body" not in event
    assert (event["status"], event["bill_id"], event["amount"]) == (EventStatus.APPLIED, "bill_house1", 5000)
    assert read(harness, bill)["amount_paid"] == 25000


def test_the_same_bill_put_again_after_forget_is_still_the_same_bill(harness: LedgerHarness) -> None:
    harness.open_customer("HOUSE1")
    raise_and_pay(harness, "FEE-HOUSE1", {"customer": "HOUSE1"}, "Thandi Nkosi")
    forget_customer(harness.ledger, harness.events, "HOUSE1", NOW)

    # a client retrying its PUT with the description it once sent: the same bill (200), not a 409
    again = {"customer": "HOUSE1", **FEE, "description": "Annual fee, Thandi Nkosi"}
    created, shown = bill_service.put_bill(harness.ledger, "FEE-HOUSE1", again, NOW)
    assert (created, shown["description"]) == (False, None)
    # and a bill is still immutable in its money
    with pytest.raises(LedgerProblem) as refused:
        bill_service.put_bill(harness.ledger, "FEE-HOUSE1", {**again, "amount_due": 1}, NOW)
    assert refused.value.problem == "bill-immutable"
