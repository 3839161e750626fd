"""Re-drive: finish what the stream did not, on a schedule and on an operator's word.

Finds events still `received` after a grace period (a record that went to the on-failure queue,
or any other miss) through the `Unfinished` index read forward from cursors kept in the `redrive`
lease (a final status leaves an event in that index, so it never shrinks: docs/ledger.md#re-drive),
again a day behind those cursors (the late sweep: events that reached the index after a cursor had
passed them), or from the start of retention (an operator's full pass), and events parked
`unmatched` whose next try is due through `UnmatchedDue` (never a table scan; an operator's re-drive:
all of them, through `Parked`), and reconciles them again with the same function the stream uses.
For an unmatched payment it first asks Moment which reference the Moment id belongs to and links it
when the ledger has that reference. Safe to run at any time: applying a payment is idempotent. Like
the stream, it decides from each event's stored summary, never its body (which `forget` may have
erased); each event is read and reconciled inside its own error handling, so one bad event never
stops a run.

The scheduled re-drive backs off from a payment that stays unmatched: it is tried `grace` after it
was first parked, then twice as long after each try that left it unmatched, at most every
MAX_BACKOFF_SECONDS. Without that, every payment for someone the merchant never opened would cost a
call to Moment and a write on every run, forever. The parking write says when (`unmatched_grace_from`,
the key of `UnmatchedDue`): a run reads only the payments due, not every one waiting. An operator's
re-drive (by id, by reason, or the function invoked with `{"ignore_backoff": true}`) tries them all
at once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from moment_sync.adapters.ledger_table import LedgerTable, MappingConflict
from moment_sync.adapters.webhook_events_table import (
    UNFINISHED_SHARDS,
    WebhookEventsTable,
    envelope_of,
    iso_time,
)
from moment_sync.envelope import read_envelope
from moment_sync.leases import HeldLease
from moment_sync.ledger.bills import BillRef
from moment_sync.ledger.model import BalanceKind, BalanceRef
from moment_sync.observability import MetricUnit, logger, metrics
from moment_sync.reconciler import Reconciled, reconcile_event
from moment_sync.reconciliation import (
    BillPaymentApplication,
    EventStatus,
    ParkReason,
    PaymentApplication,
    decide,
)

# Events whose reconcile raised, kept in the lease state and tried first on every run. Bounded: at
# most 100 webhook ids of 255 characters, about 26 KB of the lease item's 400 KB. Once it is full the
# cursor stops before the next such event instead of passing it.
RETRY_LIMIT = 100
# A saved cursor never comes closer to now than this (the template's least RedriveGraceSeconds), even
# after a run with a shorter grace (the local stack's, 0): an event stamped just before such a run may
# reach the index a moment after it, and must still lie past the cursor.
CURSOR_MIN_LAG_SECONDS = 120
# The lease a scheduled re-drive run holds (leases.py): runs never overlap.
REDRIVE_LEASE = "redrive"
# The late sweep reads each shard's index again this far behind its cursor: an event whose received_at
# the cursor had passed when it reached the index (a receiver clock behind by more than the grace, an
# index that lagged as long) is found if it arrived less than this late. Later than that, only a full
# pass finds it (docs/ledger.md#the-cursor-and-the-retry-list says why not a scheduled full pass).
LATE_HORIZON_SECONDS = 24 * 3600
# Each position in the lease state, and where a blocked shard records how far it was read on past it.
_AHEAD = {"cursors": "ahead", "late": "late_ahead", "full": "full_ahead"}
# Moment calls for one unmatched event at worst: the object by its id, and for an account its
# customer's (account_owner: the account, then the customer).
LOOKUPS_PER_EVENT = 3
# The one pass over `Parked` for payments an earlier version parked unmatched without
# `unmatched_grace_from` (absent from `UnmatchedDue`) starts this long after the first run of this
# version: by then no function of the earlier version is still running to park one more.
UNKEYED_PASS_WAIT_SECONDS = 3600


class _OutOfTime(Exception):
    """Not enough of the run's time left for an unmatched event's questions to Moment."""


class MomentDirectory(Protocol):
    """Who Moment says a Moment id is: the object's external_reference, or None if Moment has none."""

    def external_reference(self, kind: BalanceKind, moment_id: str) -> str | None: ...

    def account_owner(self, account_id: str) -> tuple[str, str | None]:
        """The Moment id of the account's customer, and that customer's external_reference."""
        ...


class MomentBillRecord(Protocol):
    """What the re-drive needs of Moment's bill (moment_client.MomentBill has it)."""

    external_reference: str
    currency: str
    amount_due: int
    customer_id: str | None
    account_id: str | None


