"""Probes of the re-drive's cursor (docs/ledger.md#the-cursor-and-the-retry-list) from outside: the real
re-drive, lease and adapters over moto, faults injected at botocore's hooks, runs killed, overlapped and
cut short. The promise under attack: every event ends final (applied, duplicate, ignored, parked with a
reason) or is found by the re-drive; none stays `received` without someone being told; one application
id changes one balance once; a run with nothing new reads nothing again.

Each probe asserts the promise, not how the code keeps it. Two found defects (a full retry list
blocked its shard; an event that reached the index behind its cursor was found by no run), fixed
since: docs/ledger.md#the-cursor-and-the-retry-list."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from moment_sync import redrive as redrive_module
from moment_sync.adapters.webhook_events_table import UNFINISHED_SHARDS, unfinished_shard
from moment_sync.leases import HeldLease
from moment_sync.ledger.model import BalanceKind, BalanceRef
from moment_sync.redrive import REDRIVE_LEASE, RedriveReport, found_by_redrive, redrive_stuck
from support.ledger import LedgerHarness, payment
from support.webhooks import NOW

GRACE = 600
PERIOD = 300  # the schedule's rate
FINAL = {"applied", "duplicate", "ignored", "parked"}


@pytest.fixture
def clock() -> list[float]:
    return [float(NOW)]


@pytest.fixture
def harness(dynamodb: Any, clock: list[float]) -> LedgerHarness:
    harness = LedgerHarness(dynamodb, clock=lambda: clock[0])
    harness.open_customer("UCR1", moment_id="bcus_1")
    return harness


class Reads:
    """Requests and items DynamoDB answered the tables' client, by operation."""

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

    def reset(self) -> None:
        self.items.clear()
        self.requests.clear()


@pytest.fixture
def reads(harness: LedgerHarness) -> Reads:
    return Reads(harness.dynamodb)


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """Webhook ids whose reconcile raises before it writes anything, while they are in this set."""
    broken: set[str] = set()
    real = redrive_module.reconcile_event

    def reconcile(event: dict[str, Any], **kwargs: Any) -> Any:
        if event["webhook_id"] in broken:
            raise RuntimeError("throttled")
        return real(event, **kwargs)

    monkeypatch.setattr(redrive_module, "reconcile_event", reconcile)
    yield broken


def throttled(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, operation)


def scheduled(
    harness: LedgerHarness, clock: list[float], *, lease: HeldLease | None = None, **options: Any
) -> RedriveReport:
    """One scheduled run, as the function does it: the `redrive` lease held for the run, then given back."""
    held = lease or harness.ledger.leases().acquire(
        REDRIVE_LEASE, f"run@{clock[0]}", now=clock[0], expires_at=clock[0] + 330
    )
    assert held is not None, "the lease is free between runs"
    options.setdefault("grace_seconds", GRACE)
    try:
        return redrive_stuck(
            events=harness.events,
            ledger=harness.ledger,
            directory=None,
            now=harness.clock,
            lease=held,
            **options,
        )
    finally:
        held.release()


def saved_state(harness: LedgerHarness) -> dict[str, Any]:
    return dict((harness.ledger.leases().current(REDRIVE_LEASE) or {}).get("state") or {})


def ids_in_shard(shard: int, count: int, prefix: str = "msg") -> list[str]:
    found: list[str] = []
    number = 0
    while len(found) < count:
        webhook_id = f"{prefix}_{number}"
        if unfinished_shard(webhook_id) == f"u#{shard}":
            found.append(webhook_id)
        number += 1
    return found


def missed(
    harness: LedgerHarness, webhook_ids: list[str], at: float | list[float], amount: int = 100
) -> None:
    """Payments to UCR1 stored by the receiver whose stream records were lost."""
    stamps = at if isinstance(at, list) else [at] * len(webhook_ids)
    for webhook_id, stamp in zip(webhook_ids, stamps, strict=True):
        harness.receive(webhook_id, payment(f"ob_{webhook_id}", amount, customer_id="bcus_1"), at=stamp)
    harness.next_batch()


def applied(harness: LedgerHarness, webhook_ids: list[str], at: float) -> None:
    for webhook_id in webhook_ids:
        harness.receive(webhook_id, payment(f"ob_{webhook_id}", 100, customer_id="bcus_1"), at=at)
    assert harness.invoke(harness.next_batch()) == []


