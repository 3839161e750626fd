"""The push decision (pure): which Moment balances are explained, exactly, fast, and never by guessing."""

from __future__ import annotations

import itertools
import random
import time

import pytest

from moment_sync.push_plan import (
    MAX_OPEN_INTENTS,
    AlreadyEqual,
    Defer,
    Intent,
    Push,
    PushSnapshot,
    is_subset_sum,
    plan_push,
)


def every_subset_sum(amounts: list[int]) -> set[int]:
    return {
        sum(chosen) for size in range(len(amounts) + 1) for chosen in itertools.combinations(amounts, size)
    }


@pytest.mark.parametrize("seed", range(20))
def test_the_subset_sum_decision_is_exact(seed: int) -> None:
    # GIVEN up to 12 payments drawn from a small set of round amounts, so that sums collide
    rng = random.Random(seed)
    amounts = [rng.choice([100, 200, 250, 500, 1000, 2000, 3]) for _ in range(rng.randint(0, 12))]
    # THEN for every target in range (and just outside it) the answer is brute force's
    sums = every_subset_sum(amounts)
    for target in range(-1, sum(amounts) + 2):
        assert is_subset_sum(target, amounts) == (target in sums), (target, amounts)


def test_a_merged_sum_counts_as_one_payment() -> None:
    # payments past the head's list are merged: they are lowered all together or not at all
    assert is_subset_sum(400, [100, 200], merged=500) is False
    assert is_subset_sum(400, [100, 200, 100, 100, 100]) is True
    assert is_subset_sum(800, [100, 200], merged=500) is True
    assert is_subset_sum(500, [100, 200], merged=500) is True


def test_any_subset_past_16_payments_is_explained_not_only_contiguous_runs() -> None:
    # GIVEN 40 payments since the last push, and Moment lowered by every other one (not a run)
    payments = tuple(range(1010, 1410, 10))
    lowered = sum(payments[::2])
    snapshot = PushSnapshot(balance=100, version=41, pushed_balance=100_000, payments=payments)
    # THEN Moment's balance is explained (the earlier rule, contiguous runs past 16, deferred it)
    assert plan_push(snapshot, 100_000 - lowered) == Push(100)
    assert isinstance(plan_push(snapshot, 100_000 - lowered - 1), Defer)


# (amounts: "cents" from R1 to R5,000 in any cent, "rands" in whole rands, "large" up to R999,999.99;
#  how much Moment lowered the balance last pushed; explained?)
DECISIONS_FOR_10000 = {
    "moment keeps balances": ("cents", lambda p, total: 0, True),
    "moment lowers every payment": ("cents", lambda p, total: total, True),
    "a run of 500 overwritten": ("cents", lambda p, total: total - sum(p[2000:2500]), True),
    "two overwritten": ("cents", lambda p, total: total - p[17] - p[9000], True),
    "twenty overwritten, whole rands": ("rands", lambda p, total: total - sum(p[::500]), True),
    "one cent unexplained": ("cents", lambda p, total: total + 1, False),
    "one cent unexplained, whole rands": ("rands", lambda p, total: total - p[3] - 1, False),
    # past MAX_SUBSET_SUM_WORK: 10,000 distinct large amounts, three of them not lowered: the
    # complement (~R1.5m in cents) is not searched; the push is deferred (documented bound), not guessed
    "three overwritten, large amounts": ("large", lambda p, total: total - p[17] - p[5000] - p[9000], False),
}


@pytest.mark.parametrize("case", DECISIONS_FOR_10000)
def test_the_decision_for_10000_payments_takes_under_a_second(case: str) -> None:
    # GIVEN 10,000 payments since the last push
    unit, lowered_by, explained = DECISIONS_FOR_10000[case]
    rng = random.Random(case)
    if unit == "cents":
        payments = tuple(rng.randint(100, 500_000) for _ in range(10_000))
    elif unit == "large":
        payments = tuple(rng.randint(10**6, 99_999_999) for _ in range(10_000))
    else:
        payments = tuple(100 * rng.randint(1, 5_000) for _ in range(10_000))
    pushed = 10**13
    snapshot = PushSnapshot(balance=5, version=10_001, pushed_balance=pushed, payments=payments)
    # WHEN Moment shows the balance last pushed, lowered by some amount
    started = time.perf_counter()
    decision = plan_push(snapshot, pushed - lowered_by(payments, sum(payments)))
    elapsed = time.perf_counter() - started
    # THEN it is decided in under a second, and explained exactly when it is expected to be
    assert elapsed < 1.0, elapsed
    assert isinstance(decision, Push) == explained