@runtime_checkable
class BillDirectory(Protocol):
    """Moment's own record of a bill id (GET /billing/bills/{id}), None if Moment has no such bill."""

    def bill(self, bill_id: str) -> MomentBillRecord | None: ...


@dataclass
class RedriveReport:
    examined: int = 0
    # Of those, events still `received` (not parked): the stream did not finish them in time.
    found_received: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    linked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stopped_early: bool = False
    # Unmatched events left for a later run (backing off); not counted in `examined`.
    not_due: int = 0
    # The scheduled sweep: events whose status it read past its cursors, how far its oldest cursor is
    # behind now (seconds), and how many events wait in its retry list.
    read: int = 0
    cursor_lag_seconds: float | None = None
    retry_list: int = 0
    # Shards whose cursor waits before an event the full retry list had no room for (read on past it).
    blocked_shards: int = 0
    # Events still `received` that a full pass or the late sweep found at or behind their shard's
    # cursor: they reached the index late (docs/operations.md#redrive-found-behind-cursor).
    found_behind_cursor: int = 0
    # A full pass (the operator's) reached the end of every shard in this run.
    full_pass_done: bool = False

    def count(self, result: Reconciled) -> None:
        key = result.status.value + (f":{result.reason.value}" if result.reason else "")
        self.outcomes[key] = self.outcomes.get(key, 0) + 1


def redrive_stuck(
    *,
    events: WebhookEventsTable,
    ledger: LedgerTable,
    directory: MomentDirectory | None,
    now: Callable[[], float],
    grace_seconds: int,
    time_left: Callable[[], float] = lambda: float("inf"),
    back_off: bool = True,
    lookup_seconds: float = 0.0,
    lease: HeldLease | None = None,
    state: Mapping[str, Any] | None = None,
    min_seconds_left: float = 5.0,
    full_pass: bool = False,
) -> RedriveReport:
    """Every event received more than `grace_seconds` ago that is not final (with `back_off`, an
    unmatched one only when its next try is due): first the events earlier runs could not finish (the
    retry list), then each `Unfinished` shard forward from its cursor, then the late sweep (events
    that reached the index behind a cursor), then the payments parked unmatched that are due
    (`UnmatchedDue`; without `back_off`, all of them through `Parked`), then, once, those an earlier
    version parked without a due time, and a full pass when one is under way. With a `lease` (the
    scheduled run) the cursors and the retry list live in its state and are saved after each page and
    when the run stops; `full_pass` starts a pass over every shard from the start of retention that
    later runs carry on until it is through (the operator's `{"ignore_backoff": true}`). Without a
    lease (the operator's `redrive --stuck`) the run reads every shard from the start of retention,
    whatever the cursors say, and saves nothing; `state` (the scheduled run's) only tells which
    events it finds behind a cursor."""
    sweep = _Sweep(
        events=events,
        ledger=ledger,
        directory=directory,
        now=now,
        time_left=time_left,
        min_seconds_left=min_seconds_left,
        backoff_from_seconds=grace_seconds if back_off else None,
        grace_seconds=grace_seconds,
        lookup_seconds=lookup_seconds,
        lease=lease,
        state=copy.deepcopy(dict(lease.state if lease is not None else state or {})),
        cutoff=iso_time(now() - grace_seconds),
        cursor_limit=iso_time(now() - max(grace_seconds, CURSOR_MIN_LAG_SECONDS)),
    )
    if full_pass or lease is None:
        sweep.state["full"], sweep.state["full_ahead"] = {}, {}
    sweep.run()
    return sweep.report


@dataclass
class _Walk:
    """Where a read of one shard got to: every event up to `settled` is final, parked, in the retry
    list or passed to another reader; every event up to `read` was read; `through`: the read reached
    its end (False: out of time, or stopped at a page holding an event it could not settle)."""

    settled: str | None
    read: str | None
    through: bool = False
    # The last event's received_at, and whether an event could not be settled.
    last: str | None = None
    blocked: bool = False


