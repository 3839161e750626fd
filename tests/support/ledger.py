"""A reconciler harness over moto: webhooks stored by the receiver's own adapter, stream records read
back through the DynamoDB Streams API, and the real handler invoked with them."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import boto3

import reconciler_handler
from local_stack.lambda_context import LocalLambdaContext
from local_stack.streams import StreamReader, filter_patterns, matches
from local_stack.template import create_table
from moment_sync.adapters.dynamo_items import from_item
from moment_sync.adapters.ledger_table import LedgerTable
from moment_sync.adapters.webhook_events_table import WebhookEventsTable
from moment_sync.envelope import read_envelope
from moment_sync.ledger.bills import BillRef
from moment_sync.ledger.model import BalanceKind, BalanceRef
from moment_sync.runtime import LedgerDependencies
from moment_sync.webhook_store import ReceivedWebhook
from support.webhooks import NOW

STREAM_FILTER = filter_patterns("ReconcilerFunction", "WebhookStream")


class LedgerHarness:
    def __init__(self, dynamodb: Any, clock: Callable[[], float] = lambda: NOW) -> None:
        # The pusher and the concurrency tests use threads; moto's in-process backend needs this.
        one_request_at_a_time(dynamodb)
        self.dynamodb = dynamodb
        self.events_name = create_table(dynamodb, "WebhookEventsTable", "WebhookEvents")
        self.ledger_name = create_table(dynamodb, "LedgerTable", "Ledger")
        self.events = WebhookEventsTable(dynamodb, self.events_name)
        self.ledger = LedgerTable(dynamodb, self.ledger_name, self.events)
        self.clock = clock
        self.stream = StreamReader(boto3.client("dynamodbstreams"), dynamodb, self.events_name)

    # --- given ----------------------------------------------------------------------------

    def open_customer(
        self, ref: str, moment_id: str | None = None, currency: str = "ZAR", **kwargs: Any
    ) -> BalanceRef:
        balance = BalanceRef(BalanceKind.CUSTOMER, ref)
        self.ledger.open_balance(balance, currency, self.clock(), moment_id=moment_id, **kwargs)
        return balance

    def open_bill(
        self, owner: BalanceRef, ref: str, amount_due: int = 1000, currency: str = "ZAR"
    ) -> BillRef:
        """An unpaid bill of `owner`, as the bill API puts it (no Moment link)."""
        bill = BillRef(ref)
        head = {"ref": bill.ref, "kind": "bill", "owner_kind": owner.kind.value, "owner_ref": owner.ref}
        head |= {"bill_owner": owner.partition_key, "currency": currency, "amount_due": amount_due}
        assert self.ledger.put_bill({**head, "amount_paid": 0, "status": "unpaid", "version": 0}) is None
        return bill

    def open_account(
        self, ref: str, customer_ref: str, moment_id: str | None = None, currency: str = "ZAR"
    ) -> BalanceRef:
        balance = BalanceRef(BalanceKind.ACCOUNT, ref)
        self.ledger.open_balance(
            balance, currency, self.clock(), customer_ref=customer_ref, moment_id=moment_id
        )
        return balance

    def receive(self, webhook_id: str, body: bytes, at: float | None = None) -> None:
        """What the receiver does with a verified webhook (its own adapter, its own item)."""
        received_at = self.clock() if at is None else at
        self.events.store_once(
            ReceivedWebhook(
                webhook_id,
                int(received_at),
                received_at,
                body,
                read_envelope(body),
                int(received_at) + 400 * 86400,
            )
        )

    # --- when -----------------------------------------------------------------------------

    def next_batch(self) -> list[dict[str, Any]]:
        """Stream records since the last read that pass the reconciler's filter, as Lambda sends them."""
        return [record for record in self.stream.new_records() if matches(record, STREAM_FILTER)]

    def invoke(self, records: list[dict[str, Any]]) -> list[str]:
        """Run the real handler on a batch; returns the sequence numbers it reported as failed."""
        dependencies = LedgerDependencies(events=self.events, ledger=self.ledger, clock=self.clock)
        response = reconciler_handler.lambda_handler(
            {"Records": records}, LocalLambdaContext("reconciler", timeout_seconds=60), dependencies
        )
        return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]

    def deliver_with_retries(self, records: list[dict[str, Any]], attempts: int = 10) -> None:
        """Lambda's ReportBatchItemFailures contract: retry from the lowest failed sequence number."""
        pending = records
        for _ in range(attempts):
            failed = self.invoke(pending)
            if not failed:
                return
            lowest = min(failed, key=int)
            start = next(
                index
                for index, record in enumerate(pending)
                if record["dynamodb"]["SequenceNumber"] == lowest
            )
            pending = pending[start:]
        raise AssertionError(f"still failing after {attempts} attempts")

    # --- then -----------------------------------------------------------------------------

    def head(self, balance: BalanceRef) -> dict[str, Any]:
        head = self.ledger.get_head(balance)
        assert head is not None
        return head

    def entries(self, balance: BalanceRef) -> list[dict[str, Any]]:
        return self.ledger.entries(balance, limit=1000)[0]

    def event(self, webhook_id: str) -> dict[str, Any]:
        event = self.events.get(webhook_id)
        assert event is not None
        return event

    def all_events(self) -> list[dict[str, Any]]:
        return [from_item(item) for item in self.dynamodb.scan(TableName=self.events_name)["Items"]]

    def assert_balances_equal_their_entries(self) -> None:
        """Invariant 3: for every balance, balance = the sum of its entries."""
        sums: dict[str, int] = {}
        heads: dict[str, int] = {}
        for item in self.ledger.scan_all():
            if item["sk"] == "HEAD" and "balance" in item:
                heads[item["pk"]] = item["balance"]
            elif item["sk"].startswith("ENTRY#"):
                sums[item["pk"]] = sums.get(item["pk"], 0) + item["amount"]
        for pk, balance in heads.items():
            assert balance == sums.get(pk, 0), f"{pk}: balance {balance} != entries {sums.get(pk, 0)}"


def payment(
    application_id: str,
    amount: int,
    *,
    customer_id: str | None = None,
    account_id: str | None = None,
    bill_id: str | None = None,
    currency: str = "ZAR",
    event_type: str = "obligation.amount_applied",
) -> bytes:
    data: dict[str, Any] = {
        "id": application_id,
        "amount": amount,
        "currency": currency,
        "payment_id": f"pay_{application_id}",
    }
    for name, value in (("customer_id", customer_id), ("account_id", account_id), ("bill_id", bill_id)):
        if value is not None:
            data[name] = value
    return json.dumps({"id": f"evt_{application_id}", "type": event_type, "data": data}).encode()


def one_request_at_a_time(client: Any) -> None:
    """moto's in-process backend is not thread-safe (a transaction deep-copies tables while another
    thread writes). DynamoDB serialises writes to an item itself; here each request is made atomic,
    so the threads still interleave between requests, which is where the reconciler's races live."""
    lock = threading.Lock()
    make_api_call = client._make_api_call

    def atomic(operation: str, params: dict[str, Any]) -> Any:
        with lock:
            return make_api_call(operation, params)

    client._make_api_call = atomic
