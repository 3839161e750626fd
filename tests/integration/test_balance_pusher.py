"""The pusher against the Moment sandbox over real HTTP on loopback, with the ledger in moto."""

from __future__ import annotations

import io
import threading
from dataclasses import replace
from typing import Any

import httpx
import pytest

import balance_pusher_handler
from local_stack.lambda_context import LocalLambdaContext
from moment_sandbox import MomentSandbox
from moment_sync.adapters.webhook_events_table import iso_time
from moment_sync.ledger.model import BalanceKind, BalanceRef, Entry, EntryKind
from moment_sync.ledger.sync import sync_state
from moment_sync.moment_client import MomentClient, NewCustomer
from moment_sync.push_plan import MAX_OPEN_INTENTS
from moment_sync.pusher import BalancePusher, PushResult
from support import pushers
from support.ledger import LedgerHarness, payment
from support.pushers import InFlight

# The shared harness (support/pushers.py): pytest finds each fixture by the name bound here. InFlight
# is also imported from here by other pusher tests.
sandbox = pushers.sandbox
transport = pushers.transport
moment = pushers.moment
clock = pushers.clock
harness = pushers.harness
pusher = pushers.pusher


def charge(
    harness: LedgerHarness, balance: BalanceRef, charge_id: str, amount: int, at: float | None = None
) -> None:
    """A charge made 2026-09-21, or `at` (a pending balance's `pending_since`: its place in the index)."""
    created_at = "2026-09-21T00:00:00.000Z" if at is None else iso_time(at)
    entry = Entry(EntryKind.CHARGE, amount, charge_id, {"charge_id": charge_id}, created_at)
    head = harness.head(balance)
    assert harness.ledger.apply_entry(balance, entry, head["currency"]).outcome.value == "applied"


def on_moment(sandbox: MomentSandbox, kind: str, ref: str) -> dict[str, Any]:
    objects = sandbox.state()["customers" if kind == "customer" else "accounts"]
    return next(item for item in objects if item["external_reference"] == ref)


def run(pusher: BalancePusher, seconds: float = 300) -> dict[str, int]:
    return pusher.push_pending(time_left=lambda: seconds).results


def test_a_new_customer_is_created_with_its_balance_then_patched(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, transport: InFlight
) -> None:
    customer = harness.open_customer("UCR1")
    charge(harness, customer, "inv-1", 2000)
    assert run(pusher) == {"created": 1}
    created = on_moment(sandbox, "customer", "UCR1")
    assert (created["balance"], created["currency"]) == (2000, "ZAR")
    head = harness.head(customer)
    assert (head["moment_id"], head["pushed_balance"], head["pushed_version"]) == (created["id"], 2000, 1)
    assert "push_shard" not in head  # synced: out of the pending index
    assert harness.ledger.resolve_moment_id(created["id"]) == customer

    charge(harness, customer, "inv-2", 550)
    transport.requests.clear()
    assert run(pusher) == {"pushed": 1}
    assert on_moment(sandbox, "customer", "UCR1")["balance"] == 2550
    # steady state: one read, one PATCH
    assert transport.requests == [
        f"GET /billing/customers/{created['id']}",
        f"PATCH /billing/customers/{created['id']}",
    ]
    assert run(pusher) == {}


def test_accounts_under_a_new_customer_and_under_an_existing_one(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, transport: InFlight
) -> None:
    harness.open_customer("HOUSE1", balance_model="accounts")
    water = harness.open_account("WATER1", "HOUSE1")
    charge(harness, water, "w-1", 700)
    assert run(pusher) == {"created": 1}
    # Moment has no such customer, so it comes with the account (composite create)
    assert transport.requests == ["GET /billing/customers/HOUSE1", "POST /billing/accounts"]
    customer_id = on_moment(sandbox, "customer", "HOUSE1")["id"]
    assert harness.head(BalanceRef(BalanceKind.CUSTOMER, "HOUSE1"))["moment_id"] == customer_id

    rates = harness.open_account("RATES1", "HOUSE1")
    charge(harness, rates, "r-1", 1200)
    transport.requests.clear()
    assert run(pusher) == {"created": 1}
    account = on_moment(sandbox, "account", "RATES1")
    assert (account["customer_id"], account["balance"]) == (customer_id, 1200)
    assert len(sandbox.state()["customers"]) == 1


