"""The push race, enumerated: a payment Moment applies before, between and after the pusher's read
and PATCH, its webhook delivered before or after each step, runs killed midway, under both of
Moment's possible behaviours. The ledger, the reconciler and the pusher are the real ones (moto);
Moment is scripted in memory so every interleaving is exact and repeatable.

In every interleaving, once quiet: Moment's balance equals the ledger's, no payment is lost, and a
payment was overwritten on Moment only when it landed inside the read→PATCH window.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from moment_sync.ledger.model import BalanceRef, Entry, EntryKind
from moment_sync.moment_client import MomentCustomer
from moment_sync.moment_errors import MomentUnavailable
from moment_sync.pusher import BalancePusher
from support.ledger import LedgerHarness, payment

STEPS = ("before_read", "after_read", "after_patch", "after_run", "quiet")
KILLS = (None, "after_read", "after_patch")
OPENING, CHARGE, PAID, LATER = 5000, 100, 2000, 700


class KilledRun(BaseException):
    """Lambda stopping the pusher mid-push (not an error the pusher could catch and book)."""


@dataclass
class ScriptedMoment:
    """One Moment customer whose read and PATCH call back into the scenario."""

    balance: int
    lowers_on_payment: bool
    hooks: dict[str, Callable[[], None]] = field(default_factory=dict)
    patches: list[int] = field(default_factory=list)
    payments_applied: int = 0
    failing_patches: int = 0  # the next PATCHes answered 503 without being carried out
    # PATCHes that replaced a balance Moment had lowered by a payment with one that does not include it
    erasures: int = 0

    # Answers at once: what a run's time budget is sized by (MomentClient's part of the contract).
    worst_call_seconds: float = 0.0

    def within(self, time_left: Callable[[], float], *, keep_seconds: float = 0.0) -> ScriptedMoment:
        return self

    def _customer(self, moment_id: str) -> MomentCustomer:
        return MomentCustomer(id=moment_id, external_reference="C", balance=self.balance, currency="ZAR")

    def get_customer(self, moment_id: str) -> MomentCustomer:
        answer = self._customer(moment_id)
        self.hooks.get("after_read", lambda: None)()
        return answer

    def set_customer_balance(self, moment_id: str, balance: int, currency: str) -> MomentCustomer:
        if self.failing_patches:
            self.failing_patches -= 1
            raise MomentUnavailable(method="PATCH", path=f"/billing/customers/{moment_id}", status=503)
        if self.lowers_on_payment and self.payments_applied == 1 and balance == OPENING + CHARGE:
            self.erasures += 1
        self.balance = balance
        self.patches.append(balance)
        answer = self._customer(moment_id)
        self.hooks.get("after_patch", lambda: None)()
        return answer

    def apply_payment(self, amount: int) -> None:
        self.payments_applied += 1
        if self.lowers_on_payment:
            self.balance -= amount


SCENARIOS = [
    (lowers, paid_at, delivered_at, kill)
    for lowers, kill in itertools.product((True, False), KILLS)
    for paid_at, delivered_at in itertools.combinations_with_replacement(STEPS[:4], 2)
]


@pytest.fixture(scope="module")
def shared(request: pytest.FixtureRequest) -> Any:
    import boto3
    from moto import mock_aws

    with mock_aws():
        yield LedgerHarness(boto3.client("dynamodb"))


@pytest.mark.parametrize(("lowers", "paid_at", "delivered_at", "kill"), SCENARIOS)
def test_every_interleaving_converges_without_losing_the_payment(
    shared: LedgerHarness, lowers: bool, paid_at: str, delivered_at: str, kill: str | None
) -> None:
    harness = shared
    number = SCENARIOS.index((lowers, paid_at, delivered_at, kill))
    ref, moment_id = f"RACE{number}", f"bcus_race{number}"
    customer = harness.open_customer(ref, moment_id=moment_id)
    moment = ScriptedMoment(balance=OPENING, lowers_on_payment=lowers)
    pusher = BalancePusher(ledger=harness.ledger, moment=moment, now=harness.clock, concurrency=1)  # type: ignore[arg-type]

    # GIVEN a balance Moment already agrees with (pushed at 5000), then a new charge makes it pending
    _entry(harness, customer, EntryKind.BALANCE_SET, OPENING, "opening")
    pusher.push_pending(time_left=lambda: 300)
    assert moment.balance == OPENING and "push_shard" not in harness.head(customer)
    _entry(harness, customer, EntryKind.CHARGE, CHARGE, "inv-1")

    happened: list[str] = []

    def pay() -> None:
        moment.apply_payment(PAID)
        happened.append("paid")

    def deliver() -> None:
        harness.receive(f"msg_race{number}", payment(f"ob_race{number}", PAID, customer_id=moment_id))
        assert harness.invoke(harness.next_batch()) == []
        happened.append("delivered")

    def at(step: str) -> None:
        if paid_at == step:
            pay()
        if delivered_at == step:
            deliver()
        if kill == step:
            raise KilledRun(step)

    moment.hooks = {"after_read": lambda: at("after_read"), "after_patch": lambda: at("after_patch")}
    at("before_read")
    with contextlib.suppress(KilledRun):
        pusher.push_one(customer)
    moment.hooks = {}
    at("after_run")
    erased_in_first_run = moment.erasures
    # WHEN the system goes quiet: the webhook (at least once) has been reconciled, a later payment has
    # come and been reconciled too (so an overwritten payment and a lowered one must both be explained),
    # and the pusher has run
    if "delivered" not in happened:
        if "paid" not in happened:
            pay()
        deliver()
    moment.apply_payment(LATER)
    harness.receive(f"msg_later{number}", payment(f"ob_later{number}", LATER, customer_id=moment_id))
    assert harness.invoke(harness.next_batch()) == []
    for _ in range(4):
        pusher.push_pending(time_left=lambda: 300)

    # THEN Moment shows what the ledger shows, and the ledger has the payment exactly once
    head = harness.head(customer)
    assert head["balance"] == OPENING + CHARGE - PAID - LATER
    assert moment.balance == head["balance"], (happened, moment.patches)
    assert "push_shard" not in head
    # a payment on Moment was overwritten only when it landed inside the read→PATCH window, and only once
    assert erased_in_first_run == (1 if lowers and paid_at == "after_read" and kill != "after_read" else 0)
    assert moment.erasures == erased_in_first_run


def _entry(harness: LedgerHarness, balance: BalanceRef, kind: EntryKind, amount: int, source: str) -> None:
    entry = Entry(kind, amount, source, {"test": source}, "2026-09-21T00:00:00.000Z")
    assert harness.ledger.apply_entry(balance, entry, "ZAR").outcome.value == "applied"


def test_the_scenarios_cover_every_position_and_both_behaviours() -> None:
    assert len(SCENARIOS) == 2 * 3 * 10
    assert {paid for _, paid, _, _ in SCENARIOS} == set(STEPS[:4])


MOMENTS = ("before_second_run", "after_second_run", "quiet")
TWO_RUN_SCENARIOS = [
    (lowers, paid_at, delivered_at)
    for lowers in (True, False)
    for paid_at, delivered_at in itertools.combinations_with_replacement(MOMENTS, 2)
]


@pytest.mark.parametrize(("lowers", "paid_at", "delivered_at"), TWO_RUN_SCENARIOS)
def test_a_lost_answer_then_a_failed_patch_converge_whenever_the_payment_comes(
    shared: LedgerHarness, lowers: bool, paid_at: str, delivered_at: str
) -> None:
    """Issue 11, item 2: a PATCH that reached Moment with its answer lost, then a run whose PATCH
    really failed (503). With one remembered intent Moment's balance was explained by neither, and the
    balance stayed deferred for good; every open intent now explains it, wherever the payment falls."""
    harness = shared
    number = TWO_RUN_SCENARIOS.index((lowers, paid_at, delivered_at))
    ref, moment_id = f"TWO{number}", f"bcus_two{number}"
    customer = harness.open_customer(ref, moment_id=moment_id)
    moment = ScriptedMoment(balance=OPENING, lowers_on_payment=lowers)
    pusher = BalancePusher(ledger=harness.ledger, moment=moment, now=harness.clock, concurrency=1)  # type: ignore[arg-type]
    _entry(harness, customer, EntryKind.BALANCE_SET, OPENING, "opening")
    pusher.push_one(customer)

    def at(step: str) -> None:
        if paid_at == step:
            moment.apply_payment(PAID)
        if delivered_at == step:
            harness.receive(f"msg_two{number}", payment(f"ob_two{number}", PAID, customer_id=moment_id))
            assert harness.invoke(harness.next_batch()) == []

    # GIVEN a PATCH Moment carried out whose answer was lost (the run stopped: nothing booked)
    _entry(harness, customer, EntryKind.CHARGE, CHARGE, "inv-1")
    moment.hooks = {"after_patch": lambda: (_ for _ in ()).throw(KilledRun("answer lost"))}
    with contextlib.suppress(KilledRun):
        pusher.push_one(customer)
    moment.hooks = {}
    assert moment.balance == OPENING + CHARGE
    # AND a later run whose PATCH really failed
    _entry(harness, customer, EntryKind.CHARGE, LATER, "inv-2")
    at("before_second_run")
    moment.failing_patches = 1
    pusher.push_one(customer)
    moment.failing_patches = 0
    at("after_second_run")
    at("quiet")
    # WHEN the pusher runs again (ignoring the backoff)
    for _ in range(3):
        pusher.push_one(customer)
    # THEN Moment shows the ledger's balance, with the payment applied exactly once, and nothing erased
    head = harness.head(customer)
    assert head["balance"] == OPENING + CHARGE + LATER - PAID
    assert moment.balance == head["balance"], moment.patches
    assert "push_shard" not in head and "push_intents" not in head
    assert moment.erasures == 0
