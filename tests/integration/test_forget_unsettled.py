"""`forget` and payments not settled yet: the body goes, the summary stays, the payment is applied once.

The reconciler and the re-drive decide from the summary the receiver stored beside the body, so an
erasure that comes between a webhook and its reconciliation changes nothing about the money.
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from moment_sync.cli import main
from moment_sync.forget import forget_customer
from moment_sync.ledger.model import BalanceKind, BalanceRef
from moment_sync.reconciliation import EventStatus, ParkReason
from moment_sync.redrive import redrive, redrive_stuck
from support.ledger import LedgerHarness, payment
from support.webhooks import NOW


class MomentDirectory:
    """Moment's record: each id's external reference, and each account's customer."""

    def __init__(self, references: dict[str, str], owners: dict[str, str] | None = None) -> None:
        self.references = references
        self.owners = owners or {}

    def external_reference(self, kind: BalanceKind, moment_id: str) -> str | None:
        return self.references.get(moment_id)

    def account_owner(self, account_id: str) -> tuple[str, str | None]:
        customer_id = self.owners[account_id]
        return customer_id, self.references.get(customer_id)


@pytest.fixture
def clock() -> list[float]:
    return [NOW]


@pytest.fixture
def harness(dynamodb: Any, clock: list[float]) -> LedgerHarness:
    return LedgerHarness(dynamodb, clock=lambda: clock[0])


def forget_thandi(harness: LedgerHarness) -> None:
    harness.ledger.put_head(
        {"kind": "customer", "ref": "HOUSE1", "name": "Thandi Nkosi", "email": "thandi@example.com"},
        create=False,
    )
    erasure = forget_customer(harness.ledger, harness.events, "HOUSE1", harness.clock())
    assert erasure.fields_erased == {"customer HOUSE1": ["name", "email"]}


def assert_applied_once(harness: LedgerHarness, balance: BalanceRef, webhook_id: str, amount: int) -> None:
    head = harness.head(balance)
    entries = harness.entries(balance)
    assert head["balance"] == -amount
    assert [(entry["kind"], entry["amount"]) for entry in entries] == [("payment", -amount)]
    event = harness.event(webhook_id)
    assert event["status"] == EventStatus.APPLIED and "body" not in event
    harness.assert_balances_equal_their_entries()


def test_a_payment_still_received_when_its_customer_is_forgotten_is_applied_once_by_the_redrive(
    harness: LedgerHarness, clock: list[float]
) -> None:
    # GIVEN a payment whose stream record was lost (it stays `received`)
    house = harness.open_customer("HOUSE1", moment_id="bcus_house1")
    harness.receive("msg_pending", payment("ob_1", 700, customer_id="bcus_house1"))
    harness.next_batch()  # read and dropped: never delivered to the reconciler
    # WHEN the customer is forgotten, and the re-drive finds the event later
    forget_thandi(harness)
    assert "body" not in harness.event("msg_pending")
    clock[0] += 601
    report = redrive_stuck(
        events=harness.events, ledger=harness.ledger, directory=None, now=harness.clock, grace_seconds=600
    )
    # THEN the payment is applied, from the kept summary, exactly once
    assert report.outcomes == {"applied": 1} and report.errors == []
    assert_applied_once(harness, house, "msg_pending", 700)
    again = redrive(
        ["msg_pending"], events=harness.events, ledger=harness.ledger, directory=None, now=harness.clock
    )
    assert again.examined == 0
    assert_applied_once(harness, house, "msg_pending", 700)


def test_a_payment_parked_unmatched_when_its_customer_is_forgotten_is_linked_and_applied_once(
    harness: LedgerHarness, clock: list[float]
) -> None:
    # GIVEN a payment to an account the ledger has not linked yet, naming the (linked) customer
    harness.open_customer("HOUSE1", moment_id="bcus_house1", balance_model="accounts")
    water = harness.open_account("WATER1", "HOUSE1")
    harness.receive("msg_water", payment("ob_2", 450, customer_id="bcus_house1", account_id="bacc_water1"))
    batch = harness.next_batch()
    harness.invoke(batch)
    assert harness.event("msg_water")["reason"] == ParkReason.UNMATCHED
    # WHEN the customer is forgotten, then the re-drive learns from Moment whose account it is
    forget_thandi(harness)
    clock[0] += 601
    report = redrive_stuck(
        events=harness.events,
        ledger=harness.ledger,
        directory=MomentDirectory(
            {"bacc_water1": "WATER1", "bcus_house1": "HOUSE1"}, owners={"bacc_water1": "bcus_house1"}
        ),
        now=harness.clock,
        grace_seconds=600,
    )
    # THEN the account is linked from the kept summary and the payment applied once
    assert report.linked == ["bacc_water1 -> account WATER1"]
    assert report.outcomes == {"applied": 1}
    assert_applied_once(harness, water, "msg_water", 450)
    # the stream record, which still carries the body, delivered again (at least once): nothing changes
    assert harness.invoke(batch) == []
    assert_applied_once(harness, water, "msg_water", 450)


