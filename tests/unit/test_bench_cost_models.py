"""The cost models of `make bench` (benchmarks/cost.py, events_cost.py) and the canned DynamoDB the
reconciler's timed rows run on: each figure is what the stated prices and assumptions give."""

from __future__ import annotations

import math

import boto3
import pytest
from botocore.exceptions import ClientError

from benchmarks import cost, events_cost
from benchmarks.fake_aws import CannedDynamoDB, claimed_by_another
from benchmarks.registry import Context

CLAIM = {
    "TableName": "Ledger",
    "Item": {"pk": {"S": "APPLICATION#ob_1"}, "sk": {"S": "GUARD"}, "webhook_id": {"S": "msg_2"}},
    "ConditionExpression": "attribute_not_exists(pk)",
    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
}


def _client(backend: CannedDynamoDB) -> object:
    client = boto3.client(
        "dynamodb", region_name="af-south-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    backend.attach(client.meta.events)
    return client


def test_the_canned_dynamodb_takes_the_reconcilers_claim_and_refuses_it_as_another_webhooks_guard() -> None:
    backend = CannedDynamoDB()
    client = _client(backend)
    client.put_item(**CLAIM)  # type: ignore[attr-defined]
    backend.refuse_claims = claimed_by_another
    with pytest.raises(ClientError) as refused:
        client.put_item(**CLAIM)  # type: ignore[attr-defined]
    assert refused.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert refused.value.response["Item"]["webhook_id"] == {"S": "msg_bench_applied_first"}
    assert refused.value.response["Item"]["pk"] == CLAIM["Item"]["pk"]
    assert backend.requests == {"PutItem": 2}


def test_events_out_worst_case_is_three_events_and_one_head_write_per_webhook() -> None:
    worst = events_cost.per_million(bill_share=0.0, cycles_per_balance_payment=1.0)
    assert worst == pytest.approx(
        {"payment_applied": 1.40, "bill_paid": 0.0, "sync_state_events": 2.80, "sync_state_writes": 1.25}
    )
    # A bill payment: one Bill Paid through BillEventsPipe, no sync-state change.
    assert sum(events_cost.per_million(bill_share=1.0, cycles_per_balance_payment=1.0).values()) == (
        pytest.approx(1.40)
    )


def test_a_balance_paid_many_times_in_one_push_cycle_shares_its_sync_state_events() -> None:
    assert events_cost.cycles_per_payment(0.0) == 1.0
    assert events_cost.cycles_per_payment(1e-4) == pytest.approx(1.0, abs=1e-4)
    assert events_cost.cycles_per_payment(10) == pytest.approx((1 - math.exp(-10)) / 10)
    busy = events_cost.per_million(bill_share=0.0, cycles_per_balance_payment=0.1)
    assert busy["sync_state_events"] == pytest.approx(0.28)
    assert busy["payment_applied"] == pytest.approx(1.40)  # every payment is still announced


def test_the_events_rows_keep_the_worst_case_beside_the_typical_one() -> None:
    rows = {row.name: row for row in events_cost.run(Context(quick=True, progress=lambda _: None))}
    worst = rows["events_cost.per_million_webhooks"].measured
    typical = rows["events_cost.per_million_webhooks_typical"].measured
    assert worst == pytest.approx(5.45)
    assert typical <= worst


def test_everything_included_is_the_model_plus_the_events_against_the_budget() -> None:
    webhook = cost.Webhook(
        api_gateway=1e-6, lambda_=0.5e-6, dynamodb=6e-6, logs=1e-6, secrets_manager=1e-6, explained={}
    )
    row = cost._everything_included(webhook)
    assert row.measured == pytest.approx(9.5 + 5.45)
    assert row.baseline == 8.50
    assert row.goal is not None and not row.goal.met_by(row.ratio)
    # Ten times the webhooks: the month's Secrets Manager bill spread ten times thinner.
    assert row.details["at_ten_million_webhooks_a_month"] == pytest.approx(9.5 + 5.45 - 0.9)


def test_the_redrive_reads_each_webhooks_status_twice_and_its_index_keys_twice() -> None:
    # The forward read's strongly consistent status (1), the late sweep's eventually consistent one
    # (0.5), and 2 x 100 bytes of KEYS_ONLY index at 0.5 unit per 4 KB.
    assert cost.redrive_read_units_per_webhook() == pytest.approx(1.5 + 200 / 4096 * 0.5)
    per_million = (
        cost.redrive_read_units_per_webhook() * cost.PRICES["dynamodb_per_million_read_request_units"]
    )
    assert per_million == pytest.approx(0.19, abs=0.005)
