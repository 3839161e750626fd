"""Probes of the bill money path from outside (a hostile reviewer's): the real BillPusher and MomentClient
against the Moment sandbox over loopback HTTP, the ledger in moto, Moment's payments through the real
reconciler. Each test names the invariant it attacks; a defect found and not fixed here is xfail(strict)."""

from __future__ import annotations

import json
from typing import Any

import httpx
from integration.test_time_budgets import ClockedContext

import balance_pusher_handler
import daily_reconcile_handler
from local_stack.lambda_context import LocalLambdaContext
from moment_sandbox import MomentSandbox
from moment_sync.bill_pusher import BillPusher
from moment_sync.ledger import bill_service
from moment_sync.ledger.sync import sync_state
from moment_sync.moment_client import MomentClient
from moment_sync.pusher import PUSHER_LEASE, BalancePusher
from moment_sync.reconcile_report import DailyCheck
from support.ledger import LedgerHarness
from support.pushers import (
    InFlight,
    cash,
    head,
    lose_patch_answers,
    on_moment,
    pay_at_moment,
    raise_bill,
    run,
)


def test_a_moment_payment_overwritten_in_the_push_window_whose_webhook_comes_late_is_put_back(
    harness: LedgerHarness,
    bill_pusher: BillPusher,
    sandbox: MomentSandbox,
    member: str,
    transport: InFlight,
    clock: list[float],
) -> None:
    """Invariant 1 (never lost): a payment Moment took stays counted at Moment. The PATCH is an absolute
    amount_paid; a Moment payment landing between the pusher's read and its PATCH is overwritten. When
    its webhook is reconciled only after the bill was booked, nothing made the bill pending again."""
    bill = raise_bill(harness)
    run(bill_pusher)
    cash(harness, bill, "cash-1", 30000)
    late: list[dict[str, Any]] = []

    # GIVEN a payment lands at Moment between the read and the PATCH; its webhook is still on its way
    def pay_first(request: httpx.Request) -> None:
        if request.method == "PATCH" and not late:
            late.append(sandbox.pay(bill=bill.ref, amount=7000))

    transport.before_send = pay_first
    assert run(bill_pusher) == {"pushed": 1}
    transport.before_send = None
    assert on_moment(sandbox)["amount_paid"] == 30000  # the absolute PATCH overwrote Moment's 7000
    # WHEN its webhook arrives and is reconciled, and the pusher runs again later
    harness.receive(late[0]["webhook_id"], json.dumps(late[0]["event"]).encode())
    assert harness.invoke(harness.next_batch()) == []
    assert head(harness, bill)["amount_paid"] == 37000
    clock[0] += 3600
    run(bill_pusher)
    # THEN Moment counts the customer's payment again (or at least the bill is not "synced" while it does not)
    assert on_moment(sandbox)["amount_paid"] == 37000
    assert sync_state(head(harness, bill)) == "synced"


def _deliver(harness: LedgerHarness, webhook_id: str, event: dict[str, Any]) -> None:
    harness.receive(webhook_id, json.dumps(event).encode())
    assert harness.invoke(harness.next_batch()) == []


def test_one_application_id_for_a_bill_and_then_a_balance_changes_only_the_bill(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, member: str
) -> None:
    """Invariant 2 across models: one Moment application id changes at most one bill or balance, once."""
    bill = raise_bill(harness)
    run(bill_pusher)
    paid = sandbox.pay(bill=bill.ref, amount=5000)
    _deliver(harness, paid["webhook_id"], paid["event"])
    balance = harness.open_customer("UCR1")
    before = harness.head(balance)["balance"]
    # The same data.id, now naming the customer's balance (no bill_id)
    forged = json.loads(json.dumps(paid["event"]))
    forged["id"] = "evt_probe2samebalance000"
    forged["data"].pop("bill_id")
    forged["data"]["customer_id"] = member
    _deliver(harness, "msg_probe2samebalance00000", forged)
    assert harness.head(balance)["balance"] == before
    assert head(harness, bill)["amount_paid"] == 5000
    event = harness.event("msg_probe2samebalance00000")
    assert (event["status"], event.get("reason")) == ("parked", "application_conflict")