def test_every_open_intent_explains_moments_balance() -> None:
    # GIVEN a push of 1200 that reached Moment with its answer lost, then a push of 1230 that did not
    snapshot = PushSnapshot(
        balance=1230,
        version=3,
        pushed_balance=1000,
        intents=(Intent(1200, payments_read=0), Intent(1230, payments_read=0)),
    )
    # THEN Moment showing 1200 (the older intent) is explained: the newest is not the only candidate
    assert plan_push(snapshot, 1200) == Push(1230)
    assert plan_push(snapshot, 1230) == AlreadyEqual()
    assert isinstance(plan_push(snapshot, 1190), Defer)


def test_an_intent_is_explained_only_by_the_payments_reconciled_after_it_read() -> None:
    # GIVEN a payment of 50 reconciled before the intent's read, and one of 70 after it
    snapshot = PushSnapshot(
        balance=880, version=5, pushed_balance=1000, payments=(50, 70), intents=(Intent(950, 1),)
    )
    assert plan_push(snapshot, 950 - 70) == AlreadyEqual()  # equal to the ledger
    snapshot = PushSnapshot(
        balance=881, version=5, pushed_balance=1000, payments=(50, 70), intents=(Intent(950, 1),)
    )
    assert plan_push(snapshot, 880) == Push(881)
    # 950 - 50 is not explained by the intent (50 was already in what it pushed) nor by P
    assert isinstance(plan_push(snapshot, 900 - 70 - 3), Defer)


def test_a_create_whose_answer_was_lost_is_explained_by_its_intent() -> None:
    # GIVEN nothing booked yet, but a create sent with 2000 whose answer was lost
    snapshot = PushSnapshot(balance=2100, version=2, pushed_balance=None, intents=(Intent(2000, 0),))
    # THEN Moment's 2000 is explained, and a Moment balance lowered by an unseen payment is not
    assert plan_push(snapshot, 2000) == Push(2100)
    assert isinstance(plan_push(snapshot, 1500), Defer)


def test_past_the_open_intents_cap_nothing_more_is_sent() -> None:
    intents = tuple(Intent(1000 + number, 0) for number in range(MAX_OPEN_INTENTS))
    snapshot = PushSnapshot(balance=2000, version=9, pushed_balance=1000, intents=intents)
    decision = plan_push(snapshot, 1000)
    assert isinstance(decision, Defer) and decision.too_many_intents
    assert "open" in decision.reason
    # the way out: Moment showing the ledger's balance is booked, which clears them all
    assert plan_push(snapshot, 2000) == AlreadyEqual()


def test_creates_count_once_toward_the_open_intents_cap() -> None:
    # GIVEN MAX_OPEN_INTENTS creates left open (Moment keeps one object per reference: one made it)
    creates = tuple(Intent(1000 + number, 0, create=True) for number in range(MAX_OPEN_INTENTS))
    snapshot = PushSnapshot(balance=1005, version=6, pushed_balance=None, intents=creates)
    # THEN Moment's balance one of them explains is pushed over, not deferred at the cap
    assert plan_push(snapshot, 1000) == Push(1005)
    # AND PATCHes still count one by one: with the creates as one, MAX_OPEN_INTENTS - 1 more fill it
    patches = tuple(Intent(1005, 0) for _ in range(MAX_OPEN_INTENTS - 1))
    full = PushSnapshot(balance=1006, version=7, pushed_balance=None, intents=creates + patches)
    decision = plan_push(full, 1005)
    assert isinstance(decision, Defer) and decision.too_many_intents


def test_the_remaining_window_an_unseen_payment_that_equals_a_difference_of_explanations() -> None:
    """The documented window (docs/pusher.md): with P = 5000 and an open intent of 5100 (sent, answer
    lost, it reached Moment), an unseen payment of exactly 100 brings Moment to 5000, which P explains.
    The push overwrites it on Moment; nothing is lost in the ledger, and once its webhook is reconciled
    Moment's balance (5150) is P' - 0 and the next push restores it."""
    snapshot = PushSnapshot(balance=5150, version=3, pushed_balance=5000, intents=(Intent(5100, 0),))
    assert plan_push(snapshot, 5000) == Push(5150)  # the coincidence: overwritten for one cycle
    assert isinstance(plan_push(snapshot, 5000 - 1), Defer)  # any other unseen amount is caught
    after_webhook = PushSnapshot(balance=5050, version=5, pushed_balance=5150, payments=(100,))
    assert plan_push(after_webhook, 5150) == Push(5050)