def assert_the_promise(harness: LedgerHarness, *, state: dict[str, Any] | None = None) -> None:
    """Every event final or found by the scheduled re-drive (with the state it saved); one balance
    change per application id; balance = the sum of its entries. One scan of each table."""
    state = saved_state(harness) if state is None else state
    events = harness.all_events()
    for event in events:
        assert event["status"] in FINAL or found_by_redrive(event, state), (
            f"{event['webhook_id']} is {event['status']} and no run will find it: {state}"
        )
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
    for event in events:
        if event["status"] == "applied":
            assert entries[event["entry_id"]] == 1, f"{event['webhook_id']} applied without its entry"


def harness_ref(reference: str) -> BalanceRef:
    return BalanceRef(BalanceKind.CUSTOMER, reference)


def statuses(harness: LedgerHarness, webhook_ids: list[str]) -> list[str]:
    return [harness.event(webhook_id)["status"] for webhook_id in webhook_ids]


# --- a run killed, two runs at once -------------------------------------------------------------


class Killed(BaseException):
    """The execution environment died: no `finally` of the run writes anything after this."""


class KillableLease:
    """The real lease, whose writes stop once the run is killed (the process is gone)."""

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


@pytest.mark.parametrize("kill_after", [1, 3, 5])
def test_a_run_killed_between_reconciling_and_saving_its_cursor_loses_nothing_and_applies_nothing_twice(
    harness: LedgerHarness,
    clock: list[float],
    failing: set[str],
    monkeypatch: pytest.MonkeyPatch,
    kill_after: int,
) -> None:
    # GIVEN seven payments of one shard the stream missed (three in one millisecond), one failing
    ids = ids_in_shard(4, 7)
    missed(
        harness,
        ids,
        [clock[0], clock[0] + 1, clock[0] + 1, clock[0] + 1, clock[0] + 2, clock[0] + 3, clock[0] + 4],
    )
    failing.add(ids[2])
    clock[0] += GRACE + 10
    # WHEN the run dies right after its `kill_after`-th reconcile wrote, before any later write
    real = redrive_module.reconcile_event
    done = [0]
    lease = KillableLease(
        harness.ledger.leases().acquire(REDRIVE_LEASE, "doomed", now=clock[0], expires_at=clock[0] + 330)  # type: ignore[arg-type]
    )

    def reconcile_then_die(event: dict[str, Any], **kwargs: Any) -> Any:
        result = real(event, **kwargs)
        done[0] += 1
        if done[0] == kill_after:
            lease.killed = True
            raise Killed
        return result

    monkeypatch.setattr(redrive_module, "reconcile_event", reconcile_then_die)
    with pytest.raises(Killed):
        scheduled(harness, clock, lease=lease)  # type: ignore[arg-type]
    # THEN what it saved still finds every event not final
    assert_the_promise(harness)
    # AND once its lease has expired, the next runs finish all but the failing one, each once
    clock[0] += 400
    scheduled(harness, clock)
    clock[0] += PERIOD
    scheduled(harness, clock)
    assert [
        status for webhook_id, status in zip(ids, statuses(harness, ids), strict=True) if webhook_id != ids[2]
    ] == ["applied"] * 6
    assert_the_promise(harness)
    failing.clear()
    clock[0] += PERIOD
    scheduled(harness, clock)
    assert set(statuses(harness, ids)) == {"applied"}
    assert_the_promise(harness)


def test_two_runs_at_once_after_a_lease_expiry_lose_nothing_and_apply_nothing_twice(
    harness: LedgerHarness, clock: list[float], failing: set[str]
) -> None:
    # GIVEN payments the stream missed in every shard, two of them failing to reconcile for now
    ids = [webhook_id for shard in range(UNFINISHED_SHARDS) for webhook_id in ids_in_shard(shard, 3, "two")]
    missed(harness, ids, [clock[0] + offset for offset in range(len(ids))])
    failing.update({ids[1], ids[13]})
    clock[0] += GRACE + 60
    # WHEN run A's lease expires in its middle (a clock step, a late async retry), run B takes it over,
    # runs to its end, and then A goes on
    a_lease = harness.ledger.leases().acquire(REDRIVE_LEASE, "A", now=clock[0], expires_at=clock[0] + 30)
    assert a_lease is not None
    calls = [0]
    b_reports: list[RedriveReport] = []

    def a_time_left() -> float:
        calls[0] += 1
        if calls[0] == 6:
            clock[0] += 40  # A's lease is over
            b_reports.append(scheduled(harness, clock))
        return 100.0

    a_report = redrive_stuck(
        events=harness.events,
        ledger=harness.ledger,
        directory=None,
        now=harness.clock,
        grace_seconds=GRACE,
        lease=a_lease,
        time_left=a_time_left,
    )
    assert b_reports, "B ran inside A"
    assert not a_lease.release(), "A no longer holds the lease"
    # THEN every event is final or found, each payment applied once
    assert_the_promise(harness)
    assert a_report.errors and b_reports[0].errors  # both met the failing events
    # AND when the faults are gone the next run finishes them
    failing.clear()
    clock[0] += PERIOD
    scheduled(harness, clock)
    assert set(statuses(harness, ids)) == {"applied"}
    assert_the_promise(harness)


