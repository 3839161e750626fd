"""Probes of the claim-first payment write (docs/ledger.md#the-reconciler) from outside: the real
reconciler handler, re-drive, CLI and adapters over moto, crashes injected at botocore's
`before-call`/`after-call` hooks. The order under attack: (1) the claim `APPLICATION#<id>`, a plain
conditional put; (2) the transaction of entry and head; (3) the event's status, a separate update.

Checked at every point: one application changes one balance or bill once; balance = the sum of its
entries; every event ends final or stays where the re-drive finds it (never `received` unseen);
nothing parked that should apply, nothing applied that should park."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from moment_sync.adapters.dynamo_items import from_item
from moment_sync.adapters.ledger_table import application_key
from moment_sync.cli import main
from moment_sync.forget import forget_customer
from moment_sync.ledger import bill_service
from moment_sync.ledger.bills import BillRef
from moment_sync.ledger.model import BalanceRef
from moment_sync.reconciler import reconcile_event
from moment_sync.redrive import REDRIVE_LEASE, found_by_redrive, redrive, redrive_stuck
from support.ledger import LedgerHarness, payment
from support.webhooks import NOW

FINAL = {"applied", "duplicate", "ignored", "parked"}


class Crash(Exception):
    """The function died here: nothing after this point ran."""


# --- faults at botocore's hooks ---------------------------------------------------------------


def _table_of(params: dict[str, Any]) -> str:
    body = params.get("body") or b"{}"
    return str(json.loads(body if isinstance(body, bytes | str) else b"{}").get("TableName", ""))


def crash_once(harness: LedgerHarness, operation: str, *, after: bool) -> None:
    """The next `operation` dies before it is sent, or after DynamoDB committed it."""
    left = [1]
    event = f"{'after' if after else 'before'}-call.dynamodb.{operation}"

    def hook(**kwargs: Any) -> None:
        if after and kwargs["http_response"].status_code != 200:
            return
        if left[0]:
            left[0] -= 1
            raise Crash(event)

    harness.dynamodb.meta.events.register(event, hook, unique_id=f"crash-{event}")


def throttle(harness: LedgerHarness, operation: str, table: str, times: int) -> list[int]:
    """`times` calls of `operation` on `table` are throttled (DynamoDB's answer, before it is sent)."""
    left = [times]

    def hook(params: dict[str, Any], **_: Any) -> None:
        if left[0] and _table_of(params) == table:
            left[0] -= 1
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "injected"}}, operation)

    harness.dynamodb.meta.events.register(
        f"before-call.dynamodb.{operation}", hook, unique_id=f"throttle-{operation}"
    )
    return left


def between(harness: LedgerHarness, operation: str, run: Callable[[], None]) -> None:
    """Once the next `operation` committed, `run` goes (another reconciler), then the first goes on:
    a race made deterministic at its one interesting point. (Around the harness's per-request lock,
    not in an `after-call` hook, which runs inside it.)"""
    fired = [False]
    make_api_call = harness.dynamodb._make_api_call

    def call(name: str, params: dict[str, Any]) -> Any:
        answer = make_api_call(name, params)
        if name == operation and not fired[0]:
            fired[0] = True
            run()
        return answer

    harness.dynamodb._make_api_call = call


# --- reading the state ------------------------------------------------------------------------


def guard(harness: LedgerHarness, application_id: str) -> dict[str, Any]:
    item = harness.dynamodb.get_item(TableName=harness.ledger_name, Key=application_key(application_id))
    return from_item(item.get("Item") or {})


def entries_of(harness: LedgerHarness, application_id: str) -> list[str]:
    """Every balance or bill that holds an entry for this application (invariant 2: at most one)."""
    return sorted(
        str(item["pk"])
        for item in harness.ledger.scan_all()
        if str(item["sk"]).endswith(f"payment:{application_id}") and str(item["sk"]).startswith("ENTRY#")
    )


def assert_invariants(harness: LedgerHarness, *, settled: bool = True) -> None:
    """Balance = its entries; every event final (`settled`), or still `received` where the re-drive
    looks (past its cursor in `Unfinished`, or in its retry list), never stuck unseen."""
    harness.assert_balances_equal_their_entries()
    state = (harness.ledger.leases().current(REDRIVE_LEASE) or {}).get("state") or {}
    for event in harness.all_events():
        if event["status"] == "received" and not settled:
            assert found_by_redrive(event, state), f"{event['webhook_id']} received but not re-drivable"
            continue
        assert event["status"] in FINAL, (event["webhook_id"], event["status"])


