"""A push run fans out one worker per shard (docs/pusher.md#fan-out), against the sandbox over HTTP and
the Ledger table in moto: a late duplicate of a worker's invocation pushes nothing twice, a stale read of
the push state (ABA) can write nothing, two shards' workers create a new customer once, and a 429 one
worker meets holds every worker off; for bills too (their push sequence, their late duplicate)."""

from __future__ import annotations

import threading
import time
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from integration.test_balance_pusher import InFlight, charge
from moment_sandbox import MomentSandbox
from moment_sync.adapters.lambda_workers import LambdaWorkers
from moment_sync.adapters.lease import MOMENT_BACKOFF, DynamoBackoff, DynamoLeases
from moment_sync.leases import LEASE_MARGIN_SECONDS
from moment_sync.ledger.bills import BillRef
from moment_sync.ledger.model import PUSH_SHARDS, BalanceKind, BalanceRef, Entry, EntryKind
from moment_sync.ledger.sync import Booking
from moment_sync.moment_client import MomentClient
from moment_sync.push_fanout import FINISHED_AT, FanOutFailed, dispatch, shards_behind
from moment_sync.pusher import BalancePusher, customer_claim, shard_lease
from support import pushers
from support.ledger import LedgerHarness
from support.pushers import balance_pusher, cash, head, invoke_pusher, raise_bill, timeout_of
from support.webhooks import NOW

pusher = pushers.pusher
member = pushers.member


# sandbox, transport, moment, clock, harness, leases: tests/integration/conftest.py (support/pushers.py)
@pytest.fixture
def backoff(harness: LedgerHarness) -> DynamoBackoff:
    return DynamoBackoff(harness.dynamodb, harness.ledger.table_name, cache_seconds=0)


def worker(
    harness: LedgerHarness, moment: MomentClient, backoff: DynamoBackoff | None = None
) -> BalancePusher:
    """One worker's pusher, as runtime.balance_pusher builds it in its own execution environment."""
    return balance_pusher(harness, moment, concurrency=2, leases=harness.ledger.leases(), backoff=backoff)


def refs_in_shard(shard: int, prefix: str, count: int) -> list[str]:
    found: list[str] = []
    number = 0
    while len(found) < count:
        ref = f"{prefix}{number}"
        if BalanceRef(BalanceKind.CUSTOMER, ref).push_shard == f"push#{shard}":
            found.append(ref)
        number += 1
    return found


def writes(transport: InFlight) -> list[str]:
    return [request for request in transport.requests if not request.startswith("GET")]


# --- the push state's sequence (ABA) -------------------------------------------------------------------


def test_a_stale_read_of_the_push_state_can_write_nothing_after_pushes_brought_it_back(
    harness: LedgerHarness,
) -> None:
    balance = harness.open_customer("UCR1", moment_id="bcus_1")
    charge(harness, balance, "inv-1", 100)
    assert harness.ledger.record_push(balance, harness.head(balance), 100, NOW)
    # GIVEN a worker read the push state (P = 100) and stalled
    stale = harness.head(balance)
    # WHEN meanwhile two pushes are booked: 200, then 100 again (the same last pushed value)
    charge(harness, balance, "inv-2", 100)
    assert harness.ledger.record_push(balance, harness.head(balance), 200, NOW + 1)
    harness.ledger.apply_entry(
        balance, _credit("cr-1", -100), "ZAR"
    )  # the charge credited back: the ledger is 100 again
    assert harness.ledger.record_push(balance, harness.head(balance), 100, NOW + 2)
    assert harness.head(balance)["pushed_balance"] == stale["pushed_balance"] == 100
    # THEN the stale worker can neither record an intent nor book a push: the sequence moved on
    with pytest.raises(ClientError, match="ConditionalCheckFailed"):
        harness.ledger.record_intent(balance, stale, 300)
    assert harness.ledger.record_push(balance, stale, 300, NOW + 3) is Booking.REFUSED
    head = harness.head(balance)
    assert (head["pushed_balance"], head["push_seq"], head.get("push_intents")) == (100, 3, None)


def _credit(entry_id: str, amount: int) -> Any:

    return Entry(
        EntryKind.ADJUSTMENT, amount, entry_id, {"reason": "credited back"}, "2026-09-21T00:00:00.000Z"
    )


# --- a delayed duplicate of a worker's invocation ------------------------------------------------------


