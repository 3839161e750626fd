"""The reconciler over moto: real stream records, the real handler, every payment applied once."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError

from moment_sync.ledger.model import BalanceKind
from moment_sync.reconciler import MAX_BACKOFF_SECONDS
from moment_sync.reconciliation import ParkReason
from moment_sync.redrive import RedriveReport, redrive, redrive_stuck
from support.ledger import LedgerHarness, payment
from support.webhooks import NOW


@pytest.fixture
def harness(dynamodb: Any) -> LedgerHarness:
    return LedgerHarness(dynamodb)


def test_a_payment_lowers_the_balance_and_marks_everything_in_one_go(harness: LedgerHarness) -> None:
    # GIVEN a customer linked to its Moment id, with a charge of R200
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    # WHEN Moment reports R150 paid, and the stream delivers the stored webhook
    harness.receive("msg_1", payment("ob_1", 15000, customer_id="bcus_1"))
    assert harness.invoke(harness.next_batch()) == []
    # THEN the balance, its version, its sync bookkeeping, the entry and the event all moved together
    head = harness.head(customer)
    assert (head["balance"], head["version"], head["payments_since_push"]) == (-15000, 1, 15000)
    assert head["push_shard"].startswith("push#") and head["pending_since"]
    [entry] = harness.entries(customer)
    assert entry["entry_id"] == "payment:ob_1"
    assert (entry["kind"], entry["amount"], entry["currency"]) == ("payment", -15000, "ZAR")
    assert entry["source"] == {
        "webhook_id": "msg_1",
        "application_id": "ob_1",
        "payment_id": "pay_ob_1",
        "moment_id": "bcus_1",
    }
    event = harness.event("msg_1")
    assert (event["status"], event["entry_id"], event["balance_key"]) == (
        "applied",
        "payment:ob_1",
        "CUSTOMER#UCR1",
    )
    # Still in `Unfinished` (the index no longer shrinks: leaving it would cost a second write unit);
    # the re-drive reads its status and passes it.
    assert event["unfinished_shard"].startswith("u#")
    harness.assert_balances_equal_their_entries()


def test_an_account_payment_changes_the_account_and_not_its_customer(harness: LedgerHarness) -> None:
    customer = harness.open_customer("UCR1", moment_id="bcus_1", balance_model="accounts")
    water = harness.open_account("ACC-WATER", "UCR1", moment_id="bacc_w")
    rates = harness.open_account("ACC-RATES", "UCR1", moment_id="bacc_r")
    harness.receive("msg_1", payment("ob_1", 700, customer_id="bcus_1", account_id="bacc_w"))
    assert harness.invoke(harness.next_batch()) == []
    assert harness.head(water)["balance"] == -700
    assert harness.head(rates)["balance"] == 0
    assert "balance" not in harness.head(customer)


def test_a_redelivered_batch_changes_nothing(harness: LedgerHarness) -> None:
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_1", payment("ob_1", 100, customer_id="bcus_1"))
    harness.receive("msg_2", payment("ob_2", 250, customer_id="bcus_1"))
    batch = harness.next_batch()
    assert harness.invoke(batch) == []
    assert harness.invoke(batch) == []  # Lambda may deliver the same batch again
    head = harness.head(customer)
    assert (head["balance"], head["version"]) == (-350, 2)
    assert {harness.event(w)["status"] for w in ("msg_1", "msg_2")} == {"applied"}


def test_the_same_payment_under_two_webhook_ids_is_applied_once(harness: LedgerHarness) -> None:
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_first", payment("ob_1", 100, customer_id="bcus_1"))
    harness.receive("msg_again", payment("ob_1", 100, customer_id="bcus_1"))
    assert harness.invoke(harness.next_batch()) == []
    assert harness.head(customer)["balance"] == -100
    duplicate = harness.event("msg_again")
    assert (duplicate["status"], duplicate["duplicate_of"], duplicate["entry_id"]) == (
        "duplicate",
        "msg_first",
        "payment:ob_1",
    )
    assert duplicate["unfinished_shard"].startswith("u#")  # the index no longer shrinks


def test_two_payments_for_one_customer_in_one_batch(harness: LedgerHarness) -> None:
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_1", payment("ob_1", 100, customer_id="bcus_1"))
    harness.receive("msg_2", payment("ob_2", 200, customer_id="bcus_1"))
    batch = harness.next_batch()
    assert len(batch) == 2
    assert harness.invoke(batch) == []
    assert (harness.head(customer)["balance"], harness.head(customer)["version"]) == (-300, 2)
    assert [entry["entry_id"] for entry in harness.entries(customer)] == ["payment:ob_2", "payment:ob_1"]


def _fail_transactions_for(
    dynamodb: Any, application_id: str, times: int, code: str = "TransactionConflict"
) -> list[int]:
    failures = [0]

    def maybe_fail(params: dict[str, Any], **_: Any) -> None:
        put = params["TransactItems"][0].get("Put", {})
        if (
            put.get("Item", {}).get("entry_id", {}).get("S") == f"payment:{application_id}"
            and failures[0] < times
        ):
            failures[0] += 1
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                    "CancellationReasons": [{"Code": code}, {"Code": "None"}, {"Code": "None"}],
                },
                "TransactWriteItems",
            )

    dynamodb.meta.events.register("before-parameter-build.dynamodb.TransactWriteItems", maybe_fail)
    return failures


def test_a_failing_record_in_the_middle_is_retried_alone_and_applied_once(harness: LedgerHarness) -> None:
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    for number in range(1, 6):
        harness.receive(f"msg_{number}", payment(f"ob_{number}", number * 100, customer_id="bcus_1"))
    batch = harness.next_batch()
    failures = _fail_transactions_for(harness.dynamodb, "ob_3", times=2)

    # WHEN the third record conflicts: only it is reported, the others are applied
    failed = harness.invoke(batch)
    assert failed == [batch[2]["dynamodb"]["SequenceNumber"]]
    assert harness.head(customer)["balance"] == -(100 + 200 + 400 + 500)
    assert harness.event("msg_3")["status"] == "received"

    # THEN Lambda's retries (from the lowest failed record, so 4 and 5 come again) settle it exactly once
    harness.deliver_with_retries(batch[2:])
    assert failures[0] == 2
    head = harness.head(customer)
    assert (head["balance"], head["version"]) == (-1500, 5)
    assert {harness.event(f"msg_{n}")["status"] for n in range(1, 6)} == {"applied"}
    harness.assert_balances_equal_their_entries()


@pytest.mark.parametrize("code", ["ThrottlingError", "ProvisionedThroughputExceeded"])
def test_throttling_is_a_batch_item_failure_not_a_parked_event(harness: LedgerHarness, code: str) -> None:
    harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_1", payment("ob_1", 100, customer_id="bcus_1"))
    batch = harness.next_batch()
    _fail_transactions_for(harness.dynamodb, "ob_1", times=1, code=code)
    assert harness.invoke(batch) == [batch[0]["dynamodb"]["SequenceNumber"]]
    assert harness.event("msg_1")["status"] == "received"
    assert harness.invoke(batch) == []
    assert harness.event("msg_1")["status"] == "applied"


def test_shuffled_order_ends_with_the_same_balances(harness: LedgerHarness) -> None:
    first = harness.open_customer("UCR1", moment_id="bcus_1")
    second = harness.open_customer("UCR2", moment_id="bcus_2")
    amounts = {f"ob_{n}": (n * 37) % 500 + 1 for n in range(30)}
    for number, (application, amount) in enumerate(amounts.items()):
        harness.receive(f"msg_{number}", payment(application, amount, customer_id=f"bcus_{number % 2 + 1}"))
        harness.receive(
            f"msg_dup_{number}", payment(application, amount, customer_id=f"bcus_{number % 2 + 1}")
        )
    batch = harness.next_batch()
    random.Random(7).shuffle(batch)
    for start in range(0, len(batch), 7):
        assert harness.invoke(batch[start : start + 7]) == []
    expected_first = -sum(amount for n, amount in enumerate(amounts.values()) if n % 2 == 0)
    expected_second = -sum(amount for n, amount in enumerate(amounts.values()) if n % 2 == 1)
    assert (harness.head(first)["balance"], harness.head(second)["balance"]) == (
        expected_first,
        expected_second,
    )
    statuses = [event["status"] for event in harness.all_events()]
    assert statuses.count("applied") == 30 and statuses.count("duplicate") == 30
    harness.assert_balances_equal_their_entries()


def test_concurrent_invocations_over_overlapping_batches_apply_each_payment_once(
    harness: LedgerHarness,
) -> None:
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    for number in range(40):
        harness.receive(f"msg_{number}", payment(f"ob_{number}", 10, customer_id="bcus_1"))
    batch = harness.next_batch()
    errors: list[BaseException] = []

    def run(records: list[dict[str, Any]]) -> None:
        try:
            harness.deliver_with_retries(records)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(batch[offset:],)) for offset in (0, 10, 20, 0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    head = harness.head(customer)
    assert (head["balance"], head["version"]) == (-400, 40)
    harness.assert_balances_equal_their_entries()


@pytest.mark.parametrize(
    ("body", "reason", "redriven"),
    [
        (payment("ob_1", 100, customer_id="bcus_unknown"), "unmatched", True),
        (payment("ob_1", 100, customer_id="bcus_1", currency="USD"), "currency_mismatch", False),
        (b"<html>not json", "invalid", False),
        # A bill id the ledger has not linked: unmatched (the re-drive links it), never the customer's.
        (payment("ob_1", 100, customer_id="bcus_1", bill_id="bill_1"), "unmatched", True),
        (payment("ob_1", 100, customer_id="bcus_grouping"), "unsupported", False),
    ],
    ids=["unknown-moment-id", "currency", "not-json", "bill", "customer-on-account-model"],
)
def test_each_parking_reason_is_kept_and_moves_no_money(
    harness: LedgerHarness, body: bytes, reason: str, redriven: bool
) -> None:
    customer = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.open_customer("GROUP1", moment_id="bcus_grouping", balance_model="accounts")
    harness.receive("msg_1", body)
    assert harness.invoke(harness.next_batch()) == []
    event = harness.event("msg_1")
    assert (event["status"], event["reason"], event["parked_reason"]) == ("parked", reason, reason)
    assert event["reason_detail"]
    # Only an unmatched payment is tried again by the scheduled re-drive (through `Parked`).
    assert (list(harness.events.parked_unmatched_ids("9999")) == ["msg_1"]) is redriven
    assert harness.head(customer)["balance"] == 0
    assert list(harness.events.parked_ids(ParkReason(reason))) == ["msg_1"]


def test_other_event_types_are_ignored_and_status_updates_do_not_reinvoke(harness: LedgerHarness) -> None:
    harness.receive("msg_1", payment("ob_1", 100, customer_id="bcus_1", event_type="customer.created"))
    assert harness.invoke(harness.next_batch()) == []
    event = harness.event("msg_1")
    assert (event["status"], event["ignored_type"]) == ("ignored", "customer.created")
    # the status update above is a MODIFY record on the stream: the template's filter drops it
    assert harness.next_batch() == []
    all_records = list(harness.stream.new_records())
    assert all_records == []


def test_redrive_applies_an_unmatched_payment_after_the_mapping_is_fixed(harness: LedgerHarness) -> None:
    customer = harness.open_customer("UCR1")
    harness.receive("msg_1", payment("ob_1", 900, customer_id="bcus_late"))
    harness.invoke(harness.next_batch())
    assert harness.event("msg_1")["reason"] == "unmatched"

    harness.ledger.link_moment_id(customer, "bcus_late")  # the operator (or the pusher) links it
    report = redrive(
        ["msg_1"], events=harness.events, ledger=harness.ledger, directory=None, now=harness.clock
    )
    assert report.outcomes == {"applied": 1}
    assert harness.head(customer)["balance"] == -900
    assert harness.event("msg_1")["status"] == "applied"
    assert list(harness.events.parked_ids(ParkReason.UNMATCHED)) == []


class FakeMomentDirectory:
    """Moment's records of Moment ids, in memory (the real adapter is tested against the sandbox)."""

    def __init__(self, references: dict[str, str]) -> None:
        self.references = references
        self.lookups: list[str] = []

    def external_reference(self, kind: BalanceKind, moment_id: str) -> str | None:
        self.lookups.append(moment_id)
        return self.references.get(moment_id)