def test_an_event_parked_invalid_by_an_earlier_erasure_is_recovered_by_an_operator_redrive(
    harness: LedgerHarness,
) -> None:
    """Before the summary decided, an erased body parked a pending payment `invalid` ("body is not
    JSON"). Its summary was kept all along: `redrive --reason invalid` now applies it."""
    house = harness.open_customer("HOUSE1", moment_id="bcus_house1")
    harness.receive("msg_old", payment("ob_3", 250, customer_id="bcus_house1"))
    harness.next_batch()
    harness.events.erase_body("msg_old", "2026-09-21T00:00:00.000Z")
    harness.events.park("msg_old", ParkReason.INVALID, "body is not JSON", harness.clock())

    out = io.StringIO()
    code = main(
        [
            "--events-table",
            harness.events_name,
            "--ledger-table",
            harness.ledger_name,
            "parked",
            "--reason",
            "invalid",
            "--redrive",
        ],
        out=out,
    )
    assert code == 0, out.getvalue()
    assert_applied_once(harness, house, "msg_old", 250)


def test_forget_lists_the_payments_not_settled_yet_and_says_what_it_keeps(harness: LedgerHarness) -> None:
    harness.open_customer("HOUSE1", moment_id="bcus_house1")
    harness.receive("msg_done", payment("ob_4", 100, customer_id="bcus_house1"))
    harness.invoke(harness.next_batch())
    harness.receive("msg_waiting", payment("ob_5", 200, customer_id="bcus_house1"))
    harness.next_batch()

    out = io.StringIO()
    code = main(
        ["--events-table", harness.events_name, "--ledger-table", harness.ledger_name, "forget", "HOUSE1"],
        out=out,
    )
    text = out.getvalue()
    assert code == 0
    assert "erased the raw body of 2 stored webhooks" in text
    assert "each webhook's summary (amount, currency, Moment ids, event type)" in text
    assert "which the law allows keeping" in text
    assert "not settled yet: 1 of those webhooks" in text and "  msg_waiting" in text
    event = harness.event("msg_waiting")
    assert (event["amount"], event["currency"], event["customer_id"]) == (200, "ZAR", "bcus_house1")


def test_an_event_stored_by_an_earlier_version_settles_with_or_without_its_body(
    harness: LedgerHarness, clock: list[float]
) -> None:
    """The item exactly as the receiver has written it since the first version (docs/webhooks.md):
    its summary decides as its body did, and still does once `forget` erased the body."""
    house = harness.open_customer("HOUSE1", moment_id="bcus_house1")
    for webhook_id, application_id, amount in (("msg_old_1", "ob_6", 300), ("msg_old_2", "ob_7", 400)):
        body = payment(application_id, amount, customer_id="bcus_house1")
        harness.dynamodb.put_item(
            TableName=harness.events_name,
            Item={
                "webhook_id": {"S": webhook_id},
                "webhook_timestamp": {"N": str(NOW)},
                "received_at": {"S": "2026-09-21T14:13:20.000Z"},
                "body": {"B": body},
                "status": {"S": "received"},
                "unfinished_shard": {"S": "u#0"},
                "expires_at": {"N": str(NOW + 400 * 86400)},
                "event_id": {"S": f"evt_{application_id}"},
                "event_type": {"S": "obligation.amount_applied"},
                "application_id": {"S": application_id},
                "amount": {"N": str(amount)},
                "currency": {"S": "ZAR"},
                "payment_id": {"S": f"pay_{application_id}"},
                "customer_id": {"S": "bcus_house1"},
            },
        )
    batch = harness.next_batch()
    assert harness.invoke(batch[:1]) == []  # the first as the stream delivers it, body and all
    forget_thandi(harness)  # the second's body erased while it is still received
    clock[0] += 601
    report = redrive_stuck(
        events=harness.events, ledger=harness.ledger, directory=None, now=harness.clock, grace_seconds=600
    )
    assert report.outcomes == {"applied": 1}
    assert harness.head(house)["balance"] == -700
    assert {entry["entry_id"] for entry in harness.entries(house)} == {"payment:ob_6", "payment:ob_7"}
    harness.assert_balances_equal_their_entries()


def test_forget_a_customer_with_more_linked_ids_than_an_in_takes(harness: LedgerHarness) -> None:
    """DynamoDB's IN takes at most 100 operands: a property manager with 100 linked units (101 ids)
    is still erased, in one scan matched here."""
    harness.open_customer("ESTATE1", moment_id="bcus_estate1", balance_model="accounts")
    for number in range(100):
        harness.open_account(f"UNIT{number}", "ESTATE1", moment_id=f"bacc_unit{number}")
    harness.receive("msg_1", payment("ob_1", 500, customer_id="bcus_estate1", account_id="bacc_unit7"))
    harness.receive("msg_other", payment("ob_2", 500, customer_id="bcus_someone_else"))
    erasure = forget_customer(harness.ledger, harness.events, "ESTATE1", harness.clock())
    assert erasure.webhook_bodies_erased == ["msg_1"]