@dataclass
class _Sweep:
    """One pass of `redrive_stuck`. The lease state it keeps (docs/ledger.md#re-drive):
    `cursors` {shard: received_at}: every event of the shard received up to then is final, parked,
    or in `retry`; `retry` [webhook id]: events whose reconcile raised, tried first on every run
    (at most RETRY_LIMIT); `ahead` {shard: received_at}: a shard blocked by an event the full retry
    list had no room for was read on up to there (its cursor stays before the blocked event);
    `late` {shard: received_at}: the late sweep's position, LATE_HORIZON_SECONDS behind the cursors;
    `full` {shard: received_at}: a full pass under way (a shard absent: not started); `late_ahead`,
    `full_ahead`: as `ahead`, for those; `since`: when the first run started (a shard not read
    through yet lags from then); `unkeyed` {"until": received_at, "at": received_at}: the one pass
    over `Parked` for payments parked unmatched by an earlier version (no `unmatched_grace_from`),
    which starts at `until` and reads the events received up to then; `at` is how far it got (through
    once it reaches `until`)."""

    events: WebhookEventsTable
    ledger: LedgerTable
    directory: MomentDirectory | None
    now: Callable[[], float]
    time_left: Callable[[], float]
    min_seconds_left: float
    backoff_from_seconds: float | None
    grace_seconds: float
    lookup_seconds: float
    lease: HeldLease | None
    state: dict[str, Any]
    cutoff: str
    cursor_limit: str
    report: RedriveReport = field(default_factory=RedriveReport)

    def run(self) -> None:
        self.state.setdefault("since", iso_time(self.now()))
        for name in ("cursors", "ahead", "late", "late_ahead"):
            self.state[name] = dict(self.state.get(name) or {})
        if "full" in self.state:
            self.state["full"] = dict(self.state["full"] or {})
            self.state["full_ahead"] = dict(self.state.get("full_ahead") or {})
        self.state["retry"] = list(self.state.get("retry") or [])
        try:
            if not self._retry_list():
                return
            if self.lease is None:  # the operator's look: every event stored, nothing saved
                if self._full():
                    self._unmatched()
                return
            # The late sweep before the parked-unmatched step: a slow Moment stops a run inside that
            # step, and an event behind a cursor must not wait on it (a stuck one no metric counts).
            if self._shards() and self._late() and self._unmatched() and self._unkeyed():
                self._full()
        except _OutOfTime:  # an event the stream parked unmatched meanwhile, no time for Moment
            self.report.stopped_early = True
        finally:
            self._save()
            logger.set_correlation_id(None)
            self._emit_counts()

    def _out_of_time(self) -> bool:
        if self.time_left() < self.min_seconds_left:
            self.report.stopped_early = True
        return self.report.stopped_early

    def _one(self, webhook_id: str) -> bool:
        """Reconcile one event; False when it raised (logged and counted in `errors`)."""
        logger.set_correlation_id(webhook_id)
        try:
            _redrive_one(
                webhook_id,
                events=self.events,
                ledger=self.ledger,
                directory=self.directory,
                now=self.now,
                backoff_from_seconds=self.backoff_from_seconds,
                report=self.report,
                moment_time=lambda: self.time_left() >= self.lookup_seconds + self.min_seconds_left,
                grace_seconds=self.grace_seconds,
            )
        except _OutOfTime:
            raise
        except Exception as error:
            logger.exception("re-drive of one event failed")
            self.report.errors.append(f"{webhook_id}: {type(error).__name__}: {error}")
            return False
        return True

    def _retry_list(self) -> bool:
        """The events earlier runs could not finish: each leaves the list once it no longer raises."""
        waiting: list[str] = self.state["retry"]
        for webhook_id in list(waiting):
            if self._out_of_time():
                return False
            try:
                finished = self._one(webhook_id)
            except _OutOfTime:
                self.report.stopped_early = True
                return False
            if finished:
                waiting.remove(webhook_id)
        return True

    def _settle(self, webhook_id: str, received_at: str) -> bool:
        """An event still `received`: reconciled, or kept in the retry list; False when the list is
        full (the event stays where a cursor before it finds it again)."""
        if webhook_id in self.state["retry"]:
            return True  # tried at the start of this run
        return self._one(webhook_id) or self._hold(webhook_id)

    def _walk(
        self,
        shard: int,
        after: str | None,
        through: str,
        settle: Callable[[str, str], bool],
        moved: Callable[[_Walk], None],
        *,
        read_on: bool,
        consistent: bool = True,
    ) -> _Walk:
        """Read the events of one shard received in (after, through], a page at a time, and `settle`
        each one still `received`; `moved` after each page. After an event it could not settle,
        `settled` stays before it; with `read_on` the read goes on to its end, without, it stops at the
        end of that page (a blocked stretch costs a page a run, not the whole stretch)."""
        walk = _Walk(settled=after, read=after, last=after)
        for page in self.events.received_pages(shard, after, through):
            if self._out_of_time():  # the position is saved already
                return walk
            statuses = self.events.statuses([webhook_id for webhook_id, _ in page], consistent=consistent)
            self.report.read += len(page)
            if not self._page(page, statuses, settle, walk):
                moved(walk)
                return walk
            # Not past the page's last millisecond: the next page may hold more events of it.
            moved(walk)
            if walk.blocked and not read_on:
                return walk
        walk.read = through
        if not walk.blocked:
            walk.settled = through
        walk.through = True
        moved(walk)
        return walk

    def _page(
        self,
        page: list[tuple[str, str]],
        statuses: Mapping[str, str],
        settle: Callable[[str, str], bool],
        walk: _Walk,
    ) -> bool:
        """Settle the page's events still `received`; False when out of time."""
        for webhook_id, received_at in page:
            # Events received in the same millisecond may come in any order: a position moves only
            # past a whole millisecond.
            if walk.last is not None and received_at > walk.last:
                walk.read = walk.last
                if not walk.blocked:
                    walk.settled = walk.last
            walk.last = received_at
            if statuses.get(webhook_id) != EventStatus.RECEIVED:
                continue  # final, parked (unmatched: found through `Parked`), or gone (TTL)
            if self._out_of_time():
                return False
            if not settle(webhook_id, received_at):
                walk.blocked = True
        return True

    def _shards(self) -> bool:
        return all(self._shard(shard) for shard in range(UNFINISHED_SHARDS))

    def _shard(self, shard: int) -> bool:
        """Read one shard forward from its cursor; False when the run must stop (out of time)."""
        try:
            self._forward(shard, "cursors", self.cutoff, self._settle, consistent=True)
        except _OutOfTime:
            raise
        except Exception as error:  # the index or the statuses unread: this shard waits for the next run
            logger.exception("re-drive could not read a shard", extra={"shard": str(shard)})
            self.report.errors.append(f"shard u#{shard}: {type(error).__name__}: {error}")
            return True
        return not self.report.stopped_early

    def _forward(
        self,
        shard: int,
        name: str,
        through: str,
        settle: Callable[[str, str], bool],
        *,
        consistent: bool,
    ) -> None:
        """Read one shard forward from its position in `state[name]` (the cursors, the late sweep's,
        a full pass's) up to `through`. A shard blocked by an event the full retry list has no room for
        keeps its position before that event and reads on past it (`state[name + "_ahead"]`; the
        cursors' is `ahead`), so the events behind it are settled; each run reads the blocked stretch
        again from the position, at most to the end of the page that still blocks, then goes on from
        where it read to."""
        key = str(shard)
        positions: dict[str, str] = self.state[name]
        ahead: dict[str, str] = self.state[_AHEAD[name]]
        if key in ahead:
            self._walk(
                shard,
                positions.get(key) or None,
                min(ahead[key], through),
                settle,
                lambda walk: self._move(name, key, walk.settled),
                read_on=False,
                consistent=consistent,
            )
            if self.report.stopped_early:
                return
        start = ahead.get(key, positions.get(key)) or None
        if start is not None and start >= through:
            return  # read through already (a run with a shorter grace: the local stack's)
        was_blocked = key in ahead

        def moved(walk: _Walk) -> None:
            if not was_blocked:
                self._move(name, key, walk.settled)
            if was_blocked or walk.settled != walk.read:
                self._move(_AHEAD[name], key, walk.read)

        self._walk(shard, start, through, settle, moved, read_on=True, consistent=consistent)

    def _behind(self, shard: int) -> Callable[[str, str], bool]:
        """Settle an event a full pass or the late sweep reads, counting it when it lies at or behind
        its shard's cursor (no forward read will ever find it: it reached the index late)."""
        cursor = self.state["cursors"].get(str(shard))

        def settle(webhook_id: str, received_at: str) -> bool:
            if webhook_id in self.state["retry"]:
                return True
            found = self.report.found_received
            settled = self._one(webhook_id) or self._hold(webhook_id)
            if cursor is not None and received_at <= cursor and self.report.found_received > found:
                self.report.found_behind_cursor += 1
                logger.warning(
                    "an event still received lay behind its shard's cursor",
                    extra={"shard": shard, "received_at": received_at, "cursor": cursor},
                )
            return settled

        return settle

    def _late(self) -> bool:
        """The late sweep: each shard's index again, LATE_HORIZON_SECONDS behind its cursor (eventually
        consistent statuses: a stale one only shows `received`, which the event's own read corrects),
        for events that reached the index after the cursor had passed their received_at."""
        horizon = iso_time(self.now() - LATE_HORIZON_SECONDS)
        for shard in range(UNFINISHED_SHARDS):
            key = str(shard)
            cursor = self.state["cursors"].get(key)
            if cursor is None:
                continue
            try:
                self._forward(shard, "late", min(cursor, horizon), self._behind(shard), consistent=False)
            except _OutOfTime:
                raise
            except Exception as error:
                logger.exception("the late sweep could not read a shard", extra={"shard": key})
                self.report.errors.append(f"late sweep u#{shard}: {type(error).__name__}: {error}")
            if self.report.stopped_early:
                return False
        return True

    def _full(self) -> bool:
        """A pass over every shard's whole index from the start of retention, up to this run's cutoff:
        the operator's, or one under way (its position saved in the lease state until it is through).
        Eventually consistent statuses: half a read unit per stored event."""
        if "full" not in self.state:
            return True
        full: dict[str, str] = self.state["full"]
        # A position is never saved past `cursor_limit`: what lies after it the forward read finds.
        for shard in range(UNFINISHED_SHARDS):
            if full.get(str(shard), "") >= self.cursor_limit:
                continue
            try:
                self._forward(shard, "full", self.cutoff, self._behind(shard), consistent=False)
            except _OutOfTime:
                raise
            except Exception as error:
                logger.exception("a full pass could not read a shard", extra={"shard": str(shard)})
                self.report.errors.append(f"full pass u#{shard}: {type(error).__name__}: {error}")
            if self.report.stopped_early:
                return False
        if all(full.get(str(shard), "") >= self.cursor_limit for shard in range(UNFINISHED_SHARDS)):
            del self.state["full"], self.state["full_ahead"]
            self.report.full_pass_done = True
        return True

    def _hold(self, webhook_id: str) -> bool:
        """Keep an event whose reconcile raised for the next runs; False when the list is full."""
        waiting: list[str] = self.state["retry"]
        if webhook_id in waiting:
            return True
        if len(waiting) >= RETRY_LIMIT:
            return False
        waiting.append(webhook_id)
        return True

    def _move(self, name: str, key: str, done: str | None) -> None:
        """Move a position forward (never past `cursor_limit`) and save; a position that reaches its
        read-ahead mark unblocks the shard."""
        if done is None:
            return
        done = min(done, self.cursor_limit)
        positions: dict[str, str] = self.state[name]
        if done > positions.get(key, ""):
            positions[key] = done
            ahead: dict[str, str] = self.state.get(_AHEAD.get(name, ""), {})
            if key in ahead and done >= ahead[key]:
                del ahead[key]  # the blocked stretch is read through
            self._save()

    def _unmatched(self) -> bool:
        """Payments parked unmatched: with the backoff, those due (`UnmatchedDue`: their
        `unmatched_grace_from` at or before now - grace; the others are not read at all); without it
        (an operator's), every one through `Parked`. One that raises stays parked unmatched with the
        same due time, so the next run finds it again through the same index."""
        if self.backoff_from_seconds is None:
            found = self.events.parked_unmatched_ids(self.cutoff)
        else:
            found = self.events.unmatched_due_ids(self.cutoff)
        for webhook_id in found:
            if self._out_of_time():
                return False
            try:
                self._one(webhook_id)
            except _OutOfTime:
                self.report.stopped_early = True
                return False
        return True

    def _unkeyed(self) -> bool:
        """Once: the payments an earlier version parked unmatched (no `unmatched_grace_from`, so not in
        `UnmatchedDue`), through `Parked`, each tried as due; a try that leaves one unmatched parks it
        again with its due time. Starts UNKEYED_PASS_WAIT_SECONDS after the first run of this version
        and reads the events received up to then (an event received later is parked by this version);
        one read of each parked payment, then never again. One that raises joins the retry list;
        with the list full the pass stops before it until a later run."""
        if self.lease is None:
            return True  # the operator's look reads all of `Parked` already
        unkeyed: dict[str, str] = dict(self.state.get("unkeyed") or {})
        unkeyed.setdefault("until", iso_time(self.now() + UNKEYED_PASS_WAIT_SECONDS))
        self.state["unkeyed"] = unkeyed
        if unkeyed.get("at", "") >= unkeyed["until"] or iso_time(self.now()) < unkeyed["until"]:
            return True
        try:
            return self._unkeyed_pages(unkeyed)
        except _OutOfTime:
            self.report.stopped_early = True
            return False

    def _unkeyed_pages(self, unkeyed: dict[str, str]) -> bool:
        """Read the pass on from `unkeyed["at"]`, moving it (and saving) after each page."""
        last = unkeyed.get("at")
        for page in self.events.parked_unmatched_pages(last, unkeyed["until"]):
            for webhook_id, received_at in page:
                # A position moves only past a whole millisecond (as a cursor's: `_page`).
                if last is not None and received_at > last:
                    unkeyed["at"] = last
                last = received_at
                if self._out_of_time():
                    return False
                if webhook_id in self.state["retry"]:
                    continue  # tried at the start of this run
                if not (self._one(webhook_id) or self._hold(webhook_id)):
                    return True  # the retry list is full: from `at` again next run
            self._save()
        unkeyed["at"] = unkeyed["until"]
        return True

    def _save(self) -> None:
        # A deep copy: the lease keeps what it saved, and this sweep goes on changing its own lists.
        if self.lease is not None and dict(self.lease.state) != self.state:
            self.lease.save(copy.deepcopy(self.state))

    def _emit_counts(self) -> None:
        now = self.now()
        since = _seconds(str(self.state["since"]))
        cursors = self.state["cursors"]
        oldest = min(
            (_seconds(cursors[str(shard)]) if str(shard) in cursors else since)
            for shard in range(UNFINISHED_SHARDS)
        )
        self.report.cursor_lag_seconds = max(0.0, round(now - oldest, 3))
        self.report.retry_list = len(self.state["retry"])
        self.report.blocked_shards = len(self.state["ahead"])
        # Watched by alarms (docs/operations.md#redrive-cursor-behind, #redrive-retry-list-not-draining).
        if self.lease is not None:
            metrics.add_metric(
                name="RedriveCursorLagSeconds", unit=MetricUnit.Seconds, value=self.report.cursor_lag_seconds
            )
            metrics.add_metric(
                name="RedriveRetryListLength", unit=MetricUnit.Count, value=self.report.retry_list
            )
        _count_run(self.report)


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def found_by_redrive(event: Mapping[str, Any], state: Mapping[str, Any]) -> bool:
    """Whether the scheduled re-drive, with this lease `state`, will still look at an event that is not
    final: received after its shard's cursor, at or behind it but not yet passed by the late sweep or
    a full pass under way, in the retry list, or parked unmatched: with a due time (through
    `UnmatchedDue`), or without (parked by an earlier version) before the one pass over `Parked` for
    those is through. The invariant (docs/ledger.md#re-drive): every event is final or found so."""
    if event.get("status") == EventStatus.PARKED:
        if event.get("parked_reason") != ParkReason.UNMATCHED:
            return False
        if event.get("unmatched_grace_from") or event.get("webhook_id") in (state.get("retry") or []):
            return True
        # Parked by an earlier version: the one pass over `Parked` reads it unless it has passed it.
        unkeyed = state.get("unkeyed") or {}
        at = str(unkeyed.get("at") or "")
        return at < str(unkeyed.get("until") or "~") and str(event.get("received_at")) > at
    if event.get("status") != EventStatus.RECEIVED:
        return False
    if event.get("webhook_id") in (state.get("retry") or []):
        return True
    shard = str(event.get("unfinished_shard", "")).removeprefix("u#")
    if not shard:
        return False
    received_at = str(event.get("received_at"))
    cursor = (state.get("cursors") or {}).get(shard)
    # Past the cursor: the forward read. At or behind it (it reached the index late): the late sweep,
    # until its position passes it, or a full pass under way.
    late = (state.get("late") or {}).get(shard)
    full = state.get("full")
    return (
        cursor is None
        or received_at > str(cursor)
        or late is None
        or received_at > str(late)
        or (full is not None and received_at > str(full.get(shard) or ""))
    )


