"""The bill pusher against the Moment sandbox over real HTTP on loopback, the ledger in moto, and Moment's
payments through the real reconciler: create or adopt, outside payments as a cumulative amount_paid,
lost answers, the read→PATCH window repaired in the same run, blocked bills, voids (docs/pusher.md#bills)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import httpx
import pytest

import balance_pusher_handler
from local_stack.lambda_context import LocalLambdaContext
from moment_sandbox import MomentSandbox
from moment_sync.bill_push_plan import OUTSIDE_PAID_KEY
from moment_sync.bill_pusher import BillPusher
from moment_sync.ledger import bill_service
from moment_sync.ledger.sync import sync_state
from moment_sync.moment_client import MomentClient, NewBill
from moment_sync.pusher import BalancePusher
from support import pushers
from support.ledger import LedgerHarness
from support.pushers import (
    DUE,
    InFlight,
    cash,
    head,
    lose_patch_answers,
    on_moment,
    patches,
    pay_at_moment,
    raise_bill,
    run,
)
from support.sync_state_pipe import ledger_stream, sync_state_changed
from support.webhooks import NOW

# The shared harness (support/pushers.py): pytest finds each fixture by the name bound here.
sandbox = pushers.sandbox
transport = pushers.transport
moment = pushers.moment
clock = pushers.clock
harness = pushers.harness
pusher = pushers.pusher
bill_pusher = pushers.bill_pusher
member = pushers.member


# --- creating ---------------------------------------------------------------------------------------


def test_a_raised_bill_is_created_on_its_owner_linked_and_then_left_alone(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, member: str, transport: InFlight
) -> None:
    bill = raise_bill(harness)
    assert run(bill_pusher) == {"created": 1}
    at_moment = on_moment(sandbox)
    assert (at_moment["customer_id"], at_moment["amount_due"], at_moment["currency"]) == (member, DUE, "ZAR")
    assert (at_moment["due_date"], at_moment["status"], at_moment["metadata"]) == (
        "2026-01-31",
        "unpaid",
        {"created_by": "moment-balance-sync"},
    )
    stored = head(harness, bill)
    assert stored["moment_id"] == at_moment["id"]
    assert sync_state(stored) == "synced"
    assert harness.ledger.resolve_bill_id(at_moment["id"]) == bill
    transport.requests.clear()
    assert run(bill_pusher) == {}
    assert transport.requests == []


def test_a_bill_on_an_account_is_created_on_that_account(
    harness: LedgerHarness, bill_pusher: BillPusher, pusher: BalancePusher, sandbox: MomentSandbox
) -> None:
    harness.open_customer("FAM1", balance_model="accounts")
    harness.ledger.request_first_push(harness.open_account("FAM1-kid", "FAM1"), NOW)
    pusher.push_pending(time_left=lambda: 300)
    bill_service.put_bill(
        harness.ledger, "FEE-kid", {"account": "FAM1-kid", "currency": "ZAR", "amount_due": 500}, NOW
    )
    assert run(bill_pusher) == {"created": 1}
    account = sandbox.state()["accounts"][0]
    assert on_moment(sandbox, "FEE-kid")["account_id"] == account["id"]


def test_a_bill_whose_owner_moment_lacks_asks_for_the_owner_and_the_run_creates_both(
    harness: LedgerHarness,
    bill_pusher: BillPusher,
    pusher: BalancePusher,
    sandbox: MomentSandbox,
) -> None:
    # GIVEN a member on the bill model: no charges, so never pending, not on Moment
    member = harness.open_customer("UCR1")
    assert pusher.push_pending(time_left=lambda: 300).results == {}
    bill = raise_bill(harness)
    # WHEN the bills alone are pushed: the bill waits (no backoff) and asks for its owner
    assert run(bill_pusher) == {"waiting": 1}
    assert "push_shard" in harness.head(member)
    assert "next_push_at" not in head(harness, bill)
    assert sandbox.state()["bills"] == []
    # THEN the scheduled run creates the owner, then the bill
    report = balance_pusher_handler.lambda_handler(
        {}, LocalLambdaContext("pusher", timeout_seconds=240), pusher, bills=bill_pusher
    )
    assert (report["results"], report["bills"]["results"]) == ({"created": 1}, {"created": 1})
    assert on_moment(sandbox)["customer_id"] == sandbox.state()["customers"][0]["id"]


def test_one_scheduled_run_creates_a_new_member_on_the_bill_model_and_the_bill(
    harness: LedgerHarness, bill_pusher: BillPusher, pusher: BalancePusher, sandbox: MomentSandbox
) -> None:
    harness.open_customer("UCR1")
    raise_bill(harness)
    report = balance_pusher_handler.lambda_handler(
        {}, LocalLambdaContext("pusher", timeout_seconds=240), pusher, bills=bill_pusher
    )
    assert (report["results"], report["bills"]["results"]) == ({"created": 1}, {"created": 1})
    assert on_moment(sandbox)["customer_id"] == sandbox.state()["customers"][0]["id"]


def test_a_bill_moment_already_has_is_adopted_only_when_it_is_the_same_bill(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, moment: MomentClient, member: str
) -> None:
    # GIVEN Moment holds FEE-2026 already (an earlier run's lost answer): the same owner, amount, currency
    moment.create_bill(NewBill("FEE-2026", DUE, "ZAR", customer=member), generation=7)
    # and FEE-OTHER with another amount
    moment.create_bill(NewBill("FEE-OTHER", 999, "ZAR", customer=member))
    same, other = raise_bill(harness), raise_bill(harness, "FEE-OTHER")
    # WHEN pushed
    results = run(bill_pusher)
    # THEN the same bill is adopted, the other is a conflict: nothing linked, nothing created
    assert results == {"in_sync": 1, "conflict": 1}
    assert head(harness, same)["moment_id"] == on_moment(sandbox)["id"]
    conflicted = head(harness, other)
    assert sync_state(conflicted) == "conflict"
    assert "amount_due 999, not 120000" in conflicted["push_conflict"]
    assert "moment_id" not in conflicted
    assert len(sandbox.state()["bills"]) == 2


# --- a billing run: more than a page of bills -------------------------------------------------------


def test_a_run_pushes_every_pending_bill_a_page_at_a_time_while_its_time_lasts(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, member: str, clock: list[float]
) -> None:
    # GIVEN a month's bills: 7 pending, read 3 at a time (1,000 in production)
    bills = []
    for number in range(7):
        clock[0] += 1
        bills.append(raise_bill(harness, f"FEE-{number}"))
    paged = replace(bill_pusher, batch=3)
    # WHEN one run pushes them
    report = paged.push_pending(time_left=lambda: 300)
    # THEN every one is created in that run, none left for the next
    assert (report.results, report.not_reached) == ({"created": 7}, 0)
    assert sorted(item["external_reference"] for item in sandbox.state()["bills"]) == [b.ref for b in bills]
    assert harness.ledger.pending_bill_pushes(clock[0] + 10**6) == []


def test_a_page_of_bills_waiting_for_their_owner_hides_none_of_the_bills_after_it(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, member: str, clock: list[float]
) -> None:
    # GIVEN the oldest bills are a new member's, whom Moment lacks: they stay pending (waiting, no
    # backoff), more than a page of them
    harness.open_customer("NEW1")
    for number in range(4):
        clock[0] += 1
        raise_bill(harness, f"NEW-{number}", owner="NEW1")
    # AND after them bills of a member Moment has
    for number in range(3):
        clock[0] += 1
        raise_bill(harness, f"FEE-{number}")
    # WHEN one run reads them 3 at a time
    report = replace(bill_pusher, batch=3).push_pending(time_left=lambda: 300)
    # THEN it reads on past the waiting ones (a page is read on from where the last ended, not from the
    # start again, where the waiting bills still are): every bill looked at, the member's created
    assert (report.results, report.not_reached) == ({"waiting": 4, "created": 3}, 0)
    assert sorted(item["external_reference"] for item in sandbox.state()["bills"]) == [
        "FEE-0",
        "FEE-1",
        "FEE-2",
    ]


def test_a_run_out_of_time_counts_the_page_it_stopped_in_not_reached_and_the_next_run_goes_on(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, member: str, transport: InFlight
) -> None:
    for number in range(5):
        raise_bill(harness, f"FEE-{number}")
    paged = replace(bill_pusher, batch=3, concurrency=1)

    def time_left() -> float:  # GIVEN time for the first page's 3 creates only
        creates = sum(request == "POST /billing/bills" for request in transport.requests)
        return 300.0 if creates < 3 else 0.0

    report = paged.push_pending(time_left=time_left)
    # THEN the second page is read and counted, not started
    assert (report.results, report.not_reached) == ({"created": 3}, 2)
    # AND the next run pushes what is left
    assert run(paged) == {"created": 2}
    assert len(sandbox.state()["bills"]) == 5


# --- outside payments -------------------------------------------------------------------------------


def test_cash_reaches_moment_as_the_cumulative_amount_paid_on_top_of_moments_own_payments(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, member: str, transport: InFlight
) -> None:
    bill = raise_bill(harness)
    run(bill_pusher)
    # GIVEN a partial payment at Moment (reconciled), then cash at the counter
    pay_at_moment(sandbox, harness, bill, 20000)
    assert harness.ledger.get_bill(bill) is not None and sync_state(head(harness, bill)) == "synced"
    cash(harness, bill, "cash-1", 30000)
    # WHEN pushed
    assert run(bill_pusher) == {"pushed": 1}
    # THEN Moment counts both once, and says which outside payments it holds
    at_moment = on_moment(sandbox)
    assert (at_moment["amount_paid"], at_moment["amount_remaining"]) == (50000, 70000)
    assert at_moment["metadata"][OUTSIDE_PAID_KEY] == "30000"
    stored = head(harness, bill)
    assert (stored["outside_booked"], stored["pushed_amount_paid"], sync_state(stored)) == (
        30000,
        50000,
        "synced",
    )
    assert len(patches(transport)) == 1


def test_a_moment_payment_the_ledger_has_not_seen_is_kept_not_erased(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, member: str
) -> None:
    bill = raise_bill(harness)
    run(bill_pusher)
    pay_at_moment(sandbox, harness, bill, 20000, deliver=False)  # its webhook is still on its way
    cash(harness, bill, "cash-1", 30000)
    run(bill_pusher)
    assert on_moment(sandbox)["amount_paid"] == 50000  # max(Moment's 20000, the ledger's 0) + 30000


def test_a_moment_payment_alone_never_causes_a_patch(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, member: str, transport: InFlight
) -> None:
    bill = raise_bill(harness)
    cash(harness, bill, "cash-1", 10000)
    run(bill_pusher)
    transport.requests.clear()
    pay_at_moment(sandbox, harness, bill, 5000)
    # A bill with outside payments is read again (a PATCH may have overwritten this payment), no more
    assert run(bill_pusher) == {"in_sync": 1}
    assert patches(transport) == []
    assert on_moment(sandbox)["amount_paid"] == head(harness, bill)["amount_paid"] == 15000


def test_a_patch_whose_answer_was_lost_is_never_counted_twice(
    harness: LedgerHarness,
    bill_pusher: BillPusher,
    sandbox: MomentSandbox,
    member: str,
    transport: InFlight,
    clock: list[float],
) -> None:
    bill = raise_bill(harness)
    run(bill_pusher)
    cash(harness, bill, "cash-1", 30000)

    # GIVEN the PATCH lands at Moment and its answer is lost, on every attempt
    transport.after_send = lose_patch_answers
    assert run(bill_pusher) == {"failed": 1}
    assert len(head(harness, bill)["push_intents"]) == 1  # it may have landed: the intent stays open
    assert on_moment(sandbox)["amount_paid"] == 30000
    # WHEN the next run comes, with another cash payment and a Moment payment meanwhile
    transport.after_send = None
    cash(harness, bill, "cash-2", 5000)
    pay_at_moment(sandbox, harness, bill, 1000)
    clock[0] += 3600
    assert run(bill_pusher) == {"pushed": 1}
    # THEN Moment counts the first cash payment once (not 30000 twice), the second once, its own once
    assert on_moment(sandbox)["amount_paid"] == 36000
    stored = head(harness, bill)
    assert ("push_intents" not in stored, stored["outside_booked"]) == (True, 35000)


def test_a_patch_that_never_left_drops_its_intent(
    harness: LedgerHarness,
    bill_pusher: BillPusher,
    sandbox: MomentSandbox,
    member: str,
    transport: InFlight,
    clock: list[float],
) -> None:
    bill = raise_bill(harness)
    run(bill_pusher)
    cash(harness, bill, "cash-1", 30000)

    def refuse(request: httpx.Request) -> None:
        if request.method == "PATCH":
            raise httpx.ConnectError("no route", request=request)

    transport.before_send = refuse
    assert run(bill_pusher) == {"failed": 1}
    assert "push_intents" not in head(harness, bill) or head(harness, bill)["push_intents"] == []
    transport.before_send = None
    clock[0] += 3600
    assert run(bill_pusher) == {"pushed": 1}
    assert on_moment(sandbox)["amount_paid"] == 30000


def test_a_moment_payment_overwritten_inside_the_push_window_is_put_back_in_the_same_run(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, member: str, transport: InFlight
) -> None:
    bill = raise_bill(harness)
    run(bill_pusher)
    cash(harness, bill, "cash-1", 30000)

    # GIVEN a payment lands at Moment, and is reconciled, between the pusher's read and its PATCH
    def pay_first(request: httpx.Request) -> None:
        if request.method == "PATCH" and not patches(transport)[1:]:
            pay_at_moment(sandbox, harness, bill, 7000)

    transport.before_send = pay_first
    # WHEN pushed
    assert run(bill_pusher) == {"pushed": 1}
    # THEN the PATCH overwrote it, the re-read saw it, and a second PATCH put it back
    assert on_moment(sandbox)["amount_paid"] == 37000
    assert len(patches(transport)) == 2
    assert sync_state(head(harness, bill)) == "synced"


def test_a_moment_payment_reconciled_between_the_re_read_and_the_booking_never_announces_synced(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, member: str, transport: InFlight
) -> None:
    bill = raise_bill(harness)
    run(bill_pusher)
    cash(harness, bill, "cash-1", 30000)
    stream = ledger_stream(harness.dynamodb, harness.ledger_name)
    sync_state_changed(stream)  # read past what came before: what the pipe publishes from here on

    # GIVEN a payment lands at Moment, and is reconciled, after the re-read that decides the booking
    paid: list[int] = []

    def pay_after_the_re_read(request: httpx.Request) -> None:
        if request.method == "GET" and len(patches(transport)) == 1 and not paid:
            paid.append(7000)
            pay_at_moment(sandbox, harness, bill, 7000)

    transport.after_send = pay_after_the_re_read
    # WHEN pushed: the PATCH lands, the booking is written, the bill stays pending
    assert run(bill_pusher) == {"pushed": 1}
    assert paid and sync_state(head(harness, bill)) == "pending"
    # THEN the stream announced `pending` once, never `synced` for a bill still in the pusher's list
    assert [(old, new) for _id, old, new in sync_state_changed(stream)] == [("synced", "pending")]
    # AND the next run books it: `synced` once
    transport.after_send = None
    assert run(bill_pusher) == {"in_sync": 1}
    assert [(old, new) for _id, old, new in sync_state_changed(stream)] == [("pending", "synced")]
    assert on_moment(sandbox)["amount_paid"] == head(harness, bill)["amount_paid"] == 37000


# --- blocked: what Moment's reference does not say it takes -----------------------------------------


def test_cash_on_a_bill_moment_has_settled_is_blocked_not_sent(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, member: str, transport: InFlight
) -> None:
    bill = raise_bill(harness)
    run(bill_pusher)
    pay_at_moment(sandbox, harness, bill, DUE)  # paid in full at Moment
    cash(harness, bill, "cash-1", 10000)  # and again at the counter
    transport.requests.clear()
    assert run(bill_pusher) == {"blocked": 1}
    assert patches(transport) == []
    stored = head(harness, bill)
    assert sync_state(stored) == "blocked"
    assert "is paid" in stored["push_blocked"]
    assert on_moment(sandbox)["amount_paid"] == DUE


@pytest.mark.parametrize(
    ("overpayment_allowed", "result", "amount_paid"), [(False, "blocked", 0), (True, "pushed", 130000)]
)
def test_cash_above_amount_due_is_sent_only_when_moments_payment_rules_allow_overpayment(
    harness: LedgerHarness,
    bill_pusher: BillPusher,
    sandbox: MomentSandbox,
    member: str,
    transport: InFlight,
    overpayment_allowed: bool,
    result: str,
    amount_paid: int,
) -> None:
    sandbox.configure(bill_overpayment_allowed=overpayment_allowed, bill_overpaid_patch="accept")
    bill = raise_bill(harness)
    run(bill_pusher)
    cash(harness, bill, "cash-1", 130000)
    assert run(bill_pusher) == {result: 1}
    assert on_moment(sandbox)["amount_paid"] == amount_paid
    assert len(patches(transport)) == (1 if overpayment_allowed else 0)


# --- voids ------------------------------------------------------------------------------------------


def test_a_void_sends_pending_cash_first_then_voids(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, member: str, transport: InFlight
) -> None:
    bill = raise_bill(harness)
    run(bill_pusher)
    cash(harness, bill, "cash-1", 40000)
    bill_service.void_bill(harness.ledger, bill.ref, NOW)
    transport.requests.clear()
    assert run(bill_pusher) == {"voided": 1}
    moment_id = head(harness, bill)["moment_id"]
    assert [r for r in transport.requests if not r.startswith("GET")] == [
        f"PATCH /billing/bills/{moment_id}",
        f"POST /billing/bills/{moment_id}/void",
    ]
    at_moment = on_moment(sandbox)
    assert (at_moment["status"], at_moment["amount_paid"]) == ("voided", 40000)
    stored = head(harness, bill)
    assert "voided_at_moment" in stored and sync_state(stored) == "synced"


def test_a_bill_voided_before_moment_had_it_is_never_created(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, member: str, transport: InFlight
) -> None:
    bill = raise_bill(harness)
    bill_service.void_bill(harness.ledger, bill.ref, NOW)
    assert run(bill_pusher) == {"voided": 1}
    assert sandbox.state()["bills"] == []
    assert not any(request.startswith("POST /billing/bills") for request in transport.requests)
    assert sync_state(head(harness, bill)) == "synced"


def test_a_bill_voided_before_moment_had_it_never_waits_for_its_owner(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, transport: InFlight
) -> None:
    """Found by the simulation: a bill raised on an owner Moment lacks (here never pushed; there an
    account in conflict) and voided waited for that owner for ever, `pending` with no error or metric,
    though a bill Moment never had needs nothing of its owner: one GET by reference settles it."""
    harness.open_customer("UCR1")  # in the ledger, never created at Moment
    bill = raise_bill(harness)
    bill_service.void_bill(harness.ledger, bill.ref, NOW)
    assert run(bill_pusher) == {"voided": 1}
    assert sandbox.state()["bills"] == [] and sandbox.state()["customers"] == []
    assert [r for r in transport.requests if not r.startswith("GET")] == []
    assert sync_state(head(harness, bill)) == "synced"


def test_a_void_moment_refuses_is_retried_and_shows(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, member: str, clock: list[float]
) -> None:
    sandbox.configure(refuse_void_with_payments=True)
    bill = raise_bill(harness)
    run(bill_pusher)
    pay_at_moment(sandbox, harness, bill, 100)
    bill_service.void_bill(harness.ledger, bill.ref, NOW)
    assert run(bill_pusher) == {"failed": 1}
    stored = head(harness, bill)
    assert "cannot be voided" in stored["last_push_error"] and "push_shard" in stored
    sandbox.configure(refuse_void_with_payments=False)
    clock[0] += 3600
    assert run(bill_pusher) == {"voided": 1}
    assert on_moment(sandbox)["status"] == "voided"


def test_a_bill_voided_at_moment_but_open_in_the_ledger_is_a_conflict(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, moment: MomentClient, member: str
) -> None:
    bill = raise_bill(harness)
    run(bill_pusher)
    moment.void_bill("FEE-2026")  # someone voided it on Moment's dashboard
    cash(harness, bill, "cash-1", 100)
    assert run(bill_pusher) == {"conflict": 1}
    assert "voided" in head(harness, bill)["push_conflict"]


@pytest.mark.parametrize("webhook_first", [True, False], ids=["webhook-before-patch", "webhook-late"])
def test_a_patch_moment_ignores_on_a_bill_paid_inside_the_window_is_blocked_never_booked(
    harness: LedgerHarness,
    bill_pusher: BillPusher,
    sandbox: MomentSandbox,
    member: str,
    transport: InFlight,
    clock: list[float],
    webhook_first: bool,
) -> None:
    # GIVEN a Moment that answers 200 to a PATCH of a paid bill and leaves amount_paid as it was
    sandbox.configure(paid_bill_patch="ignore")
    bill = raise_bill(harness)
    run(bill_pusher)
    cash(harness, bill, "cash-1", 30000)
    paid: list[dict[str, Any]] = []

    # and the bill is paid in full at Moment between the pusher's read and its PATCH
    def pay_first(request: httpx.Request) -> None:
        if request.method == "PATCH" and not paid:
            paid.append(sandbox.pay(bill=bill.ref, amount=DUE))
            if webhook_first:
                harness.receive(paid[0]["webhook_id"], json.dumps(paid[0]["event"]).encode())
                assert harness.invoke(harness.next_batch()) == []

    transport.before_send = pay_first
    # WHEN pushed
    assert run(bill_pusher) == {"blocked": 1}
    # THEN the cash is not at Moment, and the ledger never books it as if it were
    assert on_moment(sandbox)["amount_paid"] == DUE
    stored = head(harness, bill)
    assert (sync_state(stored), int(stored.get("outside_booked", 0))) == ("blocked", 0)
    assert "with amount_paid 120000 (paid): the outside payments were not taken" in stored["push_blocked"]

    # and it stays blocked: the late webhook and the hourly look again change nothing
    transport.before_send = None
    if not webhook_first:
        harness.receive(paid[0]["webhook_id"], json.dumps(paid[0]["event"]).encode())
        assert harness.invoke(harness.next_batch()) == []
    clock[0] += 3601
    assert run(bill_pusher) == {"blocked": 1}
    assert len(patches(transport)) == 1
    stored = head(harness, bill)
    assert (sync_state(stored), int(stored.get("outside_booked", 0))) == ("blocked", 0)
    assert (stored["amount_paid"], on_moment(sandbox)["amount_paid"]) == (DUE + 30000, DUE)
    assert "from a PATCH it answered without taking its amount_paid" in stored["push_blocked"]