def test_two_new_accounts_of_a_new_customer_in_one_run_create_the_customer_once(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox
) -> None:
    harness.open_customer("FAM1", balance_model="accounts")
    for ref in ("FAM1-A", "FAM1-B", "FAM1-C"):
        charge(harness, harness.open_account(ref, "FAM1"), "c-" + ref, 100)
    assert run(pusher) == {"created": 3}
    [customer] = sandbox.state()["customers"]
    assert {account["customer_id"] for account in sandbox.state()["accounts"]} == {customer["id"]}


def test_a_customer_created_by_an_earlier_run_but_never_linked_is_adopted_not_created_again(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, moment: MomentClient
) -> None:
    from moment_sync.moment_client import NewCustomer

    moment.create_customer(NewCustomer("FAM2"))  # a run that stopped before linking it
    harness.open_customer("FAM2", balance_model="accounts")
    charge(harness, harness.open_account("FAM2-A", "FAM2"), "c-1", 100)
    assert run(pusher) == {"created": 1}
    assert len(sandbox.state()["customers"]) == 1
    assert (
        harness.head(BalanceRef(BalanceKind.CUSTOMER, "FAM2"))["moment_id"]
        == sandbox.state()["customers"][0]["id"]
    )


def test_an_object_moment_already_has_is_adopted_held_and_pushed_once_the_ledger_wins(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, moment: MomentClient
) -> None:
    from moment_sync.moment_client import NewCustomer

    existing = moment.create_customer(NewCustomer("UCR1", balance=999, currency="ZAR"), generation=7)
    customer = harness.open_customer("UCR1")
    charge(harness, customer, "inv-1", 2000)
    # another balance than the ledger's, on an object this service did not create: an operator decides
    assert run(pusher) == {"conflict": 1}
    assert harness.head(customer)["moment_id"] == existing.id
    assert on_moment(sandbox, "customer", "UCR1")["balance"] == 999
    harness.ledger.clear_conflict(customer, adoption_decision="ledger-wins")  # `adopt … --ledger-wins`
    assert run(pusher) == {"pushed": 1}
    assert on_moment(sandbox, "customer", "UCR1")["balance"] == 2000


@pytest.mark.parametrize("moment_applies_payments", [True, False])
def test_a_payment_moment_applied_is_never_erased_by_a_push(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, moment_applies_payments: bool
) -> None:
    sandbox.configure(applies_payments=moment_applies_payments)
    customer = harness.open_customer("UCR1")
    charge(harness, customer, "inv-1", 5000)
    run(pusher)
    moment_id = harness.head(customer)["moment_id"]

    # the customer pays R20 at Moment; the ledger has not seen the webhook yet
    sandbox.pay(customer="UCR1", amount=2000)
    charge(harness, customer, "inv-2", 100)  # and the merchant charges meanwhile
    result = run(pusher)
    if moment_applies_payments:
        assert result == {"deferred": 1}  # Moment shows 3000: unexplained until the webhook arrives
        assert on_moment(sandbox, "customer", "UCR1")["balance"] == 3000
    else:
        assert result == {"pushed": 1}  # Moment kept 5000: nothing of Moment's to lose

    # the webhook is reconciled: now Moment's balance is explained, and the push converges
    harness.receive("msg_1", payment("ob_1", 2000, customer_id=moment_id))
    harness.invoke(harness.next_batch())
    run(pusher)
    assert on_moment(sandbox, "customer", "UCR1")["balance"] == harness.head(customer)["balance"] == 3100
    assert run(pusher) == {}


