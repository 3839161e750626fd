"""What one push costs in DynamoDB requests, and that the cheaper path still announces every sync state
(docs/events.md, docs/pusher.md#calls-per-pushed-balance): a push whose booking wrote `synced` with its
transition does not read the head again after it (nothing came since the read, so that read would find
nothing to write); a booking that leaves the balance pending still reads it again and announces what
changed. Real parts: the ledger in moto, the Moment sandbox over HTTP, requests counted with botocore's
`before-call` hook on the ledger's own client."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from moment_sandbox import MomentSandbox
from moment_sync.bill_pusher import BillPusher
from moment_sync.ledger.model import BalanceKind, BalanceRef, Entry, EntryKind
from moment_sync.ledger.sync import ATTEMPTS_BEFORE_FAILING, sync_state
from moment_sync.pusher import BalancePusher
from support import pushers
from support.ledger import LedgerHarness
from support.pushers import InFlight
from support.sync_state_pipe import ledger_stream, sync_state_changed

sandbox = pushers.sandbox
transport = pushers.transport
moment = pushers.moment
clock = pushers.clock
harness = pushers.harness
pusher = pushers.pusher
bill_pusher = pushers.bill_pusher
member = pushers.member


@contextmanager
def dynamodb_requests(harness: LedgerHarness) -> Iterator[list[str]]:
    """The DynamoDB operations the ledger's client sends meanwhile, in order."""
    sent: list[str] = []
    events = harness.dynamodb.meta.events

    def record(model: Any, **_: Any) -> None:
        sent.append(model.name)

    events.register("before-call.dynamodb.*", record, unique_id="test_push_requests")
    try:
        yield sent
    finally:
        events.unregister("before-call.dynamodb.*", unique_id="test_push_requests")


def charge(harness: LedgerHarness, balance: BalanceRef, charge_id: str, amount: int) -> None:
    entry = Entry(EntryKind.CHARGE, amount, charge_id, {"charge_id": charge_id}, "2026-09-21T00:00:00.000Z")
    assert harness.ledger.apply_entry(balance, entry, "ZAR").outcome.value == "applied"


def transition(head: dict[str, Any]) -> tuple[str, str, str]:
    return head["sync_transition"]["id"], head["sync_transition"]["from"], head["sync_transition"]["to"]


def test_a_clean_push_makes_three_dynamodb_requests_and_announces_pending_then_synced(
    harness: LedgerHarness, pusher: BalancePusher, member: str, transport: InFlight
) -> None:
    customer = BalanceRef(BalanceKind.CUSTOMER, "UCR1")
    synced_before = harness.head(customer)
    assert sync_state(synced_before) == synced_before["sync_state"] == "synced"
    transitions = int(synced_before.get("sync_transitions", 0))
    charge(harness, customer, "inv-1", 45000)
    transport.requests.clear()

    with dynamodb_requests(harness) as sent:
        assert pusher.push_one(customer) == "pushed"

    # The head, the intent (with `synced -> pending`: it was a write of its own), the booking (with
    # `pending -> synced`); no re-read of the head after the booking.
    assert sent == ["GetItem", "UpdateItem", "UpdateItem"]
    assert [request.split(" ")[0] for request in transport.requests] == ["GET", "PATCH"]
    head = harness.head(customer)
    assert (head["sync_state"], sync_state(head), head["sync_transitions"]) == (
        "synced",
        "synced",
        transitions + 2,
    )
    assert transition(head) == (f"CUSTOMER#UCR1|sync|{transitions + 2}", "pending", "synced")
    # Nothing was left to announce: a look now writes nothing.
    assert harness.ledger.settle_sync_state(customer, None, harness.clock() + 1) == head


