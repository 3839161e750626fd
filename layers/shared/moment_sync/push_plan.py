"""Whether a balance may be pushed to Moment now, and what to remember afterwards. Pure.

Moment has no conditional PATCH, and its documentation does not say whether it lowers a balance
itself when it applies a payment. So before a push the pusher reads Moment's balance M and pushes
only when M is explained by what the ledger already knows. With P the balance last booked as pushed
and p1..pn the payments reconciled since (each amount on its own):

- M = P - (the sum of any subset of p1..pn): Moment lowered the balance by some of the payments the
  ledger has seen, and not by the others: those it did not lower itself, or whose lowering a push
  overwrote (a payment landing between a push's read and its PATCH);
- M = I - (the sum of any subset of the payments reconciled after I was read), for every open intent
  I: a PATCH (or a create) sent since the last booked push that may have reached Moment (its answer
  was lost, it timed out, Moment answered 5xx, or the run stopped before booking it). Any of them may
  be the one Moment applied last, so each stays open until a push is booked;
- M equal to the ledger's balance: nothing to push, only bookkeeping.

Any other M means Moment applied a payment whose webhook the ledger has not reconciled yet: pushing
now would erase it, so the push is deferred until the webhook arrives. Every rule above only ever
*narrows* what counts as explained when it gives up (too many open intents, a subset-sum too large
to decide, payments merged past the head's list): giving up defers, it never erases.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from math import gcd

# More open intents than this and the pusher stops sending: each one widens what counts as explained
# (a round charge and a round payment of one amount can make an unseen payment look explained), so
# their number is bounded and a balance past it is deferred for an operator.
MAX_OPEN_INTENTS = 5

# The subset-sum decision is a bitset over 0..target (Python ints), one shift per distinct amount and
# power of two of its multiplicity. Past this much work (bits x shifts; ~3 Gbit/s here, so ~0.13 s, and
# at most 1 + MAX_OPEN_INTENTS such checks per decision) it gives up and the push is deferred: never
# guessed.
MAX_SUBSET_SUM_WORK = 400_000_000


@dataclass(frozen=True, slots=True)
class Intent:
    """A push sent to Moment (or a create) that is not booked yet, and what it had read."""

    balance: int
    payments_read: int  # how many of the listed payments it had read
    merged_read: int = 0  # the sum of the merged (unlisted) payments it had read
    create: bool = False  # a create (POST), not a PATCH


@dataclass(frozen=True, slots=True)
class PushSnapshot:
    """What the pusher read from the ledger's head."""

    balance: int
    version: int
    pushed_balance: int | None  # P; None before the first booked push
    payments: tuple[int, ...] = ()  # p1..pn: each payment reconciled since P was booked, in order
    # Payments reconciled past the head's list cap, kept only as their sum: they count as one payment
    # (any subset of merged payments is still a subset of the real ones, so this only narrows).
    merged: int = 0
    intents: tuple[Intent, ...] = ()


@dataclass(frozen=True, slots=True)
class Push:
    balance: int


@dataclass(frozen=True, slots=True)
class AlreadyEqual:
    """Moment already shows the ledger's balance: only the bookkeeping is due."""


@dataclass(frozen=True, slots=True)
class Defer:
    moment_balance: int
    pushed_balance: int | None
    intents: tuple[int, ...]  # the open intents' balances
    payments: int  # how many payments were reconciled since the last booked push
    too_many_intents: bool = False

    @property
    def reason(self) -> str:
        if self.too_many_intents:
            return (
                f"{len(self.intents)} pushes to Moment are open (sent, answer lost, not booked): no "
                f"more are sent until Moment shows the ledger's balance; Moment shows {self.moment_balance}"
            )
        bases = [f"last pushed {self.pushed_balance}"] if self.pushed_balance is not None else []
        bases += [f"open push {intent}" for intent in self.intents]
        return (
            f"Moment shows {self.moment_balance}, not one of ({', '.join(bases) or 'nothing'}) less any "
            f"of the {self.payments} payments reconciled since: a payment may not have reached the ledger yet"
        )


PushDecision = Push | AlreadyEqual | Defer


def plan_push(snapshot: PushSnapshot, moment_balance: int | None) -> PushDecision:
    if moment_balance is None:
        # Moment tracks no balance on the object yet: there is no payment to erase.
        return may_send(snapshot, moment_balance, Push(snapshot.balance))
    if moment_balance == snapshot.balance:
        return AlreadyEqual()
    if explained(snapshot, moment_balance):
        return may_send(snapshot, moment_balance, Push(snapshot.balance))
    return _defer(snapshot, moment_balance)


