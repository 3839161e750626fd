"""Whether a balance may be pushed to Moment now, and what to remember afterwards. Pure.

Moment has no conditional PATCH, and its documentation does not say whether it lowers a balance
itself when it applies a payment. So before a push the pusher reads Moment's balance M and, with P
the balance it last pushed and R the payments reconciled since then, pushes only when M is one of
the two values it can explain:

- M = P: Moment does not lower balances itself (or no payment came);
- M = P - R: Moment lowered the balance by exactly the payments the ledger has already seen;
- M = I or M = I - (R - R_I), where I is a push that was sent but never booked (the run stopped
  between the PATCH and its bookkeeping) and R_I the R that push had read.
And when M already equals the ledger's balance there is nothing to push, only bookkeeping to do.

Any other M means Moment applied a payment whose webhook the ledger has not reconciled yet: pushing
now would erase it, so the push is deferred until the webhook arrives.

A payment Moment applies between the read and the PATCH can still be overwritten; the bookkeeping
after the PATCH (P := what Moment returned, R := R - the R this push used) makes the next push, once
the webhook is reconciled, restore it. That window, one push cycle long, is the whole exposure.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PushSnapshot:
    """What the pusher read from the ledger's head."""

    balance: int
    version: int
    pushed_balance: int | None  # P; None before the first push
    payments_since_push: int  # R
    intent: int | None = None  # I: a balance sent to Moment whose push was never booked
    intent_payments: int = 0  # R_I: the R that push had read


@dataclass(frozen=True, slots=True)
class Push:
    balance: int


@dataclass(frozen=True, slots=True)
class AlreadyEqual:
    """Moment already shows the ledger's balance: only the bookkeeping is due."""


@dataclass(frozen=True, slots=True)
class Defer:
    moment_balance: int
    explainable: tuple[int, ...]  # (P, P - R[, I, I - (R - R_I)])

    @property
    def reason(self) -> str:
        expected = " or ".join(str(value) for value in dict.fromkeys(self.explainable))
        return (
            f"Moment shows {self.moment_balance}, expected {expected} (what was pushed, less the payments "
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
    explainable: tuple[int, ...] = (pushed, pushed - snapshot.payments_since_push)
    if snapshot.intent is not None:
        since_intent = snapshot.payments_since_push - snapshot.intent_payments
        explainable += (snapshot.intent, snapshot.intent - since_intent)
    if moment_balance not in explainable:
        return Defer(moment_balance, explainable)
    return Push(snapshot.balance)
