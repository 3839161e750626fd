"""The reconciler's use case: turn one stored webhook into its final status, applying a payment
to the ledger exactly once.

Called by the stream handler for each INSERT, and by the re-drive for events still unfinished;
both are safe to repeat because the ledger refuses a second entry for the same application.
This module never calls Moment: a Moment outage must not block a stream shard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moment_sync.adapters.ledger_bills import BillTransient, BillWriteOutcome
from moment_sync.adapters.ledger_table import (
    AppliedApplication,
    LedgerTable,
    PaymentOutcome,
    TransientLedgerError,
)
from moment_sync.adapters.webhook_events_table import WebhookEventsTable, envelope_of, iso_time
from moment_sync.ledger.bills import BillEntry, BillEntryKind, BillRef, amount_overpaid, is_bill_key
from moment_sync.ledger.model import BalanceRef, Entry, EntryKind
from moment_sync.observability import MetricUnit, logger, metrics, payment_line
from moment_sync.reconciliation import (
    BillPaymentApplication,
    EventStatus,
    Ignore,
    Park,
    ParkReason,
    PaymentApplication,
    decide,
)

# A payment that stays unmatched is tried by the scheduled re-drive at most this far apart.
MAX_BACKOFF_SECONDS = 6 * 3600


def unmatched_wait_seconds(attempts: int, grace_seconds: float) -> float:
    """How much longer than the re-drive's grace a payment parked unmatched for the `attempts`-th time
    waits for its next try: the grace doubled for each try before this parking, at most
    MAX_BACKOFF_SECONDS in all (the first parking waits the grace alone)."""
    delay = grace_seconds * float(2 ** min(max(attempts, 1) - 1, 32))
    return max(0.0, min(delay, MAX_BACKOFF_SECONDS) - grace_seconds)


@dataclass(frozen=True, slots=True)
class Reconciled:
    webhook_id: str
    status: EventStatus
    reason: ParkReason | None = None
    entry_id: str | None = None
    # False when the event had already reached a final status (a redelivered stream record).
    changed: bool = True


def reconcile_event(
    event: dict[str, Any],
    *,
    ledger: LedgerTable,
    events: WebhookEventsTable,
    now: Callable[[], float],
    grace_seconds: float = 0.0,
) -> Reconciled:
    """`event` is the stored item as plain values (webhook_id, the summary, …). The decision comes
    from the stored summary alone: a body erased by `forget` changes nothing. `grace_seconds`: the
    scheduled re-drive's, which backs off from a payment left unmatched again (0, the stream's and
    any other caller's: tried again the re-drive's grace after this parking, whatever tries came
    before; `redrive_attempts` still counts them)."""
    webhook_id = str(event["webhook_id"])
    # Parked unmatched now, it would be so for the (redrive_attempts + 1)-th time.
    wait = unmatched_wait_seconds(int(event.get("redrive_attempts") or 0) + 1, grace_seconds)
    decision = decide(envelope_of(event))
    if isinstance(decision, Ignore):
        changed = events.finish(webhook_id, EventStatus.IGNORED, now(), ignored_type=decision.event_type)
        metrics.add_metric(name="EventIgnored", unit=MetricUnit.Count, value=1)
        logger.info("event ignored", extra={"event_type": decision.event_type})
        return Reconciled(webhook_id, EventStatus.IGNORED, changed=changed)
    if isinstance(decision, Park):
        return _park(events, webhook_id, decision, now, wait=wait)
    if isinstance(decision, BillPaymentApplication):
        return _apply_bill_payment(decision, webhook_id, ledger=ledger, events=events, now=now, wait=wait)
    return _apply_payment(decision, webhook_id, ledger=ledger, events=events, now=now, wait=wait)


def _apply_payment(
    payment: PaymentApplication,
    webhook_id: str,
    *,
    ledger: LedgerTable,
    events: WebhookEventsTable,
    now: Callable[[], float],
    wait: float,
) -> Reconciled:
    log_fields = {
        "application_id": payment.application_id,
        "payment_id": payment.payment_id,
        "moment_id": payment.moment_id,
    }
    balance = ledger.resolve_moment_id(payment.moment_id)
    if balance is None or balance.kind is not payment.target_kind:
        detail = f"no {payment.target_kind.value} in the ledger is linked to {payment.moment_id}"
        return _park(events, webhook_id, Park(ParkReason.UNMATCHED, detail), now, log_fields, wait=wait)

    moment = now()
    entry = Entry(
        kind=EntryKind.PAYMENT,
        amount=-payment.amount,
        source_id=payment.application_id,
        source={
            "webhook_id": webhook_id,
            "application_id": payment.application_id,
            "payment_id": payment.payment_id or "",
            "moment_id": payment.moment_id,
        },
        created_at=iso_time(moment),
    )
    result = ledger.apply_payment(balance, entry, payment.currency, webhook_id, moment)
    log_fields |= {"reference": balance.ref, "balance_kind": balance.kind.value, "entry_id": entry.entry_id}

    if result.outcome is PaymentOutcome.APPLIED:
        _finish_applied(events, webhook_id, entry.entry_id, balance.partition_key, moment)
        # Every payment writes this line: the short one (no moment_id: the entry's source keeps it).
        payment_line("payment applied", **_applied_fields(log_fields, payment.amount, payment.currency))
        metrics.add_metric(name="PaymentApplied", unit=MetricUnit.Count, value=1)
        _count_amount(payment)
        return Reconciled(webhook_id, EventStatus.APPLIED, entry_id=entry.entry_id)
    if result.outcome is PaymentOutcome.DUPLICATE:
        if result.applied_by_webhook == webhook_id:
            # This very event applied it before (a redelivered record, or a crash before its status).
            changed = _finish_applied(events, webhook_id, entry.entry_id, balance.partition_key, moment)
            return Reconciled(webhook_id, EventStatus.APPLIED, entry_id=entry.entry_id, changed=changed)
        changed = events.finish(
            webhook_id,
            EventStatus.DUPLICATE,
            moment,
            entry_id=entry.entry_id,
            duplicate_of=result.applied_by_webhook or "unknown",
        )
        logger.info(
            "payment already applied", extra={**log_fields, "duplicate_of": result.applied_by_webhook}
        )
        metrics.add_metric(name="PaymentDuplicate", unit=MetricUnit.Count, value=1)
        return Reconciled(webhook_id, EventStatus.DUPLICATE, entry_id=entry.entry_id, changed=changed)
    if result.outcome is PaymentOutcome.CURRENCY_MISMATCH:
        detail = f"payment in {payment.currency}, but {balance} is kept in {result.balance_currency}"
        return _park(events, webhook_id, Park(ParkReason.CURRENCY_MISMATCH, detail), now, log_fields)
    if result.outcome is PaymentOutcome.NOT_TRACKED:
        detail = f"{balance} is on the account-balance model and carries no balance of its own"
        return _park(events, webhook_id, Park(ParkReason.UNSUPPORTED, detail), now, log_fields)
    if result.outcome is PaymentOutcome.APPLICATION_CONFLICT and result.applied_as is not None:
        this = f"{balance} with {payment.amount} {payment.currency}"
        return _park_conflict(
            events, ledger, webhook_id, payment.application_id, result.applied_as, this, now, log_fields
        )
    detail = f"{payment.moment_id} is linked to {balance}, which is not in the ledger"
    return _park(events, webhook_id, Park(ParkReason.UNMATCHED, detail), now, log_fields, wait=wait)


def _apply_bill_payment(
    payment: BillPaymentApplication,
    webhook_id: str,
    *,
    ledger: LedgerTable,
    events: WebhookEventsTable,
    now: Callable[[], float],
    wait: float,
) -> Reconciled:
    """A payment Moment applied to a bill: raises that bill's amount_paid once per application id (the
    guard is ledger-wide, across bills and balances); never changes a balance (docs/ledger.md#bills)."""
    log_fields = {
        "application_id": payment.application_id,
        "payment_id": payment.payment_id,
        "moment_id": payment.bill_id,
    }
    bill = ledger.resolve_bill_id(payment.bill_id)
    if bill is None:
        detail = f"no bill in the ledger is linked to {payment.bill_id}"
        return _park(events, webhook_id, Park(ParkReason.UNMATCHED, detail), now, log_fields, wait=wait)
    moment = now()
    entry = BillEntry(
        kind=BillEntryKind.PAYMENT,
        amount=payment.amount,
        source_id=payment.application_id,
        source={
            "webhook_id": webhook_id,
            "application_id": payment.application_id,
            "payment_id": payment.payment_id or "",
            "moment_id": payment.bill_id,
        },
        created_at=iso_time(moment),
    )
    try:
        result = ledger.apply_bill_payment(bill, entry, payment.currency, webhook_id, moment)
    except BillTransient as busy:  # a batch item failure: the stream retries it
        raise TransientLedgerError(str(busy)) from busy
    log_fields |= {"reference": bill.ref, "balance_kind": "bill", "entry_id": entry.entry_id}
    guard = result.guard or {}
    if result.outcome is BillWriteOutcome.APPLIED:
        _finish_applied(events, webhook_id, entry.entry_id, bill.partition_key, moment)
        payment_line("bill payment applied", **_applied_fields(log_fields, payment.amount, payment.currency))
        metrics.add_metric(name="PaymentApplied", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="BillPaymentApplied", unit=MetricUnit.Count, value=1)
        metrics.add_metric(
            name=f"AmountApplied_{payment.currency}", unit=MetricUnit.Count, value=payment.amount
        )
        if result.head is not None and amount_overpaid(result.head) > 0:
            # Moment's payment_rules allowed more than was due: kept visible, counted.
            logger.warning(
                "bill overpaid", extra={**log_fields, "amount_overpaid": amount_overpaid(result.head)}
            )
            metrics.add_metric(name="BillOverpaid", unit=MetricUnit.Count, value=1)
        return Reconciled(webhook_id, EventStatus.APPLIED, entry_id=entry.entry_id)
    if result.outcome is BillWriteOutcome.DUPLICATE:
        first = guard.get("webhook_id")
        if first == webhook_id:
            changed = _finish_applied(events, webhook_id, entry.entry_id, bill.partition_key, moment)
            return Reconciled(webhook_id, EventStatus.APPLIED, entry_id=entry.entry_id, changed=changed)
        changed = events.finish(
            webhook_id,
            EventStatus.DUPLICATE,
            moment,
            entry_id=entry.entry_id,
            duplicate_of=first or "unknown",
        )
        metrics.add_metric(name="PaymentDuplicate", unit=MetricUnit.Count, value=1)
        return Reconciled(webhook_id, EventStatus.DUPLICATE, entry_id=entry.entry_id, changed=changed)
    if result.outcome is BillWriteOutcome.APPLICATION_CONFLICT:
        target = str(guard.get("balance_pk", ""))
        claimed = AppliedApplication(
            BillRef.from_partition_key(target)
            if is_bill_key(target)
            else BalanceRef.from_partition_key(target),
            int(guard.get("amount", 0)),
            str(guard.get("currency")),
            guard.get("webhook_id"),
        )
        this = f"{bill} with {payment.amount} {payment.currency}"
        return _park_conflict(
            events, ledger, webhook_id, payment.application_id, claimed, this, now, log_fields
        )
    if result.outcome is BillWriteOutcome.VOIDED:
        detail = (
            f"Moment applied {payment.amount} {payment.currency} to {bill}, which the merchant voided: "
            "money received that an operator must refund or re-apply"
        )
        return _park(events, webhook_id, Park(ParkReason.BILL_VOIDED, detail), now, log_fields)
    if result.outcome is BillWriteOutcome.CURRENCY_MISMATCH:
        kept = (result.head or {}).get("currency")
        detail = f"payment in {payment.currency}, but {bill} is in {kept}"
        return _park(events, webhook_id, Park(ParkReason.CURRENCY_MISMATCH, detail), now, log_fields)
    detail = f"{payment.bill_id} is linked to {bill}, which is not in the ledger"
    return _park(events, webhook_id, Park(ParkReason.UNMATCHED, detail), now, log_fields, wait=wait)


def _park(
    events: WebhookEventsTable,
    webhook_id: str,
    park: Park,
    now: Callable[[], float],
    log_fields: dict[str, Any] | None = None,
    *,
    wait: float = 0.0,
    **fields: str,
) -> Reconciled:
    # An unmatched payment is indexed by the Moment id it names, so linking that id re-drives it, and
    # by when its next try is due (its backoff, `wait`), so a re-drive run reads only those due.
    named = (log_fields or {}).get("moment_id") if park.reason is ParkReason.UNMATCHED else None
    changed = events.park(
        webhook_id, park.reason, park.detail, now(), moment_id=named, unmatched_wait=wait, **fields
    )
    logger.warning(
        "event parked", extra={**(log_fields or {}), "reason": park.reason.value, "detail": park.detail}
    )
    metrics.add_metric(name=f"EventParked_{park.reason.value}", unit=MetricUnit.Count, value=1)
    return Reconciled(webhook_id, EventStatus.PARKED, reason=park.reason, changed=changed)


def _park_conflict(
    events: WebhookEventsTable,
    ledger: LedgerTable,
    webhook_id: str,
    application_id: str,
    claimed: AppliedApplication,
    this: str,
    now: Callable[[], float],
    log_fields: dict[str, Any],
) -> Reconciled:
    """Park an application the ledger holds elsewhere, saying only what is known. A claim is written
    before its payment's transaction and never removed, so it proves the application was applied only
    if its entry is there (its writer may have died first, or its payment been parked): one GetItem,
    on a path taken only by a conflict. The entry, not the claim, names the webhook that applied it."""
    entry = ledger.get_entry(claimed.balance, f"payment:{application_id}")
    held = f"{claimed.balance} as {claimed.amount} {claimed.currency}"
    if entry is not None:
        first = str(entry.get("webhook_id") or claimed.webhook_id or "unknown")
        detail = f"application {application_id} was applied to {held} by webhook {first}"
    else:
        first = str(claimed.webhook_id or "unknown")
        detail = (
            f"application {application_id} was claimed for {held} by webhook {first} but never "
            f"applied there (no entry payment:{application_id} on {claimed.balance}: that delivery "
            "stopped before its transaction, or its payment was parked)"
        )
    park = Park(ParkReason.APPLICATION_CONFLICT, f"{detail}; this one names {this}")
    return _park(events, webhook_id, park, now, log_fields, conflicts_with=first)


def _finish_applied(
    events: WebhookEventsTable, webhook_id: str, entry_id: str, balance_key: str, now: float
) -> bool:
    """The event's status after its payment's transaction (1 write unit, not 2 inside it). Written on
    every path that finds this event's payment applied, so a crash between the two, or a redelivered
    record, still ends `applied`; False when it already was."""
    return events.finish(webhook_id, EventStatus.APPLIED, now, entry_id=entry_id, balance_key=balance_key)


def _applied_fields(log_fields: dict[str, Any], amount: int, currency: str) -> dict[str, Any]:
    """An applied payment's line: who (webhook, application, payment), where (reference, balance_kind,
    entry_id), how much; the Moment id it named is left out (the entry's `source` keeps it)."""
    kept = {name: value for name, value in log_fields.items() if name != "moment_id"}
    return {**kept, "amount": amount, "currency": currency}


def _count_amount(payment: PaymentApplication) -> None:
    # Per currency: summing ZAR and USD cents would mean nothing.
    metrics.add_metric(name=f"AmountApplied_{payment.currency}", unit=MetricUnit.Count, value=payment.amount)
