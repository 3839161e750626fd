"""What the bill pusher does with one bill, decided from what the ledger knows and what Moment shows. Pure.

Moment raises a bill's `amount_paid` itself for its own payments; the ledger tells it about payments
taken outside Moment with a PATCH of the cumulative `amount_paid`. The amount sent is

    max(Moment's amount_paid just read, Moment payments the ledger has seen + outside payments at Moment)
      + the outside payments not at Moment yet

so a Moment payment is never counted twice (the larger of two counts of the same thing), one a PATCH
overwrote is put back, and an outside payment is added once: each PATCH carries, in the same request,
the cumulative outside payments it includes (`metadata.moment_sync_outside_paid`), so Moment's own
record says which outside payments it holds, whatever became of an earlier PATCH's answer. A Moment
payment alone never causes a PATCH. A PATCH Moment's reference does not say it takes (on a `paid`
bill, or above `amount_due` when its payment rules forbid overpayment) is never sent: the bill is
blocked for an operator; so is a bill whose PATCH Moment answered without taking the amount (the bill
went paid between the read and the PATCH, and Moment ignored it). docs/pusher.md#bills.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from moment_sync.moment_client import MAX_BILL_AMOUNT, BillStatus, MomentBill

# The metadata key a PATCH writes with amount_paid: the outside payments that amount includes.
OUTSIDE_PAID_KEY: Final = "moment_sync_outside_paid"


@dataclass(frozen=True, slots=True)
class BillLedgerView:
    """The ledger's side of one bill (its head)."""

    amount_due: int
    currency: str
    moment_paid: int  # payments Moment applied that the ledger has reconciled (webhooks)
    outside_paid: int  # payments taken outside Moment
    outside_booked: int  # of those, known to be at Moment (a booked push)
    intents_outside: tuple[int, ...]  # outside_paid each open PATCH carried (its landing unknown)
    voided: bool
    # outside_paid of PATCHes Moment answered without taking their amount_paid (it ignored a PATCH of a
    # bill paid meanwhile, or capped it): its metadata may say so, its amount_paid does not hold them
    ignored_outside: tuple[int, ...] = ()

    @classmethod
    def of(cls, head: dict[str, Any]) -> BillLedgerView:
        intents = head.get("push_intents", [])
        return cls(
            amount_due=int(head["amount_due"]),
            currency=str(head["currency"]),
            moment_paid=int(head.get("amount_paid_moment", 0)),
            outside_paid=int(head.get("outside_paid", 0)),
            outside_booked=int(head.get("outside_booked", 0)),
            intents_outside=tuple(
                int(item.get("outside_paid", 0)) for item in intents if not item.get("ignored")
            ),
            voided=bool(head.get("void_requested_at")),
            ignored_outside=tuple(
                int(item.get("outside_paid", 0)) for item in intents if item.get("ignored")
            ),
        )


@dataclass(frozen=True, slots=True)
class Book:
    """Moment already shows everything: record it (no request)."""

    moment_amount_paid: int
    voided_at_moment: bool = False


@dataclass(frozen=True, slots=True)
class SendAmountPaid:
    amount_paid: int
    outside_paid: int  # the outside payments it includes (written beside it)

    @property
    def metadata(self) -> dict[str, str]:
        return {OUTSIDE_PAID_KEY: str(self.outside_paid)}


@dataclass(frozen=True, slots=True)
class VoidAtMoment:
    """Everything is at Moment; the merchant voided the bill: void it there."""


@dataclass(frozen=True, slots=True)
class Blocked:
    """An outside payment Moment's reference does not say it can take: nothing is sent."""

    detail: str


@dataclass(frozen=True, slots=True)
class Disagrees:
    """Moment's bill is not the ledger's (another amount, currency; voided there, open here; a record of
    outside payments the ledger never sent): the `conflict` state, for an operator."""

    detail: str


BillDecision = Book | SendAmountPaid | VoidAtMoment | Blocked | Disagrees


def outside_at_moment(ledger: BillLedgerView, recorded: object) -> int | None:
    """The outside payments Moment's amount_paid includes: what the last PATCH that landed wrote beside
    it, which must be the booked amount or one an open intent carried; None when it is neither."""
    if recorded is None:
        return ledger.outside_booked  # no PATCH of ours ever landed, or none since the last booking
    try:
        value = int(str(recorded))
    except ValueError:
        return None
    return value if value in {ledger.outside_booked, *ledger.intents_outside} else None


def recorded_by_ignored_patch(ledger: BillLedgerView, recorded: object) -> bool:
    """Moment's metadata names outside payments only a PATCH it did not apply carried."""
    if recorded is None or not ledger.ignored_outside:
        return False
    try:
        value = int(str(recorded))
    except ValueError:
        return False
    return value in ledger.ignored_outside and value not in {ledger.outside_booked, *ledger.intents_outside}


def plan_bill_push(ledger: BillLedgerView, moment: MomentBill) -> BillDecision:
    if moment.currency != ledger.currency or moment.amount_due != ledger.amount_due:
        return Disagrees(
            f"Moment's bill {moment.id} is {moment.amount_due} {moment.currency}, the ledger's "
            f"{ledger.amount_due} {ledger.currency}"
        )
    if moment.status is BillStatus.VOIDED:
        if ledger.voided:
            return Book(moment.amount_paid, voided_at_moment=True)
        return Disagrees(f"Moment's bill {moment.id} is voided; the ledger's is not: void it or raise anew")
    recorded = moment.metadata.get(OUTSIDE_PAID_KEY)
    if recorded_by_ignored_patch(ledger, recorded):
        return Blocked(
            f"Moment's bill {moment.id} records {recorded} of outside payments from a PATCH it answered "
            f"without taking its amount_paid: its amount_paid {moment.amount_paid} does not hold them"
        )
    at_moment = outside_at_moment(ledger, recorded)
    if at_moment is None:
        return Disagrees(
            f"Moment's bill {moment.id} records {recorded!r} of outside payments; the ledger booked "
            f"{ledger.outside_booked} and has no open PATCH that sent it"
        )
    target = max(moment.amount_paid, ledger.moment_paid + at_moment) + (ledger.outside_paid - at_moment)
    if target == moment.amount_paid:  # then at_moment == outside_paid: every outside payment is there
        return VoidAtMoment() if ledger.voided else Book(moment.amount_paid)
    if moment.status is BillStatus.PAID:
        return Blocked(
            f"Moment's bill {moment.id} is paid ({moment.amount_paid} of {moment.amount_due}); the ledger "
            f"would record {target - moment.amount_paid} more there: a PATCH of a paid bill is not sent"
        )
    overpayment_allowed = moment.overpayment_allowed is True  # unknown counts as not allowed
    if target > moment.amount_due and not overpayment_allowed:
        return Blocked(
            f"amount_paid {target} would pass amount_due {moment.amount_due}, and Moment's payment rules "
            "do not allow overpayment: not sent"
        )
    if target > MAX_BILL_AMOUNT:
        return Blocked(f"amount_paid {target} passes Moment's {MAX_BILL_AMOUNT}: not sent")
    return SendAmountPaid(target, ledger.outside_paid)