def test_deferrals_past_the_bound_are_counted_as_drift(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    customer = harness.open_customer("UCR1")
    charge(harness, customer, "inv-1", 5000)
    run(pusher)
    sandbox.pay(customer="UCR1", amount=10)  # its webhook never comes
    charge(harness, customer, "inv-2", 1)
    for _ in range(3):
        assert run(pusher) == {"deferred": 1}
    head = harness.head(customer)
    assert (head["defer_count"], head["last_moment_balance"]) == (3, 4990)
    from moment_sync.ledger.sync import sync_state

    assert sync_state(head) == "deferred"


def test_the_time_budget_leaves_the_rest_for_the_next_run(
    harness: LedgerHarness, pusher: BalancePusher
) -> None:
    for number in range(5):
        charge(harness, harness.open_customer(f"UCR{number}"), f"inv-{number}", 100)
    budget = iter([300.0, 300.0, 1.0])
    main = threading.current_thread()

    def time_left() -> float:  # the run's loop sees the budget run out; its pushes' client does not
        return next(budget, 1.0) if threading.current_thread() is main else 300.0

    report = pusher.push_pending(time_left=time_left)
    assert sum(report.results.values()) == 2
    assert report.not_reached == 3
    assert run(pusher) == {"created": 3}


def test_a_page_of_deferred_balances_hides_none_of_the_balances_after_it(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, clock: list[float]
) -> None:
    # GIVEN the oldest pending balances are 4 that stay pending with no backoff when looked at: Moment
    # applied a payment whose webhook the ledger has not seen, so each push is deferred
    for number in range(4):
        charge(harness, harness.open_customer(f"OLD{number}"), f"inv-{number}", 5000)
    assert run(pusher) == {"created": 4}
    for number in range(4):
        clock[0] += 1
        sandbox.pay(customer=f"OLD{number}", amount=10)
        charge(harness, BalanceRef(BalanceKind.CUSTOMER, f"OLD{number}"), f"more-{number}", 1, at=clock[0])
    # AND behind them 3 new balances Moment has never seen
    for number in range(3):
        clock[0] += 1
        charge(harness, harness.open_customer(f"NEW{number}"), f"new-{number}", 100, at=clock[0])
    # WHEN one run reads the index 3 at a time (1,000 deployed)
    report = replace(pusher, batch=3).push_pending(time_left=lambda: 300)
    # THEN it reads on past the deferred ones (each page on from where the last ended, not from the start
    # again, where the deferred balances still are): every balance looked at once, the new ones created
    assert (report.results, report.not_reached) == ({"deferred": 4, "created": 3}, 0)
    assert sorted(item["external_reference"] for item in sandbox.state()["customers"]) == [
        "NEW0",
        "NEW1",
        "NEW2",
        "OLD0",
        "OLD1",
        "OLD2",
        "OLD3",
    ]


def test_a_run_out_of_time_counts_the_page_it_stopped_in_not_reached_and_the_next_run_goes_on(
    harness: LedgerHarness,
    pusher: BalancePusher,
    sandbox: MomentSandbox,
    transport: InFlight,
    clock: list[float],
) -> None:
    for number in range(5):
        clock[0] += 1
        charge(harness, harness.open_customer(f"UCR{number}"), f"inv-{number}", 100, at=clock[0])
    paged = replace(pusher, batch=3, concurrency=1)

    def time_left() -> float:  # GIVEN time for the first page's 3 creates only
        creates = sum(request == "POST /billing/customers" for request in transport.requests)
        return 300.0 if creates < 3 else 0.0

    report = paged.push_pending(time_left=time_left)
    # THEN the second page is read and counted, not started
    assert (report.results, report.not_reached) == ({"created": 3}, 2)
    # AND the next run pushes what is left
    assert run(paged) == {"created": 2}
    assert len(sandbox.state()["customers"]) == 5


def test_concurrency_is_bounded(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, transport: InFlight
) -> None:
    sandbox.set_faults(latency_ms=50)
    for number in range(16):
        charge(harness, harness.open_customer(f"UCR{number}"), f"inv-{number}", 100)
    assert run(pusher) == {"created": 16}
    assert 2 <= transport.peak <= 4


def test_a_charge_during_the_push_keeps_the_balance_pending(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, transport: InFlight
) -> None:
    customer = harness.open_customer("UCR1")
    charge(harness, customer, "inv-1", 1000)
    run(pusher)
    charge(harness, customer, "inv-2", 200)

    def charge_while_patching(request: httpx.Request) -> None:
        if request.method == "PATCH":
            charge(harness, customer, "inv-3", 30)

    transport.before_send = charge_while_patching
    assert run(pusher) == {"pushed": 1}
    head = harness.head(customer)
    assert (head["pushed_balance"], head["pushed_version"], head["version"]) == (1200, 2, 3)
    assert "push_shard" in head  # version moved: still pending
    transport.before_send = None
    assert run(pusher) == {"pushed": 1}
    assert on_moment(sandbox, "customer", "UCR1")["balance"] == 1230
    assert "push_shard" not in harness.head(customer)


def test_failures_back_off_per_balance_and_do_not_block_the_others(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, clock: list[float]
) -> None:
    good = harness.open_customer("GOOD1")
    charge(harness, good, "inv-1", 100)
    bad = harness.open_customer("BAD1", currency="USD")
    charge(harness, bad, "inv-2", 100)
    # Moment holds BAD1 in ZAR already: pushing a USD balance to it is refused
    from moment_sync.moment_client import NewCustomer

    pusher.moment.create_customer(NewCustomer("BAD1", balance=100, currency="ZAR"))
    assert run(pusher) == {"created": 1, "failed": 1}
    head = harness.head(bad)
    assert head["push_attempts"] == 1 and head["next_push_at"]
    assert head["last_push_error"] == "Moment keeps customer BAD1 in ZAR, the ledger in USD"
    assert run(pusher) == {}  # backing off
    clock[0] += 3600 * 2
    assert run(pusher) == {"failed": 1}
    assert harness.head(bad)["push_attempts"] == 2
    assert on_moment(sandbox, "customer", "GOOD1")["balance"] == 100


def test_moment_outage_is_a_failure_with_backoff_then_recovers(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, clock: list[float]
) -> None:
    customer = harness.open_customer("UCR1")
    charge(harness, customer, "inv-1", 100)
    sandbox.set_faults(fail_500_rate=1.0)
    assert run(pusher) == {"failed": 1}
    assert "500" in harness.head(customer)["last_push_error"]
    sandbox.set_faults(fail_500_rate=0.0)
    clock[0] += 3600
    assert run(pusher) == {"created": 1}
    head = harness.head(customer)
    assert head["push_attempts"] == 0 and "last_push_error" not in head


def test_the_handler_runs_a_push_within_the_lambda_context(
    harness: LedgerHarness, pusher: BalancePusher
) -> None:
    charge(harness, harness.open_customer("UCR1"), "inv-1", 100)
    report = balance_pusher_handler.lambda_handler(
        {}, LocalLambdaContext("pusher", timeout_seconds=240), pusher
    )
    assert report["results"] == {"created": 1}
    assert PushResult.CREATED.value in report["results"]


# --- Open intents: every push that may have reached Moment explains its balance until one is booked ---


def answer_lost_for(method: str) -> Any:
    """Moment carries the request out; its answer never arrives (on every attempt)."""

    def lose(request: httpx.Request) -> None:
        if request.method == method:
            raise httpx.ReadTimeout("answer lost", request=request)

    return lose


def answered_503_for(method: str) -> Any:
    def fail(request: httpx.Request) -> httpx.Response | None:
        if request.method != method:
            return None
        return httpx.Response(503, json={"title": "Service Unavailable"})

    return fail


def never_sent_for(method: str) -> Any:
    def refuse(request: httpx.Request) -> None:
        if request.method == method:
            raise httpx.ConnectError("connection refused", request=request)

    return refuse


def test_a_lost_answer_then_a_failed_patch_leave_the_balance_explained_and_the_next_run_syncs(
    harness: LedgerHarness,
    pusher: BalancePusher,
    sandbox: MomentSandbox,
    transport: InFlight,
    clock: list[float],
) -> None:
    from moment_sync.ledger.sync import sync_state

    customer = harness.open_customer("UCR1")
    charge(harness, customer, "inv-1", 1000)
    assert run(pusher) == {"created": 1}
    # GIVEN a PATCH of 1200 that reaches Moment with its answer lost on every attempt
    charge(harness, customer, "inv-2", 200)
    transport.after_send = answer_lost_for("PATCH")
    assert run(pusher) == {"failed": 1}
    assert on_moment(sandbox, "customer", "UCR1")["balance"] == 1200
    # AND then a PATCH of 1230 that really fails (503 on every attempt: Moment keeps 1200)
    transport.after_send = None
    transport.before_send = answered_503_for("PATCH")
    charge(harness, customer, "inv-3", 30)
    clock[0] += 7200
    assert run(pusher) == {"failed": 1}
    assert on_moment(sandbox, "customer", "UCR1")["balance"] == 1200
    assert [intent["balance"] for intent in harness.head(customer)["push_intents"]] == [1200, 1230]
    # WHEN Moment is healthy again
    transport.before_send = None
    clock[0] += 7200
    # THEN Moment's 1200 is explained by the older open intent: pushed, booked, synced
    assert run(pusher) == {"pushed": 1}
    assert on_moment(sandbox, "customer", "UCR1")["balance"] == 1230
    head = harness.head(customer)
    assert sync_state(head) == "synced"
    assert "push_intents" not in head and head["pushed_balance"] == 1230


def test_a_patch_that_never_left_drops_its_intent(
    harness: LedgerHarness, pusher: BalancePusher, transport: InFlight
) -> None:
    customer = harness.open_customer("UCR1")
    charge(harness, customer, "inv-1", 1000)
    run(pusher)
    charge(harness, customer, "inv-2", 200)
    transport.before_send = never_sent_for("PATCH")
    assert run(pusher) == {"failed": 1}
    head = harness.head(customer)
    # nothing reached Moment: it explains nothing, so it must not widen what counts as explained
    assert head.get("push_intents", []) == [] and "push_intent" not in head
    assert head["push_attempts"] == 1


def test_past_the_open_intents_cap_the_balance_is_deferred_until_moment_shows_the_ledgers_balance(
    harness: LedgerHarness,
    pusher: BalancePusher,
    sandbox: MomentSandbox,
    transport: InFlight,
    clock: list[float],
) -> None:
    from moment_sync.ledger.sync import sync_state
    from moment_sync.push_plan import MAX_OPEN_INTENTS

    customer = harness.open_customer("UCR1")
    charge(harness, customer, "inv-0", 1000)
    run(pusher)
    # GIVEN MAX_OPEN_INTENTS pushes in a row whose answers were all lost
    transport.after_send = answer_lost_for("PATCH")
    for number in range(1, MAX_OPEN_INTENTS + 1):
        charge(harness, customer, f"inv-{number}", 1)
        clock[0] += 7200
        assert run(pusher) == {"failed": 1}
    transport.after_send = None
    assert len(harness.head(customer)["push_intents"]) == MAX_OPEN_INTENTS
    # WHEN the ledger changes again
    charge(harness, customer, "inv-last", 1)
    clock[0] += 7200
    # THEN no further PATCH is sent: the balance shows `deferred` at once (its alarm: DriftDetected)
    transport.requests.clear()
    assert run(pusher) == {"deferred": 1}
    assert not [request for request in transport.requests if request.startswith("PATCH")]
    assert sync_state(harness.head(customer)) == "deferred"
    # AND the documented way out: Moment is put to the ledger's balance, and the next run books it
    moment_id = harness.head(customer)["moment_id"]
    pusher.moment.set_customer_balance(moment_id, harness.head(customer)["balance"], "ZAR")
    assert run(pusher) == {"in_sync": 1}
    head = harness.head(customer)
    assert sync_state(head) == "synced" and "push_intents" not in head


def test_creates_refused_up_to_the_open_intents_cap_do_not_keep_the_balance_from_moment_for_good(
    harness: LedgerHarness,
    pusher: BalancePusher,
    sandbox: MomentSandbox,
    transport: InFlight,
    clock: list[float],
) -> None:
    """Found by the simulation: a Moment outage long enough for MAX_OPEN_INTENTS creates in a row, each
    answered 503, left the balance `deferred` for good. At the cap the pusher sent nothing, not even a
    create, so it never saw that Moment had no object (or had its own, at the ledger's balance), and
    the runbook's way out (put Moment's balance to the ledger's) has no object to act on."""
    from moment_sync.ledger.sync import sync_state
    from moment_sync.push_plan import MAX_OPEN_INTENTS

    customer = harness.open_customer("OUT1")
    charge(harness, customer, "inv-0", 1000)
    # GIVEN MAX_OPEN_INTENTS runs whose creates Moment answered 503 (each may have reached Moment)
    transport.before_send = answered_503_for("POST")
    for _ in range(MAX_OPEN_INTENTS):
        clock[0] += 7200
        assert run(pusher) == {"failed": 1}
    assert len(harness.head(customer)["push_intents"]) == MAX_OPEN_INTENTS
    # WHEN Moment is healthy again
    transport.before_send = None
    clock[0] += 7200
    # THEN the next run creates the customer with the ledger's balance and books it
    assert run(pusher) == {"created": 1}
    head = harness.head(customer)
    assert sync_state(head) == "synced" and "push_intents" not in head
    assert on_moment(sandbox, "customer", "OUT1")["balance"] == 1000


def test_creates_whose_answers_were_lost_count_once_toward_the_cap_so_the_balance_is_pushed(
    harness: LedgerHarness,
    pusher: BalancePusher,
    sandbox: MomentSandbox,
    transport: InFlight,
    clock: list[float],
) -> None:
    """A balance that needed several creates: the first made Moment's object, the answers of it and of
    every later create (409s) were lost, and the ledger changed between runs. Counted one by one, the
    creates' intents filled the cap, so once the object was adopted no PATCH was ever sent: `deferred`
    for good, DriftDetected sending the operator after a webhook that does not exist."""
    customer = harness.open_customer("UCR1")
    charge(harness, customer, "inv-0", 1000)
    # GIVEN MAX_OPEN_INTENTS runs whose creates' answers were all lost, a charge before each next run
    transport.after_send = answer_lost_for("POST")
    for number in range(1, MAX_OPEN_INTENTS + 1):
        clock[0] += 7200
        assert run(pusher) == {"failed": 1}
        charge(harness, customer, f"inv-{number}", 1)
    intents = harness.head(customer)["push_intents"]
    assert [intent.get("create") for intent in intents] == [True] * MAX_OPEN_INTENTS
    assert on_moment(sandbox, "customer", "UCR1")["balance"] == 1000  # the first create made it
    # WHEN Moment answers again
    transport.after_send = None
    clock[0] += 7200
    # THEN the object is adopted and the ledger's balance pushed (the creates count once): synced
    assert run(pusher) == {"pushed": 1}
    head = harness.head(customer)
    assert sync_state(head) == "synced" and "push_intents" not in head
    assert on_moment(sandbox, "customer", "UCR1")["balance"] == head["balance"] == 1000 + MAX_OPEN_INTENTS


def test_a_create_whose_answer_was_lost_is_explained_by_its_intent_not_by_anything(
    harness: LedgerHarness,
    pusher: BalancePusher,
    sandbox: MomentSandbox,
    transport: InFlight,
    clock: list[float],
) -> None:
    sandbox.configure(applies_payments=True)
    customer = harness.open_customer("UCR1")
    charge(harness, customer, "inv-1", 2000)
    # GIVEN a create that reached Moment (with 2000) and whose answer was lost on every attempt
    transport.after_send = answer_lost_for("POST")
    assert run(pusher) == {"failed": 1}
    transport.after_send = None
    assert on_moment(sandbox, "customer", "UCR1")["balance"] == 2000
    assert [intent["balance"] for intent in harness.head(customer)["push_intents"]] == [2000]
    # AND the customer pays R5 at Moment, whose webhook the ledger has not seen yet
    sandbox.pay(customer="UCR1", amount=500)
    clock[0] += 7200
    # WHEN the next run finds the object Moment made and links it
    # THEN 1500 is not explained by the create's 2000: deferred, the payment is not erased
    assert run(pusher) == {"deferred": 1}
    assert on_moment(sandbox, "customer", "UCR1")["balance"] == 1500
    # AND once the webhook is reconciled, the push converges
    moment_id = harness.head(customer)["moment_id"]
    harness.receive("msg_1", payment("ob_1", 500, customer_id=moment_id))
    harness.invoke(harness.next_batch())
    assert run(pusher) == {"in_sync": 1}
    assert harness.head(customer)["balance"] == on_moment(sandbox, "customer", "UCR1")["balance"] == 1500


# --- Any fault while pushing one balance is that balance's failed push ---------------------------------


@pytest.mark.parametrize("fault", ["booking refused", "intent throttled"])
def test_a_fault_inside_one_push_counts_as_a_failed_push_with_backoff(
    harness: LedgerHarness,
    pusher: BalancePusher,
    monkeypatch: pytest.MonkeyPatch,
    clock: list[float],
    fault: str,
) -> None:
    from botocore.exceptions import ClientError

    from moment_sync.adapters.ledger_table import TransientLedgerError

    customer = harness.open_customer("UCR1")
    charge(harness, customer, "inv-1", 100)
    other = harness.open_customer("OTHER1")
    charge(harness, other, "inv-2", 100)

    def broken(*args: Any, **kwargs: Any) -> Any:
        if args and args[0] == customer:
            if fault == "booking refused":
                raise ClientError({"Error": {"Code": "ValidationException", "Message": "boom"}}, "UpdateItem")
            raise TransientLedgerError("ThrottlingException")
        return real(*args, **kwargs)

    name = "record_push" if fault == "booking refused" else "record_intent"
    real = getattr(harness.ledger, name)
    monkeypatch.setattr(harness.ledger, name, broken)
    # WHEN the push of UCR1 fails in the ledger
    assert run(pusher) == {"created": 1, "failed": 1}
    # THEN it is counted on that balance like a Moment failure: attempts, backoff, the error
    head = harness.head(customer)
    assert head["push_attempts"] == 1 and head["next_push_at"]
    expected = "ClientError" if fault == "booking refused" else "TransientLedgerError"
    assert expected in head["last_push_error"]
    assert run(pusher) == {}  # backing off
    monkeypatch.undo()
    clock[0] += 7200
    # the booking's create reached Moment (its intent explains it); the throttled intent sent nothing
    assert run(pusher) == ({"in_sync": 1} if fault == "booking refused" else {"created": 1})


# --- However many payments pile up between two pushes, every write stays within DynamoDB's limits ------


def reconcile_payments(harness: LedgerHarness, moment_id: str, amounts: list[int], prefix: str) -> None:
    for number, amount in enumerate(amounts):
        body = payment(f"ob_{prefix}{number}", amount, customer_id=moment_id)
        harness.receive(f"msg_{prefix}{number}", body)
    assert harness.invoke(harness.next_batch()) == []


def test_hundreds_of_payments_reconciled_between_two_pushes_book(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, transport: InFlight
) -> None:
    """Issue 11, item 4: past ~198 payments the booking's REMOVE payments_list[0..n] passed DynamoDB's
    4 KB expression limit (enforced on every test client): Moment was PATCHed, then the booking failed."""
    sandbox.configure(applies_payments=False)  # Moment keeps the balance pushed: M = P
    customer = harness.open_customer("UCR1")
    charge(harness, customer, "inv-1", 10_000_000)
    run(pusher)
    moment_id = harness.head(customer)["moment_id"]
    # GIVEN 220 payments (past the old limit, ~198) Moment took and the ledger reconciled since the push
    amounts = [1000 + number for number in range(220)]
    reconcile_payments(harness, moment_id, amounts, "p")
    charge(harness, customer, "inv-2", 5)
    # WHEN the pusher runs
    assert run(pusher) == {"pushed": 1}
    # THEN it booked: synced, nothing left of the payments behind the push
    head = harness.head(customer)
    assert "push_shard" not in head and "payments_list" not in head and head["payments_since_push"] == 0
    assert on_moment(sandbox, "customer", "UCR1")["balance"] == head["balance"] == 10_000_005 - sum(amounts)


def test_thousands_of_payments_book_even_when_a_payment_comes_during_the_push(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, transport: InFlight
) -> None:
    customer = harness.open_customer("UCR1")
    charge(harness, customer, "inv-1", 10**10)
    run(pusher)
    moment_id = harness.head(customer)["moment_id"]
    # GIVEN the head as 3,000 reconciled payments leave it (written at once: 3,000 reconciler
    # transactions would take minutes here, and moto answers slowly with a large head), and Moment
    # lowered by all but R7 of them
    amounts = [100 * (1 + number % 997) for number in range(3_000)]
    harness.dynamodb.update_item(
        TableName=harness.ledger_name,
        Key={"pk": {"S": "CUSTOMER#UCR1"}, "sk": {"S": "HEAD"}},
        UpdateExpression="SET payments_list = :paid, push_shard = :shard, pending_since = :now "
        "ADD balance :lowered, version :count, payments_since_push :total",
        ExpressionAttributeValues={
            ":paid": {"L": [{"N": str(amount)} for amount in amounts]},
            ":shard": {"S": customer.push_shard},
            ":now": {"S": "2026-09-21T00:00:00.000Z"},
            ":lowered": {"N": str(-sum(amounts))},
            ":count": {"N": str(len(amounts))},
            ":total": {"N": str(sum(amounts))},
        },
    )
    pusher.moment.set_customer_balance(moment_id, 10**10 - sum(amounts) + 700, "ZAR")
    charge(harness, customer, "inv-2", 5)

    # AND one more payment reconciled while the PATCH is in flight (the booking must keep it)
    def pay_while_patching(request: httpx.Request) -> None:
        if request.method == "PATCH":
            transport.before_send = None
            reconcile_payments(harness, moment_id, [333], "late")

    transport.before_send = pay_while_patching
    # WHEN the pusher runs
    assert run(pusher) == {"pushed": 1}
    # THEN the push is booked with constant-size writes (a watermark, then the list compacted): only
    # the late payment is left for the next one
    head = harness.head(customer)
    assert head["pushed_balance"] == 10**10 - sum(amounts) + 5
    assert head["payments_list"] == [333] and "payments_pushed" not in head
    assert head["payments_since_push"] == 333
    assert "push_shard" in head  # the late payment is still to push
    assert run(pusher) == {"pushed": 1}
    assert on_moment(sandbox, "customer", "UCR1")["balance"] == harness.head(customer)["balance"]
    assert "push_shard" not in harness.head(customer)


def test_payments_past_the_heads_list_cap_are_merged_and_still_explain_moment(
    harness: LedgerHarness, pusher: BalancePusher, sandbox: MomentSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moment_sync.adapters import ledger_table

    monkeypatch.setattr(ledger_table, "PAYMENTS_LISTED_MAX", 3)
    sandbox.configure(applies_payments=True)
    customer = harness.open_customer("UCR1")
    charge(harness, customer, "inv-1", 100_000)
    run(pusher)
    moment_id = harness.head(customer)["moment_id"]
    # GIVEN five payments since the last push, with room for three in the head's list
    amounts = [1000, 2000, 3000, 4000, 5000]
    for amount in amounts:
        sandbox.pay(customer="UCR1", amount=amount)
    reconcile_payments(harness, moment_id, amounts, "p")
    head = harness.head(customer)
    # THEN the last two are kept as one sum (the head never grows past its cap)
    assert head["payments_list"] == [1000, 2000, 3000]
    assert (head["payments_merged"], head["payments_merged_count"]) == (9000, 2)
    assert head["balance"] == 100_000 - sum(amounts)
    # AND Moment (lowered by all five) is explained: the push goes through and books
    charge(harness, customer, "inv-2", 5)
    assert run(pusher) == {"pushed": 1}
    head = harness.head(customer)
    assert "payments_merged" not in head and "payments_list" not in head and "push_shard" not in head
    assert on_moment(sandbox, "customer", "UCR1")["balance"] == head["balance"]


# --- an operator's unlink forgets the open intents sent to the wrong object (found by a probe) ----------


@pytest.fixture
def linking_pusher(harness: LedgerHarness, moment: MomentClient) -> BalancePusher:
    """With the events table, as the function has it: links re-drive, the first push waits."""
    return BalancePusher(
        ledger=harness.ledger,
        moment=moment,
        now=harness.clock,
        concurrency=2,
        jitter=lambda: 0.5,
        events=harness.events,
    )


def operator(harness: LedgerHarness, moment: MomentClient, *argv: str) -> int:
    from moment_sync.cli import main

    tables = ["--events-table", harness.events_name, "--ledger-table", harness.ledger_name]
    return main([*tables, *argv], out=io.StringIO(), err=io.StringIO(), moment=moment)


def held_then_ledger_wins(
    harness: LedgerHarness, pusher: BalancePusher, moment: MomentClient, ref: str, clock: list[float]
) -> None:
    """The wrong object, linked and never pushed, is held; an operator (wrongly) says the ledger wins."""
    assert run(pusher) == {"conflict": 1}
    assert operator(harness, moment, "adopt", "customer", ref, "--ledger-wins") == 0
    clock[0] += 7200


def test_unlink_forgets_the_wrong_objects_open_intents_so_ledger_wins_is_pushed(
    harness: LedgerHarness,
    linking_pusher: BalancePusher,
    sandbox: MomentSandbox,
    moment: MomentClient,
    transport: InFlight,
    clock: list[float],
) -> None:
    # GIVEN a customer linked to another customer's Moment object, and its real one made by the merchant
    other = moment.create_customer(NewCustomer("SOMEONE-ELSE", balance=10, currency="ZAR"))
    moment.create_customer(NewCustomer("UCR7", balance=250, currency="ZAR"))
    customer = harness.open_customer("UCR7", moment_id=other.id)
    charge(harness, customer, "c-1", 400)
    held_then_ledger_wins(harness, linking_pusher, moment, "UCR7", clock)
    # AND a PATCH to the wrong object whose answer was lost: an open intent of 400
    transport.after_send = answer_lost_for("PATCH")
    assert run(linking_pusher) == {"failed": 1}
    transport.after_send = None
    assert [intent["balance"] for intent in harness.head(customer)["push_intents"]] == [400]
    # WHEN the operator unlinks, the next run holds the adopted object, and the operator says ledger wins
    assert operator(harness, moment, "unlink", "customer", "UCR7") == 0
    assert "push_intents" not in harness.head(customer)
    clock[0] += 7200
    assert run(linking_pusher) == {"conflict": 1}
    assert operator(harness, moment, "adopt", "customer", "UCR7", "--ledger-wins") == 0
    clock[0] += 7200
    # THEN the ledger's balance is pushed: no intent sent to the wrong object explains anything now
    assert run(linking_pusher) == {"pushed": 1}
    assert on_moment(sandbox, "customer", "UCR7")["balance"] == 400


def test_unlink_after_the_open_intents_cap_lets_the_right_object_be_created(
    harness: LedgerHarness,
    linking_pusher: BalancePusher,
    moment: MomentClient,
    transport: InFlight,
    clock: list[float],
) -> None:
    other = moment.create_customer(NewCustomer("SOMEONE-ELSE", balance=10, currency="ZAR"))
    customer = harness.open_customer("UCR8", moment_id=other.id)
    charge(harness, customer, "c-0", 400)
    held_then_ledger_wins(harness, linking_pusher, moment, "UCR8", clock)
    transport.after_send = answer_lost_for("PATCH")
    for number in range(1, MAX_OPEN_INTENTS + 1):
        charge(harness, customer, f"c-{number}", 1)
        clock[0] += 7200
        assert run(linking_pusher) == {"failed": 1}
    transport.after_send = None
    assert operator(harness, moment, "unlink", "customer", "UCR8") == 0
    for _ in range(2):
        clock[0] += 7200
        run(linking_pusher)
    head = harness.head(customer)
    assert head.get("moment_id") and sync_state(head) == "synced"
