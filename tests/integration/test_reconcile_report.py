"""The ledger against Moment (the sandbox, over HTTP): agreement, drift, a balance missing on Moment,
the daily handler's metric, and a data-subject erasure that keeps the money."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import daily_reconcile_handler
from local_stack.lambda_context import LocalLambdaContext
from local_stack.made_up_values import LOCAL_MOMENT_API_KEY
from moment_sandbox import MomentSandbox, SandboxSettings
from moment_sync.forget import forget_customer
from moment_sync.ledger.model import BalanceKind, BalanceRef, Entry, EntryKind
from moment_sync.moment_client import MomentClient
from moment_sync.pusher import BalancePusher
from moment_sync.reconcile_report import DailyCheck, compare
from support.ledger import LedgerHarness, payment


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
def harness(dynamodb: Any) -> LedgerHarness:
    return LedgerHarness(dynamodb)


def charge(harness: LedgerHarness, balance: BalanceRef, amount: int, charge_id: str) -> None:
    entry = Entry(EntryKind.CHARGE, amount, charge_id, {"charge_id": charge_id}, "2026-09-21T00:00:00.000Z")
    assert harness.ledger.apply_entry(balance, entry, "ZAR").outcome.value == "applied"


def pushed_ledger(harness: LedgerHarness, moment: MomentClient) -> BalancePusher:
    pusher = BalancePusher(ledger=harness.ledger, moment=moment, now=harness.clock)
    for ref in ("AGREE1", "DRIFT1"):
        charge(harness, harness.open_customer(ref), 1000, f"inv-{ref}")
    pusher.push_pending(time_left=lambda: 300)
    return pusher


def no_sleep(_: float) -> None:
    pass


def test_agreement_drift_and_a_balance_missing_on_moment(
    harness: LedgerHarness, moment: MomentClient, sandbox: MomentSandbox
) -> None:
    pusher = pushed_ledger(harness, moment)
    assert all(c.explained and c.agrees for c in compare(harness.ledger, moment, sleep=no_sleep))

    # DRIFT1 pays at Moment, and the webhook never comes: three deferred pushes later it is drift
    sandbox.pay(customer="DRIFT1", amount=300)
    charge(harness, BalanceRef(BalanceKind.CUSTOMER, "DRIFT1"), 1, "inv-late")
    for _ in range(3):
        pusher.push_pending(time_left=lambda: 300)
    # GHOST1 is linked to a Moment id Moment does not have
    ghost = harness.open_customer("GHOST1", moment_id="bcus_ghostghostghost00001")

    found = {c.balance.ref: c for c in compare(harness.ledger, moment, sleep=no_sleep)}
    assert found["AGREE1"].explained and found["AGREE1"].agrees
    assert (found["DRIFT1"].ledger_balance, found["DRIFT1"].moment_balance) == (1001, 700)
    assert not found["DRIFT1"].explained and found["DRIFT1"].sync == "deferred"
    assert not found[ghost.ref].explained and "missing on Moment" in found[ghost.ref].note


def test_a_pending_push_explains_a_difference(harness: LedgerHarness, moment: MomentClient) -> None:
    pushed_ledger(harness, moment)
    charge(harness, BalanceRef(BalanceKind.CUSTOMER, "AGREE1"), 50, "inv-new")
    [agree] = [c for c in compare(harness.ledger, moment, sleep=no_sleep) if c.balance.ref == "AGREE1"]
    assert (agree.agrees, agree.explained, agree.note) == (False, True, "a push is pending")


def test_calls_to_moment_are_rate_limited(harness: LedgerHarness, moment: MomentClient) -> None:
    pushed_ledger(harness, moment)
    pauses: list[float] = []
    compare(harness.ledger, moment, calls_per_second=4, sleep=pauses.append)
    assert pauses == [0.25]


def test_the_daily_handler_counts_unexplained_differences_in_its_metric(
    harness: LedgerHarness, moment: MomentClient, capsys: pytest.CaptureFixture[str]
) -> None:
    pushed_ledger(harness, moment)
    harness.open_customer("GHOST1", moment_id="bcus_ghostghostghost00001")
    check = DailyCheck(harness.ledger, moment, now=harness.clock, sleep=no_sleep)
    result = daily_reconcile_handler.lambda_handler(
        {}, LocalLambdaContext("daily", timeout_seconds=900), check
    )
    assert (result["checked"], result["unexplained"], result["pass_completed"]) == (3, 1, True)
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    [metrics] = [blob for blob in emf if "ReconcileDifferences" in blob]
    assert (metrics["ReconcileDifferences"], metrics["ReconcileChecked"]) == ([1.0], [3.0])


def test_forget_erases_personal_data_and_keeps_the_money(harness: LedgerHarness) -> None:
    customer = harness.open_customer("HOUSE1", moment_id="bcus_house1", balance_model="accounts")
    account = harness.open_account("WATER1", "HOUSE1", moment_id="bacc_water1")
    harness.ledger.put_head(
        {
            "kind": "customer",
            "ref": "HOUSE1",
            "name": "Thandi Nkosi",
            "email": "thandi@example.com",
            "phone": "+27821234567",
        },
        create=False,
    )
    harness.ledger.put_head({"kind": "account", "ref": "WATER1", "name": "Thandi's water"}, create=False)
    harness.open_customer("OTHER1", moment_id="bcus_other1")
    harness.receive("msg_water", payment("ob_1", 400, customer_id="bcus_house1", account_id="bacc_water1"))
    harness.receive("msg_other", payment("ob_2", 100, customer_id="bcus_other1"))
    harness.invoke(harness.next_batch())

    erasure = forget_customer(harness.ledger, harness.events, "HOUSE1", harness.clock())

    assert erasure.fields_erased == {
        "customer HOUSE1": ["name", "email", "phone"],
        "account WATER1": ["name"],
    }
    assert erasure.webhook_bodies_erased == ["msg_water"]
    head = harness.head(customer)
    assert not {"name", "email", "phone"} & set(head) and head["personal_data_erased_at"]
    water = harness.head(account)
    assert "name" not in water and water["balance"] == -400
    event = harness.event("msg_water")
    assert "body" not in event and (event["status"], event["amount"]) == ("applied", 400)
    assert "body" in harness.event("msg_other")
    harness.assert_balances_equal_their_entries()
    # asked twice, nothing is left to erase
    again = forget_customer(harness.ledger, harness.events, "HOUSE1", harness.clock())
    assert again.fields_erased == {} and again.webhook_bodies_erased == []


def run_cli(harness: LedgerHarness, *argv: str, moment: MomentClient | None = None) -> tuple[int, str]:
    import io

    from moment_sync.cli import main

    out = io.StringIO()
    code = main(
        ["--events-table", harness.events_name, "--ledger-table", harness.ledger_name, *argv],
        out=out,
        moment=moment,
    )
    return code, out.getvalue()


def test_reconcile_report_prints_a_table_and_exits_1_on_an_unexplained_difference(
    harness: LedgerHarness, moment: MomentClient, sandbox: MomentSandbox
) -> None:
    pushed_ledger(harness, moment)
    code, text = run_cli(harness, "reconcile-report", "--calls-per-second", "0", moment=moment)
    assert code == 0
    assert text.strip().splitlines()[-1] == "reconcile-report: 2 balances, 0 unexplained"

    harness.open_customer("GHOST1", moment_id="bcus_ghostghostghost00001")
    code, text = run_cli(harness, "reconcile-report", "--calls-per-second", "0", moment=moment)
    assert code == 1
    assert "GHOST1" in text and "missing on Moment  <-- unexplained" in text
    code, text = run_cli(harness, "--json", "reconcile-report", "customer", "AGREE1", moment=moment)
    assert code == 0 and json.loads(text)["balances"][0]["moment"] == 1000


def test_reconcile_report_without_a_moment_key_is_a_plain_usage_error(
    harness: LedgerHarness, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MOMENT_API_KEY", raising=False)
    assert run_cli(harness, "reconcile-report")[0] == 2
    assert "Moment API key" in capsys.readouterr().err


def test_parked_lists_by_reason_and_redrives_after_the_fix(harness: LedgerHarness) -> None:
    harness.receive("msg_unknown", payment("ob_9", 250, customer_id="bcus_late"))
    harness.receive("msg_bill", payment("ob_8", 100, customer_id="bcus_late", bill_id="bill_1"))
    harness.invoke(harness.next_batch())
    code, text = run_cli(harness, "parked")
    assert code == 0 and "unmatched" in text and text.strip().endswith("2 events")
    assert "no bill in the ledger is linked to bill_1" in text  # a bill payment waits for its bill
    late = harness.open_customer("LATE1")
    harness.ledger.link_moment_id(late, "bcus_late")
    code, text = run_cli(harness, "--json", "parked", "--reason", "unmatched", "--redrive")
    assert code == 0 and json.loads(text)["redrive"]["outcomes"] == {"applied": 1, "parked:unmatched": 1}
    assert harness.head(late)["balance"] == -250


def test_forget_says_what_it_erased(harness: LedgerHarness) -> None:
    harness.open_customer("UCR1", moment_id="bcus_u1")
    harness.ledger.put_head(
        {"kind": "customer", "ref": "UCR1", "name": "Sipho", "email": "s@example.com"}, create=False
    )
    harness.receive("msg_u1", payment("ob_u1", 100, customer_id="bcus_u1"))
    harness.invoke(harness.next_batch())
    code, text = run_cli(harness, "forget", "UCR1")
    assert code == 0
    assert "erased name, email from customer UCR1" in text
    assert "erased the raw body of 1 stored webhooks" in text and "msg_u1" in text
    assert run_cli(harness, "forget", "NOBODY")[0] == 1