def unmatched_retry_due(event: dict[str, Any], backoff_from_seconds: float) -> float:
    """When an event parked unmatched is next worth a try (Unix seconds): `backoff_from_seconds` after
    its `unmatched_grace_from`, which its parking wrote (`reconciler.unmatched_wait_seconds`: the
    grace after the first parking, doubling with each try since, at most MAX_BACKOFF_SECONDS), the
    same time `UnmatchedDue` finds it at. One parked by an earlier version has none: due now."""
    grace_from = event.get("unmatched_grace_from")
    if not grace_from:
        return float("-inf")
    return _seconds(str(grace_from)) + backoff_from_seconds


def redrive(
    webhook_ids: Iterable[str],
    *,
    events: WebhookEventsTable,
    ledger: LedgerTable,
    directory: MomentDirectory | None,
    now: Callable[[], float],
    time_left: Callable[[], float] = lambda: float("inf"),
    min_seconds_left: float = 5.0,
    backoff_from_seconds: float | None = None,
    lookup_seconds: float = 0.0,
) -> RedriveReport:
    """Reconcile the given events again (final ones are left alone); stop before the time runs out.
    With `backoff_from_seconds`, an unmatched event is left alone until `unmatched_retry_due`.
    `lookup_seconds` is the worst case of an unmatched event's questions to Moment (LOOKUPS_PER_EVENT
    calls): one is asked only while that much time is left, besides `min_seconds_left` for the ledger."""
    report = RedriveReport()
    for webhook_id in webhook_ids:
        if time_left() < min_seconds_left:
            report.stopped_early = True
            break
        logger.set_correlation_id(webhook_id)
        try:  # the read too: one bad event must not stop the others
            _redrive_one(
                webhook_id,
                events=events,
                ledger=ledger,
                directory=directory,
                now=now,
                backoff_from_seconds=backoff_from_seconds,
                report=report,
                moment_time=lambda: time_left() >= lookup_seconds + min_seconds_left,
                grace_seconds=backoff_from_seconds or 0.0,
            )
        except _OutOfTime:
            report.stopped_early = True
            break
        except Exception as error:
            logger.exception("re-drive of one event failed")
            report.errors.append(f"{webhook_id}: {type(error).__name__}: {error}")
    logger.set_correlation_id(None)
    _count_run(report)
    return report


