"""What the pusher tests share (tests/integration/test_balance_pusher.py, test_bill_pusher.py and
tests/probes): the Moment sandbox over loopback HTTP, the real MomentClient through a transport that
counts requests and can lose answers, the ledger in moto on a clock a test moves, and the bill
model's steps (raise a bill, take cash, pay at Moment, run the bill pusher).

A test module takes the fixtures by name, e.g. `sandbox = pushers.sandbox` (pytest finds a fixture by
the module attribute it is bound to)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import balance_pusher_handler
from local_stack.lambda_context import LocalLambdaContext
from local_stack.made_up_values import LOCAL_MOMENT_API_KEY
from local_stack.template import resource_properties
from moment_sandbox import MomentSandbox, SandboxSettings
from moment_sync.adapters.lease import DynamoLeases
from moment_sync.bill_pusher import BillPusher
from moment_sync.ledger import bill_service
from moment_sync.ledger.bills import BillRef
from moment_sync.moment_client import MomentClient, RetryPolicy
from moment_sync.pusher import BalancePusher
from support.ledger import LedgerHarness
from support.webhooks import NOW

DUE = 120000  # R1,200.00: an annual membership fee


class InFlight(httpx.BaseTransport):
    """Counts requests in flight at once, to check the pusher's concurrency bound."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.requests: list[str] = []
        # before_send may raise (the request never leaves) or return an answer instead of Moment's;
        # after_send may raise (Moment carried the request out, its answer is lost)
        self.before_send: Any = None
        self.after_send: Any = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.requests.append(f"{request.method} {request.url.path}")
        try:
            if self.before_send:
                instead = self.before_send(request)
                if isinstance(instead, httpx.Response):
                    return instead
            response = self._inner.handle_request(request)
            if self.after_send:
                response.read()
                self.after_send(request)
            return response
        finally:
            with self._lock:
                self.now -= 1


def timeout_of(function: str) -> float:
    """The function's `Timeout` in template.yaml."""
    return float(resource_properties(function)["Timeout"])


def invoke_pusher(pusher: BalancePusher, event: dict[str, Any] | None = None) -> dict[str, Any]:
    """The balance pusher's handler as Lambda invokes it (the template's timeout), with this pusher."""
    context = LocalLambdaContext("pusher", timeout_seconds=timeout_of("BalancePusherFunction"))
    return balance_pusher_handler.lambda_handler(event or {}, context, pusher)


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def sandbox() -> Iterator[MomentSandbox]:
    with MomentSandbox(SandboxSettings(webhook_url=None)) as running:
        yield running


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
def leases(harness: LedgerHarness) -> DynamoLeases:
    return harness.ledger.leases()


def balance_pusher(harness: LedgerHarness, moment: MomentClient, **options: Any) -> BalancePusher:
    """A balance pusher on the harness's ledger and clock, with a fixed jitter; `options` as the
    function's runtime would give them (concurrency, events, leases, backoff)."""
    return BalancePusher(
        ledger=harness.ledger, moment=moment, now=harness.clock, jitter=lambda: 0.5, **options
    )


@pytest.fixture
def pusher(harness: LedgerHarness, moment: MomentClient) -> BalancePusher:
    return balance_pusher(harness, moment, concurrency=4)


@pytest.fixture
def bill_pusher(harness: LedgerHarness, moment: MomentClient) -> BillPusher:
    return BillPusher(
        ledger=harness.ledger, moment=moment, now=harness.clock, concurrency=4, jitter=lambda: 0.5
    )


@pytest.fixture
def member(harness: LedgerHarness, pusher: BalancePusher) -> str:
    """A customer the balance pusher has put on Moment (a bill's owner must be there first)."""
    harness.ledger.request_first_push(harness.open_customer("UCR1"), NOW)
    pusher.push_pending(time_left=lambda: 300)
    moment_id = harness.head(harness.open_customer("UCR1"))["moment_id"]
    assert moment_id.startswith("bcus_")
    return str(moment_id)


# --- the bill model's steps ----------------------------------------------------------------------


def raise_bill(
    harness: LedgerHarness, ref: str = "FEE-2026", owner: str = "UCR1", amount_due: int = DUE
) -> BillRef:
    change = {"customer": owner, "currency": "ZAR", "amount_due": amount_due, "due_date": "2026-01-31"}
    bill_service.put_bill(harness.ledger, ref, change, harness.clock())
    return BillRef(ref)


def cash(harness: LedgerHarness, bill: BillRef, payment_id: str, amount: int) -> None:
    bill_service.pay_bill(harness.ledger, bill.ref, {"id": payment_id, "amount": amount}, harness.clock())


def pay_at_moment(
    sandbox: MomentSandbox, harness: LedgerHarness, bill: BillRef, amount: int, *, deliver: bool = True
) -> None:
    """A payment at Moment; with `deliver`, its webhook reconciled by the real reconciler."""
    paid = sandbox.pay(bill=bill.ref, amount=amount)
    if deliver:
        harness.receive(paid["webhook_id"], json.dumps(paid["event"]).encode())
        assert harness.invoke(harness.next_batch()) == []


def run(bill_pusher: BillPusher) -> dict[str, int]:
    return bill_pusher.push_pending(time_left=lambda: 300).results


def on_moment(sandbox: MomentSandbox, ref: str = "FEE-2026") -> dict[str, Any]:
    return next(item for item in sandbox.state()["bills"] if item["external_reference"] == ref)


def head(harness: LedgerHarness, bill: BillRef) -> dict[str, Any]:
    found = harness.ledger.get_bill(bill)
    assert found is not None
    return found


def patches(transport: InFlight) -> list[str]:
    return [request for request in transport.requests if request.startswith("PATCH /billing/bills")]


def lose_patch_answers(request: httpx.Request) -> None:
    """An `after_send`: every PATCH lands at Moment and its answer is lost."""
    if request.method == "PATCH":
        raise httpx.ReadTimeout("answer lost", request=request)