def test_a_booking_that_leaves_the_balance_pending_still_reads_it_again_and_announces_the_change(
    harness: LedgerHarness, pusher: BalancePusher, member: str, transport: InFlight
) -> None:
    """Failing before the push, booked while a charge came (still pending, attempts reset): the re-read
    after the push announces `failing -> pending`; skipping it would leave `failing` announced."""
    customer = BalanceRef(BalanceKind.CUSTOMER, "UCR1")
    charge(harness, customer, "inv-1", 45000)
    now = harness.clock()
    for _ in range(ATTEMPTS_BEFORE_FAILING):
        harness.ledger.record_failure(customer, "Moment answered 503", now, now)
    failing = harness.ledger.settle_sync_state(customer, None, now)
    assert failing is not None and failing["sync_state"] == "failing"

    def charge_while_patching(request: httpx.Request) -> None:
        if request.method == "PATCH":
            charge(harness, customer, "inv-2", 30)

    transport.before_send = charge_while_patching
    assert pusher.push_one(customer) == "pushed"

    head = harness.head(customer)
    assert "push_shard" in head and head["push_attempts"] == 0  # booked, still pending
    assert (head["sync_state"], sync_state(head)) == ("pending", "pending")
    assert transition(head)[1:] == ("failing", "pending")


def test_a_bills_clean_push_carries_its_announcement_in_its_intent_and_does_not_read_it_after_booking(
    harness: LedgerHarness,
    bill_pusher: BillPusher,
    member: str,
    sandbox: MomentSandbox,
    transport: InFlight,
) -> None:
    bill = pushers.raise_bill(harness)
    assert pushers.run(bill_pusher) == {"created": 1}
    stream = ledger_stream(harness.dynamodb, harness.ledger_name)
    sync_state_changed(stream)
    transitions = int(pushers.head(harness, bill).get("sync_transitions", 0))
    pushers.cash(harness, bill, "cash-1", 20000)  # an outside payment: the bill is pending again
    transport.requests.clear()

    with dynamodb_requests(harness) as sent:
        assert bill_pusher.push_one(bill) == "pushed"

    # The bill, the intent (with `synced -> pending`), the bill again (the PATCH's round), the booking.
    assert sent == ["GetItem", "UpdateItem", "GetItem", "UpdateItem"]
    assert [request.split(" ")[0] for request in transport.requests] == ["GET", "PATCH", "GET"]
    assert pushers.on_moment(sandbox)["amount_paid"] == 20000
    head = pushers.head(harness, bill)
    assert (head["sync_state"], sync_state(head)) == ("synced", "synced")
    assert transition(head)[1:] == ("pending", "synced")
    assert harness.ledger.settle_sync_state(bill, None, harness.clock() + 1) == head
    assert [(old, new) for _id, old, new in sync_state_changed(stream)] == [
        ("synced", "pending"),
        ("pending", "synced"),
    ]
    assert head["sync_transitions"] == transitions + 2


# --- a steady push announces `synced -> pending` in its intent's write (docs/events.md) ---------------


def _steady(harness: LedgerHarness, transport: InFlight) -> tuple[BalanceRef, int, Any]:
    """UCR1 on Moment and synced, one charge ahead; the stream read up to here."""
    customer = BalanceRef(BalanceKind.CUSTOMER, "UCR1")
    stream = ledger_stream(harness.dynamodb, harness.ledger_name)
    sync_state_changed(stream)
    transitions = int(harness.head(customer).get("sync_transitions", 0))
    charge(harness, customer, "inv-1", 45000)
    transport.requests.clear()
    return customer, transitions, stream


def test_the_intent_carries_the_announcement_and_the_pipe_publishes_each_transition_once(
    harness: LedgerHarness, pusher: BalancePusher, member: str, transport: InFlight
) -> None:
    customer, transitions, stream = _steady(harness, transport)
    seen: list[dict[str, Any]] = []
    transport.before_send = lambda request: (
        seen.append(harness.head(customer)) if request.method == "PATCH" else None
    )

    assert pusher.push_one(customer) == "pushed"

    # When the PATCH left, the head held the intent and had announced `synced -> pending` with it.
    [before_patch] = seen
    assert len(before_patch["push_intents"]) == 1
    assert transition(before_patch) == (f"CUSTOMER#UCR1|sync|{transitions + 1}", "synced", "pending")
    assert sync_state_changed(stream) == [
        (f"CUSTOMER#UCR1|sync|{transitions + 1}", "synced", "pending"),
        (f"CUSTOMER#UCR1|sync|{transitions + 2}", "pending", "synced"),
    ]