def _count_run(report: RedriveReport) -> None:
    metrics.add_metric(name="RedriveExamined", unit=MetricUnit.Count, value=report.examined)
    # Watched by an alarm (docs/operations.md#events-still-received): every event should end final.
    metrics.add_metric(name="RedriveFoundReceived", unit=MetricUnit.Count, value=report.found_received)
    metrics.add_metric(name="RedriveErrors", unit=MetricUnit.Count, value=len(report.errors))
    # Watched by an alarm (docs/operations.md#redrive-found-behind-cursor): the cursor passed them.
    metrics.add_metric(
        name="RedriveFoundBehindCursor", unit=MetricUnit.Count, value=report.found_behind_cursor
    )


def _redrive_one(
    webhook_id: str,
    *,
    events: WebhookEventsTable,
    ledger: LedgerTable,
    directory: MomentDirectory | None,
    now: Callable[[], float],
    backoff_from_seconds: float | None,
    report: RedriveReport,
    moment_time: Callable[[], bool] = lambda: True,
    grace_seconds: float = 0.0,
) -> None:
    """`grace_seconds`: the re-drive's, from which a try that leaves the payment unmatched backs off."""
    event = events.get(webhook_id)
    if event is None or event.get("status") not in {EventStatus.RECEIVED, EventStatus.PARKED}:
        return
    unmatched = event.get("reason") == ParkReason.UNMATCHED
    if (
        unmatched
        and backoff_from_seconds is not None
        and unmatched_retry_due(event, backoff_from_seconds) > now()
    ):
        report.not_due += 1
        return
    if unmatched and directory is not None and not moment_time():
        raise _OutOfTime  # left unexamined for the next run, which starts with it
    report.examined += 1
    if event.get("status") == EventStatus.RECEIVED:
        report.found_received += 1
    body = event.get("body")
    if event.get("reason") == ParkReason.INVALID and isinstance(body, bytes):
        # Parked invalid, and the body is still here: today's code may read it better (a fix deployed
        # since). The summary is stated again from it, and the decision still comes from the summary.
        restated = read_envelope(body)
        if restated != envelope_of(event):
            event = events.restate_summary(webhook_id, restated) or event
    linked = None
    if unmatched and directory is not None:
        linked = _link_from_moment(event, ledger=ledger, directory=directory, report=report, now=now)
    report.count(reconcile_event(event, ledger=ledger, events=events, now=now, grace_seconds=grace_seconds))
    if linked is not None:
        redrive_linked(linked, events=events, ledger=ledger, now=now, report=report)