def assert_settled(harness: LedgerHarness, *, entries: list[str]) -> None:
    """ob_1 has entries exactly on `entries` (invariant 2: one balance or bill at most), and the
    invariants hold with every event final."""
    assert entries_of(harness, "ob_1") == entries
    assert_invariants(harness)


def run_redrive(harness: LedgerHarness, *webhook_ids: str) -> dict[str, int]:
    report = redrive(
        list(webhook_ids), events=harness.events, ledger=harness.ledger, directory=None, now=harness.clock
    )
    assert report.errors == []
    return report.outcomes


def cli(harness: LedgerHarness, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(
        ["--events-table", harness.events_name, "--ledger-table", harness.ledger_name, *argv], out=out
    )
    return code, out.getvalue()


def claimed_then_crashed(harness: LedgerHarness, webhook_id: str, body: bytes) -> list[dict[str, Any]]:
    """`webhook_id` is delivered; its function dies after the claim, before the transaction."""
    records = stored(harness, webhook_id, body)
    crash_once(harness, "TransactWriteItems", after=False)
    assert len(harness.invoke(records)) == 1
    assert harness.event(webhook_id)["status"] == "received"
    assert guard(harness, body_application(body))["webhook_id"] == webhook_id
    return records


def another_delivery_between(harness: LedgerHarness, second: bytes) -> None:
    """msg_1 (ob_1, 1500 for bcus_1) claims and dies before its transaction; msg_2 (`second`) is
    delivered; then the stream delivers msg_1 again."""
    records = claimed_then_crashed(harness, "msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    deliver(harness, "msg_2", second)
    assert harness.invoke(records) == []


def body_application(body: bytes) -> str:
    return str(json.loads(body)["data"]["id"])


def stored(harness: LedgerHarness, webhook_id: str, body: bytes) -> list[dict[str, Any]]:
    """`webhook_id` stored by the receiver; its stream records, not delivered yet."""
    harness.receive(webhook_id, body)
    return harness.next_batch()


def deliver(harness: LedgerHarness, webhook_id: str, body: bytes) -> None:
    assert harness.invoke(stored(harness, webhook_id, body)) == []


def assert_parked_conflict(harness: LedgerHarness, webhook_id: str, conflicts_with: str) -> None:
    event = harness.event(webhook_id)
    assert (event["status"], event["reason"], event["conflicts_with"]) == (
        "parked",
        "application_conflict",
        conflicts_with,
    )


def redrive_stuck_past_the_grace(harness: LedgerHarness, clock: list[float]) -> dict[str, int]:
    """The scheduled re-drive an hour later: it finds the one event still `received` and finishes it."""
    clock[0] += 3600
    report = redrive_stuck(
        events=harness.events, ledger=harness.ledger, directory=None, now=harness.clock, grace_seconds=600
    )
    assert report.found_received == 1
    return report.outcomes


@pytest.fixture
def customers(harness: LedgerHarness) -> Iterator[tuple[BalanceRef, BalanceRef]]:
    yield harness.open_customer("UCR1", moment_id="bcus_1"), harness.open_customer("UCR2", moment_id="bcus_2")


def open_bill(
    harness: LedgerHarness, ref: str = "FEE", moment_id: str = "bill_1", currency: str = "ZAR"
) -> BillRef:
    bill_service.put_bill(
        harness.ledger, ref, {"customer": "UCR1", "currency": currency, "amount_due": 1000}, NOW
    )
    bill = BillRef(ref)
    harness.ledger.link_bill(bill, moment_id)
    return bill


def bill_paid(harness: LedgerHarness, bill: BillRef) -> int:
    return int((harness.ledger.get_bill(bill) or {}).get("amount_paid", 0))


# --- a crash after the claim, then ... ---------------------------------------------------------


@pytest.mark.parametrize("finisher", ["redelivery", "redrive", "redrive_stuck"])
def test_after_the_claim_the_next_attempt_applies_it_once(
    harness: LedgerHarness, customers: tuple[BalanceRef, BalanceRef], clock: list[float], finisher: str
) -> None:
    first, _ = customers
    records = claimed_then_crashed(harness, "msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    assert_invariants(harness, settled=False)  # still received, where the re-drive looks
    if finisher == "redelivery":
        assert harness.invoke(records) == []
    elif finisher == "redrive":
        assert run_redrive(harness, "msg_1") == {"applied": 1}
    else:
        assert redrive_stuck_past_the_grace(harness, clock) == {"applied": 1}
    assert (harness.head(first)["balance"], harness.head(first)["version"]) == (-1500, 1)
    assert harness.event("msg_1")["status"] == "applied"
    assert_settled(harness, entries=["CUSTOMER#UCR1"])


def test_after_the_claim_a_duplicate_webhook_applies_it_and_the_crashed_one_ends_duplicate(
    harness: LedgerHarness, customers: tuple[BalanceRef, BalanceRef]
) -> None:
    first, _ = customers
    another_delivery_between(harness, payment("ob_1", 1500, customer_id="bcus_1"))
    assert (harness.event("msg_2")["status"], harness.event("msg_1")["status"]) == ("applied", "duplicate")
    assert harness.event("msg_1")["duplicate_of"] == "msg_2"
    assert harness.head(first)["balance"] == -1500
    assert_settled(harness, entries=["CUSTOMER#UCR1"])


def test_after_the_claim_a_conflicting_application_parks_and_the_claimed_one_still_applies(
    harness: LedgerHarness, customers: tuple[BalanceRef, BalanceRef]
) -> None:
    first, second = customers
    another_delivery_between(harness, payment("ob_1", 1500, customer_id="bcus_2"))
    assert_parked_conflict(harness, "msg_2", "msg_1")
    assert (harness.head(first)["balance"], harness.head(second)["balance"]) == (-1500, 0)
    assert_settled(harness, entries=["CUSTOMER#UCR1"])


def test_after_the_claim_an_operator_forget_still_lets_it_apply_once(
    harness: LedgerHarness, customers: tuple[BalanceRef, BalanceRef]
) -> None:
    first, _ = customers
    records = claimed_then_crashed(harness, "msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    erasure = forget_customer(harness.ledger, harness.events, "UCR1", NOW)
    assert erasure.unsettled_webhooks == ["msg_1"]
    assert "body" not in harness.event("msg_1")
    assert harness.invoke(records) == [] or run_redrive(harness, "msg_1") == {"applied": 1}
    assert harness.event("msg_1")["status"] == "applied"
    assert harness.head(first)["balance"] == -1500
    assert_invariants(harness)


def test_after_the_claim_the_backfill_and_verify_find_nothing_wrong_and_change_nothing(
    harness: LedgerHarness, customers: tuple[BalanceRef, BalanceRef]
) -> None:
    first, _ = customers
    deliver(harness, "msg_0", payment("ob_0", 100, customer_id="bcus_1"))
    claimed_then_crashed(harness, "msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    before = guard(harness, "ob_1")
    code, text = cli(harness, "backfill-application-guards")
    assert (code, text.strip()) == (0, "backfill-application-guards: 1 payments checked, 0 conflicts")
    assert guard(harness, "ob_1") == before
    assert cli(harness, "verify") == (0, "verify: 2 balances checked, all agree\n")
    assert run_redrive(harness, "msg_1") == {"applied": 1}
    assert cli(harness, "verify")[0] == 0
    assert cli(harness, "backfill-application-guards")[0] == 0
    assert harness.head(first)["balance"] == -1600
    assert_invariants(harness)


# --- a crash after the transaction, before the status ------------------------------------------


def test_after_the_transaction_a_stream_that_gives_up_leaves_it_for_the_redrive(
    harness: LedgerHarness, customers: tuple[BalanceRef, BalanceRef], clock: list[float]
) -> None:
    first, _ = customers
    records = stored(harness, "msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    crash_once(harness, "TransactWriteItems", after=True)
    assert len(harness.invoke(records)) == 1  # and the stream gives up on it (the on-failure queue)
    assert (harness.head(first)["balance"], harness.event("msg_1")["status"]) == (-1500, "received")
    assert_invariants(harness, settled=False)
    assert redrive_stuck_past_the_grace(harness, clock) == {"applied": 1}
    event = harness.event("msg_1")
    assert (event["status"], event["entry_id"], event["balance_key"]) == (
        "applied",
        "payment:ob_1",
        "CUSTOMER#UCR1",
    )
    assert harness.head(first)["version"] == 1
    assert_invariants(harness)


def test_a_throttled_status_update_is_retried_and_ends_applied_once(
    harness: LedgerHarness, customers: tuple[BalanceRef, BalanceRef]
) -> None:
    first, _ = customers
    records = stored(harness, "msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    left = throttle(harness, "UpdateItem", harness.events_name, times=2)
    harness.deliver_with_retries(records)
    assert left == [0]
    assert harness.event("msg_1")["status"] == "applied"
    assert (harness.head(first)["balance"], harness.head(first)["version"]) == (-1500, 1)
    assert_invariants(harness)


# --- two reconcilers at once -------------------------------------------------------------------


def _reconcile(harness: LedgerHarness, webhook_id: str) -> Callable[[], None]:
    def run() -> None:
        reconcile_event(
            harness.event(webhook_id), ledger=harness.ledger, events=harness.events, now=harness.clock
        )

    return run


@pytest.mark.parametrize("point", ["PutItem", "TransactWriteItems"])
def test_the_same_event_twice_at_once_applies_once_and_ends_applied(
    harness: LedgerHarness, customers: tuple[BalanceRef, BalanceRef], point: str
) -> None:
    first, _ = customers
    records = stored(harness, "msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    between(harness, point, _reconcile(harness, "msg_1"))  # the re-drive, while the stream has it
    assert harness.invoke(records) == []
    assert harness.event("msg_1")["status"] == "applied"
    assert (harness.head(first)["balance"], harness.head(first)["version"]) == (-1500, 1)
    assert_invariants(harness)


@pytest.mark.parametrize("point", ["PutItem", "TransactWriteItems"])
def test_two_webhooks_of_one_application_at_once_apply_it_once(
    harness: LedgerHarness, customers: tuple[BalanceRef, BalanceRef], point: str
) -> None:
    first, _ = customers
    records = stored(harness, "msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    stored(harness, "msg_2", payment("ob_1", 1500, customer_id="bcus_1"))
    between(harness, point, _reconcile(harness, "msg_2"))  # another shard
    assert harness.invoke(records) == []
    statuses = sorted((harness.event("msg_1")["status"], harness.event("msg_2")["status"]))
    assert statuses == ["applied", "duplicate"]
    applied = next(w for w in ("msg_1", "msg_2") if harness.event(w)["status"] == "applied")
    duplicate = next(w for w in ("msg_1", "msg_2") if harness.event(w)["status"] == "duplicate")
    assert harness.event(duplicate)["duplicate_of"] == applied
    entry = harness.ledger.get_entry(first, "payment:ob_1")
    assert entry is not None and entry["webhook_id"] == applied  # the event says what the entry says
    assert harness.head(first)["balance"] == -1500
    assert_invariants(harness)


def test_two_webhooks_of_one_application_for_two_balances_at_once_change_one(
    harness: LedgerHarness, customers: tuple[BalanceRef, BalanceRef]
) -> None:
    first, second = customers
    records = stored(harness, "msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    stored(harness, "msg_2", payment("ob_1", 1500, customer_id="bcus_2"))
    between(harness, "PutItem", _reconcile(harness, "msg_2"))
    assert harness.invoke(records) == []
    assert (harness.event("msg_1")["status"], harness.event("msg_2")["reason"]) == (
        "applied",
        "application_conflict",
    )
    assert (harness.head(first)["balance"], harness.head(second)["balance"]) == (-1500, 0)
    assert_invariants(harness)


# --- a claim written, then parked --------------------------------------------------------------


@pytest.mark.parametrize("reason", ["currency_mismatch", "unsupported"])
def test_a_parked_claim_stops_the_same_application_for_another_balance_and_both_are_visible(
    harness: LedgerHarness, reason: str
) -> None:
    if reason == "currency_mismatch":
        parked = harness.open_customer("UCR1", moment_id="bcus_1", currency="USD")
    else:
        parked = harness.open_customer("UCR1", moment_id="bcus_1", balance_model="accounts")
    other = harness.open_customer("UCR2", moment_id="bcus_2")
    deliver(harness, "msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    assert (harness.event("msg_1")["status"], harness.event("msg_1")["reason"]) == ("parked", reason)
    assert guard(harness, "ob_1")["webhook_id"] == "msg_1"
    deliver(harness, "msg_2", payment("ob_1", 1500, customer_id="bcus_2"))
    assert_parked_conflict(harness, "msg_2", "msg_1")
    assert harness.head(other)["balance"] == 0
    assert "balance" not in harness.head(parked) or harness.head(parked)["balance"] == 0
    assert_settled(harness, entries=[])


# --- bills -------------------------------------------------------------------------------------


def test_a_bill_claimed_then_voided_parks_the_payment_and_the_claim_still_stops_a_balance(
    harness: LedgerHarness, customers: tuple[BalanceRef, BalanceRef]
) -> None:
    first, _ = customers
    bill = open_bill(harness)
    records = claimed_then_crashed(
        harness, "msg_1", payment("ob_1", 400, customer_id="bcus_1", bill_id="bill_1")
    )
    bill_service.void_bill(harness.ledger, "FEE", NOW)
    assert harness.invoke(records) == []
    event = harness.event("msg_1")
    assert (event["status"], event["reason"]) == ("parked", "bill_voided")
    assert bill_paid(harness, bill) == 0
    deliver(harness, "msg_2", payment("ob_1", 400, customer_id="bcus_1"))
    assert_parked_conflict(harness, "msg_2", "msg_1")
    assert harness.head(first)["balance"] == 0
    assert_settled(harness, entries=[])


def test_a_bill_claimed_by_one_webhook_applied_by_another_then_voided_names_the_entrys_webhook(
    harness: LedgerHarness, customers: tuple[BalanceRef, BalanceRef]
) -> None:
    """The entry, not the claim, says who applied it: also once the bill is voided."""
    bill = open_bill(harness)
    records = claimed_then_crashed(
        harness, "msg_1", payment("ob_1", 400, customer_id="bcus_1", bill_id="bill_1")
    )
    deliver(harness, "msg_2", payment("ob_1", 400, customer_id="bcus_1", bill_id="bill_1"))
    assert harness.event("msg_2")["status"] == "applied"
    bill_service.void_bill(harness.ledger, "FEE", NOW)
    assert harness.invoke(records) == []
    event = harness.event("msg_1")
    assert (event["status"], event.get("duplicate_of")) == ("duplicate", "msg_2")
    assert bill_paid(harness, bill) == 400
    assert_settled(harness, entries=["BILL#FEE"])


def test_a_bill_payment_after_the_transaction_ends_applied_by_the_redrive_even_once_voided(
    harness: LedgerHarness, customers: tuple[BalanceRef, BalanceRef]
) -> None:
    bill = open_bill(harness)
    records = stored(harness, "msg_1", payment("ob_1", 400, customer_id="bcus_1", bill_id="bill_1"))
    crash_once(harness, "TransactWriteItems", after=True)
    assert len(harness.invoke(records)) == 1
    bill_service.void_bill(harness.ledger, "FEE", NOW)
    assert run_redrive(harness, "msg_1") == {"applied": 1}
    assert (harness.event("msg_1")["status"], bill_paid(harness, bill)) == ("applied", 400)
    assert_invariants(harness)


def test_two_webhooks_of_one_bill_application_at_once_apply_it_once(
    harness: LedgerHarness, customers: tuple[BalanceRef, BalanceRef]
) -> None:
    bill = open_bill(harness)
    records = stored(harness, "msg_1", payment("ob_1", 400, customer_id="bcus_1", bill_id="bill_1"))
    stored(harness, "msg_2", payment("ob_1", 400, customer_id="bcus_1", bill_id="bill_1"))
    between(harness, "PutItem", _reconcile(harness, "msg_2"))
    assert harness.invoke(records) == []
    assert sorted((harness.event("msg_1")["status"], harness.event("msg_2")["status"])) == [
        "applied",
        "duplicate",
    ]
    assert bill_paid(harness, bill) == 400
    assert_invariants(harness)


def test_a_bill_payment_in_another_currency_parks_and_the_same_application_for_a_balance_too(
    harness: LedgerHarness, customers: tuple[BalanceRef, BalanceRef]
) -> None:
    """As for balances (docs/ledger.md#the-reconciler): a payment parked where it was sent still owns
    its application id, so the same id for another place is parked too, not applied."""
    first, _ = customers
    open_bill(harness, currency="USD")
    deliver(harness, "msg_1", payment("ob_1", 400, customer_id="bcus_1", bill_id="bill_1"))
    assert harness.event("msg_1")["reason"] == "currency_mismatch"
    deliver(harness, "msg_2", payment("ob_1", 400, customer_id="bcus_1"))
    assert harness.event("msg_2")["status"] == "parked"
    assert harness.head(first)["balance"] == 0
    assert_invariants(harness)
