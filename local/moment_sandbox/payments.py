"""A payment at Moment, as `POST /_sandbox/payments` makes one happen.

Owns the control request (what was paid, how much, how many duplicate deliveries), and the
`obligation.amount_applied` event Moment sends about it. The payment itself is applied to the books
by `store.py`; the event is delivered by `webhooks.py`.

What was paid is named by exactly one of:
- `customer` / `account` / `bill`: a Moment id or external_reference the sandbox knows (404 otherwise);
- `unknown_customer_id` / `unknown_account_id` / `unknown_bill_id`: a `bcus_…` / `bacc_…` / `bill_…`
  id the sandbox does NOT know, so the event names an object the merchant never created (`currency`
  may be given, default ZAR). `unknown_account_id` may be combined with `unknown_customer_id` as its
  parent, `unknown_bill_id` with either or both.

A bill's event carries `data.bill_id`, and its `customer_id` (and `account_id` on an account) only
when the `bill_parent_ids` setting says so: Moment does not document whether they come.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from moment_sandbox.bills import BILL_PREFIX
from moment_sandbox.ids import new_id
from moment_sandbox.messages import invalid, missing
from moment_sandbox.store import (
    ACCOUNT_PREFIX,
    CUSTOMER_PREFIX,
    DEFAULT_PAYMENT_CURRENCY,
    Kind,
    PaymentTarget,
)
from moment_sandbox.validation import CURRENCIES, metadata, reference

EVENT_TYPE = "obligation.amount_applied"
NAMED_TARGETS = ("customer", "account", "bill")
UNKNOWN_TARGETS = ("unknown_customer_id", "unknown_account_id", "unknown_bill_id")
TARGETS = NAMED_TARGETS + UNKNOWN_TARGETS
FIELDS = frozenset({*TARGETS, "amount", "duplicates", "currency", "metadata", "include_customer_id"})
MAX_DUPLICATES = 100


@dataclass(frozen=True)
class PaymentOrder:
    """What to pay: a known object's id or external_reference, or an invented (unknown) target."""

    amount: int
    kind: Kind
    target: str | PaymentTarget
    duplicates: int = 0
    metadata: dict[str, str] | None = None
    include_customer_id: bool = True  # on an account's payment, also name its parent customer


def payment_order(body: Mapping[str, Any]) -> PaymentOrder:
    """Read a `/_sandbox/payments` body, or raise a 400 problem."""
    unknown_fields = sorted(set(body) - FIELDS)
    if unknown_fields:
        raise invalid(f"unknown parameter {unknown_fields[0]}")
    kind, target = _target(body)
    return PaymentOrder(
        amount=_amount(body.get("amount")),
        kind=kind,
        target=target,
        duplicates=_duplicates(body.get("duplicates", 0)),
        metadata=metadata(body["metadata"]) if "metadata" in body else None,
        include_customer_id=_flag(body.get("include_customer_id", True), "include_customer_id"),
    )


def amount_applied_event(
    target: PaymentTarget, order: PaymentOrder, now: datetime, bill_parent_ids: bool = True
) -> dict[str, Any]:
    """The envelope Moment sends, shaped like the example in its documentation."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    data: dict[str, Any] = {
        "id": new_id("ob_", 23),
        "amount": order.amount,
        "currency": target.currency,
        "payment_id": new_id("pay_", 20),
    }
    if target.bill_id is not None:
        data["bill_id"] = target.bill_id
    if target.bill_id is None or bill_parent_ids:
        if target.account_id is not None:
            data["account_id"] = target.account_id
        if target.customer_id is not None and (target.account_id is None or order.include_customer_id):
            data["customer_id"] = target.customer_id
    if order.metadata is not None:
        data["metadata"] = order.metadata
    data.update(created_at=stamp, updated_at=stamp)
    return {"id": new_id("evt_", 21), "type": EVENT_TYPE, "data": data}


def _target(body: Mapping[str, Any]) -> tuple[Kind, str | PaymentTarget]:
    named = [name for name in NAMED_TARGETS if name in body]
    unknown = [name for name in UNKNOWN_TARGETS if name in body]
    if len(named) > 1 or (named and unknown):
        raise invalid("name what was paid once: customer, account, bill, or unknown_*_id")
    if named:
        if "currency" in body:
            raise invalid("currency is the paid object's own; send it only with unknown_*_id")
        kind = cast(Kind, named[0])
        return kind, reference(body[named[0]], named[0])
    if not unknown:
        raise missing(f"name what was paid: one of {', '.join(TARGETS)}")
    if "unknown_bill_id" in body:
        return "bill", _unknown_target(body)
    return ("account" if "unknown_account_id" in body else "customer"), _unknown_target(body)


def _unknown_target(body: Mapping[str, Any]) -> PaymentTarget:
    customer_id = _prefixed(body, "unknown_customer_id", CUSTOMER_PREFIX)
    account_id = _prefixed(body, "unknown_account_id", ACCOUNT_PREFIX)
    bill_id = _prefixed(body, "unknown_bill_id", BILL_PREFIX)
    currency = body.get("currency", DEFAULT_PAYMENT_CURRENCY)
    if currency not in CURRENCIES:
        raise invalid(f"currency must be one of {', '.join(CURRENCIES)}")
    return PaymentTarget(
        customer_id=customer_id, account_id=account_id, currency=currency, balance=None, bill_id=bill_id
    )


def _prefixed(body: Mapping[str, Any], name: str, prefix: str) -> str | None:
    if name not in body:
        return None
    value = reference(body[name], name)
    if not value.startswith(prefix):
        raise invalid(f"{name} must be a Moment id starting {prefix}")
    return value


def _amount(value: Any) -> int:
    if value is None:
        raise missing("amount is required")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise invalid("amount must be a positive integer in minor units")
    return value


def _duplicates(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DUPLICATES:
        raise invalid(f"duplicates must be an integer from 0 to {MAX_DUPLICATES}")
    return value


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(f"{name} must be true or false")
    return value
