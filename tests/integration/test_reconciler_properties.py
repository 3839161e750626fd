"""A hypothesis state machine: any interleaving of deliveries, duplicates, redeliveries, reorderings and
transient failures with retries ends with every payment applied once (invariants 2, 3 and 5)."""

from __future__ import annotations

import random
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from moto import mock_aws

from support.ledger import LedgerHarness, payment

CUSTOMERS = ("UCR1", "UCR2", "UCR3")


class Deliveries(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.mock = mock_aws()
        self.mock.start()
        self.harness = LedgerHarness(boto3.client("dynamodb"))
        for number, ref in enumerate(CUSTOMERS):
            self.harness.open_customer(ref, moment_id=f"bcus_{number}")
        self.amounts: dict[str, tuple[str, int]] = {}  # application id → (customer ref, amount)
        self.webhooks = 0
        self.queue: list[dict[str, Any]] = []  # records Lambda still owes the reconciler
        self.seen: list[dict[str, Any]] = []  # every record ever read, for redeliveries
        self.fail_next: set[str] = set()
        self.harness.dynamodb.meta.events.register(
            "before-parameter-build.dynamodb.TransactWriteItems", self._maybe_fail
        )

    def _maybe_fail(self, params: dict[str, Any], **_: Any) -> None:
        entry_id = params["TransactItems"][0].get("Put", {}).get("Item", {}).get("entry_id", {}).get("S", "")
        application = entry_id.removeprefix("payment:")
        if application in self.fail_next:
            self.fail_next.discard(application)
            code = random.choice(["TransactionConflict", "ThrottlingError"])
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "injected"},
                    "CancellationReasons": [{"Code": code}, {"Code": "None"}, {"Code": "None"}],
                },
                "TransactWriteItems",
            )

    def _receive(self, application: str) -> None:
        customer, amount = self.amounts[application]
        self.webhooks += 1
        moment_id = f"bcus_{CUSTOMERS.index(customer)}"
        self.harness.receive(f"msg_{self.webhooks}", payment(application, amount, customer_id=moment_id))
        fresh = self.harness.next_batch()
        self.queue.extend(fresh)
        self.seen.extend(fresh)

    @rule(customer=st.sampled_from(CUSTOMERS), amount=st.integers(min_value=1, max_value=99_999_999))
    def moment_applies_a_payment(self, customer: str, amount: int) -> None:
        application = f"ob_{len(self.amounts)}"
        self.amounts[application] = (customer, amount)
        self._receive(application)

    @precondition(lambda self: self.amounts)
    @rule(data=st.data())
    def moment_sends_it_again_under_a_new_webhook_id(self, data: st.DataObject) -> None:
        self._receive(data.draw(st.sampled_from(sorted(self.amounts))))

    @precondition(lambda self: self.seen)
    @rule(data=st.data())
    def lambda_redelivers_old_records(self, data: st.DataObject) -> None:
        self.queue.extend(data.draw(st.lists(st.sampled_from(self.seen), min_size=1, max_size=5)))

    @precondition(lambda self: self.amounts)
    @rule(data=st.data())
    def a_transaction_will_fail_transiently(self, data: st.DataObject) -> None:
        self.fail_next.add(data.draw(st.sampled_from(sorted(self.amounts))))

    @precondition(lambda self: self.queue)
    @rule(size=st.integers(min_value=1, max_value=10), seed=st.integers(min_value=0, max_value=2**16))
    def lambda_delivers_a_shuffled_batch(self, size: int, seed: int) -> None:
        random.Random(seed).shuffle(self.queue)
        batch, self.queue = self.queue[:size], self.queue[size:]
        failed = set(self.harness.invoke(batch))
        # what failed comes back later (Lambda retries it)
        self.queue.extend(record for record in batch if record["dynamodb"]["SequenceNumber"] in failed)

    @invariant()
    def balances_equal_their_entries(self) -> None:
        self.harness.assert_balances_equal_their_entries()

    @invariant()
    def no_balance_ever_moves_more_than_the_distinct_payments(self) -> None:
        for number, ref in enumerate(CUSTOMERS):
            owed = sum(amount for customer, amount in self.amounts.values() if customer == ref)
            balance = self.harness.head(self.harness.open_customer(ref, moment_id=f"bcus_{number}"))[
                "balance"
            ]
            assert -owed <= balance <= 0

    def teardown(self) -> None:
        try:
            self.fail_next.clear()
            while self.queue:
                batch, self.queue = self.queue[:10], self.queue[10:]
                self.harness.deliver_with_retries(batch)
            for number, ref in enumerate(CUSTOMERS):
                expected = -sum(amount for customer, amount in self.amounts.values() if customer == ref)
                head = self.harness.head(self.harness.open_customer(ref, moment_id=f"bcus_{number}"))
                assert head["balance"] == expected, (ref, head["balance"], expected)
            statuses = [event["status"] for event in self.harness.all_events()]
            assert statuses.count("applied") == len(self.amounts)
            assert set(statuses) <= {"applied", "duplicate"}, statuses
        finally:
            self.mock.stop()


Deliveries.TestCase.settings = settings(
    max_examples=20, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck)
)
test_any_interleaving_applies_each_payment_exactly_once = pytest.mark.long_running(Deliveries.TestCase)
