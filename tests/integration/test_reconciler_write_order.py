"""The payment's writes in their order (docs/ledger.md#the-reconciler): the application's claim (a
plain conditional put), then the transaction (entry and head), then the event's status. A crash
between any two leaves something the next delivery or the re-drive finishes: the payment applied
once, the event `applied` (never left `received`), the claim naming the only place it may go."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest

from moment_sync.adapters.ledger_table import application_key
from moment_sync.cli import main
from moment_sync.ledger import bill_service
from moment_sync.ledger.bills import BillRef
from moment_sync.redrive import redrive
from support.ledger import LedgerHarness, payment
from support.webhooks import NOW


class Crash(Exception):
    """The function died: nothing after this point ran."""


class CrashingClient:
    """The DynamoDB client with one planned crash: before the `nth` call of `operation` is sent, or
    after it committed (`after=True`)."""

    def __init__(self, client: Any, operation: str, *, after: bool, nth: int = 1) -> None:
        self._client = client
        self._operation = operation
        self._after = after
        self._left = nth

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if name != self._operation:
            return method

        def call(**params: Any) -> Any:
            self._left -= 1
            if self._left == 0 and not self._after:
                raise Crash(f"before {name}")
            answer = method(**params)
            if self._left == 0:
                raise Crash(f"after {name}")
            return answer

        return call


@pytest.fixture
def harness(dynamodb: Any) -> LedgerHarness:
    return LedgerHarness(dynamodb)


def _crashing(harness: LedgerHarness, operation: str, *, after: bool) -> Callable[[], None]:
    """Make the next reconciliation crash at that point; returns how to restore the real client."""
    real_ledger, real_events = harness.ledger._client, harness.events._client
    client = CrashingClient(harness.dynamodb, operation, after=after)
    harness.ledger._client = client
    harness.events._client = client

    def restore() -> None:
        harness.ledger._client, harness.events._client = real_ledger, real_events

    return restore


def _guard(harness: LedgerHarness, application_id: str) -> dict[str, Any]:
    item = harness.dynamodb.get_item(TableName=harness.ledger_name, Key=application_key(application_id))
    return {name: next(iter(value.values())) for name, value in item.get("Item", {}).items()}


def _cli(harness: LedgerHarness, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    tables = ["--events-table", harness.events_name, "--ledger-table", harness.ledger_name]
    return main([*tables, *argv], out=out), out.getvalue()


def _redrive(harness: LedgerHarness, *webhook_ids: str) -> dict[str, int]:
    report = redrive(
        list(webhook_ids), events=harness.events, ledger=harness.ledger, directory=None, now=harness.clock
    )
    assert report.errors == []
    return report.outcomes


def test_a_crash_after_the_claim_is_finished_by_the_next_delivery(harness: LedgerHarness) -> None:
    # GIVEN the function dies after claiming ob_1, before its transaction
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    records = harness.next_batch()
    restore = _crashing(harness, "transact_write_items", after=False)
    assert len(harness.invoke(records)) == 1
    restore()
    assert _guard(harness, "ob_1")["webhook_id"] == "msg_1"
    assert (harness.head(customer)["balance"], harness.event("msg_1")["status"]) == (0, "received")
    # WHEN the stream delivers the record again
    assert harness.invoke(records) == []
    # THEN the claim it finds names this balance and amount: it goes on, and applies it once
    assert (harness.head(customer)["balance"], harness.head(customer)["version"]) == (-1500, 1)
    assert harness.event("msg_1")["status"] == "applied"
    harness.assert_balances_equal_their_entries()


def test_a_claim_left_by_a_crash_still_stops_the_same_application_for_another_balance(
    harness: LedgerHarness,
) -> None:
    # GIVEN ob_1 claimed for UCR1 by a delivery that died before its transaction
    first = harness.open_customer("UCR1", moment_id="bcus_1")
    second = harness.open_customer("UCR2", moment_id="bcus_2")
    harness.receive("msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    records = harness.next_batch()
    restore = _crashing(harness, "transact_write_items", after=False)
    harness.invoke(records)
    restore()
    # WHEN the same application id arrives for UCR2, and then the first is re-driven
    harness.receive("msg_2", payment("ob_1", 1500, customer_id="bcus_2"))
    assert harness.invoke(harness.next_batch()) == []
    assert _redrive(harness, "msg_1") == {"applied": 1}
    # THEN UCR2 is never changed, its event parked naming the claim's webhook; UCR1 applied once
    assert harness.head(second)["balance"] == 0
    event = harness.event("msg_2")
    assert (event["status"], event["reason"], event["conflicts_with"]) == (
        "parked",
        "application_conflict",
        "msg_1",
    )
    assert harness.head(first)["balance"] == -1500
    assert harness.event("msg_1")["status"] == "applied"
    harness.assert_balances_equal_their_entries()


def test_a_claim_never_applied_then_re_linked_is_parked_as_claimed_not_applied_and_settled_by_adjust(
    harness: LedgerHarness,
) -> None:
    """A claim whose delivery died before its transaction, and whose Moment id an operator then linked
    to another balance: the conflict said the claim's webhook had *applied* it, sending the operator
    after an entry that does not exist. The message says what is known: claimed, never applied."""
    # GIVEN ob_1 claimed for UCR1 by msg_1, which died before its transaction
    first = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    records = harness.next_batch()
    restore = _crashing(harness, "transact_write_items", after=False)
    harness.invoke(records)
    restore()
    # AND an operator moves bcus_1 to UCR2, whose object it really is
    harness.ledger.unlink_moment_id(first, "bcus_1", NOW)
    second = harness.open_customer("UCR2")
    harness.ledger.link_moment_id(second, "bcus_1")
    # WHEN Moment sends ob_1 again under a new message id, and the re-drive finishes msg_1
    harness.receive("msg_2", payment("ob_1", 1500, customer_id="bcus_1"))
    assert harness.invoke(harness.next_batch()) == []
    assert _redrive(harness, "msg_1") == {"parked:application_conflict": 1}
    # THEN both are parked naming the claim's webhook, and say it was claimed, never applied
    for webhook_id in ("msg_1", "msg_2"):
        event = harness.event(webhook_id)
        assert (event["reason"], event["conflicts_with"]) == ("application_conflict", "msg_1")
        detail = event["reason_detail"]
        assert "was applied" not in detail
        assert "claimed for customer UCR1 as 1500 ZAR by webhook msg_1 but never applied" in detail
    assert harness.head(first)["balance"] == harness.head(second)["balance"] == 0
    # AND the runbook's way out (docs/operations.md): an audited adjustment of the balance the Moment
    # id is linked to now, under an id, so a repeat changes nothing; the claim still refuses ob_1
    codes = [
        _cli(
            harness,
            "adjust",
            "customer",
            "UCR2",
            "--amount=-1500",
            "--id",
            "claim-ob_1",
            "--operator",
            "ops",
            "--reason",
            "Moment application ob_1 claimed for UCR1 by msg_1, never applied",
        )[0]
        for _ in range(2)
    ]
    assert codes == [0, 1]  # the same id again is refused (adjustment-id-reused): credited once
    assert _redrive(harness, "msg_1", "msg_2") == {"parked:application_conflict": 2}
    assert (harness.head(first)["balance"], harness.head(second)["balance"]) == (0, -1500)
    harness.assert_balances_equal_their_entries()


def test_a_conflict_with_an_applied_claim_says_applied_and_names_the_entrys_webhook(
    harness: LedgerHarness,
) -> None:
    harness.open_customer("UCR1", moment_id="bcus_1")
    harness.open_customer("UCR2", moment_id="bcus_2")
    harness.receive("msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    harness.invoke(harness.next_batch())
    harness.receive("msg_2", payment("ob_1", 1500, customer_id="bcus_2"))
    harness.invoke(harness.next_batch())
    event = harness.event("msg_2")
    assert event["conflicts_with"] == "msg_1"
    assert event["reason_detail"].startswith(
        "application ob_1 was applied to customer UCR1 as 1500 ZAR by webhook msg_1"
    )


def test_a_duplicate_webhook_completes_a_crashed_claim_and_the_first_ends_duplicate(
    harness: LedgerHarness,
) -> None:
    # GIVEN msg_1 claimed ob_1 and died; msg_2 (the same application, same balance) then applies it
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    records = harness.next_batch()
    restore = _crashing(harness, "transact_write_items", after=False)
    harness.invoke(records)
    restore()
    harness.receive("msg_2", payment("ob_1", 1500, customer_id="bcus_1"))
    assert harness.invoke(harness.next_batch()) == []
    assert harness.event("msg_2")["status"] == "applied"
    # WHEN msg_1 is re-driven
    assert _redrive(harness, "msg_1") == {"duplicate": 1}
    # THEN the entry, not the claim, says who applied it: msg_1 is the duplicate, the balance moved once
    event = harness.event("msg_1")
    assert (event["status"], event["duplicate_of"]) == ("duplicate", "msg_2")
    assert (harness.head(customer)["balance"], harness.head(customer)["version"]) == (-1500, 1)
    harness.assert_balances_equal_their_entries()


@pytest.mark.parametrize("finisher", ["redelivery", "redrive"])
def test_a_crash_after_the_transaction_before_the_status_still_ends_applied(
    harness: LedgerHarness, finisher: str
) -> None:
    # GIVEN the transaction committed and the function died before the event's status update
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    records = harness.next_batch()
    restore = _crashing(harness, "transact_write_items", after=True)
    assert len(harness.invoke(records)) == 1
    restore()
    assert (harness.head(customer)["balance"], harness.event("msg_1")["status"]) == (-1500, "received")
    # WHEN the record comes again, or the re-drive finds it
    if finisher == "redelivery":
        assert harness.invoke(records) == []
    else:
        assert _redrive(harness, "msg_1") == {"applied": 1}
    # THEN the event ends applied (not received, not duplicate), and nothing was applied twice
    event = harness.event("msg_1")
    assert (event["status"], event["entry_id"], event["balance_key"]) == (
        "applied",
        "payment:ob_1",
        "CUSTOMER#UCR1",
    )
    assert "duplicate_of" not in event
    assert (harness.head(customer)["balance"], harness.head(customer)["version"]) == (-1500, 1)
    harness.assert_balances_equal_their_entries()


def test_a_redelivered_record_of_an_applied_payment_leaves_it_applied(harness: LedgerHarness) -> None:
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    records = harness.next_batch()
    assert harness.invoke(records) == []
    resolved = harness.event("msg_1")["resolved_at"]
    assert harness.invoke(records) == []
    event = harness.event("msg_1")
    assert (event["status"], event["resolved_at"]) == ("applied", resolved)  # a final status stays
    assert harness.head(customer)["version"] == 1


def _bill(harness: LedgerHarness) -> BillRef:
    harness.open_customer("UCR1", moment_id="bcus_1")
    bill_service.put_bill(
        harness.ledger, "FEE", {"customer": "UCR1", "currency": "ZAR", "amount_due": 1000}, NOW
    )
    bill = BillRef("FEE")
    harness.ledger.link_bill(bill, "bill_1")
    return bill


@pytest.mark.parametrize("after", [False, True], ids=["after-the-claim", "after-the-transaction"])
def test_a_bill_payment_crashed_midway_is_finished_once(harness: LedgerHarness, after: bool) -> None:
    bill = _bill(harness)
    version = (harness.ledger.get_bill(bill) or {})["version"]
    harness.receive("msg_1", payment("ob_1", 400, customer_id="bcus_1", bill_id="bill_1"))
    records = harness.next_batch()
    restore = _crashing(harness, "transact_write_items", after=after)
    assert len(harness.invoke(records)) == 1
    restore()
    assert harness.event("msg_1")["status"] == "received"
    assert harness.invoke(records) == []
    event = harness.event("msg_1")
    assert (event["status"], event["balance_key"]) == ("applied", "BILL#FEE")
    head = harness.ledger.get_bill(bill)
    assert head is not None and (head["amount_paid"], head["version"]) == (400, version + 1)
    # and a crashed claim on a bill still stops the same application for a balance
    harness.receive("msg_2", payment("ob_1", 400, customer_id="bcus_1"))
    assert harness.invoke(harness.next_batch()) == []
    assert (harness.event("msg_2")["status"], harness.event("msg_2")["conflicts_with"]) == ("parked", "msg_1")