def test_a_late_duplicate_of_a_shards_worker_pushes_no_balance_twice(
    harness: LedgerHarness,
    moment: MomentClient,
    transport: InFlight,
    leases: DynamoLeases,
    clock: list[float],
) -> None:
    shard = 3
    balances = [harness.open_customer(ref) for ref in refs_in_shard(shard, "UCR", 3)]
    elsewhere = harness.open_customer(refs_in_shard(5, "OTH", 1)[0])
    for number, balance in enumerate([*balances, elsewhere]):
        charge(harness, balance, f"inv-{number}", 100)
    # GIVEN the first worker of shard 3 ran: it created its shard's balances, not the other shard's
    first = invoke_pusher(worker(harness, moment), {"shard": shard})
    assert (first["results"], first["shards"]) == ({"created": 3}, [shard])
    assert len(writes(transport)) == 3
    assert "holder" not in (leases.current(shard_lease(shard)) or {})
    # AND the balances changed again: the next scheduled run's worker pushes them
    for number, balance in enumerate(balances):
        charge(harness, balance, f"again-{number}", 50)
    clock[0] += timeout_of("BalancePusherFunction") + LEASE_MARGIN_SECONDS + 1  # the first lease long expired
    duplicates: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    once = threading.Lock()

    def duplicate_arrives(request: httpx.Request) -> None:
        if once.acquire(blocking=False):  # WHEN the first run's invocation is delivered again, late
            held.append(leases.current(shard_lease(shard)) or {})
            duplicates.append(invoke_pusher(worker(harness, moment), {"shard": shard}))

    transport.before_send = duplicate_arrives
    before = len(transport.requests)
    later = invoke_pusher(worker(harness, moment), {"shard": shard})
    # THEN the duplicate, arriving while the later worker holds the shard, does nothing
    assert duplicates == [{"skipped": "another push run holds the lease", "shard": shard}]
    assert later["results"] == {"pushed": 3}
    patches = [request for request in transport.requests[before:] if request.startswith("PATCH")]
    assert len(patches) == 3 and len(set(patches)) == 3  # one PATCH per balance
    # AND the shard's lease outlived the worker's timeout from the moment it was taken
    assert held[0]["expires_at"] >= clock[0] + timeout_of("BalancePusherFunction") + LEASE_MARGIN_SECONDS - 1
    # AND delivered once more after everything finished, it finds its shard pushed: no Moment call
    transport.before_send = None
    before = len(transport.requests)
    assert invoke_pusher(worker(harness, moment), {"shard": shard})["results"] == {}
    assert transport.requests[before:] == []
    assert [harness.head(balance)["pushed_balance"] for balance in balances] == [150, 150, 150]
    # AND each worker left its shard's heartbeat for the dispatcher
    assert (leases.current(shard_lease(shard)) or {})["state"][FINISHED_AT] == int(clock[0])


def test_a_worker_invoked_with_a_shard_out_of_range_is_refused_clearly(
    harness: LedgerHarness, moment: MomentClient
) -> None:
    for shard in (PUSH_SHARDS, -1, "3", True):
        with pytest.raises(ValueError, match="shard must be a whole number from 0 to 7"):
            invoke_pusher(worker(harness, moment), {"shard": shard})


# --- composite creates across shards -------------------------------------------------------------------


def test_two_shards_workers_creating_accounts_of_a_new_customer_at_once_create_it_once(
    harness: LedgerHarness, moment: MomentClient, sandbox: MomentSandbox, transport: InFlight
) -> None:
    harness.open_customer("FAM1", balance_model="accounts")
    # FAM1-A hashes to shard 6, FAM1-B to shard 7: two workers, each its own process and pusher
    for ref in ("FAM1-A", "FAM1-B"):
        charge(harness, harness.open_account(ref, "FAM1"), "c-" + ref, 100)
    shards = sorted(int(BalanceRef(BalanceKind.ACCOUNT, r).push_shard[5:]) for r in ("FAM1-A", "FAM1-B"))
    assert shards == [6, 7]
    creates = threading.Barrier(2, timeout=5)
    racing = threading.Event()

    def slow_first_create(request: httpx.Request) -> None:
        # The first account create lingers at Moment, so the other worker's create comes meanwhile.
        if request.method == "POST" and not racing.is_set():
            racing.set()
            time.sleep(0.5)

    transport.before_send = slow_first_create
    results: dict[int, dict[str, Any]] = {}

    def run(shard: int) -> None:
        creates.wait()
        results[shard] = invoke_pusher(worker(harness, moment), {"shard": shard})

    threads = [threading.Thread(target=run, args=(shard,)) for shard in shards]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # THEN one Moment customer, both accounts under it, both linked in the ledger
    assert {shard: result["results"] for shard, result in results.items()} == {
        6: {"created": 1},
        7: {"created": 1},
    }
    [customer] = sandbox.state()["customers"]
    accounts = sandbox.state()["accounts"]
    assert sorted(account["external_reference"] for account in accounts) == ["FAM1-A", "FAM1-B"]
    assert {account["customer_id"] for account in accounts} == {customer["id"]}
    assert harness.head(BalanceRef(BalanceKind.CUSTOMER, "FAM1"))["moment_id"] == customer["id"]
    # AND the claim was given back
    assert "holder" not in (harness.ledger.leases().current(customer_claim("FAM1")) or {})


