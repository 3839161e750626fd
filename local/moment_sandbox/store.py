"""The sandbox's books: Moment's customers, accounts and bills in memory, behind one lock.

Owns the rules that need the stored objects: ids (`bcus_…`, `bacc_…`, `bill_…`), unique
`external_reference`s (customers, accounts and bills each have their own), lookup by Moment id or
`external_reference`, the composite creates (customer → account, customer → account → bill, nothing
made unless all can be), PATCH semantics (only sent fields change, `balance` is absolute, `metadata`
merges) and applying a payment to a balance or a bill. Objects leave in Moment's own JSON shape; what
a bill's PATCH, void and payment do is `bills.py`'s.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from moment_sandbox import bills
from moment_sandbox.bills import BILL_PREFIX, Bill
from moment_sandbox.ids import new_id
from moment_sandbox.messages import Problem, conflict, not_found
from moment_sandbox.settings import BillRules
from moment_sandbox.validation import BillOwner, metadata_size

CUSTOMER_PREFIX = "bcus_"
ACCOUNT_PREFIX = "bacc_"
# Moment sets these at onboarding and only shows them; the values are the sandbox's own choice.
PAYMENT_RULES = {
    "min_amount": None,
    "max_amount": None,
    "underpayment_allowed": True,
    "overpayment_allowed": True,
}
DEFAULT_PAYMENT_CURRENCY = "ZAR"

Kind = Literal["customer", "account", "bill"]


@dataclass
class Customer:
    id: str
    external_reference: str
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    currency: str | None = None
    balance: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return _moment_json(self)


@dataclass
class Account:
    id: str
    customer_id: str
    external_reference: str
    name: str | None = None
    currency: str | None = None
    balance: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return _moment_json(self)


def _moment_json(record: Customer | Account) -> dict[str, Any]:
    """Moment's field order: the object's own fields, then `payment_rules`, then `metadata`."""
    shape = dataclasses.asdict(record)
    metadata = shape.pop("metadata")
    return {**shape, "payment_rules": dict(PAYMENT_RULES), "metadata": metadata}


Record = TypeVar("Record", Customer, Account, Bill)
Balanced = TypeVar("Balanced", Customer, Account)


class _Registry(Generic[Record]):
    """One kind of object, found by Moment id first, then by external_reference."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.by_id: dict[str, Record] = {}
        self.id_by_reference: dict[str, str] = {}

    def find(self, key: str) -> Record | None:
        record_id = key if key in self.by_id else self.id_by_reference.get(key)
        return self.by_id.get(record_id) if record_id else None

    def get(self, key: str) -> Record:
        record = self.find(key)
        if record is None:
            raise not_found(f"no {self.kind} has the id or external_reference {key!r}")
        return record

    def require_free_reference(self, reference: str) -> None:
        if reference in self.id_by_reference:
            raise conflict(f"a {self.kind} with external_reference {reference!r} already exists")

    def add(self, record: Record) -> None:
        self.by_id[record.id] = record
        self.id_by_reference[record.external_reference] = record.id

    def change_reference(self, record: Record, reference: str) -> None:
        del self.id_by_reference[record.external_reference]
        self.id_by_reference[reference] = record.id

    def clear(self) -> None:
        self.by_id.clear()
        self.id_by_reference.clear()


@dataclass(frozen=True)
class PaymentTarget:
    """What a payment was applied to, and that object's currency and balance afterwards.

    `customer_id` is the paid customer, or the paid account's parent (None only for an account the
    sandbox was told to invent without a parent)."""

    customer_id: str | None
    account_id: str | None
    currency: str
    balance: int | None
    bill_id: str | None = None
    bill: dict[str, Any] | None = None  # the paid bill afterwards, in Moment's shape


