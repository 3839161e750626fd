"""What a stored webhook means for the ledger. Pure: no I/O, so every rule here is unit-tested.

For `obligation.amount_applied` the most specific id decides: a bill id makes it a bill payment
(it raises that bill's amount_paid and never lowers a balance, even if the payload also carries
`customer_id` or `account_id`); else the account id; else the customer id. Other event types are
ignored (kept, with their type). Anything unreadable is parked as invalid: never retried forever,
never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from moment_sync.envelope import AMOUNT_APPLIED, WebhookEnvelope
from moment_sync.ledger.model import CURRENCIES, MAX_AMOUNT, BalanceKind, is_valid_amount


class ParkReason(StrEnum):
    UNMATCHED = "unmatched"
    CURRENCY_MISMATCH = "currency_mismatch"
    INVALID = "invalid"
    UNSUPPORTED = "unsupported"
    # the application id is already applied to another balance, or as another amount or currency
    APPLICATION_CONFLICT = "application_conflict"
    # money Moment received for a bill the merchant voided: an operator refunds or re-applies it
    BILL_VOIDED = "bill_voided"


class EventStatus(StrEnum):
    RECEIVED = "received"
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    PARKED = "parked"


@dataclass(frozen=True, slots=True)
class Park:
    reason: ParkReason
    detail: str


@dataclass(frozen=True, slots=True)
class Ignore:
    event_type: str


@dataclass(frozen=True, slots=True)
class PaymentApplication:
    """Moment applied `amount` against the obligation of `moment_id` (a bcus_ or bacc_ id)."""

    application_id: str  # data.id: one application of an amount, the idempotency key
    amount: int
    currency: str
    target_kind: BalanceKind
    moment_id: str
    payment_id: str | None


@dataclass(frozen=True, slots=True)
class BillPaymentApplication:
    """Moment applied `amount` against the bill `bill_id` (a bill_ id): docs/ledger.md#bills."""

    application_id: str
    amount: int
    currency: str
    bill_id: str
    payment_id: str | None


Decision = PaymentApplication | BillPaymentApplication | Park | Ignore


def decide(envelope: WebhookEnvelope) -> Decision:
    if envelope.problem is not None:
        return Park(ParkReason.INVALID, envelope.problem)
    if envelope.event_type is None:
        return Park(ParkReason.INVALID, "the event has no type")
    if envelope.event_type != AMOUNT_APPLIED:
        return Ignore(envelope.event_type)

    summary = envelope.summary
    application_id = summary.get("id")
    if not isinstance(application_id, str):
        return Park(ParkReason.INVALID, "data.id is missing")
    amount = summary.get("amount")
    if not is_valid_amount(amount):
        return Park(ParkReason.INVALID, f"data.amount must be an integer from 1 to {MAX_AMOUNT}")
    currency = summary.get("currency")
    if not isinstance(currency, str) or currency not in CURRENCIES:
        return Park(ParkReason.INVALID, "data.currency must be ZAR or USD")
    payment_id = summary.get("payment_id")
    if "bill_id" in summary:
        bill_id = summary["bill_id"]
        if not isinstance(bill_id, str) or not bill_id:
            return Park(ParkReason.INVALID, "data.bill_id must be a Moment bill id")
        return BillPaymentApplication(
            application_id=application_id,
            amount=amount,
            currency=currency,
            bill_id=bill_id,
            payment_id=payment_id if isinstance(payment_id, str) else None,
        )
    target = _target(summary)
    if target is None:
        return Park(ParkReason.INVALID, "neither data.account_id nor data.customer_id is present")
    return PaymentApplication(
        application_id=application_id,
        amount=amount,
        currency=currency,
        target_kind=target[0],
        moment_id=target[1],
        payment_id=payment_id if isinstance(payment_id, str) else None,
    )


def _target(summary: dict[str, str | int]) -> tuple[BalanceKind, str] | None:
    account_id = summary.get("account_id")
    if isinstance(account_id, str):
        return BalanceKind.ACCOUNT, account_id
    customer_id = summary.get("customer_id")
    if isinstance(customer_id, str):
        return BalanceKind.CUSTOMER, customer_id
    return None
