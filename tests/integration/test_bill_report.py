"""Bills in the daily check and `reconcile-report`: each linked bill against the Moment sandbox's
(over HTTP): agreement, a difference a pending push explains, an unexplained one, a bill missing on
Moment (docs/ledger.md#bills)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

import daily_reconcile_handler
from local_stack.lambda_context import LocalLambdaContext
from local_stack.made_up_values import LOCAL_MOMENT_API_KEY
from moment_sandbox import MomentSandbox, SandboxSettings
from moment_sync.bill_pusher import BillPusher
from moment_sync.bill_report import compare_bills
from moment_sync.cli import main
from moment_sync.ledger import bill_service
from moment_sync.ledger.bills import BillRef
from moment_sync.moment_client import MomentClient, NewBill, NewCustomer
from moment_sync.observability import metrics
from moment_sync.reconcile_report import DailyCheck
from support.ledger import LedgerHarness
from support.webhooks import NOW


@pytest.fixture
def sandbox() -> Iterator[MomentSandbox]:
    with MomentSandbox(SandboxSettings(webhook_url=None)) as running:
        yield running


@pytest.fixture
def moment(sandbox: MomentSandbox) -> Iterator[MomentClient]:
    client = MomentClient(LOCAL_MOMENT_API_KEY, environment="dev", base_url=sandbox.url)
    yield client
    client.close()


@pytest.fixture
def harness(dynamodb: Any, moment: MomentClient) -> LedgerHarness:
    """UCR1 on both sides; bill FEE (1000) raised in the ledger, created at Moment, linked and booked."""
    harness = LedgerHarness(dynamodb)
    customer = moment.create_or_adopt_customer(NewCustomer("UCR1")).value
    harness.open_customer("UCR1")  # not linked: only the bill is compared here
    bill_service.put_bill(
        harness.ledger, "FEE", {"customer": "UCR1", "currency": "ZAR", "amount_due": 1000}, NOW
    )
    created = moment.create_bill(NewBill("FEE", 1000, "ZAR", customer=customer.id)).value
    bill = BillRef("FEE")
    harness.ledger.link_bill(bill, created.id)
    head = harness.ledger.get_bill(bill)
    assert head is not None
    assert harness.ledger.record_bill_push(bill, head, 0, NOW)
    return harness


def no_sleep(_: float) -> None:
    pass


def test_agreement_a_pending_push_and_an_unexplained_difference(
    harness: LedgerHarness, moment: MomentClient, sandbox: MomentSandbox
) -> None:
    [agrees] = compare_bills(harness.ledger, moment, sleep=no_sleep)
    assert (agrees.agrees, agrees.explained, agrees.sync) == (True, True, "synced")

    # Paid at Moment, and its webhook never came: unexplained.
    sandbox.pay(bill="FEE", amount=300)
    [differs] = compare_bills(harness.ledger, moment, sleep=no_sleep)
    assert (differs.ledger_paid, differs.moment_paid, differs.explained) == (0, 300, False)
    assert differs.note == "differs while synced"

    # Cash at the counter, not at Moment yet: the pending push explains the difference.
    bill_service.pay_bill(harness.ledger, "FEE", {"id": "cash-1", "amount": 100}, NOW)
    [pending] = compare_bills(harness.ledger, moment, sleep=no_sleep)
    assert (pending.explained, pending.note) == (True, "a push is pending")


def test_a_bill_missing_on_moment_is_unexplained_and_the_daily_handler_counts_it(
    harness: LedgerHarness,
    moment: MomentClient,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bill_service.put_bill(
        harness.ledger, "GHOST", {"customer": "UCR1", "currency": "ZAR", "amount_due": 5}, NOW
    )
    harness.ledger.link_bill(BillRef("GHOST"), "bill_ghostghostghost0001")
    found = {c.bill.ref: c for c in compare_bills(harness.ledger, moment, sleep=no_sleep)}
    assert found["FEE"].explained and not found["GHOST"].explained
    assert "missing on Moment" in found["GHOST"].note

    # The scheduled check's pass meets the bills in the same index as the balances.
    check = DailyCheck(harness.ledger, moment, now=harness.clock, sleep=no_sleep, calls_per_second=0)
    metrics.clear_metrics()
    capsys.readouterr()
    result = daily_reconcile_handler.lambda_handler(
        {}, LocalLambdaContext("daily", timeout_seconds=900), check
    )
    out = capsys.readouterr().out
    assert result["checked"] == 2 and result["unexplained"] == 1 and result["pass_completed"]
    emf = [json.loads(line) for line in out.splitlines() if '"_aws"' in line]
    [blob] = [blob for blob in emf if "ReconcileChecked" in blob]
    # One datapoint each: FEE and GHOST checked, GHOST unexplained (the alarm watches the sum).
    assert blob["ReconcileChecked"] in (2.0, [2.0]) and blob["ReconcileDifferences"] in (1.0, [1.0])
    assert "ledger and Moment disagree on a bill" in caplog.messages


def test_reconcile_report_lists_bills_after_balances(
    harness: LedgerHarness, moment: MomentClient, sandbox: MomentSandbox
) -> None:
    def run(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        code = main(
            ["--events-table", harness.events_name, "--ledger-table", harness.ledger_name, *argv],
            out=out,
            err=io.StringIO(),
            moment=moment,
        )
        return code, out.getvalue()

    code, text = run("reconcile-report", "--calls-per-second", "0")
    assert code == 0 and text.strip().splitlines()[-1] == "reconcile-report: 1 bills, 0 unexplained"
    sandbox.pay(bill="FEE", amount=300)
    code, text = run("--json", "reconcile-report", "--calls-per-second", "0")
    document = json.loads(text)
    assert code == 1 and document["unexplained_bills"] == 1 and document["unexplained"] == 0
    assert document["bills"][0]["moment_amount_paid"] == 300


def test_a_blocked_bill_is_stuck_never_explained_and_counted_on_its_own(
    harness: LedgerHarness,
    moment: MomentClient,
    sandbox: MomentSandbox,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN FEE paid in full at Moment and cash at the counter too: the pusher holds the cash back
    sandbox.pay(bill="FEE", amount=1000)
    bill_service.pay_bill(harness.ledger, "FEE", {"id": "cash-1", "amount": 200}, NOW)
    pusher = BillPusher(ledger=harness.ledger, moment=moment, now=harness.clock)
    assert pusher.push_pending(time_left=lambda: 300).results == {"blocked": 1}

    # WHEN compared: stuck, not a push in flight
    [blocked] = compare_bills(harness.ledger, moment, sleep=no_sleep)
    assert (blocked.sync, blocked.blocked, blocked.explained) == ("blocked", True, False)
    assert blocked.note.startswith("blocked: Moment's bill") and "is paid" in blocked.note

    # and the scheduled check counts it on its own metric (the alarm's), beside the differences
    check = DailyCheck(harness.ledger, moment, now=harness.clock, sleep=no_sleep, calls_per_second=0)
    metrics.clear_metrics()
    capsys.readouterr()
    result = daily_reconcile_handler.lambda_handler(
        {}, LocalLambdaContext("daily", timeout_seconds=900), check
    )
    assert (result["checked"], result["unexplained"], result["blocked_bills"]) == (1, 1, 1)
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    [blob] = [blob for blob in emf if "ReconcileBillsBlocked" in blob]
    assert blob["ReconcileBillsBlocked"] in (1.0, [1.0]) and blob["ReconcileDifferences"] in (1.0, [1.0])