def redrive_linked(
    moment_id: str,
    *,
    events: WebhookEventsTable,
    ledger: LedgerTable,
    now: Callable[[], float],
    report: RedriveReport | None = None,
) -> RedriveReport:
    """A Moment id was just linked (by adoption, by this re-drive, or by an operator): reconcile at once
    every payment parked unmatched that names it, without waiting for its backoff. Until they are
    applied, a first push to that object could erase them (docs/pusher.md#windows)."""
    report = report or RedriveReport()
    for webhook_id in events.unmatched_naming(moment_id):
        event = events.get(webhook_id)
        if event is None or event.get("reason") != ParkReason.UNMATCHED:
            continue
        try:
            report.count(reconcile_event(event, ledger=ledger, events=events, now=now))
            report.examined += 1
        except Exception as error:  # the others still go; what is left waits for the scheduled re-drive
            logger.exception(
                "re-drive of a payment naming a linked id failed", extra={"moment_id": moment_id}
            )
            report.errors.append(f"{webhook_id}: {type(error).__name__}: {error}")
    return report


def _owned_as_in_ledger(
    head: dict[str, Any], account_id: str, ledger: LedgerTable, directory: MomentDirectory
) -> bool:
    """Moment's account belongs to the ledger account's customer: its linked Moment id, or (not linked
    yet) the Moment customer with the ledger customer's reference."""
    customer_id, customer_reference = directory.account_owner(account_id)
    customer = ledger.get_head(BalanceRef(BalanceKind.CUSTOMER, str(head.get("customer_ref")))) or {}
    linked = customer.get("moment_id")
    return bool(customer_id == linked) if linked else customer_reference == head.get("customer_ref")