# --- the retry list -----------------------------------------------------------------------------


def test_an_event_that_raises_after_its_payment_was_written_is_retried_and_applied_once(
    harness: LedgerHarness, clock: list[float]
) -> None:
    # GIVEN a payment the stream missed
    [webhook_id] = ids_in_shard(2, 1, "once")
    missed(harness, [webhook_id], clock[0])
    clock[0] += GRACE + 1
    # WHEN the re-drive's first status write for it is throttled (the claim and the entry committed)
    events_table = harness.events_name
    left = [1]

    def throttle_status_write(params: dict[str, Any], **_: Any) -> None:
        if params.get("TableName") == events_table and left[0] > 0:
            left[0] -= 1
            raise throttled("UpdateItem")

    harness.dynamodb.meta.events.register("before-parameter-build.dynamodb.UpdateItem", throttle_status_write)
    first = scheduled(harness, clock)
    assert first.errors, "the throttled write was reported"
    assert left == [0]
    assert_the_promise(harness)
    # THEN the next run finishes it: the balance changed once, the retry list drains
    clock[0] += PERIOD
    scheduled(harness, clock)
    assert harness.event(webhook_id)["status"] in FINAL
    assert saved_state(harness)["retry"] == []
    assert harness.head(harness_ref("UCR1"))["balance"] == -100  # a payment lowers what is owed
    assert_the_promise(harness)


def test_a_good_event_right_after_a_full_retry_list_is_still_applied(
    harness: LedgerHarness, clock: list[float], failing: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redrive_module, "RETRY_LIMIT", 3)
    # GIVEN three events that always raise fill the retry list, then a good one in each shard
    bad = ids_in_shard(1, 3, "bad")
    good = [ids_in_shard(shard, 1, "good")[0] for shard in range(UNFINISHED_SHARDS)]
    missed(harness, bad, clock[0])
    missed(harness, good, clock[0] + 5)
    failing.update(bad)
    clock[0] += GRACE + 10
    for _ in range(3):
        scheduled(harness, clock)
        clock[0] += PERIOD
    # THEN every good one is applied, the bad ones wait in the list, and all of it is found
    assert set(statuses(harness, good)) == {"applied"}
    assert sorted(saved_state(harness)["retry"]) == sorted(bad)
    assert_the_promise(harness)


def test_a_good_event_behind_a_blocked_failing_one_in_the_same_shard_is_applied(
    harness: LedgerHarness, clock: list[float], failing: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redrive_module, "RETRY_LIMIT", 2)
    # GIVEN a shard: two events that always raise (the list is full), a third that raises, then a good one
    listed_1, listed_2, blocked, good = ids_in_shard(5, 4, "blk")
    missed(harness, [listed_1, listed_2, blocked, good], [clock[0], clock[0] + 1, clock[0] + 2, clock[0] + 3])
    failing.update({listed_1, listed_2, blocked})
    clock[0] += GRACE + 10
    # WHEN the scheduled re-drive runs for an hour while those faults stay
    for _ in range(12):
        scheduled(harness, clock)
        clock[0] += PERIOD
    # THEN the good payment, whose reconcile would succeed, is applied
    assert harness.event(good)["status"] == "applied"


def test_a_blocked_shard_reads_again_at_most_one_page_a_run_however_many_final_events_lie_behind(
    harness: LedgerHarness,
    clock: list[float],
    failing: set[str],
    monkeypatch: pytest.MonkeyPatch,
    reads: Reads,
) -> None:
    monkeypatch.setattr(redrive_module, "RETRY_LIMIT", 1)
    # GIVEN a shard where two events keep raising (the list holds one), then 110 payments applied
    listed, blocked = ids_in_shard(6, 2, "cost")
    missed(harness, [listed, blocked], [clock[0], clock[0] + 1])
    failing.update({listed, blocked})
    applied(harness, ids_in_shard(6, 110, "fin"), at=clock[0] + 2)
    clock[0] += GRACE + 10
    scheduled(harness, clock)
    # WHEN the next runs come, with nothing new received
    per_run = []
    for _ in range(3):
        clock[0] += PERIOD
        reads.reset()
        scheduled(harness, clock)
        per_run.append(reads.items["BatchGetItem"])
    # THEN each run reads again at most one page of statuses (100), never all the finished events
    # behind the blocked one: a cost bounded per blocked shard while the alarms are on
    assert max(per_run) <= 100, per_run


