"""A hypothesis state machine over entries keyed by time (docs/ledger.md#entries-keyed-by-time): any
sequence of deliveries, redeliveries, attempts that die after their claim, refusals (a balance not
there yet) then acceptance, stalled attempts (a transaction that lands up to
ATTEMPT_LIFETIME_SECONDS after its attempt read the claim, or never) and clock jumps keeps, at every step:
no application applied twice (one entry at most, on one balance), each balance the sum of its entries,
and no entry dated more than CLAIM_FRESH_SECONDS before the attempt that wrote it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from moto import mock_aws

from moment_sync.adapters.entry_keys import ATTEMPT_LIFETIME_SECONDS, CLAIM_FRESH_SECONDS, parse_time
from moment_sync.adapters.ledger_table import (
    PaymentOutcome,
    PaymentResult,
    TransientLedgerError,
    application_item,
)
from moment_sync.adapters.webhook_events_table import iso_time
from moment_sync.ledger.model import BalanceKind, BalanceRef, Entry, EntryKind
from support.ledger import NOW, LedgerHarness

CUSTOMERS = ("UCR1", "UCR2")  # UCR2 opens only when a rule says so: payments to it are refused first
JUMPS = (
    1.0,
    60.0,
    CLAIM_FRESH_SECONDS - 1,
    CLAIM_FRESH_SECONDS,
    600.0,
    ATTEMPT_LIFETIME_SECONDS,
    3600.0,
    86_400.0,
)


class EntryTimes(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.mock = mock_aws()
        self.mock.start()
        self.harness = LedgerHarness(boto3.client("dynamodb"))
        self.harness.open_customer("UCR1")
        self.opened = {"UCR1"}
        self.clock = NOW
        self.payments: dict[str, tuple[str, int]] = {}  # application id → (customer ref, amount)
        self.applied: set[str] = set()  # seen applied or duplicate: its entry must be there
        self.webhooks = 0
        # attempts that read their claim and have not sent their transaction yet
        self.flying: list[tuple[float, BalanceRef, Entry, str, dict[str, Any] | None]] = []

    def teardown(self) -> None:
        self.mock.stop()

    def _attempt(self, application: str, now: float) -> None:
        customer, amount = self.payments[application]
        self.webhooks += 1
        webhook = f"msg_{self.webhooks}"
        entry = Entry(EntryKind.PAYMENT, -amount, application, {"webhook_id": webhook}, iso_time(now))
        balance = BalanceRef(BalanceKind.CUSTOMER, customer)
        try:
            result = self.harness.ledger.apply_payment(balance, entry, "ZAR", webhook, now)
        except TransientLedgerError:
            return  # the stream or the re-drive tries again later
        if result.outcome in (PaymentOutcome.APPLIED, PaymentOutcome.DUPLICATE):
            self.applied.add(application)

    @rule(customer=st.sampled_from(CUSTOMERS), amount=st.integers(min_value=1, max_value=10_000))
    def moment_applies_a_payment(self, customer: str, amount: int) -> None:
        application = f"ob_{len(self.payments)}"
        self.payments[application] = (customer, amount)
        self._attempt(application, self.clock)

    @precondition(lambda self: self.payments)
    @rule(data=st.data())
    def a_delivery_or_the_redrive_tries_it_again(self, data: st.DataObject) -> None:
        self._attempt(data.draw(st.sampled_from(sorted(self.payments))), self.clock)

    @precondition(lambda self: self.payments)
    @rule(data=st.data())
    def an_attempt_claims_and_stalls_before_its_transaction(self, data: st.DataObject) -> None:
        """It read the claim (and judged its age) now; its transaction lands later (or never)."""
        application = data.draw(st.sampled_from(sorted(self.payments)))
        customer, amount = self.payments[application]
        self.webhooks += 1
        webhook = f"msg_{self.webhooks}"
        entry = Entry(EntryKind.PAYMENT, -amount, application, {"webhook_id": webhook}, iso_time(self.clock))
        balance = BalanceRef(BalanceKind.CUSTOMER, customer)
        try:
            claimed = self.harness.ledger.claim_payment(balance, entry, "ZAR", webhook, self.clock)
        except TransientLedgerError:
            return
        if isinstance(claimed, PaymentResult):
            if claimed.outcome is PaymentOutcome.DUPLICATE:
                self.applied.add(application)
            return
        self.flying.append((self.clock, balance, claimed[0], webhook, claimed[1]))

    @precondition(lambda self: self.flying)
    @rule(data=st.data())
    def a_stalled_attempt_lands(self, data: st.DataObject) -> None:
        """Only within an attempt's lifetime of its read (Lambda's timeout ends it after that)."""
        started, balance, entry, webhook, claim = self.flying.pop(
            data.draw(st.integers(0, len(self.flying) - 1))
        )
        if self.clock - started > ATTEMPT_LIFETIME_SECONDS:
            return  # the attempt timed out: it never lands
        result = self.harness.ledger.write_payment(balance, entry, "ZAR", webhook, started, claim)
        if result.outcome in (PaymentOutcome.APPLIED, PaymentOutcome.DUPLICATE):
            self.applied.add(entry.source_id)

    @rule(customer=st.sampled_from(CUSTOMERS), amount=st.integers(min_value=1, max_value=10_000))
    def an_attempt_dies_after_its_claim(self, customer: str, amount: int) -> None:
        application = f"ob_{len(self.payments)}"
        self.payments[application] = (customer, amount)
        entry = Entry(EntryKind.PAYMENT, -amount, application, {}, iso_time(self.clock))
        balance = BalanceRef(BalanceKind.CUSTOMER, customer)
        self.harness.ledger.claim_application(application_item(balance, entry, "ZAR", "msg_dead"))

    @precondition(lambda self: "UCR2" not in self.opened)
    @rule()
    def the_merchant_opens_the_second_balance(self) -> None:
        self.harness.ledger.open_balance(BalanceRef(BalanceKind.CUSTOMER, "UCR2"), "ZAR", self.clock)
        self.opened.add("UCR2")

    @rule(jump=st.sampled_from(JUMPS))
    def time_passes(self, jump: float) -> None:
        self.clock += jump

    def _entries(self) -> list[dict[str, Any]]:
        return [item for item in self.harness.ledger.scan_all() if str(item["sk"]).startswith("ENTRY#")]

    @invariant()
    def no_application_is_applied_twice_and_none_is_backdated(self) -> None:
        entries = self._entries()
        counted = Counter(str(item["entry_id"]) for item in entries)
        assert all(count == 1 for count in counted.values()), counted
        for item in entries:
            age = parse_time(str(item["recorded_at"])) - parse_time(str(item["created_at"]))
            assert 0 <= age < CLAIM_FRESH_SECONDS, item
            customer, amount = self.payments[str(item["entry_id"]).removeprefix("payment:")]
            assert (item["pk"], item["amount"]) == (f"CUSTOMER#{customer}", -amount)
        assert self.applied <= {str(item["entry_id"]).removeprefix("payment:") for item in entries}
        self.harness.assert_balances_equal_their_entries()


EntryTimes.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
)


@pytest.mark.long_running
def test_entry_times_hold_under_any_interleaving() -> None:
    EntryTimes.TestCase().runTest()
