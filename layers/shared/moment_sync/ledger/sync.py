"""How far a balance is from Moment, as the ledger API, the CLI and the pusher all describe it."""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Final

# Consecutive pushes deferred because Moment's balance is unexplained, before an operator is told.
DEFERRALS_BEFORE_ALERT = 3
# Consecutive failed pushes before a balance counts as failing.
ATTEMPTS_BEFORE_FAILING = 5

# The one list of sync states (the API's enum, the CLI, metrics, alarms and the runbook use it as is):
# `conflict`: Moment holds an object under this balance's reference that is not this balance's (another
# customer's account, a reference that is another object's Moment id), or an adopted object whose
# balance an operator must choose; no push is made until an operator links, unlinks or adopts.
# `blocked` (bills only): an outside payment Moment's reference does not say it can take (the bill is
# paid at Moment, or amount_paid would pass amount_due); nothing is sent until an operator acts.
SYNC_STATES: Final = ("synced", "pending", "deferred", "failing", "conflict", "blocked")
# What a head keeps of its announcements (docs/events.md): the state last announced, the last
# transition (the stream's `Sync State Changed`), and how many there were.
SYNC_FIELDS: Final = ("sync_state", "sync_transition", "sync_transitions")


class Booking(IntEnum):
    """What booking a push did (the ledger's `record_push`, `record_bill_push`). Falsy only when
    refused, so `if not record_push(...)` reads as it did when it returned a bool."""

    REFUSED = 0  # another push booked since the read: nothing written
    # Booked, but the head's sync state may still need announcing: a change came during the push (it
    # stays pending), or the state read was already `synced`, so the write did not check it.
    BOOKED = 1
    # Booked with nothing come since the read: the head is `synced`, and this write announced it (its
    # transition, conditional on the transitions read). Nothing is left for a look to announce.
    SYNCED = 2


def sync_state(head: dict[str, Any]) -> str:
    if "push_shard" not in head:
        return "synced"
    if head.get("push_conflict"):
        return "conflict"
    if head.get("push_blocked"):
        return "blocked"
    if head.get("defer_count", 0) >= DEFERRALS_BEFORE_ALERT:
        return "deferred"
    if head.get("push_attempts", 0) >= ATTEMPTS_BEFORE_FAILING:
        return "failing"
    return "pending"


def sync_view(head: dict[str, Any]) -> dict[str, Any]:
    view = {
        "state": sync_state(head),
        "pushed_balance": head.get("pushed_balance"),
        "pushed_at": head.get("pushed_at"),
        "attempts": head.get("push_attempts", 0),
        "last_error": head.get("last_push_error"),
    }
    if head.get("push_conflict"):
        view["conflict"] = head["push_conflict"]
    if head.get("push_waiting"):
        # A first push held back while unmatched payments name the Moment id (docs/pusher.md).
        view["waiting_for"] = head["push_waiting"]
    return view
