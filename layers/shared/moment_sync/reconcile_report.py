"""Does Moment show what the ledger shows? Every linked balance compared with Moment's, one GET each,
rate-limited. Used by the operator's `reconcile-report` and by the daily scheduled check, whose
`ReconcileDifferences` metric an alarm watches. The scheduled check (`DailyCheck`) goes over the linked
balances in one pass that continues across runs, so it scales to any number of them
(docs/performance.md#the-daily-check).

A difference is explained while the balance is still pending a push (the pusher has not caught up, or
Moment's balance is the last push less payments the ledger has reconciled); anything else is
unexplained: Moment and the ledger disagree and nothing in flight will fix it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from moment_sync.adapters.ledger_table import LedgerTable
from moment_sync.bill_report import BillComparison, compare_bill
from moment_sync.leases import HeldLease
from moment_sync.ledger.bills import BillRef
from moment_sync.ledger.model import BalanceKind, BalanceRef
from moment_sync.ledger.sync import sync_state
from moment_sync.moment_client import MomentClient
from moment_sync.moment_errors import MomentError, MomentNotFound
from moment_sync.observability import MetricUnit, logger, metrics


@dataclass(frozen=True, slots=True)
class Comparison:
    balance: BalanceRef
    ledger_balance: int | None
    moment_balance: int | None
    sync: str
    explained: bool
    note: str

    @property
    def agrees(self) -> bool:
        return self.ledger_balance == self.moment_balance


def compare(
    ledger: LedgerTable,
    moment: MomentClient,
    balances: Iterable[BalanceRef] | None = None,
    *,
    calls_per_second: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    on_each: Callable[[int], None] | None = None,
) -> list[Comparison]:
    """Compare the given balances (default: every balance linked to Moment) with Moment's;
    `on_each` is told how many are done after each (the CLI's progress)."""
    found = []
    pause = 1.0 / calls_per_second if calls_per_second > 0 else 0.0
    for number, balance in enumerate(balances if balances is not None else ledger.linked_balances()):
        if number and pause:
            sleep(pause)
        comparison = _compare_one(ledger, moment, balance)
        if comparison is not None:
            found.append(comparison)
        if on_each is not None:
            on_each(number + 1)
    unexplained = sum(not comparison.explained for comparison in found)
    metrics.add_metric(name="ReconcileChecked", unit=MetricUnit.Count, value=len(found))
    metrics.add_metric(name="ReconcileDifferences", unit=MetricUnit.Count, value=unexplained)
    return found


def _compare_one(ledger: LedgerTable, moment: MomentClient, balance: BalanceRef) -> Comparison | None:
    head = ledger.get_head(balance)
    if head is None:
        return Comparison(balance, None, None, "-", False, "not in the ledger")
    if "version" not in head:
        return None  # a customer on the account-balance model: its accounts carry the balances
    state = sync_state(head)
    ledger_balance = head.get("balance")
    if not head.get("moment_id"):
        pending = state != "synced"
        return Comparison(balance, ledger_balance, None, state, pending, "not created on Moment yet")
    try:
        moment_object = (
            moment.get_account(head["moment_id"])
            if balance.kind is BalanceKind.ACCOUNT
            else moment.get_customer(head["moment_id"])
        )
    except MomentNotFound:
        missing = f"{head['moment_id']} is missing on Moment"
        return Comparison(balance, ledger_balance, None, state, False, missing)
    except MomentError as error:
        return Comparison(balance, ledger_balance, None, state, False, f"Moment could not be read: {error}")
    moment_balance = moment_object.balance
    if moment_balance == ledger_balance:
        return Comparison(balance, ledger_balance, moment_balance, state, True, "agrees")
    if state == "pending":
        return Comparison(balance, ledger_balance, moment_balance, state, True, "a push is pending")
    return Comparison(balance, ledger_balance, moment_balance, state, False, f"differs while {state}")


# --- The scheduled check: one pass over every linked balance, continued across runs ---------------------

# The lease a daily-check run holds (leases.py); it also keeps the pass's cursor between runs.
DAILY_CHECK_LEASE = "daily-check"
# The cursor and the pass's counts are written back after each page, and once more at the end of the
# run: a killed run re-checks at most one page.
PAGE_SIZE = 100
# DynamoDB's part after the last Moment call of a run (saving the cursor), with room for retries.
SAVE_SECONDS = 5.0


@dataclass
class CheckRun:
    """What one run of the scheduled check did."""

    comparisons: list[Comparison | BillComparison] = field(default_factory=list)
    pass_started: bool = False
    pass_completed: bool = False
    stopped_early: bool = False  # the time budget ran out: the next run continues from the cursor
    not_due: bool = False  # the last pass completed less than `pass_every_seconds` ago

    @property
    def unexplained(self) -> list[Comparison | BillComparison]:
        return [comparison for comparison in self.comparisons if not comparison.explained]

    @property
    def blocked_bills(self) -> list[BillComparison]:
        """Bills whose outside payments are held back (`blocked`): stuck, counted on their own."""
        return [c for c in self.comparisons if isinstance(c, BillComparison) and c.blocked]


@dataclass
class DailyCheck:
    """Compares every linked balance and bill with Moment's, at most `calls_per_second`, in one pass that runs
    continue across (the cursor lives in the lease's state); a new pass starts `pass_every_seconds`
    after the last one started. Each balance is checked only while the run has time for the worst
    case of its one Moment call (the client's worst_call_seconds), the pause and saving the cursor."""

    ledger: LedgerTable
    moment: MomentClient
    now: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    calls_per_second: float = 5.0
    pass_every_seconds: float = 86400.0
    page_size: int = PAGE_SIZE

    @property
    def pause(self) -> float:
        return 1.0 / self.calls_per_second if self.calls_per_second > 0 else 0.0

    @property
    def seconds_per_balance(self) -> float:
        return self.moment.worst_call_seconds + self.pause + SAVE_SECONDS

    def run(self, lease: HeldLease, time_left: Callable[[], float]) -> CheckRun:
        state = dict(lease.state)
        run = CheckRun()
        if not state.get("in_pass"):
            if self.now() < float(state.get("pass_started_at", 0)) + self.pass_every_seconds:
                run.not_due = True
                return self._counted(run, state)
            state = {**state, "in_pass": True, "pass_started_at": int(self.now()), "cursor": None}
            state.update(pass_checked=0, pass_unexplained=0)
            run.pass_started = True
        last_call: float | None = None
        while True:
            page, next_page = self.ledger.linked_balances_page(state.get("cursor"), self.page_size)
            for balance, key in page:
                if time_left() < self.seconds_per_balance:
                    run.stopped_early = True
                    lease.save(state)
                    return self._counted(run, state)
                if last_call is not None:
                    # Paced, not paused: Moment's own latency counts toward the interval.
                    self.sleep(max(0.0, last_call + self.pause - self.now()))
                last_call = self.now()
                comparison: Comparison | BillComparison | None = (
                    compare_bill(self.ledger, self.moment, balance)
                    if isinstance(balance, BillRef)
                    else _compare_one(self.ledger, self.moment, balance)
                )
                state["cursor"] = key
                if comparison is not None:
                    run.comparisons.append(comparison)
                    state["pass_checked"] = int(state["pass_checked"]) + 1
                    state["pass_unexplained"] = int(state["pass_unexplained"]) + (not comparison.explained)
            if next_page is None:
                break
            state["cursor"] = next_page
            lease.save(state)
        run.pass_completed = True
        state.update(in_pass=False, cursor=None, last_pass_completed_at=int(self.now()))
        state["last_pass_seconds"] = state["last_pass_completed_at"] - int(state["pass_started_at"])
        lease.save(state)
        return self._counted(run, state)

    @staticmethod
    def _counted(run: CheckRun, state: dict[str, Any]) -> CheckRun:
        # Every run counts (0 included): the daily-reconcile-not-running alarm watches for runs.
        metrics.add_metric(name="ReconcileChecked", unit=MetricUnit.Count, value=len(run.comparisons))
        metrics.add_metric(name="ReconcileDifferences", unit=MetricUnit.Count, value=len(run.unexplained))
        metrics.add_metric(name="ReconcileBillsBlocked", unit=MetricUnit.Count, value=len(run.blocked_bills))
        if run.pass_completed:
            metrics.add_metric(name="ReconcilePassCompleted", unit=MetricUnit.Count, value=1)
            logger.info(
                "a full pass of the daily check completed",
                extra={
                    "checked": state.get("pass_checked"),
                    "unexplained": state.get("pass_unexplained"),
                    "seconds": state.get("last_pass_seconds"),
                },
            )
        return run