# --- Moment's 429 holds every worker off ---------------------------------------------------------------


def test_a_429_one_worker_meets_holds_every_worker_off_for_moments_retry_after(
    harness: LedgerHarness,
    moment: MomentClient,
    transport: InFlight,
    backoff: DynamoBackoff,
    leases: DynamoLeases,
    clock: list[float],
) -> None:
    [throttled] = [harness.open_customer(ref) for ref in refs_in_shard(1, "UCR", 1)]
    others = [harness.open_customer(ref) for ref in refs_in_shard(2, "OTH", 2)]
    for number, balance in enumerate([throttled, *others]):
        charge(harness, balance, f"inv-{number}", 100)
    transport.before_send = lambda request: httpx.Response(
        429, headers={"Retry-After": "120"}, json={"title": "Too Many Requests", "status": 429}
    )
    # GIVEN shard 1's worker met Moment's 429 (after its client's own retries), Retry-After 120 s
    assert invoke_pusher(worker(harness, moment, backoff), {"shard": 1})["results"] == {"failed": 1}
    stored = leases.current(MOMENT_BACKOFF) or {}
    assert float(stored["until"]) == NOW + 120
    transport.before_send = None
    # WHEN shard 2's worker runs inside that minute-and-a-bit: it starts no push, asks Moment nothing
    clock[0] = NOW + 119
    before = len(transport.requests)
    held_off = invoke_pusher(worker(harness, moment, backoff), {"shard": 2})
    assert (held_off["results"], held_off["not_reached"]) == ({}, 2)
    assert transport.requests[before:] == []
    # THEN once the back-off is over, it pushes them
    clock[0] = NOW + 121
    assert invoke_pusher(worker(harness, moment, backoff), {"shard": 2})["results"] == {"created": 2}
    # AND a shorter back-off never shortens a longer one already set
    backoff.hold_off(NOW + 30)
    assert float((leases.current(MOMENT_BACKOFF) or {})["until"]) == NOW + 120


# --- the dispatcher -----------------------------------------------------------------------------------


def test_the_dispatcher_starts_every_shard_even_when_one_fails_and_then_fails_the_run() -> None:
    started: list[int] = []

    def start(shard: int) -> None:
        if shard == 4:
            raise ConnectionError("Lambda unreachable")
        started.append(shard)

    with pytest.raises(FanOutFailed, match=r"shards 4 \(ConnectionError\)"):
        dispatch(start)
    assert started == [0, 1, 2, 3, 5, 6, 7]
    assert dispatch(started.append, shards=range(2)) == [0, 1]


def test_a_worker_is_started_as_an_asynchronous_invocation_with_its_shard() -> None:
    client = boto3.client("lambda", region_name="af-south-1")
    with Stubber(client) as stub:
        stub.add_response(
            "invoke",
            {"StatusCode": 202},
            {"FunctionName": "stack-BalancePusher", "InvocationType": "Event", "Payload": b'{"shard": 5}'},
        )
        LambdaWorkers(client, "stack-BalancePusher").start(5)
        stub.add_response("invoke", {"StatusCode": 200}, None)
        with pytest.raises(RuntimeError, match="Lambda answered 200 for shard 1's worker"):
            LambdaWorkers(client, "stack-BalancePusher").start(1)


def test_shards_whose_worker_has_not_finished_lately_are_behind(leases: DynamoLeases) -> None:
    for shard in range(PUSH_SHARDS):
        lease = leases.acquire(shard_lease(shard), "run", now=NOW, expires_at=NOW + 270)
        assert lease is not None
        if shard != 3:  # shard 3's worker never finished (killed, throttled, or its lease held)
            assert lease.save({FINISHED_AT: NOW})
        lease.release()
    assert shards_behind(leases, NOW + 600) == [3]
    assert shards_behind(leases, NOW + 901) == list(range(PUSH_SHARDS))