def test_one_application_id_for_a_balance_and_then_a_bill_changes_only_the_balance(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, member: str
) -> None:
    bill = raise_bill(harness)
    run(bill_pusher)
    balance = harness.open_customer("UCR1")
    paid = sandbox.pay(customer="UCR1", amount=5000)
    _deliver(harness, paid["webhook_id"], paid["event"])
    after_first = harness.head(balance)["balance"]
    forged = json.loads(json.dumps(paid["event"]))
    forged["id"] = "evt_probe2samebill0000000"
    forged["data"]["bill_id"] = head(harness, bill)["moment_id"]
    _deliver(harness, "msg_probe2samebill000000000", forged)
    assert harness.head(balance)["balance"] == after_first
    assert head(harness, bill).get("amount_paid", 0) == 0
    event = harness.event("msg_probe2samebill000000000")
    assert (event["status"], event.get("reason")) == ("parked", "application_conflict")


def test_a_void_while_a_patch_intent_is_open_sends_nothing_twice_and_voids(
    harness: LedgerHarness,
    bill_pusher: BillPusher,
    sandbox: MomentSandbox,
    member: str,
    transport: InFlight,
    clock: list[float],
) -> None:
    """Never applied twice: cash whose PATCH landed with its answer lost, then a void and a Moment payment
    before the next run: Moment ends voided holding the cash once and its own payment once."""
    bill = raise_bill(harness)
    run(bill_pusher)
    cash(harness, bill, "cash-1", 30000)

    transport.after_send = lose_patch_answers
    assert run(bill_pusher) == {"failed": 1}
    transport.after_send = None
    pay_at_moment(sandbox, harness, bill, 2000)
    bill_service.void_bill(harness.ledger, bill.ref, clock[0])
    clock[0] += 3600
    assert run(bill_pusher) == {"voided": 1}
    at_moment = on_moment(sandbox)
    assert (at_moment["status"], at_moment["amount_paid"]) == ("voided", 32000)
    stored = head(harness, bill)
    assert sync_state(stored) == "synced" and "push_intents" not in stored


def test_a_void_racing_the_push_between_its_read_and_its_patch_keeps_every_payment(
    harness: LedgerHarness,
    bill_pusher: BillPusher,
    sandbox: MomentSandbox,
    member: str,
    transport: InFlight,
    clock: list[float],
) -> None:
    """The merchant voids while the pusher's PATCH is in flight and a Moment payment lands in the window."""
    bill = raise_bill(harness)
    run(bill_pusher)
    cash(harness, bill, "cash-1", 30000)
    late: list[dict[str, Any]] = []

    def race(request: httpx.Request) -> None:
        if request.method == "PATCH" and not late:
            late.append(sandbox.pay(bill=bill.ref, amount=4000))
            bill_service.void_bill(harness.ledger, bill.ref, clock[0])

    transport.before_send = race
    run(bill_pusher)
    transport.before_send = None
    _deliver(harness, late[0]["webhook_id"], late[0]["event"])  # parked: the bill is voided in the ledger
    for _ in range(3):
        clock[0] += 3600
        run(bill_pusher)
    at_moment = on_moment(sandbox)
    # The PATCH overwrote Moment's 4000 and the bill was voided before its webhook: both sides show the
    # cash alone, and the 4000 Moment took is not lost: parked `bill_voided` (alarmed) for a refund
    stored = head(harness, bill)
    assert (at_moment["status"], at_moment["amount_paid"]) == ("voided", 30000)
    assert (stored["status"], stored["amount_paid"], sync_state(stored)) == ("voided", 30000, "synced")
    event = harness.event(late[0]["webhook_id"])
    assert (event["status"], event.get("reason")) == ("parked", "bill_voided")


