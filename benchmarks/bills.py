"""A bill payment's cost in DynamoDB against a balance payment's, measured the same way in the same run.

A payment with `data.bill_id` through the real reconciler handler against moto (tables from
template.yaml, real stream records), counted with a `before-call` hook and sized by DynamoDB's rules
(`dynamodb_units.py`), exactly as `reconciler.write_units_applied` measures a balance payment: the
bill is linked and already pushed (its create booked), its link cached, as in a warm environment.
docs/performance.md says what the row means.
"""

from __future__ import annotations

import json
import time
from typing import Any

from benchmarks import measure, reconciler
from benchmarks.registry import ROOT, Context, Row

TITLE = "a bill payment's write units vs a balance payment's"
AREA = "bills"
BILL_MOMENT_ID = "bill_bench0000000000000001"


def run(context: Context) -> list[Row]:
    context.progress("bills: requests and write units of a bill payment (moto)")
    handler = reconciler._handler()
    found = measure.run_call(
        context.python,
        "benchmarks.bills:storage_child",
        {},
        environment=reconciler._environment(),
        pythonpath=(handler[0], reconciler.LAYER_DIR, ROOT / "local", ROOT / "tests", ROOT),
        timeout=300,
    )
    bill, balance = found["bill"], found["balance"]
    return [
        Row(
            area=AREA,
            name="bills.write_units_payment",
            title="write units per bill payment (data.bill_id), against a balance payment",
            measured=bill["units"]["total"],
            baseline=balance["units"]["total"],
            unit="write units",
            # The goal is on the count (issue 16: at most 7 per applied payment), not on the ratio to
            # a balance payment: the gate is the count itself.
            goal=reconciler.AT_MOST_7_UNITS,
            gate=bill["units"]["total"],
            gate_label="write units (goal: at most 7, the count itself)",
            measured_label=reconciler._describe_units(bill["units"]),
            baseline_label="a balance payment (reconciler.write_units_applied's case): "
            + reconciler._describe_units(balance["units"]),
            notes=[
                "the same writes as a balance payment: the application's claim (a plain conditional "
                "put, 1 unit per KB), one TransactWriteItems of the entry and the bill head (2 units "
                "per KB each), the event's status (a plain update) and the index writes: the head's "
                "amount_paid is projected into BillsByOwner; a Moment payment alone never makes the "
                "bill pending, so PendingPush is not written",
                f"item sizes: entry {bill['sizes']['entry']} B, bill head {bill['sizes']['head_before']}"
                f"->{bill['sizes']['head_after']} B, guard {bill['sizes']['guard']} B",
                f"DynamoDB requests: {bill['requests']} (the bill head is read first: its status and "
                "listing key depend on the new total, which an update expression cannot compute)",
            ],
            details={"bill": bill, "balance": balance},
        )
    ]


def cost_inputs(context: Context) -> list[Row]:
    return run(context)


def storage_child(params: dict[str, Any]) -> dict[str, Any]:
    """In a fresh interpreter: a balance payment and a bill payment through the real handler on moto."""
    import boto3  # noqa: PLC0415
    from moto import mock_aws  # noqa: PLC0415

    from moment_sync.ledger import bill_service  # noqa: PLC0415
    from moment_sync.ledger.bills import BillRef  # noqa: PLC0415
    from support.ledger import LedgerHarness  # noqa: PLC0415

    del params
    with mock_aws():
        harness = LedgerHarness(boto3.client("dynamodb"), clock=time.time)
        scenario = reconciler._Scenario(harness, boto3.client("dynamodb"))
        moment_id, customer = scenario.balances[0]
        harness.ledger._links.clear()
        scenario._payment(moment_id, customer)  # the link read, then cached
        _not_pending(scenario, customer.partition_key)  # as a push would leave it
        balance = scenario._applied_units(scenario._payment(moment_id, customer))

        bill = BillRef("BENCH-FEE-2026")
        change = {"customer": customer.ref, "currency": "ZAR", "amount_due": 99_000_000}
        bill_service.put_bill(harness.ledger, bill.ref, change, time.time())
        harness.ledger.link_bill(bill, BILL_MOMENT_ID)
        harness.ledger.record_bill_push(bill, harness.ledger.get_bill(bill) or {}, 0, time.time())
        harness.ledger._bill_links.clear()
        _bill_payment(scenario, moment_id, bill)  # the bill's link read, then cached
        measured = scenario._applied_units(_bill_payment(scenario, moment_id, bill))
        head = harness.ledger.get_bill(bill) or {}
        assert "push_shard" not in head, "a Moment payment alone made the bill pending"
    return {"bill": measured, "balance": balance}


def _not_pending(scenario: Any, partition_key: str) -> None:
    scenario.reader.update_item(
        TableName=reconciler.LEDGER_TABLE,
        Key={"pk": {"S": partition_key}, "sk": {"S": "HEAD"}},
        UpdateExpression="REMOVE push_shard, pending_since",
    )


def _bill_payment(scenario: Any, customer_moment_id: str, bill: Any) -> dict[str, Any]:
    """A webhook shaped like events/'s sample, naming the bill (and, as Moment may, its customer)."""
    scenario.counter += 1
    number = scenario.counter
    application = f"ob_benchbill{number:012d}"
    document = json.loads(reconciler._moment_body(scenario.template, number, customer_moment_id, application))
    document["data"]["bill_id"] = BILL_MOMENT_ID
    webhook_id = f"msg_benchbill{number:016d}"
    scenario.harness.receive(webhook_id, json.dumps(document, separators=(",", ":")).encode())
    records = scenario.harness.next_batch()
    assert len(records) == 1, records
    payment: dict[str, Any] = scenario._payment(
        customer_moment_id, bill, application=application, records=records
    )
    assert payment["status"] == "applied", payment["status"]
    return payment