def test_a_worker_reads_its_shard_again_while_time_is_left_so_a_billing_run_is_not_capped_per_run(
    harness: LedgerHarness, moment: MomentClient, transport: InFlight
) -> None:
    balances = [harness.open_customer(ref) for ref in refs_in_shard(4, "UCR", 5)]
    for number, balance in enumerate(balances):
        charge(harness, balance, f"inv-{number}", 100)
    pusher = worker(harness, moment)
    pusher.batch = 2  # the index read 2 at a time (1,000 deployed)
    assert invoke_pusher(pusher, {"shard": 4})["results"] == {"created": 5}
    assert len(writes(transport)) == 5  # each once: no balance read again after its push


def test_a_worker_reads_on_past_a_page_of_its_deferred_balances_and_queries_only_its_shard(
    harness: LedgerHarness, moment: MomentClient, sandbox: MomentSandbox, clock: list[float]
) -> None:
    # GIVEN shard 4's oldest pending balances are 3 deferred ones (Moment applied a payment whose
    # webhook the ledger has not seen: pending, no backoff), more than a page of 2
    old = refs_in_shard(4, "OLD", 3)
    for number, ref in enumerate(old):
        charge(harness, harness.open_customer(ref), f"inv-{number}", 5000)
    assert invoke_pusher(worker(harness, moment), {"shard": 4})["results"] == {"created": 3}
    for number, ref in enumerate(old):
        clock[0] += 1
        sandbox.pay(customer=ref, amount=10)
        charge(harness, BalanceRef(BalanceKind.CUSTOMER, ref), f"more-{number}", 1, at=clock[0])
    # AND behind them 2 new balances of shard 4, and 2 of shard 5 (another worker's)
    for shard in (4, 5):
        for number, ref in enumerate(refs_in_shard(shard, "NEW", 2)):
            clock[0] += 1
            charge(harness, harness.open_customer(ref), f"new-{shard}-{number}", 100, at=clock[0])
    shards_read: list[str] = []

    def read(params: dict[str, Any], **_: Any) -> None:
        if params.get("IndexName") == "PendingPush":
            shards_read.append(params["ExpressionAttributeValues"][":shard"]["S"])

    harness.dynamodb.meta.events.register("before-parameter-build.dynamodb.Query", read)
    pusher = worker(harness, moment)
    pusher.batch = 2  # the index read 2 at a time (1,000 deployed)
    # WHEN shard 4's worker runs
    assert invoke_pusher(pusher, {"shard": 4})["results"] == {"deferred": 3, "created": 2}
    # THEN it read on past its deferred balances, and only its own shard's keys (balances, then bills)
    assert set(shards_read) == {"push#4", "billpush#4"}
    assert {balance.ref for _since, balance in harness.ledger.pending_pushes(clock[0])} == {
        *old,
        *refs_in_shard(5, "NEW", 2),
    }


# --- bills: the same sequence, the same late duplicate -------------------------------------------------


def bill_refs_in_shard(shard: int, prefix: str, count: int) -> list[str]:
    found: list[str] = []
    number = 0
    while len(found) < count:
        if BillRef(f"{prefix}{number}").push_shard == f"billpush#{shard}":
            found.append(f"{prefix}{number}")
        number += 1
    return found


def test_a_stale_read_of_a_bills_push_state_can_write_nothing_after_a_push_booked_in_the_same_millisecond(
    harness: LedgerHarness,
) -> None:
    harness.open_customer("UCR1", moment_id="bcus_1")
    bill = raise_bill(harness)
    harness.ledger.link_bill(bill, "bill_1")
    assert harness.ledger.record_bill_push(bill, head(harness, bill), 0, NOW)  # its create, booked
    cash(harness, bill, "cash-1", 30000)
    # GIVEN a worker read the push state (booked at NOW, no intent open) and stalled
    stale = head(harness, bill)
    # WHEN meanwhile another push of the cash is booked, stamped the same millisecond (another
    # execution environment's clock): the time booked and the open intents are as the stale worker read
    fresh = head(harness, bill)
    harness.ledger.record_bill_intent(bill, fresh, 30000)
    assert harness.ledger.record_bill_push(bill, head(harness, bill), 30000, NOW)
    booked = head(harness, bill)
    assert (booked["pushed_at"], booked.get("push_intents")) == (
        stale["pushed_at"],
        stale.get("push_intents"),
    )
    # THEN the stale worker can neither record an intent (so never PATCHes) nor book: the sequence moved on
    with pytest.raises(ClientError, match="ConditionalCheckFailed"):
        harness.ledger.record_bill_intent(bill, stale, 30000)
    assert harness.ledger.record_bill_push(bill, stale, 60000, NOW) is Booking.REFUSED
    booked = head(harness, bill)
    assert (booked["pushed_amount_paid"], booked["push_seq"], booked.get("push_intents")) == (30000, 2, None)