def _pending_at(head: dict[str, Any], now: Callable[[], float]) -> float | None:
    """A tracked balance never pushed is made pending by its link, so the pusher compares it with
    Moment (and holds an object whose balance differs for an operator)."""
    return now() if "version" in head and "pushed_version" not in head else None


def _link_from_moment(
    event: dict[str, Any],
    *,
    ledger: LedgerTable,
    directory: MomentDirectory,
    report: RedriveReport,
    now: Callable[[], float],
) -> str | None:
    """Link the Moment id an unmatched payment names when Moment says whose it is; the id, if linked."""
    decision = decide(envelope_of(event))
    if isinstance(decision, BillPaymentApplication):
        return _link_bill_from_moment(decision.bill_id, ledger=ledger, directory=directory, report=report)
    if not isinstance(decision, PaymentApplication) or ledger.resolve_moment_id(decision.moment_id):
        return None
    reference = directory.external_reference(decision.target_kind, decision.moment_id)
    if reference is None:
        return None
    balance = BalanceRef(decision.target_kind, reference)
    head = ledger.get_head(balance)
    if head is None:
        logger.info(
            "Moment knows this id, but the ledger has no such reference",
            extra={"moment_id": decision.moment_id, "reference": reference},
        )
        return None
    if balance.kind is BalanceKind.ACCOUNT and not _owned_as_in_ledger(
        head, decision.moment_id, ledger, directory
    ):
        logger.warning(
            "Moment's account with this reference belongs to another customer; left for an operator",
            extra={"moment_id": decision.moment_id, "reference": reference},
        )
        return None
    try:
        ledger.link_moment_id(balance, decision.moment_id, pending_at=_pending_at(head, now))
    except MappingConflict:
        logger.warning(
            "Moment's reference is linked to another Moment id; left for an operator",
            extra={"moment_id": decision.moment_id, "reference": reference},
        )
        return None
    report.linked.append(f"{decision.moment_id} -> {balance}")
    logger.info(
        "linked a Moment id from Moment's own record",
        extra={"moment_id": decision.moment_id, "reference": reference},
    )
    return decision.moment_id


