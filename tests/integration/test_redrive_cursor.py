"""The scheduled re-drive reads the `Unfinished` index forward from cursors kept in the `redrive`
lease's state (the index no longer shrinks: a final status leaves an event in it, saving a write unit
per event). What it must never do: read every event ever received on every run, let one failing event
hold a cursor for ever, or forget such an event. Counted in DynamoDB requests and items (botocore's
after-call hooks on the events table's client), not in timings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from moment_sync import redrive as redrive_module
from moment_sync.adapters.webhook_events_table import UNFINISHED_SHARDS, iso_time, unfinished_shard
from moment_sync.reconciliation import EventStatus
from moment_sync.redrive import REDRIVE_LEASE, RedriveReport, redrive_stuck
from support.ledger import LedgerHarness, payment
from support.webhooks import NOW

GRACE = 600


@pytest.fixture
def clock() -> list[float]:
    return [float(NOW)]


@pytest.fixture
def harness(dynamodb: Any, clock: list[float]) -> LedgerHarness:
    harness = LedgerHarness(dynamodb, clock=lambda: clock[0])
    harness.open_customer("UCR1", moment_id="bcus_1")
    return harness


class Reads:
    """Items DynamoDB returned to the events table's client, by operation."""

    def __init__(self, client: Any) -> None:
        self.items: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        # DynamoDB refuses `BETWEEN :a AND :b` with a > b (ValidationException); moto answers nothing.
        self.refused_between: list[dict[str, Any]] = []
        client.meta.events.register("after-call.dynamodb.*", self._count)
        client.meta.events.register("before-parameter-build.dynamodb.Query", self._check_between)

    def _check_between(self, params: dict[str, Any], **_: Any) -> None:
        values = params.get("ExpressionAttributeValues", {})
        if "BETWEEN" in params.get("KeyConditionExpression", "") and (
            values[":after"]["S"] > values[":through"]["S"]
        ):
            self.refused_between.append(values)

    def _count(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        self.requests[model.name] += 1
        if model.name == "Query":
            self.items["Query"] += len(parsed.get("Items", []))
        elif model.name == "BatchGetItem":
            self.items["BatchGetItem"] += sum(len(found) for found in parsed.get("Responses", {}).values())
        elif model.name == "GetItem" and "Item" in parsed:
            self.items["GetItem"] += 1

    def reset(self) -> None:
        self.items.clear()
        self.requests.clear()


@pytest.fixture
def reads(harness: LedgerHarness) -> Reads:
    return Reads(harness.dynamodb)


def scheduled(harness: LedgerHarness, clock: list[float], **options: Any) -> RedriveReport:
    """One scheduled run: takes the `redrive` lease (the cursors live in its state), then gives it back."""
    leases = harness.ledger.leases()
    lease = leases.acquire(REDRIVE_LEASE, "run", now=clock[0], expires_at=clock[0] + 900)
    assert lease is not None
    try:
        return redrive_stuck(
            events=harness.events,
            ledger=harness.ledger,
            directory=None,
            now=harness.clock,
            grace_seconds=GRACE,
            lease=lease,
            **options,
        )
    finally:
        lease.release()


def lease_state(harness: LedgerHarness) -> dict[str, Any]:
    return dict((harness.ledger.leases().current(REDRIVE_LEASE) or {}).get("state") or {})


def ids_in_shard(shard: int, count: int, prefix: str = "msg") -> list[str]:
    """Webhook ids that hash to one `Unfinished` shard."""
    found: list[str] = []
    number = 0
    while len(found) < count:
        webhook_id = f"{prefix}_{number}"
        if unfinished_shard(webhook_id) == f"u#{shard}":
            found.append(webhook_id)
        number += 1
    return found


def applied_by_the_stream(harness: LedgerHarness, count: int, at: float) -> list[str]:
    ids = [f"done_{number}" for number in range(count)]
    for number, webhook_id in enumerate(ids):
        harness.receive(webhook_id, payment(f"ob_{webhook_id}", 100 + number, customer_id="bcus_1"), at=at)
    assert harness.invoke(harness.next_batch()) == []
    return ids


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """Webhook ids whose reconcile raises (a throttle, a bug) while they are in this set."""
    broken: set[str] = set()
    real = redrive_module.reconcile_event

    def reconcile(event: dict[str, Any], **kwargs: Any) -> Any:
        if event["webhook_id"] in broken:
            raise RuntimeError("throttled")
        return real(event, **kwargs)

    monkeypatch.setattr(redrive_module, "reconcile_event", reconcile)
    yield broken


def test_a_final_status_leaves_the_event_in_unfinished_and_the_next_run_reads_none_of_them_again(
    harness: LedgerHarness, clock: list[float], reads: Reads
) -> None:
    # GIVEN 130 payments the stream applied (more than a page of the index), one it never finished
    done = applied_by_the_stream(harness, 130, at=clock[0])
    harness.receive("missed", payment("ob_missed", 700, customer_id="bcus_1"), at=clock[0])
    harness.next_batch()  # its record is lost
    assert {harness.event(webhook_id)["status"] for webhook_id in done} == {"applied"}
    assert all(harness.event(webhook_id)["unfinished_shard"] for webhook_id in done)  # never removed

    # WHEN the first scheduled run after the grace reads past its (empty) cursors
    clock[0] += GRACE + 1
    reads.reset()
    first = scheduled(harness, clock)
    # THEN it reads each event's status once, in BatchGetItem requests of at most 100, and applies the miss
    assert (first.read, first.found_received, first.outcomes) == (131, 1, {"applied": 1})
    assert reads.items["BatchGetItem"] == 131
    assert harness.event("missed")["status"] == "applied"
    assert set(lease_state(harness)["cursors"]) == {str(shard) for shard in range(UNFINISHED_SHARDS)}

    # WHEN the next run comes, with nothing new received
    clock[0] += 300
    reads.reset()
    second = scheduled(harness, clock)
    # THEN it reads none of the 131 again: no status, no index entry
    assert (second.read, second.examined) == (0, 0)
    assert reads.items["BatchGetItem"] == 0
    assert reads.items["Query"] == 0
    assert reads.requests["BatchGetItem"] == 0

    # AND a run after one more payment reads that one alone
    harness.receive("new_1", payment("ob_new_1", 900, customer_id="bcus_1"), at=clock[0])
    assert harness.invoke(harness.next_batch()) == []
    clock[0] += GRACE + 1
    reads.reset()
    third = scheduled(harness, clock)
    assert (third.read, reads.items["BatchGetItem"], third.examined) == (1, 1, 0)


def test_an_event_whose_reconcile_raises_waits_in_the_retry_list_while_the_cursor_passes_it(
    harness: LedgerHarness, clock: list[float], failing: set[str]
) -> None:
    # GIVEN three payments in one shard the stream never finished, the middle one failing to reconcile
    first, stuck, last = ids_in_shard(3, 3)
    for offset, webhook_id in enumerate((first, stuck, last)):
        harness.receive(
            webhook_id, payment(f"ob_{webhook_id}", 100, customer_id="bcus_1"), at=clock[0] + offset
        )
    harness.next_batch()
    failing.add(stuck)
    clock[0] += GRACE + 10
    # WHEN the scheduled re-drive runs
    report = scheduled(harness, clock)
    # THEN the others are applied, the failing one is kept in the retry list, and the cursor passed it
    assert [harness.event(webhook_id)["status"] for webhook_id in (first, stuck, last)] == [
        "applied",
        "received",
        "applied",
    ]
    assert (report.retry_list, len(report.errors)) == (1, 1)
    state = lease_state(harness)
    assert state["retry"] == [stuck]
    assert state["cursors"]["3"] == iso_time(clock[0] - GRACE)

    # WHEN it still fails on the next run, THEN it stays listed (not forgotten), and is read first
    clock[0] += 300
    again = scheduled(harness, clock)
    assert (again.retry_list, again.found_received, lease_state(harness)["retry"]) == (1, 1, [stuck])

    # WHEN its cause is gone, THEN the next run applies it and the list drains
    failing.clear()
    clock[0] += 300
    fixed = scheduled(harness, clock)
    assert (fixed.outcomes, fixed.retry_list, lease_state(harness)["retry"]) == ({"applied": 1}, 0, [])
    assert harness.event(stuck)["status"] == "applied"
    harness.assert_balances_equal_their_entries()


def test_a_full_retry_list_keeps_the_cursor_before_the_next_failing_event_and_reads_on_past_it(
    harness: LedgerHarness, clock: list[float], failing: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redrive_module, "RETRY_LIMIT", 1)
    # GIVEN a shard with two failing events and a good one after them, and a good one in another shard
    listed, blocked, after = ids_in_shard(5, 3)
    [elsewhere] = ids_in_shard(6, 1)
    for offset, webhook_id in enumerate((listed, blocked, after, elsewhere)):
        harness.receive(
            webhook_id, payment(f"ob_{webhook_id}", 100, customer_id="bcus_1"), at=clock[0] + offset
        )
    harness.next_batch()
    failing.update({listed, blocked})
    clock[0] += GRACE + 10
    # WHEN the scheduled re-drive runs
    report = scheduled(harness, clock)
    # THEN the first fills the list, the cursor stops before the second (never past it, so nothing is
    # forgotten), the run reads on past it and applies the shard's later good event (it used to wait
    # as long as the faults lasted), and the shard counts as blocked
    state = lease_state(harness)
    assert state["retry"] == [listed]
    assert state["cursors"].get("5", "") < iso_time(NOW + 1)
    assert state["ahead"] == {"5": iso_time(clock[0] - GRACE)}
    assert (report.blocked_shards, report.retry_list) == (1, 1)
    assert [harness.event(webhook_id)["status"] for webhook_id in (listed, blocked, after, elsewhere)] == [
        "received",
        "received",
        "applied",
        "applied",
    ]
    # AND while the faults last, the cursor's lag grows (its alarm) and the list stays full (its alarm)
    clock[0] += 3600
    still = scheduled(harness, clock)
    assert (still.blocked_shards, still.retry_list) == (1, 1)
    assert still.cursor_lag_seconds is not None and still.cursor_lag_seconds > 3600 + GRACE
    # WHEN the faults are gone, THEN one run finishes all of them and the cursor reaches the cutoff
    failing.clear()
    clock[0] += 300
    fixed = scheduled(harness, clock)
    assert {harness.event(webhook_id)["status"] for webhook_id in (listed, blocked, after)} == {"applied"}
    state = lease_state(harness)
    assert (state["retry"], state["cursors"]["5"], state["ahead"]) == ([], iso_time(clock[0] - GRACE), {})
    assert fixed.blocked_shards == 0
    harness.assert_balances_equal_their_entries()


def test_a_run_out_of_time_saves_its_cursor_and_the_next_continues_without_rereading(
    harness: LedgerHarness, clock: list[float], reads: Reads
) -> None:
    # GIVEN six payments of one shard the stream missed, three of them received in the same millisecond
    ids = ids_in_shard(1, 6)
    stamps = [clock[0], clock[0] + 1, clock[0] + 1, clock[0] + 1, clock[0] + 2, clock[0] + 3]
    for webhook_id, at in zip(ids, stamps, strict=True):
        harness.receive(webhook_id, payment(f"ob_{webhook_id}", 100, customer_id="bcus_1"), at=at)
    harness.next_batch()
    clock[0] += GRACE + 10
    # WHEN a run has time for two events only (the second one of the three in one millisecond)
    budget = iter([100.0, 100.0, 100.0, 0.0])  # the page, then two events
    report = scheduled(harness, clock, time_left=lambda: next(budget, 0.0))
    assert report.stopped_early
    statuses = [harness.event(webhook_id)["status"] for webhook_id in ids]
    assert statuses.count("applied") == 2
    # THEN its cursor stops before the millisecond it did not finish
    assert lease_state(harness)["cursors"]["1"] == iso_time(stamps[0])
    # AND the next run finishes every one of them, reading again only that millisecond's finished one
    clock[0] += 300
    reads.reset()
    scheduled(harness, clock)
    assert {harness.event(webhook_id)["status"] for webhook_id in ids} == {"applied"}
    assert reads.items["BatchGetItem"] == 5
    harness.assert_balances_equal_their_entries()


def test_payments_parked_unmatched_are_found_through_parked_not_the_cursor(
    harness: LedgerHarness, clock: list[float]
) -> None:
    # GIVEN a payment parked unmatched, then a run that moved the cursors past it
    harness.receive("nobody", payment("ob_nobody", 100, customer_id="bcus_nobody"), at=clock[0])
    assert harness.invoke(harness.next_batch()) == []
    clock[0] += GRACE + 1
    scheduled(harness, clock)
    assert lease_state(harness)["cursors"]["0"] >= iso_time(NOW)
    # WHEN its Moment id is linked by hand and a later run comes (its backoff due)
    harness.open_customer("NOBODY", moment_id="bcus_nobody")
    clock[0] += 3 * 3600
    report = scheduled(harness, clock)
    # THEN it is applied: the Parked index found it, the cursor long past it
    assert report.outcomes == {"applied": 1}
    assert harness.event("nobody")["status"] == EventStatus.APPLIED


def test_the_parking_write_says_when_the_next_try_is_due_and_a_run_reads_only_those_due(
    harness: LedgerHarness, clock: list[float], reads: Reads
) -> None:
    # GIVEN a payment parked unmatched by the stream
    harness.receive("nobody", payment("ob_nobody", 100, customer_id="bcus_nobody"), at=clock[0])
    assert harness.invoke(harness.next_batch()) == []
    parked = harness.event("nobody")
    # THEN that same write put it in `UnmatchedDue`, due the grace after its parking
    assert parked["unmatched_grace_from"] == parked["resolved_at"] == iso_time(NOW)
    # AND a run before then does not read it at all
    clock[0] += GRACE - 1
    reads.reset()
    assert scheduled(harness, clock).not_due == 0
    assert reads.items["GetItem"] == 0
    # WHEN a run finds it due, and Moment still does not know it
    clock[0] += 1
    assert scheduled(harness, clock).outcomes == {"parked:unmatched": 1}
    # THEN the write that parks it again says when next: the grace doubled, so 2 x grace from now
    again = harness.event("nobody")
    assert again["redrive_attempts"] == 2
    assert again["unmatched_grace_from"] == iso_time(clock[0] + 2 * GRACE - GRACE)
    # AND once applied, it leaves the index with the rest of its parking
    harness.open_customer("NOBODY", moment_id="bcus_nobody")
    clock[0] += 2 * GRACE
    assert scheduled(harness, clock).outcomes == {"applied": 1}
    assert "unmatched_grace_from" not in harness.event("nobody")
    assert list(harness.events.unmatched_due_ids("9999")) == []


def parked_by_an_earlier_version(harness: LedgerHarness, webhook_id: str, at: float) -> None:
    """A payment parked unmatched as the version before `UnmatchedDue` left it: no due time."""
    harness.receive(webhook_id, payment(f"ob_{webhook_id}", 100, customer_id=f"bcus_{webhook_id}"), at=at)
    assert harness.invoke(harness.next_batch()) == []
    harness.dynamodb.update_item(
        TableName=harness.events_name,
        Key={"webhook_id": {"S": webhook_id}},
        UpdateExpression="REMOVE unmatched_grace_from",
    )


def test_payments_an_earlier_version_parked_unmatched_are_tried_once_by_one_pass_then_found_by_due_time(
    harness: LedgerHarness, clock: list[float], reads: Reads
) -> None:
    # GIVEN payments an earlier version parked unmatched (not in `UnmatchedDue`), one for a customer
    # the merchant has opened since
    for number in range(3):
        parked_by_an_earlier_version(harness, f"old_{number}", at=clock[0] - 86400 + number)
    harness.open_customer("OLD0", moment_id="bcus_old_0")
    assert list(harness.events.unmatched_due_ids("9999")) == []
    # WHEN this version's runs start: the first waits for every earlier function to be gone
    clock[0] += 300
    scheduled(harness, clock)
    state = lease_state(harness)["unkeyed"]
    assert state == {"until": iso_time(clock[0] + redrive_module.UNKEYED_PASS_WAIT_SECONDS)}
    for event in harness.all_events():
        assert redrive_module.found_by_redrive(event, lease_state(harness))
    clock[0] += redrive_module.UNKEYED_PASS_WAIT_SECONDS
    report = scheduled(harness, clock)
    # THEN the pass tried each once (treated as due): one applied, the others parked again with a
    # due time, and the pass is through
    assert report.outcomes == {"applied": 1, "parked:unmatched": 2}
    assert harness.event("old_0")["status"] == EventStatus.APPLIED
    for webhook_id in ("old_1", "old_2"):  # their second parking: the grace doubled
        assert harness.event(webhook_id)["unmatched_grace_from"] == iso_time(clock[0] + GRACE)
    unkeyed = lease_state(harness)["unkeyed"]
    assert unkeyed["at"] == unkeyed["until"]
    # AND later runs never read `Parked` again, and find the others through `UnmatchedDue` when due
    clock[0] += 300
    reads.reset()
    assert scheduled(harness, clock).examined == 0
    assert reads.items["Query"] == 0 and reads.items["GetItem"] == 0
    clock[0] += 2 * GRACE - 300
    assert scheduled(harness, clock).outcomes == {"parked:unmatched": 2}
    for event in harness.all_events():
        assert event["status"] == EventStatus.APPLIED or redrive_module.found_by_redrive(
            event, lease_state(harness)
        )


def test_the_operators_stuck_redrive_reads_the_whole_index_and_saves_nothing(
    harness: LedgerHarness, clock: list[float], reads: Reads
) -> None:
    applied_by_the_stream(harness, 20, at=clock[0])
    clock[0] += GRACE + 1
    scheduled(harness, clock)
    saved = lease_state(harness)
    # GIVEN one payment the stream missed after the last run
    harness.receive("missed_later", payment("ob_later", 100, customer_id="bcus_1"), at=clock[0])
    harness.next_batch()
    reads.reset()
    # WHEN an operator re-drives every stuck event now (grace 0), with the scheduled run's state
    report = redrive_stuck(
        events=harness.events,
        ledger=harness.ledger,
        directory=None,
        now=harness.clock,
        grace_seconds=0,
        back_off=False,
        state=saved,
    )
    # THEN it reads every event from the start of retention, not from the cursors (an event may have
    # reached the index behind one), applies the miss, and leaves the lease's state alone
    assert (report.read, report.outcomes, report.found_behind_cursor) == (21, {"applied": 1}, 0)
    assert reads.items["BatchGetItem"] == 21
    assert lease_state(harness) == saved


def skewed_miss(harness: LedgerHarness, clock: list[float], shard: int, behind: float) -> str:
    """Runs in step, then a payment stored by a receiver whose clock is `behind` seconds slow, its
    stream record lost: its received_at lies behind its shard's cursor when it reaches the index."""
    scheduled(harness, clock)
    clock[0] += 300
    scheduled(harness, clock)
    [webhook_id] = ids_in_shard(shard, 1, "skew")
    harness.receive(webhook_id, payment(f"ob_{webhook_id}", 100, customer_id="bcus_1"), at=clock[0] - behind)
    harness.next_batch()
    assert harness.event(webhook_id)["received_at"] <= lease_state(harness)["cursors"][str(shard)]
    return webhook_id


def test_the_operators_stuck_redrive_applies_an_event_behind_the_cursor_and_counts_it(
    harness: LedgerHarness, clock: list[float]
) -> None:
    # GIVEN a payment that reached the index behind its shard's cursor
    webhook_id = skewed_miss(harness, clock, shard=3, behind=900)
    # WHEN an operator runs `redrive --stuck` (the scheduled run's state, no lease)
    report = redrive_stuck(
        events=harness.events,
        ledger=harness.ledger,
        directory=None,
        now=harness.clock,
        grace_seconds=0,
        back_off=False,
        state=lease_state(harness),
    )
    # THEN it is applied, and counted as found behind a cursor (RedriveFoundBehindCursor)
    assert harness.event(webhook_id)["status"] == "applied"
    assert (report.found_behind_cursor, report.outcomes) == (1, {"applied": 1})


def test_the_late_sweep_applies_an_event_that_reached_the_index_behind_the_cursor_within_a_day(
    harness: LedgerHarness, clock: list[float], reads: Reads
) -> None:
    # GIVEN a payment that reached the index 15 minutes behind its shard's cursor
    webhook_id = skewed_miss(harness, clock, shard=1, behind=900)
    # WHEN the scheduled runs go on: the forward read never sees it
    clock[0] += 300
    assert scheduled(harness, clock).found_received == 0
    assert harness.event(webhook_id)["status"] == "received"
    # THEN once the late sweep, a day behind the cursors, passes it, a scheduled run applies it and
    # counts it as found behind a cursor (the metric its alarm watches)
    clock[0] += redrive_module.LATE_HORIZON_SECONDS
    reads.reset()
    report = scheduled(harness, clock)
    assert harness.event(webhook_id)["status"] == "applied"
    assert report.found_behind_cursor == 1
    # AND the sweep reads each event once: the next run reads nothing behind the cursors again
    clock[0] += 300
    reads.reset()
    scheduled(harness, clock)
    assert reads.items["BatchGetItem"] == 0
    harness.assert_balances_equal_their_entries()


def test_the_late_sweep_reads_on_past_an_event_a_full_retry_list_has_no_room_for(
    harness: LedgerHarness, clock: list[float], failing: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redrive_module, "RETRY_LIMIT", 1)
    # GIVEN runs in step, then three payments of one shard that reach the index 15 minutes behind its
    # cursor: the first two keep raising (the list holds one), the third is good
    scheduled(harness, clock)
    clock[0] += 300
    scheduled(harness, clock)
    listed, blocked, good = ids_in_shard(4, 3, "late")
    for offset, webhook_id in enumerate((listed, blocked, good)):
        harness.receive(
            webhook_id, payment(f"ob_{webhook_id}", 100, customer_id="bcus_1"), at=clock[0] - 900 + offset
        )
    harness.next_batch()
    failing.update({listed, blocked})
    # WHEN the late sweep passes them
    clock[0] += redrive_module.LATE_HORIZON_SECONDS + 300
    report = scheduled(harness, clock)
    # THEN the good one is applied, the first waits in the list, the blocked one stays where the late
    # sweep's position (before it) finds it again, and all three were counted behind the cursor
    state = lease_state(harness)
    assert [harness.event(webhook_id)["status"] for webhook_id in (listed, blocked, good)] == [
        "received",
        "received",
        "applied",
    ]
    assert state["retry"] == [listed] and "4" in state["late_ahead"]
    assert report.found_behind_cursor == 3
    assert redrive_module.found_by_redrive(harness.event(blocked), state)
    # AND once the faults are gone, the next run finishes both and the sweep is unblocked
    failing.clear()
    clock[0] += 300
    scheduled(harness, clock)
    assert {harness.event(webhook_id)["status"] for webhook_id in (listed, blocked)} == {"applied"}
    assert lease_state(harness)["late_ahead"] == {}
    harness.assert_balances_equal_their_entries()


def test_an_operators_full_pass_through_the_function_is_carried_on_by_the_scheduled_runs(
    harness: LedgerHarness, clock: list[float]
) -> None:
    # GIVEN a payment that reached the index two days behind its shard's cursor (past the late sweep)
    webhook_id = skewed_miss(harness, clock, shard=2, behind=2 * 86400)
    clock[0] += redrive_module.LATE_HORIZON_SECONDS + 300
    scheduled(harness, clock)
    assert harness.event(webhook_id)["status"] == "received"
    # WHEN the operator invokes the function with `{"ignore_backoff": true}`, and its run has no time
    # left by the time the full pass reaches the event
    cut = scheduled(harness, clock, full_pass=True, back_off=False, time_left=lambda: 0.0)
    assert cut.stopped_early and "full" in lease_state(harness)
    # THEN the next scheduled run carries the pass on, applies it, counts it, and ends the pass
    clock[0] += 300
    report = scheduled(harness, clock)
    assert harness.event(webhook_id)["status"] == "applied"
    assert (report.found_behind_cursor, report.full_pass_done) == (1, True)
    assert "full" not in lease_state(harness)


def test_a_full_retry_list_and_every_cursor_fit_in_the_lease_item(harness: LedgerHarness) -> None:
    """Saved through moto with DynamoDB's item and expression limits enforced (dynamodb_limits)."""
    lease = harness.ledger.leases().acquire(REDRIVE_LEASE, "run", now=NOW, expires_at=NOW + 900)
    assert lease is not None
    state = {
        "since": iso_time(NOW),
        "cursors": {str(shard): iso_time(NOW) for shard in range(UNFINISHED_SHARDS)},
        "retry": [f"{number:03d}" + "x" * 252 for number in range(redrive_module.RETRY_LIMIT)],
    }
    assert lease.save(state)
    assert lease_state(harness) == state


def test_a_run_with_no_grace_leaves_the_cursor_behind_for_an_event_the_index_shows_late(
    harness: LedgerHarness, clock: list[float], reads: Reads
) -> None:
    # GIVEN a run with no grace (the local stack's POST /_local/redrive), then the usual 600 s again
    lease = harness.ledger.leases().acquire(REDRIVE_LEASE, "now", now=clock[0], expires_at=clock[0] + 60)
    no_grace = redrive_stuck(
        events=harness.events,
        ledger=harness.ledger,
        directory=None,
        now=harness.clock,
        grace_seconds=0,
        lease=lease,
    )
    assert no_grace.errors == []
    # THEN its cursors stopped 120 s short of now, not at now
    assert set(lease_state(harness)["cursors"].values()) == {iso_time(clock[0] - 120)}
    # WHEN an event stamped 30 s before that run reaches the index only after it, its record lost
    harness.receive("late", payment("ob_late", 100, customer_id="bcus_1"), at=clock[0] - 30)
    harness.next_batch()
    # AND the next runs use the usual grace (a cutoff behind the first run's cursors)
    clock[0] += 300
    assert scheduled(harness, clock).errors == []
    clock[0] += 400
    report = scheduled(harness, clock)
    # THEN the late event is found and applied, and no query asked for a range DynamoDB refuses
    assert (report.errors, report.outcomes) == ([], {"applied": 1})
    assert harness.event("late")["status"] == "applied"
    assert reads.refused_between == []


def test_statuses_left_unprocessed_are_asked_again_and_a_shard_never_read_keeps_its_cursor(
    harness: LedgerHarness, clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a payment the stream missed, and DynamoDB leaving BatchGetItem keys unprocessed (throttled)
    [webhook_id] = ids_in_shard(2, 1)
    harness.receive(webhook_id, payment("ob_throttled", 100, customer_id="bcus_1"), at=clock[0])
    harness.next_batch()
    clock[0] += GRACE + 1
    client = harness.events._client
    real = client.batch_get_item
    unprocessed = [1]

    def throttled(RequestItems: dict[str, Any]) -> dict[str, Any]:
        if unprocessed[0] > 0:
            unprocessed[0] -= 1
            return {"Responses": {}, "UnprocessedKeys": RequestItems}
        return dict(real(RequestItems=RequestItems))

    monkeypatch.setattr(client, "batch_get_item", throttled)
    monkeypatch.setattr("moment_sync.adapters.webhook_events_table.time.sleep", lambda _: None)
    # WHEN the run meets one unprocessed answer, THEN it asks again and applies the payment
    assert scheduled(harness, clock).outcomes == {"applied": 1}
    # WHEN the keys stay unprocessed past every retry, THEN the shard's cursor stays where it was and
    # the run says so (RedriveErrors), the other shards go on
    harness.receive("later", payment("ob_later", 100, customer_id="bcus_1"), at=clock[0])
    harness.next_batch()
    before = lease_state(harness)["cursors"]
    unprocessed[0] = 10**6
    clock[0] += GRACE + 1
    report = scheduled(harness, clock)
    shard = unfinished_shard("later").removeprefix("u#")
    assert any(error.startswith(f"shard u#{shard}: StatusesUnread") for error in report.errors)
    assert lease_state(harness)["cursors"][shard] == before[shard]
    assert harness.event("later")["status"] == "received"
    # AND once DynamoDB answers again, the next run finishes it
    unprocessed[0] = 0
    clock[0] += 300
    assert scheduled(harness, clock).outcomes == {"applied": 1}