def test_a_read_from_before_an_intent_was_marked_ignored_cannot_book_its_outside_payments(
    harness: LedgerHarness,
) -> None:
    harness.open_customer("UCR1", moment_id="bcus_1")
    bill = raise_bill(harness)
    harness.ledger.link_bill(bill, "bill_1")
    assert harness.ledger.record_bill_push(bill, head(harness, bill), 0, NOW)
    cash(harness, bill, "cash-1", 30000)
    before_intent = head(harness, bill)
    harness.ledger.record_bill_intent(bill, before_intent, 30000)
    # GIVEN a worker read the bill with that intent open (its PATCH's landing unknown)
    stale = head(harness, bill)
    # WHEN the worker that sent it learns Moment ignored it (answered without taking the amount)
    harness.ledger.record_bill_patch_ignored(bill, before_intent, 0, "not taken", NOW + 1, NOW + 3600)
    # THEN the stale read, whose intent is not marked, cannot book its outside payments as at Moment
    assert harness.ledger.record_bill_push(bill, stale, 30000, NOW + 2) is Booking.REFUSED
    marked = head(harness, bill)
    assert (marked["push_intents"][0]["ignored"], marked["outside_booked"], marked["push_seq"]) == (
        True,
        0,
        2,
    )


def test_a_late_duplicate_of_a_shards_worker_pushes_no_bill_twice(
    harness: LedgerHarness,
    moment: MomentClient,
    transport: InFlight,
    sandbox: MomentSandbox,
    leases: DynamoLeases,
    clock: list[float],
    member: str,
) -> None:
    shard = 2
    bills = [raise_bill(harness, ref) for ref in bill_refs_in_shard(shard, "FEE", 3)]
    elsewhere = raise_bill(harness, bill_refs_in_shard(6, "OTH", 1)[0])
    # GIVEN the first worker of shard 2 ran: it created its shard's bills, not the other shard's
    first = invoke_pusher(worker(harness, moment), {"shard": shard})
    assert (first["bills"]["results"], first["shards"]) == ({"created": 3}, [shard])
    assert "push_shard" in head(harness, elsewhere)
    # AND cash was taken on each: the next scheduled run's worker PATCHes them
    for number, bill in enumerate(bills):
        cash(harness, bill, f"cash-{number}", 10000 + number)
    clock[0] += timeout_of("BalancePusherFunction") + LEASE_MARGIN_SECONDS + 1  # the first lease long expired
    duplicates: list[dict[str, Any]] = []
    once = threading.Lock()

    def duplicate_arrives(request: httpx.Request) -> None:
        if once.acquire(blocking=False):  # WHEN the first run's invocation is delivered again, late
            duplicates.append(invoke_pusher(worker(harness, moment), {"shard": shard}))

    transport.before_send = duplicate_arrives
    before = len(transport.requests)
    later = invoke_pusher(worker(harness, moment), {"shard": shard})
    # THEN the duplicate, arriving while the later worker holds the shard, does nothing
    assert duplicates == [{"skipped": "another push run holds the lease", "shard": shard}]
    assert later["bills"]["results"] == {"pushed": 3}
    sent = [request for request in transport.requests[before:] if request.startswith("PATCH")]
    assert len(sent) == 3 and len(set(sent)) == 3  # one PATCH per bill
    # AND delivered once more after everything finished, it finds its shard pushed: no Moment call
    transport.before_send = None
    before = len(transport.requests)
    again = invoke_pusher(worker(harness, moment), {"shard": shard})
    assert (again["results"], again["bills"]["results"]) == ({}, {})
    assert transport.requests[before:] == []
    at_moment = {item["external_reference"]: item["amount_paid"] for item in sandbox.state()["bills"]}
    assert at_moment == {bill.ref: 10000 + number for number, bill in enumerate(bills)}
    assert [head(harness, bill)["push_seq"] for bill in bills] == [
        2,
        2,
        2,
    ]  # the create's booking, the cash's
