"""The operator CLI against moto: the same tables, plain text, exit codes an operator can script on."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from moment_sync.cli import main
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