def test_a_full_retry_list_of_the_longest_webhook_ids_fits_the_lease_item(
    harness: LedgerHarness, clock: list[float], failing: set[str]
) -> None:
    """Saved by real runs, with DynamoDB's item and expression limits enforced (dynamodb_limits)."""
    # GIVEN more failing events than the list holds, each with the longest id the receiver accepts
    limit = redrive_module.RETRY_LIMIT
    ids = [f"{number:04d}" + "~" * 251 for number in range(limit + 5)]
    assert all(len(webhook_id) == 255 for webhook_id in ids)
    missed(harness, ids, [clock[0] + number * 0.01 for number in range(len(ids))])
    failing.update(ids)
    clock[0] += GRACE + 10
    # WHEN two runs meet them
    first = scheduled(harness, clock)
    clock[0] += PERIOD
    second = scheduled(harness, clock)
    # THEN the list is saved full (none lost: the rest lie past a cursor), and the runs say so
    state = saved_state(harness)
    assert len(state["retry"]) == limit
    assert first.retry_list == second.retry_list == limit
    assert_the_promise(harness)


# --- DynamoDB throttling ------------------------------------------------------------------------


def test_batch_get_item_leaving_half_its_keys_unprocessed_misses_no_event(
    harness: LedgerHarness, clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN 120 payments of one shard (more than a BatchGetItem's 100), every fifth missed, the rest applied
    ids = ids_in_shard(3, 120, "half")
    lost = ids[::5]
    missed(harness, lost, [clock[0] + number for number in range(len(lost))])
    applied(harness, [webhook_id for webhook_id in ids if webhook_id not in lost], at=clock[0] + 1)
    clock[0] += GRACE + 100
    # WHEN DynamoDB answers each BatchGetItem with only half its keys, the rest unprocessed, twice
    client = harness.events._client
    real = client.batch_get_item
    throttles = Counter[str]()
    streak = [0]

    def halved(RequestItems: dict[str, Any]) -> dict[str, Any]:
        [(table, request)] = RequestItems.items()
        keys = request["Keys"]
        if streak[0] < 2 and len(keys) > 1:
            streak[0] += 1
            throttles[keys[0]["webhook_id"]["S"]] += 1
            answered = dict(real(RequestItems={table: {**request, "Keys": keys[: len(keys) // 2]}}))
            answered["UnprocessedKeys"] = {table: {**request, "Keys": keys[len(keys) // 2 :]}}
            return answered
        streak[0] = 0
        return dict(real(RequestItems=RequestItems))

    monkeypatch.setattr(client, "batch_get_item", halved)
    monkeypatch.setattr("moment_sync.adapters.webhook_events_table.time.sleep", lambda _: None)
    report = scheduled(harness, clock)
    # THEN every missed payment is applied, once
    assert sum(throttles.values()) > 0
    assert report.errors == []
    assert set(statuses(harness, lost)) == {"applied"}
    assert_the_promise(harness)


def test_throttled_lease_state_writes_lose_no_event(
    harness: LedgerHarness, clock: list[float], failing: set[str]
) -> None:
    # GIVEN payments the stream missed in every shard, one failing to reconcile for now
    ids = [ids_in_shard(shard, 2, "lw")[number] for shard in range(UNFINISHED_SHARDS) for number in range(2)]
    missed(harness, ids, [clock[0] + offset for offset in range(len(ids))])
    failing.add(ids[3])
    clock[0] += GRACE + 60
    # WHEN every write of the lease's state is throttled during one run
    ledger_table = harness.ledger_name
    refused = [0]
    on = [True]

    def throttle_state(params: dict[str, Any], **_: Any) -> None:
        if (
            on[0]
            and params.get("TableName") == ledger_table
            and "#state" in str(params.get("UpdateExpression"))
        ):
            refused[0] += 1
            raise throttled("UpdateItem")

    harness.dynamodb.meta.events.register("before-parameter-build.dynamodb.UpdateItem", throttle_state)
    with contextlib.suppress(ClientError):  # the run may fail as a whole: the function's Errors metric
        scheduled(harness, clock)
    assert refused[0] > 0
    # THEN what is saved (nothing new) still finds every event not final, none applied twice
    assert_the_promise(harness)
    # AND once the writes go through, the next runs finish them
    on[0] = False
    failing.clear()
    clock[0] += PERIOD
    scheduled(harness, clock)
    assert set(statuses(harness, ids)) == {"applied"}
    assert_the_promise(harness)


# --- ties, many final events --------------------------------------------------------------------


def test_events_received_in_one_millisecond_across_pages_and_cut_runs_are_all_applied_once(
    harness: LedgerHarness, clock: list[float], reads: Reads
) -> None:
    # GIVEN 110 payments of one shard stamped in the same millisecond (more than a page), all missed
    ids = ids_in_shard(0, 110, "tie")
    missed(harness, ids, clock[0])
    clock[0] += GRACE + 10
    # WHEN runs are cut short after a few events each
    for _ in range(30):
        budget = iter([100.0] * 30)
        scheduled(harness, clock, time_left=lambda budget=budget: next(budget, 0.0))  # type: ignore[misc]
        # THEN after every run, what it saved finds every event not final
        assert_the_promise(harness)
        clock[0] += PERIOD
        if {event["status"] for event in harness.all_events()} == {"applied"}:
            break
    else:
        pytest.fail("110 events of one millisecond not finished by 30 runs cut short")
    assert_the_promise(harness)


def test_events_received_exactly_at_a_runs_cutoff_and_just_after_it_are_both_applied(
    harness: LedgerHarness, clock: list[float]
) -> None:
    # GIVEN a payment stamped exactly at the next run's cutoff (now - grace, to the millisecond) and one
    # stamped a millisecond later, in one shard, both missed by the stream
    at_cutoff, after = ids_in_shard(7, 2, "edge")
    clock[0] += GRACE
    missed(harness, [at_cutoff, after], [clock[0] - GRACE, clock[0] - GRACE + 0.001])
    # WHEN the run whose cutoff is that millisecond comes, then the next one
    first = scheduled(harness, clock)
    cursor = saved_state(harness)["cursors"]["7"]
    # THEN the cursor (saved at that very value) passed only what was finished
    assert_the_promise(harness)
    assert cursor == harness.event(at_cutoff)["received_at"]
    clock[0] += PERIOD
    scheduled(harness, clock)
    assert statuses(harness, [at_cutoff, after]) == ["applied", "applied"]
    assert first.outcomes == {"applied": 1}
    assert_the_promise(harness)


def test_runs_over_very_many_final_events_read_each_once_even_when_cut_short(
    harness: LedgerHarness, clock: list[float], reads: Reads
) -> None:
    # GIVEN 160 payments the stream applied, 40 each in four seconds, one missed among them
    per_second = 40
    ids = [f"many_{number}" for number in range(160)]
    for second in range(4):
        applied(harness, ids[second * per_second : (second + 1) * per_second], at=clock[0] + second)
    missed(harness, ["many_missed"], clock[0] + 2.5)
    clock[0] += GRACE + 20
    # WHEN runs each have time for two pages of the index only
    total = 0
    for _ in range(20):
        budget = iter([100.0] * 2)
        reads.reset()
        report = scheduled(harness, clock, time_left=lambda budget=budget: next(budget, 0.0))  # type: ignore[misc]
        total += reads.items["BatchGetItem"]
        clock[0] += PERIOD
        if not report.stopped_early:
            break
    # THEN the missed one is applied, and each event's status was read about once (a cut page again)
    assert harness.event("many_missed")["status"] == "applied"
    assert total <= 161 + 100, total
    # AND a run with nothing new reads nothing: no index item, no status
    reads.reset()
    clock[0] += PERIOD
    scheduled(harness, clock)
    assert (reads.items["Query"], reads.items["BatchGetItem"], reads.requests["BatchGetItem"]) == (0, 0, 0)


# --- payments parked unmatched, the operator's re-drives ------------------------------------------


def test_an_unmatched_payment_linked_later_is_applied_once_and_one_that_stays_unmatched_backs_off(
    harness: LedgerHarness, clock: list[float]
) -> None:
    # GIVEN two payments parked unmatched (nobody in the ledger has their Moment ids)
    harness.receive("to_link", payment("ob_to_link", 250, customer_id="bcus_later"), at=clock[0])
    harness.receive("stranger", payment("ob_stranger", 999, customer_id="bcus_stranger"), at=clock[0])
    assert harness.invoke(harness.next_batch()) == []
    assert statuses(harness, ["to_link", "stranger"]) == ["parked", "parked"]
    # WHEN the scheduled re-drive runs for three hours, the first id linked by hand after one
    linked = None
    for run in range(36):
        clock[0] += PERIOD
        if run == 12:
            linked = harness.open_customer("LATER", moment_id="bcus_later")
        scheduled(harness, clock)
        assert_the_promise(harness)
    # THEN the linked one is applied once; the other stays parked unmatched, tried a few times, not 36
    assert linked is not None
    assert harness.event("to_link")["status"] == "applied"
    assert harness.head(linked)["balance"] == -250
    stranger = harness.event("stranger")
    assert (stranger["status"], stranger["reason"]) == ("parked", "unmatched")
    tries = int(stranger.get("redrive_attempts") or 0)
    assert 1 <= tries <= 6, tries
    # AND the operator's re-drive (ignore_backoff) tries it at once
    clock[0] += 60
    report = scheduled(harness, clock, back_off=False)
    assert report.examined >= 1 and report.not_due == 0
    assert int(harness.event("stranger")["redrive_attempts"]) == tries + 1
    assert_the_promise(harness)


def test_the_operators_stuck_redrive_finds_every_event_the_scheduled_one_would(
    harness: LedgerHarness, clock: list[float], failing: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redrive_module, "RETRY_LIMIT", 1)
    # GIVEN a retry list holding one failing event, a shard stopped before another, later misses
    listed, blocked, behind = ids_in_shard(2, 3, "op")
    missed(harness, [listed, blocked, behind], [clock[0], clock[0] + 1, clock[0] + 2])
    failing.update({listed, blocked})
    clock[0] += GRACE + 10
    scheduled(harness, clock)
    missed(harness, ["op_later"], clock[0])
    failing.clear()
    # WHEN the operator re-drives every stuck event now (the CLI's way: no lease, the saved state)
    state = saved_state(harness)
    report = redrive_stuck(
        events=harness.events,
        ledger=harness.ledger,
        directory=None,
        now=harness.clock,
        grace_seconds=0,
        back_off=False,
        state=state,
    )
    # THEN all four are applied, and the scheduled run's state is untouched
    assert report.errors == []
    assert set(statuses(harness, [listed, blocked, behind, "op_later"])) == {"applied"}
    assert saved_state(harness) == state
    assert_the_promise(harness)


def test_an_event_that_reaches_the_index_behind_the_cursor_is_found_or_reported(
    harness: LedgerHarness, clock: list[float]
) -> None:
    # GIVEN scheduled runs in step: every cursor at now - grace
    scheduled(harness, clock)
    clock[0] += PERIOD
    scheduled(harness, clock)
    cursor = saved_state(harness)["cursors"]
    # WHEN a receiver whose clock is 15 minutes behind stores a payment, and its stream record is lost
    [webhook_id] = ids_in_shard(1, 1, "skew")
    missed(harness, [webhook_id], clock[0] - 900)
    assert harness.event(webhook_id)["received_at"] < cursor["1"]
    # AND the scheduled re-drive runs on, and an operator runs `redrive --stuck` from its state
    found = 0
    for _ in range(3):
        clock[0] += PERIOD
        found += scheduled(harness, clock).found_received
    operator = redrive_stuck(
        events=harness.events,
        ledger=harness.ledger,
        directory=None,
        now=harness.clock,
        grace_seconds=0,
        back_off=False,
        state=saved_state(harness),
    )
    # THEN the payment is applied, or at least some run counted it as still received (the alarm)
    assert harness.event(webhook_id)["status"] == "applied" or found + operator.found_received > 0


def test_runs_over_an_empty_table_read_nothing_and_every_shard_keeps_up(
    harness: LedgerHarness, clock: list[float], reads: Reads
) -> None:
    # GIVEN no event at all, runs in step
    report = RedriveReport()
    for _ in range(3):
        reads.reset()
        report = scheduled(harness, clock)
        clock[0] += PERIOD
    # THEN the last run read no item and its cursors lag by the grace and a period at most
    assert (reads.items["Query"], reads.items["BatchGetItem"]) == (0, 0)
    assert report.cursor_lag_seconds is not None and report.cursor_lag_seconds <= GRACE + PERIOD
