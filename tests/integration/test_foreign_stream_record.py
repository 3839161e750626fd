"""A stream record that is not a WebhookEvents item (AWS's own `sam local generate-event dynamodb
update` sample, which has no webhook_id) is acknowledged, counted and logged by its names only: there
is no event to park, and retrying it until the retry limit could never succeed."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from support.ledger import LedgerHarness, payment

# Written by `sam local generate-event dynamodb update` (SAM CLI 1.170), unchanged.
AWS_SAMPLE = Path(__file__).resolve().parents[1] / "support" / "sam_generate_event_dynamodb_update.json"


def emf_metrics(output: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            blob = json.loads(line)
            for directive in blob["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    value = blob[metric["Name"]]  # a list when one blob holds several values
                    total = sum(value) if isinstance(value, list) else value
                    counts[metric["Name"]] = counts.get(metric["Name"], 0) + total
    return counts


def test_aws_sample_update_batch_is_acknowledged_counted_and_logged_without_values(
    dynamodb: Any, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    harness = LedgerHarness(dynamodb)
    records = json.loads(AWS_SAMPLE.read_text())["Records"]
    assert [record["eventName"] for record in records] == ["INSERT", "MODIFY", "REMOVE"]
    capsys.readouterr()

    with caplog.at_level(logging.ERROR):
        failed = harness.invoke(records)

    assert failed == []  # acknowledged: Lambda moves on instead of retrying to the limit
    assert emf_metrics(capsys.readouterr().out)["StreamRecordsForeign"] == 1  # the INSERT
    [log] = [r for r in caplog.records if "not a WebhookEvents item" in r.getMessage()]
    assert log.attribute_names == ["Id", "Message"]  # type: ignore[attr-defined]
    assert log.key_names == ["Id"]  # type: ignore[attr-defined]
    assert "New item!" not in json.dumps(log.__dict__, default=str)  # names, never values
    assert harness.all_events() == []  # nothing written anywhere


def test_a_foreign_record_does_not_hold_up_the_payment_beside_it(
    dynamodb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    harness = LedgerHarness(dynamodb)
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_1", payment("ob_1", 2000, customer_id="bcus_1"))
    [ours] = harness.next_batch()
    [foreign] = json.loads(AWS_SAMPLE.read_text())["Records"][:1]

    assert harness.invoke([foreign, ours]) == []

    assert harness.head(customer)["balance"] == -2000
    assert harness.event("msg_1")["status"] == "applied"
    assert emf_metrics(capsys.readouterr().out)["RecordsReconciled"] == 1
