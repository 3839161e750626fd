"""Whether a balance may be pushed to Moment now, and what to remember afterwards. Pure.

Moment has no conditional PATCH, and its documentation does not say whether it lowers a balance
itself when it applies a payment. So before a push the pusher reads Moment's balance M and pushes
only when M is explained by what the ledger already knows. With P the balance last pushed and
p1..pn the payments reconciled since (each amount on its own):

- M = P - (the sum of any subset of p1..pn): Moment lowered the balance by some of the payments the
  ledger has seen, and not by the others: those it did not lower itself, or whose lowering a push
  overwrote (a payment landing between a push's read and its PATCH);
- the same from I, a push that was sent but never booked (the run stopped between the PATCH and its
  bookkeeping), with the payments reconciled after it;
- M equal to the ledger's balance: nothing to push, only bookkeeping.

Any other M means Moment applied a payment whose webhook the ledger has not reconciled yet: pushing
now would erase it, so the push is deferred until the webhook arrives.

A payment Moment applies between the read and the PATCH is overwritten on Moment; once its webhook
is reconciled it is one of p1..pn, Moment's balance is explained again, and the next push restores
it. That window, one push cycle long, is the whole exposure.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PushSnapshot:
    """What the pusher read from the ledger's head."""

    balance: int
    version: int
    pushed_balance: int | None  # P; None before the first push
    payments: tuple[int, ...] = ()  # p1..pn: each payment reconciled since P was pushed
    intent: int | None = None  # I: a balance sent to Moment whose push was never booked
    intent_payments: int = 0  # how many of p1..pn that push had read


@dataclass(frozen=True, slots=True)
class Push:
    balance: int


@dataclass(frozen=True, slots=True)
class AlreadyEqual:
    """Moment already shows the ledger's balance: only the bookkeeping is due."""


@dataclass(frozen=True, slots=True)
class Defer:
    moment_balance: int
    explainable: tuple[int, ...]  # every balance Moment could show without a payment unknown here

    @property
    def reason(self) -> str:
        expected = ", ".join(str(value) for value in self.explainable)
        return (
            f"Moment shows {self.moment_balance}, expected one of {expected} (what was pushed, less payments "
            "reconciled since): a payment may not have reached the ledger yet"
        )


PushDecision = Push | AlreadyEqual | Defer


def plan_push(snapshot: PushSnapshot, moment_balance: int | None) -> PushDecision:
    if moment_balance is None:
        # Moment tracks no balance on the object yet: there is no payment to erase.
        return Push(snapshot.balance)
    if moment_balance == snapshot.balance:
        return AlreadyEqual()
    # Never pushed (adopted, or linked by the re-drive): Moment's balance is where we start from.
    pushed = moment_balance if snapshot.pushed_balance is None else snapshot.pushed_balance
    explainable = {pushed - lowered for lowered in subset_sums(snapshot.payments)}
    if snapshot.intent is not None:
        after_intent = snapshot.payments[snapshot.intent_payments :]
        explainable |= {snapshot.intent - lowered for lowered in subset_sums(after_intent)}
    if moment_balance not in explainable:
        return Defer(moment_balance, tuple(sorted(explainable, reverse=True)[:MAX_SHOWN]))
    return Push(snapshot.balance)


MAX_SHOWN = 6
# Past this many payments since a push (a long Moment outage), only contiguous runs are considered:
# the sums of every subset would be too many to enumerate, and a push that rare is deferred for an
# operator rather than guessed.
MAX_PAYMENTS_FOR_SUBSETS = 16


def subset_sums(amounts: tuple[int, ...]) -> set[int]:
    """Every sum of a subset of `amounts` (0 for the empty one)."""
    if len(amounts) > MAX_PAYMENTS_FOR_SUBSETS:
        return {
            sum(amounts[start:end])
            for start in range(len(amounts) + 1)
            for end in range(start, len(amounts) + 1)
        }
    sums = {0}
    for amount in amounts:
        sums |= {total + amount for total in sums}
    return sums
