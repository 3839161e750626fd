"""Entries keyed `ENTRY#<created_at>#<entry id>` (docs/ledger.md#entries-keyed-by-time).

The entry's key holds its time, so what refuses a second entry for one source is the item that fixes
that time: a payment's ledger-wide claim, a merchant's entry's `SOURCE#` guard. These tests pin the
defects a first attempt at this had (each fails without its fix): D1 a refused first attempt, D2 a
crashed one, backdating the entry to the claim's time; D3 republish missing such an entry; D4 one
source applied twice (its claim lost) and nobody noticing; and the rule that keeps two attempts from
ever writing two keys for one application.
"""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

import boto3
import pytest

from moment_sync.adapters.entry_keys import (
    ATTEMPT_LIFETIME_SECONDS,
    CLAIM_FRESH_SECONDS,
    ENTRY_PREFIX,
    entry_sort_key,
)
from moment_sync.adapters.ledger_bills import BillTransient
from moment_sync.adapters.ledger_table import (
    EntryOutcome,
    LedgerTable,
    PaymentOutcome,
    PaymentResult,
    TransientLedgerError,
    application_item,
    application_key,
)
from moment_sync.adapters.webhook_events_table import iso_time
from moment_sync.cli import main
from moment_sync.ledger.bills import BillEntry, BillEntryKind
from moment_sync.ledger.model import BalanceKind, BalanceRef, Entry, EntryKind
from moment_sync.republish import recorded_between
from support.ledger import NOW, LedgerHarness, payment

SETTLED = CLAIM_FRESH_SECONDS + ATTEMPT_LIFETIME_SECONDS  # from this age a claim may be re-dated
DAY = 86_400.0


@pytest.fixture
def harness(dynamodb: Any) -> LedgerHarness:
    return LedgerHarness(dynamodb)


def _payment(application_id: str, amount: int, at: float, webhook_id: str = "msg_1") -> Entry:
    return Entry(EntryKind.PAYMENT, -amount, application_id, {"webhook_id": webhook_id}, iso_time(at))


def _entries(harness: LedgerHarness, partition_key: str) -> list[dict[str, Any]]:
    return [
        item
        for item in harness.ledger.scan_all()
        if item["pk"] == partition_key and str(item["sk"]).startswith(ENTRY_PREFIX)
    ]


def _claim(harness: LedgerHarness, application_id: str) -> dict[str, Any]:
    item = harness.dynamodb.get_item(
        TableName=harness.ledger_name, Key=application_key(application_id), ConsistentRead=True
    )["Item"]
    return {name: next(iter(value.values())) for name, value in item.items()}


