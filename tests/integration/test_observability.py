"""What the alarms and saved queries of template.yaml rely on, seen in what the code really prints.

The unit test `test_template_observability` reads metric names from the source; these run the code
and read its EMF blobs and log records: the re-drive counts the events it finds still `received`
(the "events still received" alarm), every run counts even when there is nothing to do (the
"not running" heartbeats), and the receiver logs the payment id (the "follow a payment" query).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import redrive_handler
from local_stack.lambda_context import LocalLambdaContext
from moment_sync.ledger.model import BalanceRef, Entry, EntryKind
from moment_sync.pusher import BalancePusher
from moment_sync.receiver import ReceiverSettings, WebhookRequest, receive_webhook
from moment_sync.runtime import LedgerDependencies
from moment_sync.webhook_store import ReceivedWebhook, StoreResult
from support import pushers
from support.ledger import LedgerHarness, payment
from support.webhooks import NOW, TEST_SECRET, key_bytes, webhook_event

GRACE_SECONDS = 600  # what the handler uses when REDRIVE_GRACE_SECONDS is not set


def emf_blobs(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{") and '"_aws"' in line]


def metric_values(blob: dict[str, Any]) -> dict[str, float]:
    """Each metric's total in one blob (Powertools writes a list when a metric was added more than once)."""
    [directive] = blob["_aws"]["CloudWatchMetrics"]
    values = {metric["Name"]: blob[metric["Name"]] for metric in directive["Metrics"]}
    return {name: sum(value) if isinstance(value, list) else value for name, value in values.items()}


