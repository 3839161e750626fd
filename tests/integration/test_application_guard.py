"""Invariant 2 across the whole ledger: one Moment application (`data.id`) changes at most one
balance, once. Entries are keyed per balance, so the ledger-wide guard item `APPLICATION#<data.id>`
written in the payment's transaction is what stops the same id for another balance, or with another
amount or currency; those are parked `application_conflict`, never applied, never dropped."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from moment_sync.adapters.ledger_table import application_key
from moment_sync.cli import main
from moment_sync.reconciliation import ParkReason
from moment_sync.redrive import redrive
from moment_sync.runtime import LedgerDependencies
from support.ledger import LedgerHarness, payment
from support.ledger_api import LedgerApi

CONFLICT = "application_conflict"


@pytest.fixture
def harness(dynamodb: Any) -> LedgerHarness:
    return LedgerHarness(dynamodb)


def _emf_blobs(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{") and '"_aws"' in line]


def _conflict_metric(capsys: pytest.CaptureFixture[str]) -> float:
    name = f"EventParked_{CONFLICT}"
    values = [blob[name] for blob in _emf_blobs(capsys.readouterr().out) if name in blob]
    return sum(sum(value) if isinstance(value, list) else value for value in values)


def _assert_parked_conflict(harness: LedgerHarness, webhook_id: str, first_webhook: str) -> None:
    event = harness.event(webhook_id)
    assert (event["status"], event["reason"], event["parked_reason"]) == ("parked", CONFLICT, CONFLICT)
    assert event["conflicts_with"] == first_webhook
    assert first_webhook in event["reason_detail"]
    # Nothing retries it by itself (the re-drive tries only `received` and unmatched): an operator decides.
    assert webhook_id not in set(harness.events.parked_unmatched_ids("9999"))
    assert list(harness.events.parked_ids(ParkReason.APPLICATION_CONFLICT)) == [webhook_id]


def test_the_same_application_for_another_customer_is_parked_not_applied_again(
    harness: LedgerHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN two customers, and Moment's application ob_1 applied to the first
    first = harness.open_customer("UCR1", moment_id="bcus_1")
    second = harness.open_customer("UCR2", moment_id="bcus_2")
    harness.receive("msg_first", payment("ob_1", 1500, customer_id="bcus_1"))
    assert harness.invoke(harness.next_batch()) == []
    capsys.readouterr()
    # WHEN the same application id arrives naming the second customer
    harness.receive("msg_other", payment("ob_1", 1500, customer_id="bcus_2"))
    assert harness.invoke(harness.next_batch()) == []
    # THEN only the first balance moved, and the second event is parked where an operator sees it
    assert harness.head(first)["balance"] == -1500
    second_head = harness.head(second)
    assert (second_head["balance"], second_head["version"]) == (0, 0)
    assert harness.entries(second) == []
    _assert_parked_conflict(harness, "msg_other", "msg_first")
    assert "customer UCR1" in harness.event("msg_other")["reason_detail"]
    assert _conflict_metric(capsys) == 1
    harness.assert_balances_equal_their_entries()


def test_the_same_application_for_an_account_of_another_customer_is_parked(harness: LedgerHarness) -> None:
    harness.open_customer("HOUSE1", moment_id="bcus_h", balance_model="accounts")
    water = harness.open_account("ACC-WATER", "HOUSE1", moment_id="bacc_w")
    other = harness.open_customer("UCR2", moment_id="bcus_2")
    harness.receive("msg_first", payment("ob_1", 700, account_id="bacc_w"))
    harness.receive("msg_other", payment("ob_1", 700, customer_id="bcus_2"))
    assert harness.invoke(harness.next_batch()) == []  # both in one batch
    assert harness.head(water)["balance"] == -700
    assert harness.head(other)["balance"] == 0
    _assert_parked_conflict(harness, "msg_other", "msg_first")


def test_the_same_application_with_another_amount_is_parked_not_a_silent_duplicate(
    harness: LedgerHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_first", payment("ob_1", 1500, customer_id="bcus_1"))
    harness.invoke(harness.next_batch())
    capsys.readouterr()
    harness.receive("msg_more", payment("ob_1", 2500, customer_id="bcus_1"))
    assert harness.invoke(harness.next_batch()) == []
    assert (harness.head(customer)["balance"], harness.head(customer)["version"]) == (-1500, 1)
    _assert_parked_conflict(harness, "msg_more", "msg_first")
    detail = harness.event("msg_more")["reason_detail"]
    assert "1500 ZAR" in detail and "2500 ZAR" in detail
    assert _conflict_metric(capsys) == 1


def test_the_same_application_in_another_currency_is_parked_not_a_silent_duplicate(
    harness: LedgerHarness,
) -> None:
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_first", payment("ob_1", 1500, customer_id="bcus_1"))
    harness.invoke(harness.next_batch())
    harness.receive("msg_usd", payment("ob_1", 1500, customer_id="bcus_1", currency="USD"))
    assert harness.invoke(harness.next_batch()) == []
    assert harness.head(customer)["balance"] == -1500
    _assert_parked_conflict(harness, "msg_usd", "msg_first")
    assert "1500 USD" in harness.event("msg_usd")["reason_detail"]


def test_the_same_application_in_another_currency_for_a_balance_in_that_currency_is_parked(
    harness: LedgerHarness,
) -> None:
    harness.open_customer("UCR1", moment_id="bcus_1")
    dollars = harness.open_customer("UCR2", moment_id="bcus_2", currency="USD")
    harness.receive("msg_first", payment("ob_1", 1500, customer_id="bcus_1"))
    harness.receive("msg_usd", payment("ob_1", 1500, customer_id="bcus_2", currency="USD"))
    assert harness.invoke(harness.next_batch()) == []
    assert harness.head(dollars)["balance"] == 0
    _assert_parked_conflict(harness, "msg_usd", "msg_first")


def test_a_true_redelivery_is_still_a_duplicate_and_the_guard_says_where_it_went(
    harness: LedgerHarness,
) -> None:
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_first", payment("ob_1", 1500, customer_id="bcus_1"))
    batch = harness.next_batch()
    harness.invoke(batch)
    harness.invoke(batch)  # the same stream record again: nothing to do
    harness.receive("msg_again", payment("ob_1", 1500, customer_id="bcus_1"))
    assert harness.invoke(harness.next_batch()) == []
    assert (harness.head(customer)["balance"], harness.head(customer)["version"]) == (-1500, 1)
    assert harness.event("msg_first")["status"] == "applied"
    again = harness.event("msg_again")
    assert (again["status"], again["duplicate_of"]) == ("duplicate", "msg_first")
    guard = harness.dynamodb.get_item(TableName=harness.ledger_name, Key=application_key("ob_1"))["Item"]
    plain = {name: next(iter(value.values())) for name, value in guard.items()}
    assert (
        plain.items()
        >= {
            "balance_pk": "CUSTOMER#UCR1",
            "amount": "1500",
            "currency": "ZAR",
            "webhook_id": "msg_first",
            "entry_id": "payment:ob_1",
        }.items()
    )
    harness.assert_balances_equal_their_entries()


def _forget_guard(harness: LedgerHarness, application_id: str) -> None:
    """A ledger from before the guard: the entry is there, the guard item is not."""
    harness.dynamodb.delete_item(TableName=harness.ledger_name, Key=application_key(application_id))


def test_a_redelivery_of_a_payment_applied_before_the_guard_existed_is_still_a_duplicate(
    harness: LedgerHarness,
) -> None:
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_first", payment("ob_1", 1500, customer_id="bcus_1"))
    harness.invoke(harness.next_batch())
    _forget_guard(harness, "ob_1")
    harness.receive("msg_again", payment("ob_1", 1500, customer_id="bcus_1"))
    harness.receive("msg_more", payment("ob_1", 900, customer_id="bcus_1"))
    assert harness.invoke(harness.next_batch()) == []
    # the per-balance entry condition is the second line of defence
    assert (harness.head(customer)["balance"], harness.head(customer)["version"]) == (-1500, 1)
    assert (harness.event("msg_again")["status"], harness.event("msg_again")["duplicate_of"]) == (
        "duplicate",
        "msg_first",
    )
    _assert_parked_conflict(harness, "msg_more", "msg_first")


def test_the_redrive_parks_a_conflicting_application_instead_of_applying_it(harness: LedgerHarness) -> None:
    # GIVEN ob_1 applied to UCR1, and the same id for a Moment customer the ledger did not know yet
    harness.open_customer("UCR1", moment_id="bcus_1")
    late = harness.open_customer("UCR2")
    harness.receive("msg_first", payment("ob_1", 1500, customer_id="bcus_1"))
    harness.receive("msg_late", payment("ob_1", 1500, customer_id="bcus_late"))
    harness.invoke(harness.next_batch())
    assert harness.event("msg_late")["reason"] == "unmatched"
    # WHEN the link is made and the re-drive runs (the same code as the stream)
    harness.ledger.link_moment_id(late, "bcus_late")
    report = redrive(
        ["msg_late"], events=harness.events, ledger=harness.ledger, directory=None, now=harness.clock
    )
    # THEN it is parked for the conflict, not applied, and out of the re-drive's work list
    assert report.outcomes == {f"parked:{CONFLICT}": 1}
    assert harness.head(late)["balance"] == 0
    _assert_parked_conflict(harness, "msg_late", "msg_first")
    assert list(harness.events.parked_ids(ParkReason.UNMATCHED)) == []
    # and re-driving it again (an operator's `redrive --reason application_conflict`) changes nothing
    again = redrive(
        ["msg_late"], events=harness.events, ledger=harness.ledger, directory=None, now=harness.clock
    )
    assert again.outcomes == {f"parked:{CONFLICT}": 1}
    assert harness.head(late)["balance"] == 0
    harness.assert_balances_equal_their_entries()


def _cli(harness: LedgerHarness, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(
        ["--events-table", harness.events_name, "--ledger-table", harness.ledger_name, *argv], out=out
    )
    return code, out.getvalue()


def test_the_cli_and_the_api_show_the_conflict(harness: LedgerHarness) -> None:
    harness.open_customer("UCR1", moment_id="bcus_1")
    harness.open_customer("UCR2", moment_id="bcus_2")
    harness.receive("msg_first", payment("ob_1", 1500, customer_id="bcus_1"))
    harness.receive("msg_other", payment("ob_1", 1500, customer_id="bcus_2"))
    harness.invoke(harness.next_batch())

    code, text = _cli(harness, "--json", "event", "msg_other")
    shown = json.loads(text)
    assert code == 0
    assert (shown["status"], shown["reason"], shown["conflicts_with"]) == ("parked", CONFLICT, "msg_first")
    code, text = _cli(harness, "--json", "parked", "--reason", CONFLICT)
    assert code == 0
    [row] = json.loads(text)["parked"]
    assert (row["webhook_id"], row["reason"]) == ("msg_other", CONFLICT)
    code, text = _cli(harness, "--json", "parked")
    assert [row["reason"] for row in json.loads(text)["parked"]] == [CONFLICT]

    # checked against docs/api/openapi.yaml as it arrives
    api = LedgerApi(LedgerDependencies(events=harness.events, ledger=harness.ledger, clock=harness.clock))
    answer = api.get("/events/msg_other")
    assert answer.status == 200
    assert (answer.body["reason"], answer.body["conflicts_with"]) == (CONFLICT, "msg_first")


def test_the_backfill_guards_payments_applied_before_the_guard_and_names_past_double_applies(
    harness: LedgerHarness,
) -> None:
    # GIVEN a ledger from before the guard: ob_1 applied to UCR1, ob_2 applied to UCR1 *and* UCR2
    first = harness.open_customer("UCR1", moment_id="bcus_1")
    second = harness.open_customer("UCR2", moment_id="bcus_2")
    harness.receive("msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    harness.receive("msg_2", payment("ob_2", 300, customer_id="bcus_1"))
    harness.invoke(harness.next_batch())
    _forget_guard(harness, "ob_2")
    harness.receive("msg_2_again", payment("ob_2", 300, customer_id="bcus_2"))
    harness.invoke(harness.next_batch())
    _forget_guard(harness, "ob_1")
    _forget_guard(harness, "ob_2")
    assert harness.head(second)["balance"] == -300  # the double apply the guard now prevents
    # WHEN the operator backfills the guards
    code, text = _cli(harness, "backfill-application-guards")
    # THEN every payment has its guard, and the past double apply is named (exit 1)
    assert code == 1
    assert "CONFLICT ob_2: applied as customer UCR1: 300 ZAR and as customer UCR2: 300 ZAR" in text
    assert "3 payments checked, 1 conflicts" in text
    assert run_again(harness) == (1, 1)  # safe to run again: the same answer, nothing more written
    # and the same id for another customer is now parked, not applied a second time
    harness.receive("msg_1_other", payment("ob_1", 1500, customer_id="bcus_2"))
    assert harness.invoke(harness.next_batch()) == []
    assert harness.head(second)["balance"] == -300
    assert harness.head(first)["balance"] == -1800
    _assert_parked_conflict(harness, "msg_1_other", "msg_1")


def run_again(harness: LedgerHarness) -> tuple[int, int]:
    code, text = _cli(harness, "--json", "backfill-application-guards")
    return code, len(json.loads(text)["conflicts"])