def may_send(snapshot: PushSnapshot, moment_balance: int | None, decision: Push) -> PushDecision:
    """A push adds an open intent: refused once MAX_OPEN_INTENTS are open (see open_intents)."""
    if open_intents(snapshot) >= MAX_OPEN_INTENTS:
        return _defer(snapshot, moment_balance, too_many_intents=True)
    return decision


def open_intents(snapshot: PushSnapshot) -> int:
    """How many open intents count toward the cap: every PATCH, and the creates together as one. Moment
    keeps one object per reference, so at most one create made it, and creates are bounded on their own
    (one at the cap is sent without an intent). Counted one by one, creates left open by lost answers
    could fill the cap before the first PATCH, and the balance stayed deferred for good."""
    creates = sum(1 for intent in snapshot.intents if intent.create)
    return len(snapshot.intents) - creates + min(creates, 1)


def explained(snapshot: PushSnapshot, moment_balance: int) -> bool:
    """M is one of the balances Moment could show without a payment the ledger has not seen."""
    if snapshot.pushed_balance is None and not snapshot.intents:
        # Never pushed and never sent (adopted, or linked by the re-drive): Moment's balance is where
        # we start from.
        return True
    if snapshot.pushed_balance is not None and is_subset_sum(
        snapshot.pushed_balance - moment_balance, snapshot.payments, snapshot.merged
    ):
        return True
    return any(
        is_subset_sum(
            intent.balance - moment_balance,
            snapshot.payments[intent.payments_read :],
            snapshot.merged - intent.merged_read,
        )
        for intent in snapshot.intents
    )


def _defer(snapshot: PushSnapshot, moment_balance: int | None, *, too_many_intents: bool = False) -> Defer:
    return Defer(
        moment_balance=moment_balance if moment_balance is not None else snapshot.balance,
        pushed_balance=snapshot.pushed_balance,
        intents=tuple(intent.balance for intent in snapshot.intents),
        payments=len(snapshot.payments) + (1 if snapshot.merged else 0),
        too_many_intents=too_many_intents,
    )


def is_subset_sum(target: int, amounts: Sequence[int], merged: int = 0) -> bool:
    """Whether `target` is the sum of some of `amounts` (each > 0; `merged`, when > 0, is one more).

    Exact, by a bitset over 0..target: bit s of `reachable` says some subset sums to s. Amounts are
    grouped by value and each group's multiplicity split in powers of two, so 10,000 payments of a few
    hundred distinct amounts are a few thousand shifts. The complement (total - target) is decided
    instead when it is smaller, and a common divisor of the amounts shrinks the bitset. False past
    MAX_SUBSET_SUM_WORK (the caller defers: never erases)."""
    values = [amount for amount in amounts if amount > 0]
    if merged > 0:
        values.append(merged)
    total = sum(values)
    if target < 0 or target > total:
        return False
    if target in (0, total):
        return True
    if _is_run_sum(target, values) or _is_run_sum(total - target, values):
        return True  # one run of consecutive payments (a push's read→PATCH window): O(n), any size
    if _is_pair_sum(total - target, values):
        return True  # all but two (two payments overwritten): O(n), any size
    return _reaches(min(target, total - target), values)


def _reaches(target: int, values: Sequence[int]) -> bool:
    counts = Counter(value for value in values if value <= target)
    divisor = 0
    for value in counts:
        divisor = gcd(divisor, value)
    if divisor == 0 or target % divisor:
        return False
    target //= divisor
    shifts = sum(count.bit_length() for count in counts.values())
    if shifts * (target + 1) > MAX_SUBSET_SUM_WORK:
        return False
    window = (1 << (target + 1)) - 1
    reachable = 1
    for value, count in sorted(counts.items(), reverse=True):
        step, left = 1, count
        while left:
            take = min(step, left)
            reachable |= (reachable << (value // divisor * take)) & window
            left -= take
            step <<= 1
        if reachable >> target & 1:
            return True
    return False


def _is_run_sum(target: int, values: Sequence[int]) -> bool:
    """Whether some run of consecutive values sums to `target` (all values > 0: a sliding window)."""
    start, running = 0, 0
    for value in values:
        running += value
        while running > target:
            running -= values[start]
            start += 1
        if running == target:
            return True
    return False


def _is_pair_sum(target: int, values: Sequence[int]) -> bool:
    """Whether two of the values sum to `target`."""
    seen: set[int] = set()
    for value in values:
        if target - value in seen:
            return True
        seen.add(value)
    return False