def test_a_lost_announcement_race_reads_again_and_still_pushes_announcing_nothing_twice(
    harness: LedgerHarness, pusher: BalancePusher, member: str, transport: InFlight
) -> None:
    """Another look announces `synced -> pending` while this one reads Moment: the intent's write
    (conditional on the transitions read) is refused; the head read again owes nothing, so the intent
    is written alone and the push is booked as usual."""
    customer, transitions, stream = _steady(harness, transport)

    def another_look_announces(request: httpx.Request) -> None:
        if request.method == "GET":
            harness.ledger.settle_sync_state(customer, None, harness.clock())

    transport.before_send = another_look_announces
    with dynamodb_requests(harness) as sent:
        assert pusher.push_one(customer) == "pushed"

    # The head; (the other look's read, its write); the intent refused; the head; the intent; the booking.
    assert sent == ["GetItem", "GetItem", "UpdateItem", "UpdateItem", "GetItem", "UpdateItem", "UpdateItem"]
    assert sync_state_changed(stream) == [
        (f"CUSTOMER#UCR1|sync|{transitions + 1}", "synced", "pending"),
        (f"CUSTOMER#UCR1|sync|{transitions + 2}", "pending", "synced"),
    ]
    head = harness.head(customer)
    assert head["pushed_balance"] == head["balance"] and "push_shard" not in head


def test_an_intent_refused_for_another_push_state_sends_nothing_and_announces_pending_once(
    harness: LedgerHarness, pusher: BalancePusher, member: str, transport: InFlight
) -> None:
    """Another pusher's intent lands while this one reads Moment (its push state moved): the intent
    would have been refused on its own, so nothing is sent (a failed push, as before), and the look
    still announces `synced -> pending`, once."""
    customer, transitions, stream = _steady(harness, transport)

    def another_pusher_records_an_intent(request: httpx.Request) -> None:
        if request.method == "GET":
            harness.ledger.record_intent(customer, harness.head(customer), 1)

    transport.before_send = another_pusher_records_an_intent
    assert pusher.push_one(customer) == "failed"

    assert [request.split(" ")[0] for request in transport.requests] == ["GET"]
    head = harness.head(customer)
    assert len(head["push_intents"]) == 1 and head["push_attempts"] == 1
    assert sync_state_changed(stream) == [(f"CUSTOMER#UCR1|sync|{transitions + 1}", "synced", "pending")]


def test_a_steady_look_that_sends_no_patch_announces_pending_before_what_it_writes(
    harness: LedgerHarness, pusher: BalancePusher, member: str, transport: InFlight, sandbox: MomentSandbox
) -> None:
    """Moment already shows the ledger's balance: no intent to carry the announcement, so it is a write
    of its own before the booking, and the bus still sees `synced -> pending` then `pending -> synced`."""
    customer, transitions, stream = _steady(harness, transport)
    pusher.moment.set_customer_balance(member, int(harness.head(customer)["balance"]), "ZAR")
    transport.requests.clear()

    assert pusher.push_one(customer) == "in_sync"

    assert [request.split(" ")[0] for request in transport.requests] == ["GET"]
    assert sync_state_changed(stream) == [
        (f"CUSTOMER#UCR1|sync|{transitions + 1}", "synced", "pending"),
        (f"CUSTOMER#UCR1|sync|{transitions + 2}", "pending", "synced"),
    ]


def test_a_steady_look_that_fails_announces_pending_before_the_failure(
    harness: LedgerHarness, pusher: BalancePusher, member: str, transport: InFlight
) -> None:
    """Its fifth failure in a row makes it `failing`: the bus sees `synced -> pending` first, then
    `pending -> failing`, not a jump from `synced`."""
    customer, transitions, stream = _steady(harness, transport)
    for _ in range(ATTEMPTS_BEFORE_FAILING - 1):  # failed before, their announcements lost
        harness.ledger.record_failure(customer, "Moment answered 503", harness.clock(), harness.clock())
    transport.before_send = lambda request: httpx.Response(503, json={"status": 503, "title": "Unavailable"})

    assert pusher.push_one(customer) == "failed"

    assert harness.head(customer)["push_attempts"] == ATTEMPTS_BEFORE_FAILING
    assert sync_state_changed(stream) == [
        (f"CUSTOMER#UCR1|sync|{transitions + 1}", "synced", "pending"),
        (f"CUSTOMER#UCR1|sync|{transitions + 2}", "pending", "failing"),
    ]
