"""Does Moment show each bill as the ledger does? Every bill linked to Moment compared with Moment's
(`amount_due`, `currency`, `amount_paid`, voided or not), one GET each, rate-limited. Used by the
operator's `reconcile-report` and the daily check beside the balances (docs/ledger.md#bills).

A difference is explained while the bill is pending a push (outside payments or a void not at Moment
yet, or the bill not created there yet); anything else is unexplained and counted in
`ReconcileDifferences`, the metric the daily check's alarm watches. A `blocked` bill is stuck, not
pending (nothing is sent until an operator acts): always unexplained, and counted on its own in
`ReconcileBillsBlocked` (docs/operations.md#bills-blocked-at-the-daily-check).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from moment_sync.adapters.ledger_table import LedgerTable
from moment_sync.ledger.bills import BillRef, BillStatus
from moment_sync.ledger.sync import sync_state
from moment_sync.moment_client import MomentClient
from moment_sync.moment_errors import MomentError
from moment_sync.observability import MetricUnit, metrics


@dataclass(frozen=True, slots=True)
class BillComparison:
    bill: BillRef
    ledger_paid: int | None
    moment_paid: int | None
    ledger_status: str | None
    moment_status: str | None
    sync: str
    explained: bool
    note: str

    @property
    def agrees(self) -> bool:
        return (self.ledger_paid, self.ledger_status) == (self.moment_paid, self.moment_status)

    @property
    def blocked(self) -> bool:
        return self.sync == "blocked"


def compare_bills(
    ledger: LedgerTable,
    moment: MomentClient,
    bills: Iterable[BillRef] | None = None,
    *,
    calls_per_second: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    on_each: Callable[[int], None] | None = None,
) -> list[BillComparison]:
    """Compare the given bills (default: every bill linked to Moment) with Moment's."""
    found = []
    pause = 1.0 / calls_per_second if calls_per_second > 0 else 0.0
    for number, bill in enumerate(bills if bills is not None else ledger.linked_bills()):
        if number and pause:
            sleep(pause)
        found.append(compare_bill(ledger, moment, bill))
        if on_each is not None:
            on_each(number + 1)
    metrics.add_metric(name="ReconcileBillsChecked", unit=MetricUnit.Count, value=len(found))
    metrics.add_metric(
        name="ReconcileDifferences", unit=MetricUnit.Count, value=sum(not c.explained for c in found)
    )
    blocked = sum(comparison.blocked for comparison in found)
    metrics.add_metric(name="ReconcileBillsBlocked", unit=MetricUnit.Count, value=blocked)
    return found


def compare_bill(ledger: LedgerTable, moment: MomentClient, bill: BillRef) -> BillComparison:
    """One linked bill against Moment's (the daily check's pass calls it for the bills it meets)."""
    head = ledger.get_bill(bill)
    if head is None:
        return BillComparison(bill, None, None, None, None, "-", False, "not in the ledger")
    state = sync_state(head)
    paid, status = int(head.get("amount_paid", 0)), str(head["status"])
    # Only a push on its way explains a difference; blocked, conflict or failing wait for an operator.
    pending = state == "pending"
    if not head.get("moment_id"):
        return BillComparison(bill, paid, None, status, None, state, pending, "not created on Moment yet")
    try:
        seen = moment.get_bill(str(head["moment_id"]))
    except MomentError as error:
        return BillComparison(
            bill, paid, None, status, None, state, False, f"Moment could not be read: {error}"
        )
    if seen is None:
        return BillComparison(
            bill, paid, None, status, None, state, False, f"{head['moment_id']} is missing on Moment"
        )
    moment_status = str(seen.status)
    comparison = BillComparison(bill, paid, seen.amount_paid, status, moment_status, state, True, "agrees")
    if (seen.amount_due, seen.currency) != (head["amount_due"], head["currency"]):
        # Neither can change on either side: something else holds this id.
        note = (
            f"Moment's bill is {seen.amount_due} {seen.currency}, "
            f"the ledger's {head['amount_due']} {head['currency']}"
        )
        return _with(comparison, False, note)
    if comparison.blocked:
        # Even where the figures agree: an outside payment is held back and will not reach Moment.
        return _with(comparison, False, f"blocked: {head.get('push_blocked', '')}")
    if comparison.agrees:
        return comparison
    if pending:
        return _with(comparison, True, "a push is pending")
    if status == BillStatus.VOIDED and moment_status == BillStatus.VOIDED:
        return _with(comparison, True, "voided on both sides")
    return _with(comparison, False, f"differs while {state}")


def _with(comparison: BillComparison, explained: bool, note: str) -> BillComparison:
    return BillComparison(
        comparison.bill,
        comparison.ledger_paid,
        comparison.moment_paid,
        comparison.ledger_status,
        comparison.moment_status,
        comparison.sync,
        explained,
        note,
    )
