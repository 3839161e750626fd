"""`settle_sync_state` (docs/events.md): a head's sync state written as `sync_state` with its
`sync_transition` when it changes, once, by one writer; a booked push announces `synced` in its own
write. Against moto, with the template's Ledger table."""

from __future__ import annotations

from typing import Any

from moment_sync.ledger.sync import sync_state
from support.ledger import NOW, LedgerHarness, payment


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