def redrive_run(harness: LedgerHarness, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """One scheduled re-drive run through the real handler; its one EMF blob of counts."""
    capsys.readouterr()
    dependencies = LedgerDependencies(events=harness.events, ledger=harness.ledger, clock=harness.clock)
    redrive_handler.lambda_handler({}, LocalLambdaContext("redrive", timeout_seconds=120), dependencies)
    [blob] = [blob for blob in emf_blobs(capsys.readouterr().out) if "RedriveExamined" in blob]
    return blob


def test_the_redrive_counts_events_it_finds_still_received_with_the_service_dimension_only(
    dynamodb: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDRIVE_GRACE_SECONDS", raising=False)
    monkeypatch.delenv("MOMENT_API_KEY_SECRET_ARN", raising=False)  # no Moment: nothing to link
    now = [float(NOW)]
    harness = LedgerHarness(dynamodb, clock=lambda: now[0])
    harness.open_customer("UCR1", moment_id="bcus_1")
    # GIVEN one payment the stream parked unmatched, and one whose stream record was lost
    harness.receive("msg_unmatched", payment("ob_1", 500, customer_id="bcus_unknown"))
    assert harness.invoke(harness.next_batch()) == []
    harness.receive("msg_missed", payment("ob_2", 300, customer_id="bcus_1"))

    # WHEN the re-drive runs before the grace period is over, THEN it finds nothing, and still counts
    quiet = redrive_run(harness, capsys)
    assert metric_values(quiet) == {
        "RedriveExamined": 0,
        "RedriveFoundReceived": 0,
        "RedriveErrors": 0,
        # Every cursor read through to now - grace; nothing waits in the retry list.
        "RedriveCursorLagSeconds": GRACE_SECONDS,
        "RedriveRetryListLength": 0,
        # Events the late sweep found behind a cursor (docs/operations.md#redrive-found-behind-cursor).
        "RedriveFoundBehindCursor": 0,
    }

    # WHEN it runs after the grace period
    now[0] += GRACE_SECONDS + 1
    blob = redrive_run(harness, capsys)
    # THEN it counts the one still received (the alarm's metric) apart from the unmatched one it re-parks
    counts = metric_values(blob)
    assert counts["RedriveFoundReceived"] == 1
    assert counts["RedriveExamined"] == 2
    assert counts["EventParked_unmatched"] == 1  # re-parked on every run: its alarm stays on
    assert counts["PaymentApplied"] == 1
    # AND with exactly the namespace and dimensions the template's alarms use
    [directive] = blob["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "MomentBalanceSync"
    assert directive["Dimensions"] == [["service"]]
    assert blob["service"] == "moment-balance-sync"
    assert harness.event("msg_missed")["status"] == "applied"

    # AND the next run finds nothing still received
    assert metric_values(redrive_run(harness, capsys))["RedriveFoundReceived"] == 0


class AcceptingStore:
    def store_once(self, webhook: ReceivedWebhook) -> StoreResult:
        return StoreResult(created=True)


def test_the_receiver_logs_the_payment_id_beside_the_webhook_id(capsys: pytest.CaptureFixture[str]) -> None:
    body = payment("ob_1", 15000, customer_id="bcus_1")
    event = webhook_event(body, webhook_id="msg_follow_me")
    capsys.readouterr()
    response = receive_webhook(
        WebhookRequest(event["headers"], event["body"], bool(event.get("isBase64Encoded"))),
        keys=lambda: [key_bytes(TEST_SECRET)],
        store=AcceptingStore(),
        settings=ReceiverSettings(),
        now=lambda: NOW,
    )
    assert response["statusCode"] == 200
    # The accepted line is written directly (one JSON line with its metric), not through logging.
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [accepted] = [line for line in lines if line.get("message") == "webhook accepted"]
    assert accepted["payment_id"] == "pay_ob_1"
    assert accepted["correlation_id"] == "msg_follow_me"
    assert accepted["event_type"] == "obligation.amount_applied"


# The keys of the line every applied payment writes: what the saved queries read (level, message,
# function_name, correlation_id, payment_id, reference, entry_id, amount, currency), the invocation it
# belongs to (function_request_id), and the application, balance kind. Nothing a Powertools record
# repeats on every line (timestamp, function_arn, function_memory_size, location, service, cold_start).
APPLIED_LINE_KEYS = {
    "level",
    "message",
    "function_name",
    "function_request_id",
    "correlation_id",
    "application_id",
    "payment_id",
    "reference",
    "balance_kind",
    "entry_id",
    "amount",
    "currency",
}


def lines_of(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_an_applied_payment_is_one_short_line_with_what_an_operator_follows_and_its_metrics_in_one_blob(
    dynamodb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    harness = LedgerHarness(dynamodb)
    harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_short", payment("ob_short", 1500, customer_id="bcus_1"))
    records = harness.next_batch()
    capsys.readouterr()
    # WHEN a one-record invocation applies the payment
    assert harness.invoke(records) == []
    lines = lines_of(capsys.readouterr().out)
    # THEN one line an operator follows, with only the keys it needs
    [applied] = [line for line in lines if line.get("message") == "payment applied"]
    assert set(applied) == APPLIED_LINE_KEYS
    assert {key: applied[key] for key in APPLIED_LINE_KEYS - {"function_request_id"}} == {
        "level": "INFO",
        "message": "payment applied",
        "function_name": "reconciler",
        "correlation_id": "msg_short",
        "application_id": "ob_short",
        "payment_id": "pay_ob_short",
        "reference": "UCR1",
        "balance_kind": "customer",
        "entry_id": "payment:ob_short",
        "amount": 1500,
        "currency": "ZAR",
    }
    assert applied["function_request_id"]
    # AND every metric the dashboard and alarms read, in the invocation's one EMF blob
    [blob] = [line for line in lines if "_aws" in line and "PaymentApplied" in line]
    assert metric_values(blob) == {"PaymentApplied": 1, "AmountApplied_ZAR": 1500, "RecordsReconciled": 1}
    assert blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    # AND nothing else (no other log line, no other blob)
    assert len([line for line in lines if "_aws" not in line]) == 1


def test_at_log_level_warning_an_applied_payment_writes_no_line_but_still_counts(
    dynamodb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from moment_sync.observability import logger

    harness = LedgerHarness(dynamodb)
    harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_quiet", payment("ob_quiet", 700, customer_id="bcus_1"))
    records = harness.next_batch()
    capsys.readouterr()
    level = logger.log_level
    logger.setLevel("WARNING")
    try:
        assert harness.invoke(records) == []
    finally:
        logger.setLevel(level)
    lines = lines_of(capsys.readouterr().out)
    assert not [line for line in lines if "message" in line]
    [blob] = [line for line in lines if "PaymentApplied" in line]
    assert metric_values(blob)["PaymentApplied"] == 1


def test_a_bill_payment_is_one_short_line_too(dynamodb: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from moment_sync.ledger import bill_service
    from moment_sync.ledger.bills import BillRef

    harness = LedgerHarness(dynamodb)
    harness.open_customer("UCR1", moment_id="bcus_1")
    bill_service.put_bill(
        harness.ledger, "FEE", {"customer": "UCR1", "currency": "ZAR", "amount_due": 900}, NOW
    )
    harness.ledger.link_bill(BillRef("FEE"), "bill_1")
    harness.receive("msg_bill", payment("ob_bill", 400, customer_id="bcus_1", bill_id="bill_1"))
    records = harness.next_batch()
    capsys.readouterr()
    assert harness.invoke(records) == []
    [applied] = [
        line for line in lines_of(capsys.readouterr().out) if line.get("message") == "bill payment applied"
    ]
    assert set(applied) == APPLIED_LINE_KEYS
    assert (applied["reference"], applied["balance_kind"], applied["amount"]) == ("FEE", "bill", 400)
    assert applied["correlation_id"] == "msg_bill"


# --- The pusher's line per pushed or created balance -------------------------------------------------

# The keys of the line every pushed balance writes: what the saved queries read (level, message,
# function_name, reference, balance, was), the invocation it belongs to (function_request_id), and what
# was pushed where (balance_kind, moment_id). The pusher sets no correlation id, so none is written.
PUSHED_LINE_KEYS = {
    "level",
    "message",
    "function_name",
    "function_request_id",
    "reference",
    "balance_kind",
    "moment_id",
    "balance",
    "was",
}

# The pusher's harness (support/pushers.py): pytest finds each fixture by the name bound here.
sandbox = pushers.sandbox
transport = pushers.transport
moment = pushers.moment
clock = pushers.clock
harness = pushers.harness
pusher = pushers.pusher


def charge(harness: LedgerHarness, balance: BalanceRef, charge_id: str, amount: int) -> None:
    entry = Entry(EntryKind.CHARGE, amount, charge_id, {"charge_id": charge_id}, "2026-09-21T00:00:00.000Z")
    assert harness.ledger.apply_entry(balance, entry, "ZAR").outcome.value == "applied"


def pushed_once(
    harness: LedgerHarness, pusher: BalancePusher, capsys: pytest.CaptureFixture[str]
) -> tuple[BalanceRef, list[dict[str, Any]]]:
    """UCR1 created on Moment at 2000, then charged 550: the lines of the run that created it."""
    customer = harness.open_customer("UCR1")
    charge(harness, customer, "inv-1", 2000)
    capsys.readouterr()
    assert pushers.invoke_pusher(pusher)["results"] == {"created": 1}
    created = lines_of(capsys.readouterr().out)
    charge(harness, customer, "inv-2", 550)
    return customer, created


def test_a_pushed_balance_is_one_short_line_with_what_an_operator_follows_and_its_metrics_in_one_blob(
    harness: LedgerHarness, pusher: BalancePusher, capsys: pytest.CaptureFixture[str]
) -> None:
    customer, created_lines = pushed_once(harness, pusher, capsys)
    moment_id = harness.head(customer)["moment_id"]
    [created] = [line for line in created_lines if line.get("message") == "balance created on Moment"]
    assert set(created) == PUSHED_LINE_KEYS - {"was"}
    assert (created["reference"], created["moment_id"], created["balance"]) == ("UCR1", moment_id, 2000)
    # WHEN the run pushes the charged balance
    assert pushers.invoke_pusher(pusher)["results"] == {"pushed": 1}
    lines = lines_of(capsys.readouterr().out)
    # THEN one line an operator follows, with only the keys it needs
    [pushed] = [line for line in lines if line.get("message") == "balance pushed"]
    assert set(pushed) == PUSHED_LINE_KEYS
    assert {key: pushed[key] for key in PUSHED_LINE_KEYS - {"function_request_id"}} == {
        "level": "INFO",
        "message": "balance pushed",
        "function_name": "pusher",
        "reference": "UCR1",
        "balance_kind": "customer",
        "moment_id": moment_id,
        "balance": 2550,
        "was": 2000,
    }
    assert pushed["function_request_id"]
    # AND the run's metrics are unchanged, in its one EMF blob
    [blob] = [line for line in lines if "_aws" in line]
    assert metric_values(blob) == {"BalancesPushed": 1, "BalancesNotReached": 0, "BillsNotReached": 0}


def test_at_log_level_warning_a_pushed_balance_writes_no_line_but_still_counts(
    harness: LedgerHarness, pusher: BalancePusher, capsys: pytest.CaptureFixture[str]
) -> None:
    from moment_sync.observability import logger

    pushed_once(harness, pusher, capsys)
    level = logger.log_level
    logger.setLevel("WARNING")
    try:
        assert pushers.invoke_pusher(pusher)["results"] == {"pushed": 1}
    finally:
        logger.setLevel(level)
    lines = lines_of(capsys.readouterr().out)
    assert not [line for line in lines if "message" in line]
    [blob] = [line for line in lines if "_aws" in line]
    assert metric_values(blob)["BalancesPushed"] == 1