class BillingStore:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._customers: _Registry[Customer] = _Registry("customer")
        self._accounts: _Registry[Account] = _Registry("account")
        self._bills: _Registry[Bill] = _Registry("bill")

    def create_customer(self, fields: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            return self._add_customer(fields).to_json()

    def create_account(self, fields: dict[str, Any], customer: str | dict[str, Any]) -> dict[str, Any]:
        """`customer` is an id or external_reference to look up, or fields to create it from first."""
        with self._lock:
            self._accounts.require_free_reference(fields["external_reference"])
            return self._add_account(fields, customer).to_json()

    def create_bill(self, fields: dict[str, Any], owner: BillOwner, rules: BillRules) -> dict[str, Any]:
        """A bill on an existing customer or account, or on an account (and customer) made with it."""
        with self._lock:
            self._bills.require_free_reference(fields["external_reference"])
            if owner[0] == "new_account":
                account_fields, customer = owner[1]
                self._accounts.require_free_reference(account_fields["external_reference"])
                if isinstance(customer, dict):
                    self._customers.require_free_reference(customer["external_reference"])
                else:
                    self._customers.get(customer)
                account = self._add_account(account_fields, customer)
                customer_id, account_id = account.customer_id, account.id
            elif owner[0] == "account":
                account = self._accounts.get(owner[1])
                customer_id, account_id = account.customer_id, account.id
            else:
                customer_id, account_id = self._customers.get(owner[1]).id, None
            bill = Bill(id=new_id(BILL_PREFIX), customer_id=customer_id, account_id=account_id, **fields)
            self._bills.add(bill)
            return bill.to_json(rules)

    def bill(self, key: str, rules: BillRules) -> dict[str, Any]:
        with self._lock:
            return self._bills.get(key).to_json(rules)

    def update_bill(self, key: str, fields: dict[str, Any], rules: BillRules) -> dict[str, Any]:
        with self._lock:
            bill = self._bills.get(key)
            merged = {**bill.metadata, **fields.get("metadata", {})}
            metadata_size(merged)
            bills.update(bill, fields, merged, rules)
            return bill.to_json(rules)

    def void_bill(self, key: str, rules: BillRules) -> dict[str, Any]:
        with self._lock:
            bill = self._bills.get(key)
            bills.void(bill, rules)
            return bill.to_json(rules)

    def pay_bill(self, key: str, amount: int, rules: BillRules) -> PaymentTarget:
        """Moment receiving `amount` against a bill: its amount_paid rises (never a balance)."""
        with self._lock:
            bill = self._bills.get(key)
            bills.pay(bill, amount, rules)
            return PaymentTarget(
                customer_id=bill.customer_id,
                account_id=bill.account_id,
                currency=bill.currency,
                balance=None,
                bill_id=bill.id,
                bill=bill.to_json(rules),
            )

    def customer(self, key: str) -> dict[str, Any]:
        with self._lock:
            return self._customers.get(key).to_json()

    def account(self, key: str) -> dict[str, Any]:
        with self._lock:
            return self._accounts.get(key).to_json()

    def update_customer(self, key: str, fields: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            return _update(self._customers, self._customers.get(key), fields).to_json()

    def update_account(self, key: str, fields: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            return _update(self._accounts, self._accounts.get(key), fields).to_json()

    def apply_payment(self, kind: Kind, key: str, amount: int, lower_balance: bool) -> PaymentTarget:
        """Moment receiving `amount` against a customer's or an account's balance."""
        with self._lock:
            record: Customer | Account = (
                self._customers.get(key) if kind == "customer" else self._accounts.get(key)
            )
            if lower_balance and record.balance is not None:
                record.balance -= amount
            return PaymentTarget(
                customer_id=record.customer_id if isinstance(record, Account) else record.id,
                account_id=record.id if isinstance(record, Account) else None,
                currency=record.currency or DEFAULT_PAYMENT_CURRENCY,
                balance=record.balance,
            )

    def knows(self, moment_id: str) -> bool:
        with self._lock:
            return any(
                moment_id in registry.by_id for registry in (self._customers, self._accounts, self._bills)
            )

    def snapshot(self, rules: BillRules | None = None) -> dict[str, list[dict[str, Any]]]:
        """Every object in Moment's shape; each bill also says how much of its amount_paid was paid at
        Moment (`moment_payments`; the rest came by PATCH), which Moment's own shape does not show."""
        with self._lock:
            return {
                "customers": [customer.to_json() for customer in self._customers.by_id.values()],
                "accounts": [account.to_json() for account in self._accounts.by_id.values()],
                "bills": [
                    {**bill.to_json(rules or BillRules()), "moment_payments": bill.moment_payments}
                    for bill in self._bills.by_id.values()
                ],
            }

    def reset(self) -> None:
        with self._lock:
            self._customers.clear()
            self._accounts.clear()
            self._bills.clear()

    def _add_account(self, fields: dict[str, Any], customer: str | dict[str, Any]) -> Account:
        owner = self._add_customer(customer) if isinstance(customer, dict) else self._customers.get(customer)
        account = Account(id=new_id(ACCOUNT_PREFIX), customer_id=owner.id, **fields)
        self._accounts.add(account)
        return account

    def _add_customer(self, fields: dict[str, Any]) -> Customer:
        self._customers.require_free_reference(fields["external_reference"])
        customer = Customer(id=new_id(CUSTOMER_PREFIX), **fields)
        self._customers.add(customer)
        return customer


def _update(registry: _Registry[Balanced], record: Balanced, fields: dict[str, Any]) -> Balanced:
    """PATCH: check every rule first, then change only the fields sent."""
    changes = dict(fields)
    reference = changes.pop("external_reference", record.external_reference)
    if reference != record.external_reference:
        registry.require_free_reference(reference)
    metadata = {**record.metadata, **changes.pop("metadata", {})}
    metadata_size(metadata)
    _require_balance_with_new_currency(record, changes)
    if reference != record.external_reference:
        registry.change_reference(record, reference)
    record.external_reference = reference
    record.metadata = metadata
    for name, value in changes.items():
        setattr(record, name, value)
    return record


def _require_balance_with_new_currency(record: Customer | Account, changes: dict[str, Any]) -> None:
    currency = changes.get("currency", record.currency)
    if "balance" not in changes and record.balance is not None and currency != record.currency:
        raise Problem(
            422,
            "unprocessable",
            f"the balance is held in {record.currency}: send balance with currency to change the currency",
        )
