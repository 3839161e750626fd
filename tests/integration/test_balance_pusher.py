"""The pusher against the Moment sandbox over real HTTP on loopback, with the ledger in moto."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import balance_pusher_handler
from local_stack.lambda_context import LocalLambdaContext
from local_stack.made_up_values import LOCAL_MOMENT_API_KEY
from moment_sandbox import MomentSandbox, SandboxSettings
from moment_sync.ledger.model import BalanceKind, BalanceRef, Entry, EntryKind
from moment_sync.moment_client import MomentClient, RetryPolicy
from moment_sync.pusher import BalancePusher, PushResult
from support.ledger import LedgerHarness, payment
from support.webhooks import NOW


@pytest.fixture
def sandbox() -> Iterator[MomentSandbox]:
    with MomentSandbox(SandboxSettings(webhook_url=None)) as running:
        yield running


class InFlight(httpx.BaseTransport):
    """Counts requests in flight at once, to check the pusher's concurrency bound."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.requests: list[str] = []
        self.before_send: Any = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.requests.append(f"{request.method} {request.url.path}")
        try:
            if self.before_send:
                self.before_send(request)
            return self._inner.handle_request(request)
        finally:
            with self._lock:
                self.now -= 1


@pytest.fixture
def transport() -> InFlight:
    return InFlight()


@pytest.fixture
def moment(sandbox: MomentSandbox, transport: InFlight) -> Iterator[MomentClient]:
    client = MomentClient(
        LOCAL_MOMENT_API_KEY,
        environment="dev",
        base_url=sandbox.url,
        transport=transport,
        retry=RetryPolicy(max_attempts=2, base_delay_seconds=0, max_delay_seconds=0),
        sleep=lambda _: None,
    )
    yield client
    client.close()


@pytest.fixture
def clock() -> list[float]:
    return [float(NOW)]


@pytest.fixture
def harness(dynamodb: Any, clock: list[float]) -> LedgerHarness:
    return LedgerHarness(dynamodb, clock=lambda: clock[0])


@pytest.fixture
def pusher(harness: LedgerHarness, moment: MomentClient) -> BalancePusher:
    return BalancePusher(
        ledger=harness.ledger, moment=moment, now=harness.clock, concurrency=4, jitter=lambda: 0.5
    )


def charge(harness: LedgerHarness, balance: BalanceRef, charge_id: str, amount: int) -> None:
    entry = Entry(EntryKind.CHARGE, amount, charge_id, {"charge_id": charge_id}, "2026-09-21T00:00:00.000Z")
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
    report = pusher.push_pending(time_left=lambda: next(budget, 1.0))
    assert sum(report.results.values()) == 2
    assert report.not_reached == 3
    assert run(pusher) == {"created": 3}


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
