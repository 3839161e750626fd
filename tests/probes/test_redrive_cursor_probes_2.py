"""Second hostile pass over the re-drive's cursor (docs/ledger.md#the-cursor-and-the-retry-list), from
outside: the real re-drive, lease and adapters over moto; faults at botocore's hooks (BatchGetItem keys
left unprocessed, an index that shows an item late), runs cut short, killed and run with a skewed
clock, a Moment that answers slowly, and generated sequences of all of it (hypothesis).

The promise under attack: every event ends final or is found by the re-drive, or at least counted by
a metric that has an alarm; nothing is applied twice; a run's reads stay bounded (counted in requests
and items at botocore's hooks, never timed). A probe that found a defect stays as a strict xfail that
names it; the others stay as regression tests."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from moment_sync import redrive as redrive_module
from moment_sync.adapters.webhook_events_table import UNFINISHED_INDEX, UNFINISHED_SHARDS, unfinished_shard
from moment_sync.leases import HeldLease
from moment_sync.ledger.model import BalanceKind
from moment_sync.reconciler import reconcile_event
from moment_sync.redrive import (
    LATE_HORIZON_SECONDS,
    LOOKUPS_PER_EVENT,
    REDRIVE_LEASE,
    RedriveReport,
    found_by_redrive,
    redrive_stuck,
)
from moment_sync.runtime import moment_worst_call_seconds
from support.ledger import LedgerHarness, payment
from support.webhooks import NOW

GRACE = 600
PERIOD = 300  # the schedule's rate
TIMEOUT = 300.0  # RedriveFunction's Timeout
FINAL = {"applied", "duplicate", "ignored", "parked"}
DAY = 24 * 3600


# --- the harness -------------------------------------------------------------------------------


@pytest.fixture
def clock() -> list[float]:
    return [float(NOW)]


@pytest.fixture
def harness(dynamodb: Any, clock: list[float]) -> LedgerHarness:
    return fresh_harness(dynamodb, clock)


def fresh_harness(dynamodb: Any, clock: list[float]) -> LedgerHarness:
    harness = LedgerHarness(dynamodb, clock=lambda: clock[0])
    harness.open_customer("UCR1", moment_id="bcus_1")
    return harness


class Reads:
    """Requests and items DynamoDB answered, by operation (botocore's after-call hook)."""

    def __init__(self, client: Any) -> None:
        self.items: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        client.meta.events.register("after-call.dynamodb.*", self._count)

    def _count(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        self.requests[model.name] += 1
        if model.name == "Query":
            self.items["Query"] += len(parsed.get("Items", []))
        elif model.name == "BatchGetItem":
            self.items["BatchGetItem"] += sum(len(found) for found in parsed.get("Responses", {}).values())
        elif model.name == "GetItem":
            self.items["GetItem"] += 1 if parsed.get("Item") else 0

    def reset(self) -> None:
        self.items.clear()
        self.requests.clear()


class LaggingIndex:
    """The `Unfinished` index showing some items late: a Query of it leaves them out until the clock
    reaches the time each one appears (a global index follows its table asynchronously)."""

    def __init__(self, client: Any, clock: list[float]) -> None:
        self.appears_at: dict[str, float] = {}
        self.clock = clock
        client.meta.events.register("after-call.dynamodb.Query", self._hide)

    def _hide(self, parsed: dict[str, Any], context: Any = None, **kwargs: Any) -> None:
        params = kwargs.get("params") or {}
        if isinstance(params, dict) and params.get("IndexName") not in (None, UNFINISHED_INDEX):
            return
        parsed["Items"] = [
            item
            for item in parsed.get("Items", [])
            if self.appears_at.get(item["webhook_id"]["S"], 0.0) <= self.clock[0]
        ]
        parsed["Count"] = len(parsed["Items"])


def ids_in_shard(shard: int, count: int, prefix: str) -> list[str]:
    found: list[str] = []
    number = 0
    while len(found) < count:
        webhook_id = f"{prefix}_{number}"
        if unfinished_shard(webhook_id) == f"u#{shard}":
            found.append(webhook_id)
        number += 1
    return found


def scheduled(
    harness: LedgerHarness,
    clock: list[float],
    *,
    lease: HeldLease | None = None,
    now: Callable[[], float] | None = None,
    **options: Any,
) -> RedriveReport:
    """One scheduled run as the function makes it: the `redrive` lease held for the run, then released."""
    at = now() if now is not None else clock[0]
    held = lease or harness.ledger.leases().acquire(
        REDRIVE_LEASE, f"run@{at}", now=at, expires_at=at + TIMEOUT + 30
    )
    assert held is not None, "the lease is free between runs"
    options.setdefault("grace_seconds", GRACE)
    try:
        return redrive_stuck(
            events=harness.events,
            ledger=harness.ledger,
            directory=options.pop("directory", None),
            now=now or harness.clock,
            lease=held,
            **options,
        )
    finally:
        held.release()


def saved_state(harness: LedgerHarness) -> dict[str, Any]:
    return dict((harness.ledger.leases().current(REDRIVE_LEASE) or {}).get("state") or {})


def lost(harness: LedgerHarness, webhook_ids: list[str], at: float, amount: int = 100) -> None:
    """Payments to UCR1 the receiver stored, whose stream records were lost."""
    for webhook_id in webhook_ids:
        harness.receive(webhook_id, payment(f"ob_{webhook_id}", amount, customer_id="bcus_1"), at=at)


def strangers(harness: LedgerHarness, webhook_ids: list[str], at: float) -> None:
    """Payments naming Moment customers the ledger does not have: the stream parks them unmatched."""
    for webhook_id in webhook_ids:
        harness.receive(webhook_id, payment(f"ob_{webhook_id}", 100, customer_id=f"bcus_{webhook_id}"), at=at)
        delivered(harness, webhook_id)


def delivered(harness: LedgerHarness, webhook_id: str) -> None:
    """The stream's record of an event reaching the reconciler (its own function, as the handler calls it)."""
    reconcile_event(
        harness.event(webhook_id), ledger=harness.ledger, events=harness.events, now=harness.clock
    )


def assert_money_once(harness: LedgerHarness) -> None:
    """One entry per application id, each balance the sum of its entries, every applied event's entry."""
    entries: Counter[str] = Counter()
    sums: Counter[str] = Counter()
    heads: dict[str, int] = {}
    for item in harness.ledger.scan_all():
        if item["sk"] == "HEAD" and "balance" in item:
            heads[item["pk"]] = item["balance"]
        elif item["sk"].startswith("ENTRY#"):
            entries[item["entry_id"]] += 1
            sums[item["pk"]] += item["amount"]
    assert all(count == 1 for count in entries.values()), f"an application changed balances twice: {entries}"
    assert all(balance == sums[pk] for pk, balance in heads.items()), (heads, sums)
    for event in harness.all_events():
        if event["status"] == "applied":
            assert entries[event["entry_id"]] == 1, f"{event['webhook_id']} applied without its entry"


def assert_found(harness: LedgerHarness, state: dict[str, Any] | None = None) -> None:
    """The code's own account of the invariant (found_by_redrive) over every stored event."""
    state = saved_state(harness) if state is None else state
    for event in harness.all_events():
        assert event["status"] in FINAL or found_by_redrive(event, state), (
            f"{event['webhook_id']} is {event['status']} and no run will find it: {state}"
        )


class SlowMoment:
    """Moment's directory answering every question slowly (each call takes `call_seconds` of the run's
    time: a Moment rate-limiting with Retry-After, or timing out on all but the last attempt), and
    knowing none of the ids asked about."""

    def __init__(self, elapsed: list[float], call_seconds: float) -> None:
        self.elapsed = elapsed
        self.call_seconds = call_seconds
        self.calls = 0

    def external_reference(self, kind: BalanceKind, moment_id: str) -> str | None:
        self.calls += 1
        self.elapsed[0] += self.call_seconds
        return None

    def account_owner(self, account_id: str) -> tuple[str, str | None]:
        self.calls += 1
        self.elapsed[0] += self.call_seconds
        return ("bcus_unknown", None)


# --- the late sweep behind the unmatched step ----------------------------------------------------


def _late_event_under_slow_moment(
    harness: LedgerHarness, clock: list[float], call_seconds: float, runs: int
) -> tuple[str, list[RedriveReport]]:
    """Runs in step; then a payment stored by a receiver whose clock was 15 minutes behind, its stream
    record lost (it lies behind the cursor); a day later the scheduled runs go on (`runs` of them) while
    Moment answers each question in `call_seconds`, and two payments for customers the merchant never
    opened arrive every five minutes, as they did before (parked unmatched by the stream)."""
    for _ in range(2):
        scheduled(harness, clock)
        clock[0] += PERIOD
    [late] = ids_in_shard(3, 1, "late")
    lost(harness, [late], at=clock[0] - 900)
    assert harness.event(late)["received_at"] <= saved_state(harness)["cursors"]["3"]
    strangers(harness, ["s_a", "s_b", "s_c", "s_d"], at=clock[0])
    clock[0] += DAY + PERIOD
    lookup = LOOKUPS_PER_EVENT * moment_worst_call_seconds()
    reports = []
    for run in range(runs):
        strangers(harness, [f"s_{run}_a", f"s_{run}_b"], at=clock[0])
        elapsed = [0.0]
        reports.append(
            scheduled(
                harness,
                clock,
                directory=SlowMoment(elapsed, call_seconds),
                lookup_seconds=lookup,
                time_left=lambda elapsed=elapsed: TIMEOUT - elapsed[0],
            )
        )
        clock[0] += PERIOD
    return late, reports


def test_with_moment_answering_fast_the_late_sweep_finds_an_event_behind_the_cursor(
    harness: LedgerHarness, clock: list[float]
) -> None:
    """The control of the probe below: the same day with Moment answering in 50 ms."""
    late, reports = _late_event_under_slow_moment(harness, clock, call_seconds=0.05, runs=2)
    assert harness.event(late)["status"] == "applied"
    assert sum(report.found_behind_cursor for report in reports) == 1
    assert_money_once(harness)


def test_with_moment_slow_the_late_sweep_still_runs_or_an_alarmed_metric_says_it_did_not(
    harness: LedgerHarness, clock: list[float]
) -> None:
    # GIVEN an event behind the cursor, and 40 minutes of runs a day later with Moment answering each
    # question in 70 s (inside its worst case of 76 s) and strangers arriving
    late, reports = _late_event_under_slow_moment(harness, clock, call_seconds=70.0, runs=8)
    # THEN the runs were healthy by every alarm the re-drive has: cursors in step, no retry list, no
    # error, nothing found still received
    last = reports[-1]
    assert last.cursor_lag_seconds is not None and last.cursor_lag_seconds <= GRACE + PERIOD
    assert all(report.retry_list == 0 and not report.errors for report in reports)
    # AND the late event was found (or at least counted where an alarm looks)
    counted = sum(report.found_behind_cursor + report.found_received for report in reports)
    assert harness.event(late)["status"] == "applied" or counted > 0, (
        f"still {harness.event(late)['status']}, counted nowhere; every run stopped early: "
        f"{[report.stopped_early for report in reports]}"
    )


# --- reads per run ---------------------------------------------------------------------------------


def _reads_of_a_quiet_run(
    harness: LedgerHarness, clock: list[float], reads: Reads, parked: int
) -> Counter[str]:
    """Items read by a scheduled run with nothing new, after `parked` strangers were parked unmatched
    and tried once by the re-drive (none of them due again for twice the grace)."""
    strangers(harness, [f"q_{len(harness.all_events())}_{number}" for number in range(parked)], at=clock[0])
    clock[0] += GRACE + PERIOD
    scheduled(harness, clock)
    clock[0] += PERIOD
    waiting = len(harness.all_events())
    reads.reset()
    report = scheduled(harness, clock)
    found = reads.items + Counter({f"{name} requests": count for name, count in reads.requests.items()})
    # None of them was read to learn it is not due: `UnmatchedDue` left them out by its key.
    assert waiting and report.not_due == 0 and report.examined == 0
    return found


def test_a_run_with_nothing_due_reads_a_bounded_number_of_items_however_many_payments_wait_unmatched(
    harness: LedgerHarness, clock: list[float]
) -> None:
    reads = Reads(harness.dynamodb)
    few = _reads_of_a_quiet_run(harness, clock, reads, parked=3)
    many = _reads_of_a_quiet_run(harness, clock, reads, parked=30)  # 33 parked in all
    assert many["GetItem"] <= few["GetItem"] + 5 and many["Query"] <= few["Query"] + 5, (few, many)


# --- an index showing items late, a re-drive clock ahead, the operator's full pass -------------------


def test_an_event_the_index_shows_twenty_minutes_late_is_applied_by_the_late_sweep_and_counted(
    harness: LedgerHarness, clock: list[float]
) -> None:
    index = LaggingIndex(harness.dynamodb, clock)
    scheduled(harness, clock)
    clock[0] += PERIOD
    # GIVEN a payment whose stream record is lost and that the index shows only 20 minutes later
    # (past the grace: the cursor has passed its received_at by then)
    [webhook_id] = ids_in_shard(5, 1, "gsi")
    lost(harness, [webhook_id], at=clock[0])
    index.appears_at[webhook_id] = clock[0] + 1200
    found = 0
    for _ in range(8):
        clock[0] += PERIOD
        found += scheduled(harness, clock).found_behind_cursor
        assert_found(harness)
    assert harness.event(webhook_id)["received_at"] <= saved_state(harness)["cursors"]["5"]
    assert harness.event(webhook_id)["status"] == "received" and found == 0
    # WHEN the runs go on for a day
    clock[0] += LATE_HORIZON_SECONDS
    for _ in range(2):
        found += scheduled(harness, clock).found_behind_cursor
        clock[0] += PERIOD
    # THEN the late sweep applied it once and counted it where its alarm looks
    assert harness.event(webhook_id)["status"] == "applied"
    assert found == 1
    assert_money_once(harness)


def test_events_received_while_a_runs_clock_was_twenty_minutes_ahead_are_applied_within_a_day_and_counted(
    harness: LedgerHarness, clock: list[float]
) -> None:
    scheduled(harness, clock)
    clock[0] += PERIOD
    # GIVEN one run whose Lambda clock is 20 minutes ahead (its cursors land 10 minutes in the future)
    scheduled(harness, clock, now=lambda: clock[0] + 1200)
    # AND payments received by receivers with true clocks over the next 10 minutes, stream records lost
    ids = [ids_in_shard(shard, 1, "ahead")[0] for shard in range(UNFINISHED_SHARDS)]
    for number, webhook_id in enumerate(ids):
        lost(harness, [webhook_id], at=clock[0] + 60 * number)
    found = 0
    for _ in range(4):
        clock[0] += PERIOD
        found += scheduled(harness, clock).found_behind_cursor
        assert_found(harness)
    # WHEN a day passes with runs in step
    clock[0] += LATE_HORIZON_SECONDS
    for _ in range(2):
        found += scheduled(harness, clock).found_behind_cursor
        clock[0] += PERIOD
    # THEN every one of them was applied once; those the skewed cursor had passed were counted
    assert set(statuses(harness, ids)) == {"applied"}
    assert found >= 1
    assert_money_once(harness)


def test_an_event_the_index_shows_three_days_late_is_found_by_the_operators_full_pass_over_short_runs(
    harness: LedgerHarness, clock: list[float]
) -> None:
    index = LaggingIndex(harness.dynamodb, clock)
    applied_ids = [f"old_{number}" for number in range(30)]
    for webhook_id in applied_ids:
        harness.receive(webhook_id, payment(f"ob_{webhook_id}", 100, customer_id="bcus_1"), at=clock[0])
        delivered(harness, webhook_id)
    [webhook_id] = ids_in_shard(2, 1, "days")
    lost(harness, [webhook_id], at=clock[0] + 1)
    index.appears_at[webhook_id] = clock[0] + 3 * DAY
    for _ in range(3):  # the runs of three days, in three steps
        clock[0] += DAY
        scheduled(harness, clock)
    clock[0] += PERIOD
    # WHEN the operator invokes the function with {"ignore_backoff": true}, and it and the scheduled
    # runs after it each have time for a page or two only
    reports = [scheduled(harness, clock, back_off=False, full_pass=True, time_left=short_budget(6))]
    for _ in range(12):
        clock[0] += PERIOD
        reports.append(scheduled(harness, clock, time_left=short_budget(6)))
        if reports[-1].full_pass_done:
            break
    # THEN the full pass got through, applied it once and counted it
    assert any(report.full_pass_done for report in reports)
    assert harness.event(webhook_id)["status"] == "applied"
    assert sum(report.found_behind_cursor for report in reports) == 1
    assert "full" not in saved_state(harness)
    assert_money_once(harness)


# --- throttles that last, TTL, what a quiet run writes ---------------------------------------------


def test_a_shard_whose_statuses_stay_unread_for_an_hour_holds_back_only_itself_and_its_alarms_fire(
    harness: LedgerHarness, clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("moment_sync.adapters.webhook_events_table.time.sleep", lambda _: None)
    # GIVEN payments missed by the stream in every shard
    ids = [ids_in_shard(shard, 2, "thr")[number] for shard in range(UNFINISHED_SHARDS) for number in range(2)]
    lost(harness, ids, at=clock[0])
    clock[0] += GRACE + 10
    # WHEN every BatchGetItem naming shard 6's events leaves all its keys unprocessed, for an hour
    blocked = {webhook_id for webhook_id in ids if unfinished_shard(webhook_id) == "u#6"}
    client = harness.events._client
    real = client.batch_get_item
    on = [True]

    def refuse(RequestItems: dict[str, Any]) -> dict[str, Any]:
        [(table, request)] = RequestItems.items()
        if on[0] and any(key["webhook_id"]["S"] in blocked for key in request["Keys"]):
            return {"Responses": {table: []}, "UnprocessedKeys": RequestItems}
        return dict(real(RequestItems=RequestItems))

    monkeypatch.setattr(client, "batch_get_item", refuse)
    reports = []
    for _ in range(14):
        reports.append(scheduled(harness, clock))
        clock[0] += PERIOD
    # THEN the other shards' payments are applied, shard 6's wait (found), and the alarms see it: an
    # error every run, the cursor lag past the alarm's hour
    assert {harness.event(webhook_id)["status"] for webhook_id in set(ids) - blocked} == {"applied"}
    assert {harness.event(webhook_id)["status"] for webhook_id in blocked} == {"received"}
    assert_found(harness)
    assert all(report.errors for report in reports)
    assert (reports[-1].cursor_lag_seconds or 0) > 3600
    # AND once DynamoDB answers again, the next run applies them, once
    on[0] = False
    scheduled(harness, clock)
    assert set(statuses(harness, ids)) == {"applied"}
    assert_money_once(harness)


def test_a_full_retry_list_whose_events_expire_drains_and_unblocks_its_shard(
    harness: LedgerHarness, clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redrive_module, "RETRY_LIMIT", 2)
    broken: set[str] = set()
    real = reconcile_event

    def reconcile(event: dict[str, Any], **kwargs: Any) -> Any:
        if event["webhook_id"] in broken:
            raise RuntimeError("a bug")
        return real(event, **kwargs)

    monkeypatch.setattr(redrive_module, "reconcile_event", reconcile)
    # GIVEN three events of one shard that always raise (the list holds two: the shard is blocked),
    # then a good one
    first, second, third, good = ids_in_shard(4, 4, "ttl")
    lost(harness, [first, second, third, good], at=clock[0])
    broken.update({first, second, third})
    clock[0] += GRACE + 10
    scheduled(harness, clock)
    assert sorted(saved_state(harness)["retry"]) == sorted([first, second])
    assert saved_state(harness)["ahead"]
    # WHEN DynamoDB's TTL deletes the three failing events (their retention is over)
    for webhook_id in (first, second, third):
        harness.dynamodb.delete_item(TableName=harness.events_name, Key={"webhook_id": {"S": webhook_id}})
    for _ in range(2):
        clock[0] += PERIOD
        report = scheduled(harness, clock)
    # THEN the list is empty, the shard no longer blocked, the good one applied
    state = saved_state(harness)
    assert (state["retry"], state["ahead"], report.blocked_shards) == ([], {}, 0)
    assert harness.event(good)["status"] == "applied"


def test_a_quiet_run_writes_the_lease_a_bounded_number_of_times(
    harness: LedgerHarness, clock: list[float]
) -> None:
    """Measured, not a defect: each position that moves is saved at once (a killed run loses at most a
    page), so a run with nothing new writes the lease item once per shard for the cursors and once per
    shard for the late sweep, 16 writes of the whole state (up to 26 KB, 26 write units each, with a
    full retry list of the longest ids) every five minutes."""
    for _ in range(2):
        scheduled(harness, clock)
        clock[0] += PERIOD
    clock[0] += LATE_HORIZON_SECONDS
    scheduled(harness, clock)
    clock[0] += PERIOD
    writes: list[str] = []
    harness.dynamodb.meta.events.register(
        "before-call.dynamodb.UpdateItem",
        lambda params, **_: writes.append(str(params.get("UpdateExpression"))),
    )
    scheduled(harness, clock)
    assert len(writes) <= 2 * UNFINISHED_SHARDS + 2, writes


def short_budget(checks: int) -> Callable[[], float]:
    """A run's time left: plenty for its first `checks` looks, then none (a run cut short)."""
    budget = iter([100.0] * checks)
    return lambda: next(budget, 0.0)


def statuses(harness: LedgerHarness, webhook_ids: list[str]) -> list[str]:
    return [harness.event(webhook_id)["status"] for webhook_id in webhook_ids]


# --- generated sequences -----------------------------------------------------------------------------


class Killed(BaseException):
    """The execution environment died: nothing the run would write after this is written."""


class KillableLease:
    """The real lease, whose writes stop once its run is killed (the process is gone)."""

    def __init__(self, real: HeldLease) -> None:
        self.real = real
        self.killed = False
        self.name, self.holder, self.expires_at = real.name, real.holder, real.expires_at

    @property
    def state(self) -> Any:
        return self.real.state

    def save(self, state: Any) -> bool:
        if self.killed:
            raise Killed
        return self.real.save(state)

    def release(self) -> bool:
        return False if self.killed else self.real.release()


@dataclass
class World:
    """One generated history: the tables, the clock, and the faults switched on."""

    harness: LedgerHarness
    clock: list[float]
    index: LaggingIndex
    failing: set[str] = field(default_factory=set)
    held_back: list[str] = field(default_factory=list)  # stream records delivered later
    unprocessed: list[int] = field(default_factory=lambda: [0])  # BatchGetItem calls still halved
    received: int = 0
    kill_after: list[int] = field(default_factory=lambda: [0])


RECEIVE = st.tuples(
    st.just("receive"),
    st.integers(1, 3),
    st.sampled_from(["delivered", "delivered", "lost", "later"]),
    st.sampled_from([0.0, 0.0, 0.0, -(GRACE + 300.0)]),  # the receiver's clock behind, past the grace
    st.sampled_from([0.0, 0.0, 5.0, GRACE + 900.0]),  # the index showing the item late
    st.booleans(),  # a second webhook for an application already received (a duplicate)
)
STEP = st.one_of(
    RECEIVE,
    st.tuples(st.just("deliver_later")),
    st.tuples(st.just("fail"), st.integers(0, 50)),
    st.tuples(st.just("heal")),
    st.tuples(st.just("throttle"), st.integers(1, 8)),
    st.tuples(st.just("run"), st.sampled_from([None, None, 3, 8, 20]), st.sampled_from([0, 0, 0, 1, 3])),
    st.tuples(st.just("tick"), st.sampled_from([PERIOD, PERIOD, 3600.0])),
    st.tuples(st.just("operator")),
    st.tuples(st.just("overlap"), st.integers(1, 12)),
    st.tuples(st.just("expire"), st.integers(0, 50)),
)


def _receive(world: World, count: int, fate: str, skew: float, lag: float, duplicate: bool) -> None:
    harness, clock = world.harness, world.clock
    for _ in range(count):
        number = world.received
        world.received += 1
        webhook_id = f"gen_{number}"
        application = f"ob_gen_{number - 1 if duplicate and number else number}"
        harness.receive(webhook_id, payment(application, 100, customer_id="bcus_1"), at=clock[0] + skew)
        if lag:
            world.index.appears_at[webhook_id] = clock[0] + lag
        if fate == "delivered":
            delivered(harness, webhook_id)
        elif fate == "later":
            world.held_back.append(webhook_id)


def _run(world: World, budget: int | None, kill_after: int) -> None:
    harness, clock = world.harness, world.clock
    real = harness.ledger.leases().acquire(
        REDRIVE_LEASE, f"gen@{clock[0]}", now=clock[0], expires_at=clock[0] + TIMEOUT + 30
    )
    assert real is not None
    lease = KillableLease(real)
    world.kill_after[0] = kill_after
    calls = iter([100.0] * budget) if budget is not None else None

    def reconcile(event: dict[str, Any], **kwargs: Any) -> Any:
        if event["webhook_id"] in world.failing:
            raise RuntimeError("throttled")
        result = reconcile_event(event, **kwargs)
        if world.kill_after[0]:
            world.kill_after[0] -= 1
            if not world.kill_after[0]:
                lease.killed = True
                raise Killed
        return result

    try:
        with mock.patch.object(redrive_module, "reconcile_event", reconcile):
            scheduled(
                harness,
                clock,
                lease=lease,
                time_left=(lambda: next(calls, 0.0)) if calls is not None else (lambda: float("inf")),
            )
    except Killed:
        clock[0] += TIMEOUT + 31  # the next run takes the lease once it has expired
    # What the run saved still finds every event that is not final (the code's own account)
    assert_found(harness)


def _halve_batch_gets(world: World) -> None:
    client = world.harness.events._client
    real = client.batch_get_item

    def halved(RequestItems: dict[str, Any]) -> dict[str, Any]:
        [(table, request)] = RequestItems.items()
        keys = request["Keys"]
        if world.unprocessed[0] > 0 and len(keys) > 1:
            world.unprocessed[0] -= 1
            answered = dict(real(RequestItems={table: {**request, "Keys": keys[: len(keys) // 2]}}))
            answered["UnprocessedKeys"] = {table: {**request, "Keys": keys[len(keys) // 2 :]}}
            return answered
        return dict(real(RequestItems=RequestItems))

    client.batch_get_item = halved


def _deliver_later(world: World) -> None:
    for webhook_id in world.held_back:
        if world.harness.events.get(webhook_id) is not None:  # a record of an expired event: no item
            delivered(world.harness, webhook_id)
    world.held_back.clear()


def _fail(world: World, number: int) -> None:
    if world.received:
        world.failing.add(f"gen_{number % world.received}")


def _expire(world: World, number: int) -> None:
    """DynamoDB's TTL deleting an event (its retention is over)."""
    if world.received:
        world.harness.dynamodb.delete_item(
            TableName=world.harness.events_name, Key={"webhook_id": {"S": f"gen_{number % world.received}"}}
        )


def _throttle(world: World, calls: int) -> None:
    world.unprocessed[0] = calls


def _tick(world: World, seconds: float) -> None:
    world.clock[0] += seconds


def _heal(world: World) -> None:
    world.failing.clear()


def _failing(world: World) -> Callable[..., Any]:
    def reconcile(event: dict[str, Any], **kwargs: Any) -> Any:
        if event["webhook_id"] in world.failing:
            raise RuntimeError("throttled")
        return reconcile_event(event, **kwargs)

    return reconcile


def _operator(world: World) -> None:
    """`redrive --stuck --grace-minutes 0`: no lease, the scheduled run's state read, nothing saved."""
    harness = world.harness
    before = saved_state(harness)
    with mock.patch.object(redrive_module, "reconcile_event", _failing(world)):
        redrive_stuck(
            events=harness.events,
            ledger=harness.ledger,
            directory=None,
            now=harness.clock,
            grace_seconds=0,
            back_off=False,
            state=before,
        )
    assert saved_state(harness) == before
    assert_found(harness)


def _overlap(world: World, at_check: int) -> None:
    """Run A's lease expires in its middle (a clock step, a late asynchronous retry); run B takes it
    over and runs to its end inside A; then A goes on, its saves refused."""
    harness, clock = world.harness, world.clock
    lease = harness.ledger.leases().acquire(
        REDRIVE_LEASE, f"A@{clock[0]}", now=clock[0], expires_at=clock[0] + 30
    )
    assert lease is not None
    checks = [0]

    def a_time_left() -> float:
        checks[0] += 1
        if checks[0] == at_check:
            clock[0] += 40
            with mock.patch.object(redrive_module, "reconcile_event", _failing(world)):
                scheduled(harness, clock)
        return 100.0

    with mock.patch.object(redrive_module, "reconcile_event", _failing(world)):
        redrive_stuck(
            events=harness.events,
            ledger=harness.ledger,
            directory=None,
            now=harness.clock,
            grace_seconds=GRACE,
            lease=lease,
            time_left=a_time_left,
        )
    lease.release()
    if checks[0] < at_check:  # B never ran: A had the whole run; the lease is over by now anyway
        clock[0] += 40
    assert_found(harness)


STEPS: dict[str, Callable[..., None]] = {
    "receive": _receive,
    "deliver_later": _deliver_later,
    "fail": _fail,
    "heal": _heal,
    "throttle": _throttle,
    "run": _run,
    "tick": _tick,
    "operator": _operator,
    "overlap": _overlap,
    "expire": _expire,
}


@contextlib.contextmanager
def generated_world(retry_limit: int) -> Iterator[World]:
    saved_limit = redrive_module.RETRY_LIMIT
    with mock_aws(), pytest.MonkeyPatch.context() as patch:
        patch.setattr("moment_sync.adapters.webhook_events_table.time.sleep", lambda _: None)
        patch.setattr(redrive_module, "RETRY_LIMIT", retry_limit)
        clock = [float(NOW)]
        harness = fresh_harness(boto3.client("dynamodb"), clock)
        world = World(harness, clock, LaggingIndex(harness.dynamodb, clock))
        _halve_batch_gets(world)
        yield world
    assert saved_limit == redrive_module.RETRY_LIMIT


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(retry_limit=st.sampled_from([1, 2, 100]), steps=st.lists(STEP, min_size=4, max_size=14))
def test_generated_histories_end_with_every_event_final_and_every_payment_applied_once(
    retry_limit: int, steps: list[tuple[Any, ...]]
) -> None:
    """Deliveries (on time, lost, late, duplicated), receivers' clocks behind, an index showing items
    late, reconciles raising, BatchGetItem keys left unprocessed, runs cut short and killed: after each
    run the saved state finds every event not final; once the faults are gone, runs for a day and a bit
    leave every event final, each application applied once."""
    with generated_world(retry_limit) as world:
        harness, clock = world.harness, world.clock
        for kind, *arguments in steps:
            STEPS[kind](world, *arguments)
        # WHEN the faults are gone (the late stream records never come) and the runs go on for a day
        world.failing.clear()
        world.unprocessed[0] = 0
        for _ in range(3):
            clock[0] += PERIOD
            _run(world, None, 0)
        clock[0] += LATE_HORIZON_SECONDS + GRACE
        for _ in range(2):
            _run(world, None, 0)
            clock[0] += PERIOD
        # THEN every event is final, and each payment changed the balance once
        left = {
            event["webhook_id"]: event["status"]
            for event in harness.all_events()
            if event["status"] not in FINAL
        }
        assert not left, f"not final after a day of runs: {left}; state {saved_state(harness)}"
        assert_money_once(harness)