def test_scheduled_redrive_links_unmatched_ids_from_moment_and_finishes_stream_misses(dynamodb: Any) -> None:
    now = [NOW]
    harness = LedgerHarness(dynamodb, clock=lambda: now[0])
    first = harness.open_customer("UCR1")
    second = harness.open_customer("UCR2", moment_id="bcus_2")
    harness.receive("msg_unmatched", payment("ob_1", 500, customer_id="bcus_1"))
    harness.invoke(harness.next_batch())
    # a stream record lost (it went to the on-failure queue): the event stays received
    harness.receive("msg_missed", payment("ob_2", 300, customer_id="bcus_2"))
    harness.receive("msg_nobody", payment("ob_3", 300, customer_id="bcus_nobody"))
    harness.invoke(
        [r for r in harness.next_batch() if r["dynamodb"]["Keys"]["webhook_id"]["S"] == "msg_nobody"]
    )
    directory = FakeMomentDirectory({"bcus_1": "UCR1", "bcus_nobody": "NOT-IN-LEDGER"})

    too_soon = redrive_stuck(
        events=harness.events,
        ledger=harness.ledger,
        directory=directory,
        now=harness.clock,
        grace_seconds=600,
    )
    assert too_soon.examined == 0

    now[0] += 601
    report = redrive_stuck(
        events=harness.events,
        ledger=harness.ledger,
        directory=directory,
        now=harness.clock,
        grace_seconds=600,
    )
    assert report.outcomes == {"applied": 2, "parked:unmatched": 1}
    assert report.linked == ["bcus_1 -> customer UCR1"]
    assert harness.head(first)["balance"] == -500 and harness.head(first)["moment_id"] == "bcus_1"
    assert harness.head(second)["balance"] == -300
    assert harness.event("msg_nobody")["redrive_attempts"] == 2
    harness.assert_balances_equal_their_entries()