def test_a_bill_payment_before_the_bill_is_linked_is_parked_then_linked_and_applied_once(
    harness: LedgerHarness,
    bill_pusher: BillPusher,
    sandbox: MomentSandbox,
    member: str,
    transport: InFlight,
    clock: list[float],
) -> None:
    """Never silently stuck: the create landed, its answer lost each time; a payment's webhook comes first."""
    bill = raise_bill(harness)

    def lose(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path == "/billing/bills":
            raise httpx.ReadTimeout("answer lost", request=request)

    transport.after_send = lose
    assert run(bill_pusher) == {"failed": 1}
    transport.after_send = None
    assert "moment_id" not in head(harness, bill)
    paid = sandbox.pay(bill=bill.ref, amount=6000)
    _deliver(harness, paid["webhook_id"], paid["event"])
    assert harness.event(paid["webhook_id"])["status"] in ("parked", "applied")
    clock[0] += 3600
    run(bill_pusher)  # adopts Moment's bill (the same reference, owner, amount, currency)
    assert head(harness, bill)["moment_id"] == on_moment(sandbox)["id"]
    # THEN linking it re-drove at once the payment parked unmatched that names it (as the balance
    # pusher's links do), not after the re-drive's backoff: applied, once
    event = harness.event(paid["webhook_id"])
    assert event["status"] == "applied", event.get("reason")
    assert head(harness, bill)["amount_paid"] == 6000


def test_a_bill_push_sends_no_patch_the_runs_time_budget_cannot_fit(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, member: str, transport: InFlight
) -> None:
    """Never killed mid-call: a bill push, like a balance push, uses the run's bounded client
    (MomentClient.within), so once the run's time cannot fit another attempt nothing more is sent
    (MomentOutOfTime, before the request: the intent is dropped), instead of a PATCH that Lambda's
    timeout could kill between its landing and its booking."""
    bill = raise_bill(harness)
    run(bill_pusher)
    cash(harness, bill, "cash-1", 30000)
    budget = [300.0]

    def time_runs_out(request: httpx.Request) -> None:
        if request.method == "GET":  # the push's read: after it the run has 5 s, less than one attempt
            budget[0] = 5.0

    transport.before_send = time_runs_out
    transport.requests.clear()
    report = bill_pusher.push_pending(time_left=lambda: budget[0])
    assert report.results == {"failed": 1}
    assert [r for r in transport.requests if r.startswith("PATCH")] == []
    stored = head(harness, bill)
    assert stored.get("push_intents", []) == [] and "next_push_at" in stored


def test_a_lease_left_by_a_killed_push_run_holds_off_bills_until_it_expires_then_the_next_run_pushes(
    harness: LedgerHarness,
    bill_pusher: BillPusher,
    pusher: BalancePusher,
    sandbox: MomentSandbox,
    clock: list[float],
) -> None:
    """Never applied twice, never stuck: a run killed while holding the pusher's lease (inside the bill
    pusher's second round) keeps every other run out until the lease expires, and no longer."""
    harness.open_customer("UCR1")  # a member on the bill model, not on Moment yet: a second round
    bill = raise_bill(harness)
    cash(harness, bill, "cash-1", 1000)
    leases = harness.ledger.leases()
    killed = leases.acquire(PUSHER_LEASE, "killed-run", now=clock[0], expires_at=clock[0] + 270)
    assert killed is not None

    def scheduled_run() -> dict[str, Any]:
        context = LocalLambdaContext("pusher", timeout_seconds=240)
        return balance_pusher_handler.lambda_handler({}, context, pusher, leases, bill_pusher)

    assert scheduled_run() == {"skipped": "another push run holds the lease"}
    assert sandbox.state()["bills"] == []
    clock[0] += 271
    report = scheduled_run()
    assert (report["results"], report["bills"]["results"]) == ({"created": 1}, {"created": 1})
    assert on_moment(sandbox)["amount_paid"] == 1000
    assert sync_state(head(harness, bill)) == "synced"
    assert leases.current(PUSHER_LEASE).get("holder") is None  # given back


def test_the_daily_checks_pass_meets_bills_and_balances_once_each_across_runs_and_flags_a_bill_drift(
    harness: LedgerHarness,
    bill_pusher: BillPusher,
    pusher: BalancePusher,
    sandbox: MomentSandbox,
    member: str,
    moment: MomentClient,
    transport: InFlight,
    clock: list[float],
) -> None:
    """Never silently stuck: the daily check's resumable pass (its cursor in the lease, across runs)
    compares every linked balance and bill exactly once, and reports a bill Moment shows otherwise."""
    for ref in ("UCR2", "UCR3"):
        harness.ledger.request_first_push(harness.open_customer(ref), clock[0])
    pusher.push_pending(time_left=lambda: 300)
    bills = [raise_bill(harness, f"FEE-{year}") for year in (2024, 2025, 2026)]
    cash(harness, bills[0], "cash-1", 1000)
    run(bill_pusher)
    # A payment Moment took whose webhook never came: Moment shows more paid than the ledger, synced
    sandbox.pay(bill="FEE-2025", amount=500)

    def slow_moment(request: httpx.Request) -> None:
        clock[0] += 5.0

    transport.before_send = slow_moment
    check = DailyCheck(
        harness.ledger,
        moment,
        now=harness.clock,
        sleep=lambda seconds: clock.__setitem__(0, clock[0] + seconds),
    )
    transport.requests.clear()
    results = []
    for _ in range(6):
        context = ClockedContext(clock, 45.0)
        results.append(daily_reconcile_handler.lambda_handler({}, context, check))
        assert context.ended_in_time()
        clock[0] += 900
        if results[-1]["pass_completed"]:
            break
    assert results[0]["stopped_early"] and results[-1]["pass_completed"]
    read = [request for request in transport.requests if request.startswith("GET")]
    assert len(read) == len(set(read)) == 6  # three customers, three bills: each once
    assert sum(1 for request in read if "/billing/bills/" in request) == 3
    assert sum(result["checked"] for result in results) == 6
    assert sum(result["unexplained"] for result in results) == 1


def test_a_time_budget_running_out_between_a_bill_patch_and_its_booking_neither_loses_nor_doubles(
    harness: LedgerHarness,
    bill_pusher: BillPusher,
    sandbox: MomentSandbox,
    member: str,
    transport: InFlight,
    clock: list[float],
) -> None:
    """The PATCH lands; the run's time is gone before the re-read (MomentOutOfTime): the intent stays
    open, the push is failed with its backoff, and the next run books it without sending the cash twice."""
    bill = raise_bill(harness)
    run(bill_pusher)
    cash(harness, bill, "cash-1", 30000)
    budget = [300.0]

    def time_runs_out(request: httpx.Request) -> None:
        if request.method == "PATCH":
            budget[0] = 5.0

    transport.before_send = time_runs_out
    assert bill_pusher.push_pending(time_left=lambda: budget[0]).results == {"failed": 1}
    transport.before_send = None
    stored = head(harness, bill)
    assert len(stored["push_intents"]) == 1 and on_moment(sandbox)["amount_paid"] == 30000
    cash(harness, bill, "cash-2", 2000)
    clock[0] += 3600
    transport.requests.clear()
    assert run(bill_pusher) == {"pushed": 1}
    assert on_moment(sandbox)["amount_paid"] == 32000
    stored = head(harness, bill)
    assert ("push_intents" not in stored, stored["outside_booked"], sync_state(stored)) == (
        True,
        32000,
        "synced",
    )


def test_one_application_id_again_for_the_same_bill_with_another_amount_is_parked_not_dropped(
    harness: LedgerHarness, bill_pusher: BillPusher, sandbox: MomentSandbox, member: str
) -> None:
    """Invariant 2: the same data.id with another amount is neither applied nor silently a duplicate."""
    bill = raise_bill(harness)
    run(bill_pusher)
    paid = sandbox.pay(bill=bill.ref, amount=5000)
    _deliver(harness, paid["webhook_id"], paid["event"])
    forged = json.loads(json.dumps(paid["event"]))
    forged["id"] = "evt_probe2otheramount0000"
    forged["data"]["amount"] = 6000
    _deliver(harness, "msg_probe2otheramount000000", forged)
    assert head(harness, bill)["amount_paid"] == 5000
    event = harness.event("msg_probe2otheramount000000")
    assert (event["status"], event.get("reason")) == ("parked", "application_conflict")


def test_a_moment_payment_settling_the_bill_inside_the_push_window_ends_blocked_with_nothing_lost(
    harness: LedgerHarness,
    bill_pusher: BillPusher,
    sandbox: MomentSandbox,
    member: str,
    transport: InFlight,
    clock: list[float],
) -> None:
    """Overpayment through a race: cash at the counter and the whole bill paid at Moment while the PATCH is
    in flight. Moment refuses a PATCH of a paid bill; the ledger keeps the excess visible and the bill
    shows `blocked` (alarmed) for an operator to refund, never a silent `synced` nor a lost payment."""
    bill = raise_bill(harness)
    run(bill_pusher)
    cash(harness, bill, "cash-1", 30000)
    late: list[dict[str, Any]] = []

    def settle_first(request: httpx.Request) -> None:
        if request.method == "PATCH" and not late:
            late.append(sandbox.pay(bill=bill.ref, amount=120000))

    transport.before_send = settle_first
    run(bill_pusher)
    transport.before_send = None
    _deliver(harness, late[0]["webhook_id"], late[0]["event"])
    for _ in range(2):
        clock[0] += 7200
        run(bill_pusher)
    at_moment = on_moment(sandbox)
    assert (at_moment["status"], at_moment["amount_paid"]) == ("paid", 120000)
    stored = head(harness, bill)
    assert (stored["amount_paid"], stored["amount_paid_moment"], stored["outside_paid"]) == (
        150000,
        120000,
        30000,
    )
    assert bill_service.read_bill(harness.ledger, bill)["amount_overpaid"] == 30000
    assert sync_state(stored) == "blocked" and stored.get("push_blocked")
