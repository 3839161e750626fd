"""Does Moment show what the ledger shows? Every linked balance compared with Moment's, one GET each,
rate-limited. Used by the operator's `reconcile-report` and by the daily scheduled check, whose
`ReconcileDifferences` metric an alarm watches.

A difference is explained while the balance is still pending a push (the pusher has not caught up, or
Moment's balance is the last push less payments the ledger has reconciled); anything else is
unexplained: Moment and the ledger disagree and nothing in flight will fix it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from moment_sync.adapters.ledger_table import LedgerTable
from moment_sync.ledger.model import BalanceKind, BalanceRef
from moment_sync.ledger.sync import sync_state
from moment_sync.moment_client import MomentClient
from moment_sync.moment_errors import MomentError, MomentNotFound
from moment_sync.observability import MetricUnit, metrics


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
