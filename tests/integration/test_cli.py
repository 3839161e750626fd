"""The operator CLI against moto: the same tables, plain text, exit codes an operator can script on."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from moment_sync.cli import main
from moment_sync.ledger.model import BalanceKind, BalanceRef
from support.ledger import LedgerHarness, payment


@pytest.fixture
def harness(dynamodb: Any) -> LedgerHarness:
    harness = LedgerHarness(dynamodb)
    harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_paid", payment("ob_1", 1500, customer_id="bcus_1"))
    harness.receive("msg_unknown", payment("ob_2", 700, customer_id="bcus_unknown"))
    harness.invoke(harness.next_batch())
    return harness


def run(harness: LedgerHarness, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(
        ["--events-table", harness.events_name, "--ledger-table", harness.ledger_name, *argv], out=out
    )
    return code, out.getvalue()


def test_event_shows_what_became_of_a_webhook(harness: LedgerHarness) -> None:
    code, text = run(harness, "event", "msg_unknown")
    assert code == 0
    assert "status" in text and "parked" in text and "unmatched" in text and "bcus_unknown" in text
    code, text = run(harness, "--json", "event", "msg_paid", "--body")
    shown = json.loads(text)
    assert (shown["status"], shown["entry_id"]) == ("applied", "payment:ob_1")
    assert json.loads(shown["body"])["data"]["id"] == "ob_1"


def test_an_unknown_webhook_is_a_plain_message_and_exit_1(
    harness: LedgerHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(harness, "event", "msg_nope")[0] == 1
    assert "no webhook 'msg_nope' is stored" in capsys.readouterr().err


def test_balance_shows_the_head_and_newest_entries(harness: LedgerHarness) -> None:
    code, text = run(harness, "balance", "customer", "UCR1")
    assert code == 0
    assert "-1500" in text and "payment:ob_1" in text
    assert run(harness, "balance", "account", "UCR1")[0] == 1


def test_redrive_after_linking_applies_the_parked_payment(harness: LedgerHarness) -> None:
    harness.ledger.link_moment_id(harness.open_customer("UCR2"), "bcus_unknown")
    code, text = run(harness, "--json", "redrive", "--reason", "unmatched")
    assert code == 0
    assert json.loads(text)["outcomes"] == {"applied": 1}
    assert harness.event("msg_unknown")["status"] == "applied"


def test_verify_passes_then_catches_a_balance_edited_behind_the_ledgers_back(harness: LedgerHarness) -> None:
    code, text = run(harness, "verify")
    assert (code, text.strip().splitlines()[-1]) == (0, "verify: 1 balances checked, all agree")
    harness.dynamodb.update_item(
        TableName=harness.ledger_name,
        Key={"pk": {"S": "CUSTOMER#UCR1"}, "sk": {"S": "HEAD"}},
        UpdateExpression="SET balance = :b",
        ExpressionAttributeValues={":b": {"N": "0"}},
    )
    code, text = run(harness, "verify")
    assert code == 1
    assert "MISMATCH CUSTOMER#UCR1: balance 0, entries sum to -1500" in text


def test_missing_table_names_are_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WEBHOOK_EVENTS_TABLE", raising=False)
    monkeypatch.delenv("LEDGER_TABLE", raising=False)
    assert main(["verify"], out=io.StringIO()) == 2
    assert "name the tables" in capsys.readouterr().err


# --- changing the ledger: the ledger API's use cases, from the command line -------------------------


def test_put_customer_and_put_account(harness: LedgerHarness, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(harness, "put-customer", "UCR9", "--currency", "ZAR", "--name", "Thandi")
    assert code == 0 and text.startswith("created: customer UCR9")
    code, text = run(
        harness, "--json", "put-customer", "UCR9", "--currency", "ZAR", "--email", "t@example.com"
    )
    shown = json.loads(text)
    assert shown["result"] == "updated"
    assert (shown["customer"]["email"], "name" in shown["customer"]) == ("t@example.com", False)
    assert run(harness, "put-customer", "GROUP1", "--currency", "USD", "--balance-model", "accounts")[0] == 0
    code, text = run(harness, "put-account", "ACC1", "--customer-ref", "GROUP1", "--currency", "USD")
    assert code == 0 and text.startswith("created: account ACC1")
    capsys.readouterr()
    # A customer on the customer model cannot have accounts: the ledger refuses, exit 1
    assert run(harness, "put-account", "ACC2", "--customer-ref", "UCR1", "--currency", "ZAR")[0] == 1
    assert "must exist with balance_model 'accounts'" in capsys.readouterr().err
    # Arguments the API would refuse are a usage error, exit 2, and change nothing
    assert run(harness, "put-customer", "UCR10", "--currency", "EUR")[0] == 2
    assert run(harness, "put-customer", "bad ref", "--currency", "ZAR")[0] == 2
    assert run(harness, "put-customer", "UCR10", "--currency", "ZAR", "--phone", "082 123")[0] == 2
    err = capsys.readouterr().err
    assert "currency must be ZAR or USD" in err and "ref must be" in err and "phone must be" in err
    assert run(harness, "balance", "customer", "UCR10")[0] == 1


def test_charge_is_idempotent_by_id(harness: LedgerHarness, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(harness, "charge", "customer", "UCR1", "--id", "inv-1", "--amount", "2500")
    assert code == 0 and text.startswith("posted: entry charge:inv-1")
    code, text = run(harness, "charge", "customer", "UCR1", "--id", "inv-1", "--amount", "2500")
    assert code == 0 and text.startswith("already posted: entry charge:inv-1")
    capsys.readouterr()
    assert run(harness, "charge", "customer", "UCR1", "--id", "inv-1", "--amount", "2600")[0] == 1
    assert "(charge-id-reused)" in capsys.readouterr().err
    assert run(harness, "charge", "customer", "UCR1", "--id", "credit-1", "--amount", "-500")[0] == 0
    assert run(harness, "charge", "customer", "UCR1", "--id", "zero", "--amount", "0")[0] == 2
    assert run(harness, "charge", "account", "NOPE", "--id", "c1", "--amount", "5")[0] == 1
    with pytest.raises(SystemExit) as usage:
        run(harness, "charge", "customer", "UCR1", "--id", "c1", "--amount", "10.50")
    assert usage.value.code == 2
    assert harness.head(BalanceRef(BalanceKind.CUSTOMER, "UCR1"))["balance"] == -1500 + 2500 - 500
    assert run(harness, "verify")[0] == 0


def test_set_balance_needs_the_current_version(
    harness: LedgerHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    # The payment made UCR1 version 1 at -1500
    code, text = run(
        harness, "--json", "set-balance", "customer", "UCR1", "--balance", "4000", "--expected-version", "1"
    )
    assert code == 0
    shown = json.loads(text)
    assert (shown["result"], shown["customer"]["balance"], shown["customer"]["version"]) == ("set", 4000, 2)
    capsys.readouterr()
    assert (
        run(harness, "set-balance", "customer", "UCR1", "--balance", "0", "--expected-version", "1")[0] == 1
    )
    assert "the balance is at version 2 (stale-version)" in capsys.readouterr().err
    assert harness.head(BalanceRef(BalanceKind.CUSTOMER, "UCR1"))["balance"] == 4000


def test_adjust_is_an_audited_entry(
    harness: LedgerHarness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = "Moment shows payment ob_9 whose webhook never came"
    code, text = run(
        harness, "--json", "adjust", "customer", "UCR1", "--amount", "-700", "--reason", reason,
        "--operator", "alice", "--id", "adj-1",
    )  # fmt: skip
    assert code == 0
    entry = json.loads(text)["entry"]
    assert (entry["id"], entry["kind"], entry["amount"]) == ("adjustment:adj-1", "adjustment", -700)
    assert entry["source"] == {"reason": reason, "operator": "alice", "adjustment_id": "adj-1"}
    # The same id again is refused (exit 1); without --id a new uuid is used, and $USER is the operator
    monkeypatch.setenv("USER", "bob")
    argv = ("adjust", "customer", "UCR1", "--amount", "100", "--reason", "fix")
    assert run(harness, *argv, "--id", "adj-1")[0] == 1
    assert "(adjustment-id-reused)" in capsys.readouterr().err
    code, text = run(harness, "--json", *argv)
    assert code == 0
    source = json.loads(text)["entry"]["source"]
    assert source["operator"] == "bob" and len(source["adjustment_id"]) == 36
    monkeypatch.delenv("USER")
    assert run(harness, *argv)[0] == 2
    assert "--operator" in capsys.readouterr().err
    assert (
        run(harness, "adjust", "customer", "UCR1", "--amount", "5", "--reason", "", "--operator", "x")[0] == 2
    )
    assert harness.head(BalanceRef(BalanceKind.CUSTOMER, "UCR1"))["balance"] == -1500 - 700 + 100
    assert run(harness, "verify")[0] == 0
