"""`settle_sync_state` (docs/events.md): a head's sync state written as `sync_state` with its
`sync_transition` when it changes, once, by one writer; a booked push announces `synced` in its own
write. Against moto, with the template's Ledger table."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from moment_sync.ledger.sync import Booking, sync_state
from support.ledger import NOW, LedgerHarness, payment
from support.sync_state_pipe import ledger_stream, sync_state_changed


def test_a_change_is_written_once_with_its_transition_and_a_stale_second_writer_writes_nothing(
    dynamodb: Any,
) -> None:
    harness = LedgerHarness(dynamodb)
    balance = harness.open_customer("UCR1", moment_id="bcus_1")
    assert harness.head(balance)["sync_state"] == "synced"
    harness.receive("msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    harness.invoke(harness.next_batch())
    read = harness.head(balance)
    assert sync_state(read) == "pending" and read["sync_state"] == "synced"  # not announced yet

    written = harness.ledger.settle_sync_state(balance, read, NOW)
    assert written is not None and written["sync_state"] == "pending"
    head = harness.head(balance)
    assert head["sync_transition"] == {
        "id": "CUSTOMER#UCR1|sync|1",
        "from": "synced",
        "to": "pending",
        "at": head["sync_transition"]["at"],
    }
    # Another writer that read the head before the first wrote: its condition refuses it.
    harness.ledger.settle_sync_state(balance, read, NOW + 1)
    assert harness.head(balance)["sync_transitions"] == 1
    # Nothing changed since: nothing written.
    assert harness.ledger.settle_sync_state(balance, None, NOW + 2) == harness.head(balance)


def test_a_booked_push_announces_synced_in_its_own_write(dynamodb: Any) -> None:
    harness = LedgerHarness(dynamodb)
    balance = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    harness.invoke(harness.next_batch())
    read = harness.ledger.settle_sync_state(balance, None, NOW)
    assert read is not None
    assert harness.ledger.record_push(balance, read, int(read["balance"]), NOW + 1)
    head = harness.head(balance)
    assert (head["sync_state"], sync_state(head)) == ("synced", "synced")
    assert head["sync_transition"]["id"] == "CUSTOMER#UCR1|sync|2"
    assert (head["sync_transition"]["from"], head["sync_transition"]["to"]) == ("pending", "synced")


def test_every_new_entry_carries_what_its_pipe_copies(dynamodb: Any) -> None:
    harness = LedgerHarness(dynamodb)
    balance = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    harness.invoke(harness.next_batch())
    [entry] = harness.entries(balance)
    assert {name: entry[name] for name in ("detail_type", "balance_kind", "balance_ref", "source_id")} == {
        "detail_type": "Payment Applied",
        "balance_kind": "customer",
        "balance_ref": "UCR1",
        "source_id": "ob_1",
    }


def test_a_bills_states_are_announced_once_each_blocked_included_and_its_booking_announces_synced(
    dynamodb: Any,
) -> None:
    """The bill pusher's settle (docs/events.md#bills): a bill is raised `synced` (last announced),
    its first look announces `pending`, a block `blocked` once however often it is settled, and the
    booking `synced` in its own write."""
    from moment_sync.ledger import bill_service
    from moment_sync.ledger.bills import BillRef

    harness = LedgerHarness(dynamodb)
    harness.open_customer("UCR1", moment_id="bcus_1")
    bill_service.put_bill(
        harness.ledger, "FEE-1", {"customer": "UCR1", "currency": "ZAR", "amount_due": 5000}, NOW
    )
    bill = BillRef("FEE-1")
    read = harness.ledger.get_bill(bill)
    assert read is not None and (read["sync_state"], sync_state(read)) == ("synced", "pending")
    pending = harness.ledger.settle_sync_state(bill, read, NOW)
    assert pending is not None and pending["sync_transition"]["id"] == "BILL#FEE-1|sync|1"
    harness.ledger.record_bill_blocked(bill, "Moment shows it paid", NOW + 1, NOW + 3600)
    for second in (2, 3):  # a second look at the same block announces nothing more
        harness.ledger.settle_sync_state(bill, None, NOW + second)
    blocked = harness.ledger.get_bill(bill)
    assert blocked is not None
    assert (blocked["sync_state"], blocked["sync_transitions"]) == ("blocked", 2)
    assert (blocked["sync_transition"]["from"], blocked["sync_transition"]["to"]) == ("pending", "blocked")
    assert harness.ledger.record_bill_push(bill, blocked, 0, NOW + 4)
    booked = harness.ledger.get_bill(bill)
    assert booked is not None and "push_shard" not in booked
    assert (booked["sync_state"], sync_state(booked), booked["sync_transitions"]) == ("synced", "synced", 3)
    assert booked["sync_transition"]["id"] == "BILL#FEE-1|sync|3"


# --- a booking that leaves the head pending (a change came between the read and the booking) -------


def test_a_balance_booked_while_a_payment_keeps_it_pending_is_never_announced_synced(dynamodb: Any) -> None:
    """The balances' `record_push`, which the bills' follows: a booking that keeps the head pending
    writes no transition."""
    harness = LedgerHarness(dynamodb)
    stream = ledger_stream(dynamodb, harness.ledger_name)
    balance = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    harness.invoke(harness.next_batch())
    read = harness.ledger.settle_sync_state(balance, None, NOW)
    assert read is not None
    assert sync_state_changed(stream) == [("CUSTOMER#UCR1|sync|1", "synced", "pending")]
    harness.receive("msg_2", payment("ob_2", 700, customer_id="bcus_1"))  # lands after the read
    harness.invoke(harness.next_batch())

    assert harness.ledger.record_push(balance, read, int(read["balance"]), NOW + 1) is Booking.BOOKED
    harness.ledger.settle_sync_state(balance, None, NOW + 2)
    assert sync_state(harness.head(balance)) == "pending"
    assert sync_state_changed(stream) == []
    again = harness.head(balance)
    assert harness.ledger.record_push(balance, again, int(again["balance"]), NOW + 3) is Booking.SYNCED
    assert sync_state_changed(stream) == [("CUSTOMER#UCR1|sync|2", "pending", "synced")]


@pytest.mark.parametrize("blocked_when_read", [False, True], ids=["pending", "blocked"])
def test_a_bill_booked_while_a_payment_keeps_it_pending_is_never_announced_synced(
    dynamodb: Any, blocked_when_read: bool
) -> None:
    """A payment lands between the bill pusher's read and its booking: the booking is written, the
    bill stays in the pusher's list, so its write announces nothing (as a balance's `record_push`);
    the look's end announces what the bill is. `synced` only when a booking takes it off the list."""
    from moment_sync.ledger import bill_service
    from moment_sync.ledger.bills import BillRef

    harness = LedgerHarness(dynamodb)
    stream = ledger_stream(dynamodb, harness.ledger_name)
    harness.open_customer("UCR1", moment_id="bcus_1")
    bill_service.put_bill(
        harness.ledger, "FEE-1", {"customer": "UCR1", "currency": "ZAR", "amount_due": 5000}, NOW
    )
    bill = BillRef("FEE-1")
    # GIVEN the look's first announcement (and a block, announced once) before the pusher's read
    read = harness.ledger.settle_sync_state(bill, None, NOW)
    expected = [("BILL#FEE-1|sync|1", "synced", "pending")]
    if blocked_when_read:
        harness.ledger.record_bill_blocked(bill, "Moment shows it paid", NOW + 1, NOW + 3600)
        read = harness.ledger.settle_sync_state(bill, None, NOW + 1)
        expected.append(("BILL#FEE-1|sync|2", "pending", "blocked"))
    assert read is not None
    assert sync_state_changed(stream) == expected
    # AND a payment lands after the read
    bill_service.pay_bill(harness.ledger, "FEE-1", {"id": "cash-1", "amount": 1000}, NOW + 2)

    # WHEN the push is booked on that read, and the look ends
    assert harness.ledger.record_bill_push(bill, read, 0, NOW + 3) is Booking.BOOKED
    harness.ledger.settle_sync_state(bill, None, NOW + 4)

    # THEN the bill is still pending, and the stream never said it was synced
    head = harness.ledger.get_bill(bill)
    assert head is not None and "push_shard" in head and "pushed_at" in head
    assert (head["sync_state"], sync_state(head)) == ("pending", "pending")
    announced = sync_state_changed(stream)
    unblocked = [("blocked", "pending")] if blocked_when_read else []
    assert [(old, new) for _id, old, new in announced] == unblocked
    # AND the next look's booking, with nothing come since, announces `synced` once
    again = harness.ledger.get_bill(bill)
    assert again is not None
    assert harness.ledger.record_bill_push(bill, again, 1000, NOW + 5) is Booking.SYNCED
    [(event_id, old, new)] = sync_state_changed(stream)
    count = len(expected) + len(announced) + 1
    assert (event_id, old, new) == (f"BILL#FEE-1|sync|{count}", "pending", "synced")