def _link_bill_from_moment(
    bill_id: str, *, ledger: LedgerTable, directory: MomentDirectory, report: RedriveReport
) -> str | None:
    """Link an unmatched bill id when Moment's bill is the ledger's own: the same reference, currency
    and amount_due, on the owner the ledger links (when it links one). Anything else is left for an
    operator: linking another bill would apply its payments here."""
    if not isinstance(directory, BillDirectory) or ledger.resolve_bill_id(bill_id):
        return None
    record = directory.bill(bill_id)
    if record is None:
        return None
    bill = BillRef(record.external_reference)
    head = ledger.get_bill(bill)
    fields = {"moment_id": bill_id, "reference": record.external_reference}
    if head is None:
        logger.info("Moment knows this bill, but the ledger has no such reference", extra=fields)
        return None
    owner = ledger.get_head(BalanceRef(BalanceKind(str(head["owner_kind"])), str(head["owner_ref"]))) or {}
    moment_owner = record.account_id if head["owner_kind"] == BalanceKind.ACCOUNT else record.customer_id
    if (record.currency, record.amount_due) != (head.get("currency"), head.get("amount_due")) or (
        owner.get("moment_id") and owner.get("moment_id") != moment_owner
    ):
        logger.warning(
            "Moment's bill with this reference is not the ledger's; left for an operator", extra=fields
        )
        return None
    try:
        ledger.link_bill(bill, bill_id)
    except MappingConflict:
        logger.warning("the bill is linked to another Moment id; left for an operator", extra=fields)
        return None
    report.linked.append(f"{bill_id} -> {bill}")
    logger.info("linked a Moment bill id from Moment's own record", extra=fields)
    return bill_id