def _cli(harness: LedgerHarness, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(
        ["--events-table", harness.events_name, "--ledger-table", harness.ledger_name, *argv], out=out
    )
    return code, out.getvalue()


def test_entries_are_listed_newest_first_by_their_time_from_the_base_table(harness: LedgerHarness) -> None:
    balance = harness.open_customer("UCR1")
    ledger = harness.ledger
    # source ids in the opposite order to their times: only the time orders them
    for number, source in enumerate(["z", "m", "a"]):
        entry = Entry(EntryKind.CHARGE, 100 + number, source, {}, iso_time(NOW + number))
        assert ledger.apply_entry(balance, entry, "ZAR").outcome is EntryOutcome.APPLIED
    listed, cursor = ledger.entries(balance, limit=2)
    assert [item["entry_id"] for item in listed] == ["charge:a", "charge:m"]
    rest, end = ledger.entries(balance, limit=2, cursor=cursor)
    assert [item["entry_id"] for item in rest] == ["charge:z"] and end is None
    assert listed[0]["sk"] == entry_sort_key(iso_time(NOW + 2), "charge:a")
    assert "entry_order" not in listed[0]


def test_a_merchants_entry_is_refused_twice_by_its_source_guard_whatever_its_time(
    harness: LedgerHarness,
) -> None:
    balance = harness.open_customer("UCR1")
    first = Entry(EntryKind.CHARGE, 500, "ch-1", {}, iso_time(NOW))
    assert harness.ledger.apply_entry(balance, first, "ZAR", request_hash="h").outcome is EntryOutcome.APPLIED
    again = Entry(EntryKind.CHARGE, 500, "ch-1", {}, iso_time(NOW + DAY))  # a retry a day later
    result = harness.ledger.apply_entry(balance, again, "ZAR", request_hash="h")
    assert result.outcome is EntryOutcome.EXISTS
    assert result.existing_entry is not None and result.existing_entry["created_at"] == iso_time(NOW)
    assert result.existing_entry["request_hash"] == "h"
    assert harness.head(balance)["balance"] == 500 and len(_entries(harness, balance.partition_key)) == 1
    assert harness.ledger.get_entry(balance, "charge:ch-1") == result.existing_entry


def test_d1_a_refused_charge_leaves_no_guard_and_is_dated_when_it_is_accepted(harness: LedgerHarness) -> None:
    balance = harness.open_customer("UCR1")
    too_much = Entry(EntryKind.CHARGE, 900, "ch-1", {}, iso_time(NOW))
    refused = harness.ledger.apply_entry(balance, too_much, "ZAR", balance_limit=500)
    assert refused.outcome is EntryOutcome.OUT_OF_RANGE
    assert harness.ledger.get_entry(balance, "charge:ch-1") is None
    later = Entry(EntryKind.CHARGE, 900, "ch-1", {}, iso_time(NOW + DAY))
    assert harness.ledger.apply_entry(balance, later, "ZAR").outcome is EntryOutcome.APPLIED
    [entry] = _entries(harness, balance.partition_key)
    assert entry["created_at"] == iso_time(NOW + DAY)


def test_d1_a_payment_refused_first_is_dated_when_it_is_applied_not_when_it_was_refused(
    harness: LedgerHarness,
) -> None:
    # GIVEN a payment refused (its balance is not there yet): its claim stays, dated NOW
    balance = BalanceRef(BalanceKind.CUSTOMER, "UCR1")
    refused = harness.ledger.apply_payment(balance, _payment("ob_1", 700, NOW), "ZAR", "msg_1", NOW)
    assert refused.outcome is PaymentOutcome.NO_BALANCE
    assert _claim(harness, "ob_1")["created_at"] == iso_time(NOW)
    # and a reader that has already seen a later entry
    harness.open_customer("UCR1")
    later_charge = Entry(EntryKind.CHARGE, 100, "ch-1", {}, iso_time(NOW + DAY - 60))
    assert harness.ledger.apply_entry(balance, later_charge, "ZAR").outcome is EntryOutcome.APPLIED
    # WHEN the same payment is applied a day later (the re-drive)
    at = NOW + DAY
    applied = harness.ledger.apply_payment(balance, _payment("ob_1", 700, at, "msg_2"), "ZAR", "msg_2", at)
    # THEN its entry is dated now, above what was seen, and the claim says so
    assert applied.outcome is PaymentOutcome.APPLIED
    entry = harness.ledger.get_entry(balance, "payment:ob_1")
    assert entry is not None and entry["created_at"] == iso_time(at) == entry["recorded_at"]
    assert [item["entry_id"] for item in harness.entries(balance)] == ["payment:ob_1", "charge:ch-1"]
    claim = _claim(harness, "ob_1")
    assert (claim["created_at"], claim["redated_from"], claim["webhook_id"]) == (
        iso_time(at),
        iso_time(NOW),
        "msg_2",
    )
    # and a redelivery after that is a duplicate, on the same key
    again = NOW + 2 * DAY
    duplicate = harness.ledger.apply_payment(
        balance, _payment("ob_1", 700, again, "msg_3"), "ZAR", "msg_3", again
    )
    assert (duplicate.outcome, duplicate.applied_by_webhook) == (PaymentOutcome.DUPLICATE, "msg_2")
    assert harness.head(balance)["balance"] == -600 and len(_entries(harness, balance.partition_key)) == 2


def _crash_after_claim(harness: LedgerHarness, balance: BalanceRef, application_id: str, at: float) -> None:
    """An attempt that wrote its claim and died before its transaction."""
    entry = _payment(application_id, 700, at)
    assert harness.ledger.claim_application(application_item(balance, entry, "ZAR", "msg_1")) is None


def test_d2_a_payment_whose_first_attempt_crashed_is_dated_when_it_is_applied(harness: LedgerHarness) -> None:
    balance = harness.open_customer("UCR1")
    _crash_after_claim(harness, balance, "ob_1", NOW)
    at = NOW + 3600  # the re-drive, an hour later
    result = harness.ledger.apply_payment(balance, _payment("ob_1", 700, at), "ZAR", "msg_1", at)
    assert result.outcome is PaymentOutcome.APPLIED
    [entry] = _entries(harness, balance.partition_key)
    assert entry["created_at"] == iso_time(at)


def test_a_retry_while_the_claim_is_fresh_writes_the_same_key(harness: LedgerHarness) -> None:
    balance = harness.open_customer("UCR1")
    _crash_after_claim(harness, balance, "ob_1", NOW)
    at = NOW + CLAIM_FRESH_SECONDS - 1
    assert harness.ledger.apply_payment(balance, _payment("ob_1", 700, at), "ZAR", "msg_1", at).outcome is (
        PaymentOutcome.APPLIED
    )
    [entry] = _entries(harness, balance.partition_key)
    assert (entry["created_at"], entry["recorded_at"]) == (iso_time(NOW), iso_time(at))
    assert _claim(harness, "ob_1")["created_at"] == iso_time(NOW)  # not re-dated


def test_between_fresh_and_settled_nothing_is_written_and_the_attempt_is_retried_later(
    harness: LedgerHarness,
) -> None:
    """An attempt that read the claim fresh may still be in flight: writing at another time now
    could make two entries; writing at the claim's time would backdate. So: transient."""
    balance = harness.open_customer("UCR1")
    _crash_after_claim(harness, balance, "ob_1", NOW)
    for age in (CLAIM_FRESH_SECONDS, SETTLED - 1):
        at = NOW + age
        with pytest.raises(TransientLedgerError):
            harness.ledger.apply_payment(balance, _payment("ob_1", 700, at), "ZAR", "msg_1", at)
    assert _entries(harness, balance.partition_key) == []
    assert _claim(harness, "ob_1")["created_at"] == iso_time(NOW)


def test_a_redelivery_in_the_unsettled_window_of_an_applied_payment_is_still_a_duplicate(
    harness: LedgerHarness,
) -> None:
    balance = harness.open_customer("UCR1")
    assert harness.ledger.apply_payment(balance, _payment("ob_1", 700, NOW), "ZAR", "msg_1", NOW).outcome is (
        PaymentOutcome.APPLIED
    )
    for age in (CLAIM_FRESH_SECONDS + 1, SETTLED + 1, DAY):
        at = NOW + age
        result = harness.ledger.apply_payment(balance, _payment("ob_1", 700, at, "msg_2"), "ZAR", "msg_2", at)
        assert (result.outcome, result.applied_by_webhook) == (PaymentOutcome.DUPLICATE, "msg_1")
    assert len(_entries(harness, balance.partition_key)) == 1 and harness.head(balance)["balance"] == -700


def test_two_late_attempts_race_to_re_date_and_only_one_key_is_ever_written(harness: LedgerHarness) -> None:
    balance = harness.open_customer("UCR1")
    _crash_after_claim(harness, balance, "ob_1", NOW)
    stale = harness.ledger.claim_application(
        application_item(balance, _payment("ob_1", 700, NOW), "ZAR", "x")
    )
    assert stale is not None  # what the second attempt read before the first re-dated it
    first_at, second_at = NOW + SETTLED, NOW + SETTLED + 5
    applied = harness.ledger.apply_payment(balance, _payment("ob_1", 700, first_at), "ZAR", "msg_1", first_at)
    assert applied.outcome is PaymentOutcome.APPLIED
    # The second's conditional re-date loses (the claim is no longer dated NOW): it reads the claim
    # again and takes its time, where the first one's entry already is.
    created_at, stored = harness.ledger.claimed_time(
        balance.partition_key, "payment:ob_1", stale, second_at, "msg_2"
    )
    assert created_at == iso_time(first_at) and stored is None  # fresh: its transaction is refused there
    second = harness.ledger.apply_payment(
        balance, _payment("ob_1", 700, second_at, "msg_2"), "ZAR", "msg_2", second_at
    )
    assert (second.outcome, second.applied_by_webhook) == (PaymentOutcome.DUPLICATE, "msg_1")
    assert len(_entries(harness, balance.partition_key)) == 1


def test_d2_a_bill_payment_whose_first_attempt_crashed_is_dated_when_it_is_applied(
    harness: LedgerHarness,
) -> None:
    owner = harness.open_customer("UCR1")
    bill = harness.open_bill(owner, "FEE-1")
    entry = BillEntry(BillEntryKind.PAYMENT, 400, "ob_b", {"webhook_id": "msg_1"}, iso_time(NOW))
    assert harness.ledger._claim_for_bill(bill, entry, "ZAR", "msg_1") is None  # and then it died
    for age, outcome in ((CLAIM_FRESH_SECONDS + 1, None), (SETTLED, "applied"), (SETTLED + 60, "duplicate")):
        at = NOW + age
        later = BillEntry(BillEntryKind.PAYMENT, 400, "ob_b", {"webhook_id": "msg_2"}, iso_time(at))
        if outcome is None:
            with pytest.raises(TransientLedgerError):
                harness.ledger.apply_bill_payment(bill, later, "ZAR", "msg_2", at)
            continue
        assert harness.ledger.apply_bill_payment(bill, later, "ZAR", "msg_2", at).outcome.value == outcome
    [stored] = _entries(harness, bill.partition_key)
    assert stored["created_at"] == iso_time(NOW + SETTLED)
    assert harness.ledger.get_bill(bill)["amount_paid"] == 400  # type: ignore[index]


def test_d3_republish_finds_an_entry_by_when_it_was_written_not_by_its_claims_time(
    harness: LedgerHarness,
) -> None:
    balance = harness.open_customer("UCR1")
    _crash_after_claim(harness, balance, "ob_1", NOW)
    at = NOW + CLAIM_FRESH_SECONDS - 1  # dated NOW (its claim's time), written now
    harness.ledger.apply_payment(balance, _payment("ob_1", 700, at), "ZAR", "msg_1", at)
    # a pipe outage from just before the write: the entry was announced (or lost) in it
    found, _skipped = recorded_between(harness.ledger, harness.events, iso_time(at - 1), iso_time(at + 1))
    assert [detail["event_id"] for _type, detail in found] == [
        f"{balance.partition_key}|{entry_sort_key(iso_time(NOW), 'payment:ob_1')}"
    ]


def test_d4_a_ledger_without_its_claims_applies_a_redelivery_again_and_verify_and_backfill_say_so(
    harness: LedgerHarness,
) -> None:
    # GIVEN a payment applied, then its claim lost (a ledger copied without APPLICATION# items)
    balance = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_1", payment("ob_1", 700, customer_id="bcus_1"))
    assert harness.invoke(harness.next_batch()) == []
    assert _cli(harness, "verify")[0] == 0
    harness.dynamodb.delete_item(TableName=harness.ledger_name, Key=application_key("ob_1"))
    # WHEN Moment redelivers it a day later: nothing is left to say it is there, at another time
    at = NOW + DAY
    result = harness.ledger.apply_payment(balance, _payment("ob_1", 700, at, "msg_2"), "ZAR", "msg_2", at)
    assert result.outcome is PaymentOutcome.APPLIED  # the loss the claim exists to prevent
    # THEN the sums still agree, and verify still fails: one application, two entries
    code, text = _cli(harness, "verify")
    assert code == 1 and f"TWICE {balance.partition_key} payment:ob_1: one source, two entries" in text
    code, text = _cli(harness, "--json", "verify")
    assert json.loads(text)["entries_applied_twice"] == [f"{balance.partition_key} payment:ob_1"]
    code, text = _cli(harness, "backfill-application-guards")
    assert code == 1 and "CONFLICT ob_1" in text


def test_an_attempt_that_read_the_claim_fresh_can_still_land_so_no_one_re_dates_it_meanwhile(
    harness: LedgerHarness,
) -> None:
    """The race the unsettled window closes: an attempt judged the claim fresh and stalled before its
    transaction (up to an attempt's lifetime); a re-date meanwhile would let it write a second key."""
    balance = harness.open_customer("UCR1")
    _crash_after_claim(harness, balance, "ob_1", NOW)
    started = NOW + CLAIM_FRESH_SECONDS - 1
    claimed = harness.ledger.claim_payment(
        balance, _payment("ob_1", 700, started, "msg_2"), "ZAR", "msg_2", started
    )
    assert not isinstance(claimed, PaymentResult) and claimed[0].created_at == iso_time(NOW)
    # another attempt, just past the fresh window: it must not re-date (the first may still land)
    at = NOW + CLAIM_FRESH_SECONDS + 60
    with pytest.raises(TransientLedgerError):
        harness.ledger.apply_payment(balance, _payment("ob_1", 700, at, "msg_3"), "ZAR", "msg_3", at)
    # the stalled one lands, within its lifetime
    landed = harness.ledger.write_payment(balance, claimed[0], "ZAR", "msg_2", started, claimed[1])
    assert landed.outcome is PaymentOutcome.APPLIED
    # and once settled, a later attempt finds it where the claim says: one entry, ever
    at = NOW + SETTLED + 1
    late = harness.ledger.apply_payment(balance, _payment("ob_1", 700, at, "msg_4"), "ZAR", "msg_4", at)
    assert (late.outcome, late.applied_by_webhook) == (PaymentOutcome.DUPLICATE, "msg_2")
    assert len(_entries(harness, balance.partition_key)) == 1 and harness.head(balance)["balance"] == -700


# --- the operator's attempts: no Lambda bounds them, so their transactions check the claim ---------


class _RedatedBeforeTransaction:
    """A client whose next transaction first finds the claim re-dated, as a re-drive would while the
    operator's shell slept between its claim and its write."""

    def __init__(self, client: Any, table: str, application_id: str) -> None:
        self._client, self._table, self._application_id = client, table, application_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def transact_write_items(self, **request: Any) -> Any:
        self._client.update_item(
            TableName=self._table,
            Key={"pk": {"S": f"APPLICATION#{self._application_id}"}, "sk": {"S": "APPLICATION"}},
            UpdateExpression="SET created_at = :later",
            ExpressionAttributeValues={":later": {"S": iso_time(NOW + 3600)}},
        )
        return self._client.transact_write_items(**request)


def _shell(harness: LedgerHarness, client: Any = None) -> LedgerTable:
    return LedgerTable(client or harness.dynamodb, harness.ledger_name, attempts_bounded=False)


def test_the_cli_builds_a_ledger_whose_payment_attempts_are_not_bounded(harness: LedgerHarness) -> None:
    from moment_sync.cli import _tables  # the one place the CLI builds its ledger

    arguments = argparse.Namespace(
        local=False,
        stack=None,
        region=None,
        events_table=harness.events_name,
        ledger_table=harness.ledger_name,
    )
    _events, ledger = _tables(arguments, boto3.Session(region_name="af-south-1"))
    assert ledger.attempts_bounded is False and harness.ledger.attempts_bounded is True


def test_an_operator_attempt_applies_once_and_a_repeat_is_a_duplicate(harness: LedgerHarness) -> None:
    balance = harness.open_customer("UOP1")
    shell = _shell(harness)
    first = shell.apply_payment(balance, _payment("ob_op", 700, NOW), "ZAR", "msg_1", NOW)
    again = shell.apply_payment(balance, _payment("ob_op", 700, NOW + 5), "ZAR", "msg_1", NOW + 5)
    assert (first.outcome, again.outcome) == (PaymentOutcome.APPLIED, PaymentOutcome.DUPLICATE)
    assert [item["entry_id"] for item in _entries(harness, balance.partition_key)] == ["payment:ob_op"]


def test_an_operator_payment_whose_claim_is_re_dated_before_its_transaction_writes_nothing(
    harness: LedgerHarness,
) -> None:
    balance = harness.open_customer("UOP2")
    shell = _shell(harness, _RedatedBeforeTransaction(harness.dynamodb, harness.ledger_name, "ob_op"))
    with pytest.raises(TransientLedgerError, match="re-dated"):
        shell.apply_payment(balance, _payment("ob_op", 700, NOW), "ZAR", "msg_1", NOW)
    assert _entries(harness, balance.partition_key) == []
    assert harness.head(balance).get("balance", 0) == 0


def test_an_operator_bill_payment_whose_claim_is_re_dated_before_its_transaction_writes_nothing(
    harness: LedgerHarness,
) -> None:
    owner = harness.open_customer("UOP3")
    bill = harness.open_bill(owner, "INV-OP")
    shell = _shell(harness, _RedatedBeforeTransaction(harness.dynamodb, harness.ledger_name, "ob_opb"))
    entry = BillEntry(BillEntryKind.PAYMENT, 400, "ob_opb", {"webhook_id": "msg_1"}, iso_time(NOW))
    with pytest.raises(BillTransient, match="re-dated"):
        shell.apply_bill_payment(bill, entry, "ZAR", "msg_1", NOW)
    assert _entries(harness, bill.partition_key) == []
    applied = _shell(harness).apply_bill_payment(
        bill,
        BillEntry(BillEntryKind.PAYMENT, 400, "ob_opb2", {"webhook_id": "msg_2"}, iso_time(NOW)),
        "ZAR",
        "msg_2",
        NOW,
    )
    assert applied.outcome.value == "applied"