def test_an_intent_refused_for_its_announcement_is_written_again_with_what_the_fresh_head_owes(
    dynamodb: Any,
) -> None:
    """record_intent_announced: a count the state is derived from moved after the read (another
    worker's failure), the push state did not: the write is refused, the head read again, and the
    intent written with `synced -> pending` as the fresh head gives it, once."""
    harness = LedgerHarness(dynamodb)
    stream = ledger_stream(dynamodb, harness.ledger_name)
    balance = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    harness.invoke(harness.next_batch())
    read = harness.head(balance)
    assert (read["sync_state"], sync_state(read)) == ("synced", "pending")
    harness.ledger.record_failure(balance, "Moment answered 503", NOW, NOW)  # after the read

    index, written = harness.ledger.record_intent_announced(balance, read, 0, NOW + 1)

    head = harness.head(balance)
    assert index == 0 and len(head["push_intents"]) == 1 and head["push_attempts"] == 1
    assert (head["sync_state"], head["sync_transitions"]) == ("pending", 1)
    assert (written["sync_state"], written["sync_transitions"]) == ("pending", 1)
    assert sync_state_changed(stream) == [("CUSTOMER#UCR1|sync|1", "synced", "pending")]
    # Booked from what the intent returned: `pending -> synced` in the booking's own write.
    assert harness.ledger.record_push(balance, written, int(read["balance"]), NOW + 2) is Booking.SYNCED
    assert sync_state_changed(stream) == [("CUSTOMER#UCR1|sync|2", "pending", "synced")]


def test_an_intent_whose_push_state_moved_is_refused_and_announces_nothing(dynamodb: Any) -> None:
    harness = LedgerHarness(dynamodb)
    stream = ledger_stream(dynamodb, harness.ledger_name)
    balance = harness.open_customer("UCR1", moment_id="bcus_1")
    harness.receive("msg_1", payment("ob_1", 1500, customer_id="bcus_1"))
    harness.invoke(harness.next_batch())
    read = harness.head(balance)
    harness.ledger.record_intent(balance, read, 0)  # another push's intent, after the read

    with pytest.raises(ClientError, match="ConditionalCheckFailed"):
        harness.ledger.record_intent_announced(balance, read, 0, NOW)

    head = harness.head(balance)
    assert len(head["push_intents"]) == 1 and head["sync_state"] == "synced"
    assert sync_state_changed(stream) == []
