"""Moment's bills in the sandbox: the bill, and what a PATCH, a void and a payment do to it.

Owns a bill's status (`paid` once `amount_paid` reaches `amount_due`, `voided` for ever), its JSON
shape (`amount_remaining` never below 0; `account_id` only on an account's bill), and the rules
Moment's reference leaves open, each decided by a setting (`settings.BillRules`): a PATCH of
`amount_paid` on a paid bill, a PATCH above `amount_due` when overpayment is not allowed, voiding a
bill with payments, partial payments and overpayments at Moment. Lookup and locking are `store.py`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moment_sandbox.messages import Problem, conflict
from moment_sandbox.settings import BillRules

BILL_PREFIX = "bill_"
UNPAID, PAID, VOIDED = "unpaid", "paid", "voided"


def unprocessable(detail: str) -> Problem:
    return Problem(422, "unprocessable", detail)


@dataclass
class Bill:
    id: str
    external_reference: str
    customer_id: str
    account_id: str | None
    currency: str
    amount_due: int
    bill_date: str | None = None
    due_date: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    amount_paid: int = 0
    voided: bool = False
    moment_payments: int = 0  # the part of amount_paid paid at Moment (the rest was PATCHed)

    @property
    def status(self) -> str:
        if self.voided:
            return VOIDED
        return PAID if self.amount_paid >= self.amount_due else UNPAID

    @property
    def amount_remaining(self) -> int:
        return max(0, self.amount_due - self.amount_paid)

    def to_json(self, rules: BillRules) -> dict[str, Any]:
        shape: dict[str, Any] = {
            "id": self.id,
            "external_reference": self.external_reference,
            "customer_id": self.customer_id,
        }
        if self.account_id is not None:
            shape["account_id"] = self.account_id
        return {
            **shape,
            "status": self.status,
            "currency": self.currency,
            "amount_due": self.amount_due,
            "amount_paid": self.amount_paid,
            "amount_remaining": self.amount_remaining,
            "bill_date": self.bill_date,
            "due_date": self.due_date,
            "payment_rules": {
                "min_amount": None,
                "max_amount": None,
                "underpayment_allowed": rules.underpayment_allowed,
                "overpayment_allowed": rules.overpayment_allowed,
            },
            "metadata": dict(self.metadata),
        }


def update(bill: Bill, fields: dict[str, Any], merged_metadata: dict[str, str], rules: BillRules) -> None:
    """PATCH: check every rule first, then change only what was sent. `amount_paid` is cumulative."""
    if bill.voided:
        raise unprocessable(f"bill {bill.id} is voided: a voided bill cannot be updated")
    currency = fields.get("currency", bill.currency)
    if currency != bill.currency:
        raise unprocessable(f"bill {bill.id} is in {bill.currency}, not {currency}")
    amount_paid = fields.get("amount_paid")
    if amount_paid is not None:
        amount_paid = _amount_paid_to_store(bill, amount_paid, rules)
    bill.metadata = merged_metadata
    if amount_paid is not None:
        bill.amount_paid = amount_paid


def _amount_paid_to_store(bill: Bill, amount_paid: int, rules: BillRules) -> int | None:
    """What a PATCH of `amount_paid` leaves in the bill (None: unchanged), or a 422."""
    if bill.status == PAID and amount_paid != bill.amount_paid:
        if rules.paid_patch == "refuse":
            raise unprocessable(f"bill {bill.id} is paid: its amount_paid cannot change")
        if rules.paid_patch == "ignore":
            return None
    if amount_paid > bill.amount_due and not rules.overpayment_allowed:
        if rules.overpaid_patch == "refuse":
            raise unprocessable(
                f"amount_paid {amount_paid} is above amount_due {bill.amount_due}: overpayment is not allowed"
            )
        if rules.overpaid_patch == "cap":
            return bill.amount_due
    return amount_paid


def void(bill: Bill, rules: BillRules) -> None:
    if bill.voided:
        raise conflict(f"bill {bill.id} is voided already")
    if rules.refuse_void_with_payments and bill.amount_paid > 0:
        raise unprocessable(f"bill {bill.id} has payments ({bill.amount_paid}): it cannot be voided")
    bill.voided = True


def pay(bill: Bill, amount: int, rules: BillRules) -> None:
    """A payment at Moment: what a payer could pay, by the bill's payment rules; amount_paid rises."""
    if bill.voided:
        raise conflict(f"bill {bill.id} is voided: Moment takes no payment for it")
    remaining = bill.amount_remaining
    if amount > remaining and not rules.overpayment_allowed:
        raise unprocessable(
            f"{amount} is more than the {remaining} remaining, and overpayment is not allowed"
        )
    if amount < remaining and not rules.underpayment_allowed:
        raise unprocessable(
            f"{amount} is less than the {remaining} remaining, and underpayment is not allowed"
        )
    bill.amount_paid += amount
    bill.moment_payments += amount