def test_scheduled_redrive_backs_off_from_a_payment_that_stays_unmatched(dynamodb: Any) -> None:
    """Tried `grace` after it was parked, then 2x, 4x... later, never less often than every 6 hours; an
    operator's re-drive tries it at once."""
    now = [NOW]
    harness = LedgerHarness(dynamodb, clock=lambda: now[0])
    harness.receive("msg_nobody", payment("ob_3", 300, customer_id="bcus_nobody"))
    harness.invoke(harness.next_batch())  # parked unmatched at NOW (try 1)
    directory = FakeMomentDirectory({})

    def scheduled(back_off: bool = True) -> RedriveReport:
        return redrive_stuck(
            events=harness.events,
            ledger=harness.ledger,
            directory=directory,
            now=harness.clock,
            grace_seconds=600,
            back_off=back_off,
        )

    tried_at = []
    for _ in range(24 * 12):  # a day of runs, every 5 minutes
        now[0] += 300
        report = scheduled()
        assert report.examined + report.not_due <= 1
        if report.examined:
            tried_at.append(now[0] - NOW)
    gaps = [later - earlier for earlier, later in zip([0, *tried_at], tried_at, strict=False)]
    # The first run the grace after its parking (`UnmatchedDue` finds it then), then backing off.
    assert gaps[:6] == [600, 1200, 2400, 4800, 9600, 19200]
    assert gaps[6:] == [MAX_BACKOFF_SECONDS] * 2
    assert directory.lookups == ["bcus_nobody"] * len(gaps)  # one call to Moment per try, no more
    assert harness.event("msg_nobody")["redrive_attempts"] == len(gaps) + 1

    now[0] += 60  # not due for hours: not even read (its key keeps it out of the query); the
    # operator's re-drive tries it anyway
    assert (scheduled().examined, scheduled().not_due) == (0, 0)
    assert scheduled(back_off=False).examined == 1


def test_redrive_stops_before_its_time_runs_out(harness: LedgerHarness) -> None:
    harness.receive("msg_1", payment("ob_1", 1, customer_id="bcus_x"))
    report = redrive(
        ["msg_1"],
        events=harness.events,
        ledger=harness.ledger,
        directory=None,
        now=harness.clock,
        time_left=lambda: 1.0,
    )
    assert report.stopped_early and report.examined == 0
