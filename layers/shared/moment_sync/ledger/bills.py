"""Bills: Moment's third billing model. Pure: the stored shape's vocabulary and its rules.

A bill is a discrete invoice owed by a customer or an account: an `amount_due` that never changes
(to change an amount, void it and raise a new one), and an `amount_paid` that rises with payments,
from Moment (webhooks with `data.bill_id`) or taken outside Moment (the merchant's cash at the
counter, which reaches Moment as a cumulative `amount_paid` PATCH). A bill payment never changes a
balance. The stored shape is described in docs/ledger.md ("Bills").
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from moment_sync.ledger.model import PUSH_SHARDS, BalanceKind, BalanceRef

BILL_PREFIX: Final = "BILL#"
# Bills share the PendingPush index with balances under their own shard keys, so the balance pusher
# (which queries `push#N`) never meets a bill, and the bill pusher queries only `billpush#N`.
BILL_PUSH_SHARD_PREFIX: Final = "billpush#"
# Owner listing (BillsByOwner index): open bills sort first, then by due date, then reference.
OPEN_ORDER, CLOSED_ORDER = "0", "1"
NO_DUE_DATE: Final = "9999-12-31"
DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")
DESCRIPTION_MAX = 500
# Open PATCH intents a bill may carry (as for balances): past it the pusher sends nothing more.
MAX_OPEN_BILL_INTENTS = 5


class BillStatus(StrEnum):
    """Moment's own statuses, lowercase."""

    UNPAID = "unpaid"
    PAID = "paid"
    VOIDED = "voided"


class BillEntryKind(StrEnum):
    # A Moment application (`data.bill_id`), keyed by its application id; Moment counts it itself.
    PAYMENT = "payment"
    # A payment taken outside Moment, keyed by the merchant's payment id; Moment learns it by PATCH.
    OUTSIDE_PAYMENT = "outside_payment"


@dataclass(frozen=True, slots=True, order=True)
class BillRef:
    """A bill, named by the merchant's external_reference."""

    ref: str

    @property
    def partition_key(self) -> str:
        return BILL_PREFIX + self.ref

    @classmethod
    def from_partition_key(cls, partition_key: str) -> BillRef:
        return cls(partition_key.removeprefix(BILL_PREFIX))

    @property
    def push_shard(self) -> str:
        digest = hashlib.sha256(self.partition_key.encode()).digest()
        return f"{BILL_PUSH_SHARD_PREFIX}{digest[0] % PUSH_SHARDS}"

    def __str__(self) -> str:
        return f"bill {self.ref}"


@dataclass(frozen=True, slots=True)
class BillEntry:
    """One payment on one bill, keyed by its source (a Moment application id, or the merchant's
    payment id) so a repeat is refused. `amount` is positive: what it raised amount_paid by."""

    kind: BillEntryKind
    amount: int
    source_id: str
    source: dict[str, str]
    created_at: str

    @property
    def entry_id(self) -> str:
        return f"{self.kind.value}:{self.source_id}"


def is_bill_key(partition_key: str) -> bool:
    return partition_key.startswith(BILL_PREFIX)


def owner_of(head: dict[str, Any]) -> BalanceRef:
    return BalanceRef(BalanceKind(str(head["owner_kind"])), str(head["owner_ref"]))


def listing_order(status: str, due_date: str | None, ref: str) -> str:
    """`bill_order` of the BillsByOwner index: open (unpaid) bills first, soonest due first."""
    prefix = OPEN_ORDER if status == BillStatus.UNPAID else CLOSED_ORDER
    return f"{prefix}#{due_date or NO_DUE_DATE}#{ref}"


def status_for(amount_due: int, amount_paid: int, voided: bool) -> BillStatus:
    if voided:
        return BillStatus.VOIDED
    return BillStatus.PAID if amount_paid >= amount_due else BillStatus.UNPAID


def amount_remaining(head: dict[str, Any]) -> int:
    """As Moment shapes it: never below 0 (an overpayment shows as `amount_overpaid`)."""
    return max(0, int(head["amount_due"]) - int(head.get("amount_paid", 0)))


def amount_overpaid(head: dict[str, Any]) -> int:
    return max(0, int(head.get("amount_paid", 0)) - int(head["amount_due"]))


def outside_pending(head: dict[str, Any]) -> int:
    """Outside payments not yet known to be at Moment (the next PATCH carries them)."""
    return int(head.get("outside_paid", 0)) - int(head.get("outside_booked", 0))


def amount_paid_to_send(head: dict[str, Any], moment_amount_paid: int) -> int:
    """The cumulative `amount_paid` a PATCH sends. Moment raises `amount_paid` itself for its own
    payments, so the rule of balances does not carry over: start from the larger of Moment's value just
    read and what the ledger knows Moment holds (its payments seen by webhook plus the outside payments
    already booked at Moment), then add the outside payments not at Moment yet. Taking the larger never
    counts a Moment payment twice; adding only the pending ones never counts an outside payment twice
    (an open intent makes the bill wait instead, since it may have landed)."""
    known_at_moment = int(head.get("amount_paid_moment", 0)) + int(head.get("outside_booked", 0))
    return max(moment_amount_paid, known_at_moment) + outside_pending(head)


def bill_item_fields(head: dict[str, Any]) -> dict[str, Any]:
    """What an API answer and the CLI show of a bill head (money in minor units)."""
    return {
        "reference": head["ref"],
        "owner": {"kind": head["owner_kind"], "reference": head["owner_ref"]},
        "currency": head["currency"],
        "amount_due": int(head["amount_due"]),
        "amount_paid": int(head.get("amount_paid", 0)),
        "amount_remaining": amount_remaining(head),
        "amount_overpaid": amount_overpaid(head),
        "status": head["status"],
        "bill_date": head.get("bill_date"),
        "due_date": head.get("due_date"),
        "description": head.get("description"),
        "moment_id": head.get("moment_id"),
        "version": int(head.get("version", 0)),
        "created_at": head.get("created_at"),
        "voided_at": head.get("void_requested_at"),
    }
