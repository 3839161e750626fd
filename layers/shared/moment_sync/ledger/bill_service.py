"""The merchant's and the operator's ways to raise, read, void and pay bills (docs/ledger.md#bills).

Shared by the ledger API and the CLI; the request's shape is checked before this
(`moment_sync.ledger.requests`). A bill's amount, currency, owner and dates never change: to change
one, void the bill and raise a new one. A bill payment never changes a balance.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from moment_sync.adapters.entry_keys import is_entry_key
from moment_sync.adapters.ledger_bills import BillTransient, BillWriteOutcome
from moment_sync.adapters.ledger_table import LedgerTable
from moment_sync.adapters.webhook_events_table import iso_time
from moment_sync.ledger.bills import (
    BillEntry,
    BillEntryKind,
    BillRef,
    BillStatus,
    bill_item_fields,
    listing_order,
    outside_pending,
)
from moment_sync.ledger.model import MAX_AMOUNT, BalanceKind, BalanceRef
from moment_sync.ledger.service import (
    LedgerProblem,
    _hash,
    encode_cursor,
    entry_view,
    not_found,
    refuse_reserved_reference,
)
from moment_sync.ledger.sync import sync_state

# What must be the same for a second PUT of a bill to be the same bill (200), else 409.
IMMUTABLE_FIELDS = (
    "owner_kind",
    "owner_ref",
    "currency",
    "amount_due",
    "bill_date",
    "due_date",
    "description",
)
# A void or an outside payment re-reads the bill and tries again this many times when it moved.
_ATTEMPTS = 5


def put_bill(
    ledger: LedgerTable, ref: str, change: dict[str, Any], now: float
) -> tuple[bool, dict[str, Any]]:
    """Raise a bill (created: True), or find the very same bill again (False); anything different is
    409 `bill-immutable`. The owner must exist; a customer on the account-balance model takes bills
    on its accounts only."""
    refuse_reserved_reference(ref, "the bill reference")
    kind = BalanceKind.CUSTOMER if "customer" in change else BalanceKind.ACCOUNT
    owner = BalanceRef(kind, change[kind.value])
    refuse_reserved_reference(owner.ref, kind.value)
    owner_head = ledger.get_head(owner)
    if owner_head is None:
        raise not_found(str(owner))
    if kind is BalanceKind.CUSTOMER and owner_head.get("balance_model") == "accounts":
        raise LedgerProblem(
            422,
            "customer-not-on-customer-model",
            "Bills go on this customer's accounts",
            f"customer {owner.ref} is on the account-balance model: raise the bill on one of its accounts",
        )
    stamp = iso_time(now)
    bill = BillRef(ref)
    head: dict[str, Any] = {
        "kind": "bill",
        "ref": ref,
        "owner_kind": kind.value,
        "owner_ref": owner.ref,
        "bill_owner": owner.partition_key,
        "currency": change["currency"],
        "amount_due": change["amount_due"],
        "bill_date": change.get("bill_date"),
        "due_date": change.get("due_date"),
        "description": change.get("description"),
        "status": BillStatus.UNPAID.value,
        "bill_order": listing_order(BillStatus.UNPAID, change.get("due_date"), ref),
        "amount_paid": 0,
        "amount_paid_moment": 0,
        "outside_paid": 0,
        "outside_booked": 0,
        "version": 0,
        "created_at": stamp,
        "updated_at": stamp,
        # Pending from the start: Moment must create it.
        "push_shard": bill.push_shard,
        "pending_since": stamp,
        "sync_state": "synced",  # the state last announced: the first look announces `pending`
    }
    existing = ledger.put_bill({name: value for name, value in head.items() if value is not None})
    if existing is None:
        return True, read_bill(ledger, bill)
    compared: tuple[str, ...] = IMMUTABLE_FIELDS
    if existing.get("personal_data_erased_at"):
        # `forget` erased its description: a retried PUT carrying it is still the same bill.
        compared = tuple(name for name in IMMUTABLE_FIELDS if name != "description")
    different = [name for name in compared if existing.get(name) != head.get(name)]
    if different:
        raise LedgerProblem(
            409,
            "bill-immutable",
            "A bill cannot change",
            f"bill {ref} exists with another {', '.join(different)}: a bill's amount, currency, owner "
            "and dates never change; void it and raise a new bill under a new reference",
            {"different": different},
        )
    return False, read_bill(ledger, bill)


def void_bill(ledger: LedgerTable, ref: str, now: float) -> dict[str, Any]:
    """Void it in the ledger now (Moment on the next push); voiding a voided bill changes nothing.
    A bill with payments can be voided and keeps its entries."""
    bill = BillRef(ref)
    for _ in range(_ATTEMPTS):
        head = ledger.get_bill(bill)
        if head is None:
            raise not_found(str(bill))
        if head.get("void_requested_at") or ledger.void_bill(bill, head, now):
            return read_bill(ledger, bill)
    raise BillTransient(f"{bill} kept changing while it was voided")


def pay_bill(
    ledger: LedgerTable, ref: str, payment: dict[str, Any], now: float
) -> tuple[bool, dict[str, Any]]:
    """Record a payment taken outside Moment (cash at the counter) once per payment id: (created, the
    entry). The same id with another body is 409; a voided bill takes no payment (409). Moment hears of
    it as the cumulative `amount_paid` on the next push."""
    bill = BillRef(ref)
    request_hash = _hash({"amount": payment["amount"], "description": payment.get("description")})
    source = {"payment_id": payment["id"]}
    if payment.get("description"):
        source["description"] = payment["description"]
    entry = BillEntry(BillEntryKind.OUTSIDE_PAYMENT, payment["amount"], payment["id"], source, iso_time(now))
    for _ in range(_ATTEMPTS):
        head = ledger.get_bill(bill)
        if head is None:
            raise not_found(str(bill))
        if int(head.get("amount_paid", 0)) + payment["amount"] > MAX_AMOUNT:
            existing = ledger.get_bill_entry(bill, entry.entry_id)
            if existing is None:
                raise LedgerProblem(
                    422,
                    "bill-amount-out-of-range",
                    "amount_paid would leave Moment's range",
                    f"{bill} has {head.get('amount_paid')} paid; Moment holds amount_paid up to "
                    f"{MAX_AMOUNT:,} minor units, so this payment is refused",
                )
        try:
            result = ledger.add_outside_payment(bill, head, entry, request_hash)
        except BillTransient:
            continue  # another payment moved the bill since it was read: read it again
        if result.outcome is BillWriteOutcome.EXISTS and result.existing_entry is not None:
            if result.existing_entry.get("request_hash") != request_hash:
                raise LedgerProblem(
                    409,
                    "payment-id-reused",
                    "Payment id already used",
                    f"payment {payment['id']} was recorded on {bill} with a different body",
                )
            return False, entry_view(result.existing_entry)
        if result.outcome is BillWriteOutcome.VOIDED:
            raise LedgerProblem(
                409,
                "bill-voided",
                "The bill is voided",
                f"{bill} is voided and takes no payment; raise a new bill if money is still owed",
            )
        return True, entry_view(
            {
                "entry_id": entry.entry_id,
                "kind": BillEntryKind.OUTSIDE_PAYMENT.value,
                "amount": entry.amount,
                "source": source,
                "created_at": entry.created_at,
            }
        )
    raise BillTransient(f"{bill} kept changing while the payment was recorded")


# --- reading --------------------------------------------------------------------------------------


def bill_sync_view(head: dict[str, Any]) -> dict[str, Any]:
    """How far the bill is from Moment (the one list of sync states, as for balances)."""
    view: dict[str, Any] = {
        "state": sync_state(head),
        "pushed_amount_paid": head.get("pushed_amount_paid"),
        "pushed_at": head.get("pushed_at"),
        "outside_pending": outside_pending(head),
        "open_intents": len(head.get("push_intents", [])),
        "void_at_moment": "done"
        if head.get("voided_at_moment")
        else ("pending" if head.get("void_requested_at") else None),
        "attempts": head.get("push_attempts", 0),
        "last_error": head.get("last_push_error"),
    }
    if head.get("push_conflict"):
        view["conflict"] = head["push_conflict"]
    if head.get("push_blocked"):
        view["blocked"] = head["push_blocked"]
    return view


def read_bill(
    ledger: LedgerTable, bill: BillRef, *, limit: int = 50, cursor: str | None = None
) -> dict[str, Any]:
    head = ledger.get_bill(bill)
    if head is None:
        raise not_found(str(bill))
    start = _decode_cursor(cursor, {"pk", "sk"}, "pk", bill.partition_key) if cursor else None
    entries, next_key = ledger.entries(bill, limit=limit, cursor=start)
    view = {
        **bill_item_fields(head),
        "sync": bill_sync_view(head),
        "entries": [entry_view(entry) for entry in entries],
    }
    if next_key:
        view["next_cursor"] = encode_cursor(next_key)
    return view


def list_bills(
    ledger: LedgerTable,
    owner: BalanceRef,
    *,
    status: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """An owner's bills, open ones first (soonest due first), `limit` at a time."""
    if ledger.get_head(owner) is None:
        raise not_found(str(owner))
    keys = {"pk", "sk", "bill_owner", "bill_order"}
    start = _decode_cursor(cursor, keys, "bill_owner", owner.partition_key) if cursor else None
    items, next_key = ledger.bills_of(owner.partition_key, status=status, limit=limit, cursor=start)
    view: dict[str, Any] = {
        "owner": {"kind": owner.kind.value, "reference": owner.ref},
        "bills": [_summary(item) for item in items],
    }
    if next_key:
        view["next_cursor"] = encode_cursor(next_key)
    return view


def _summary(item: dict[str, Any]) -> dict[str, Any]:
    paid, due = int(item.get("amount_paid", 0)), int(item["amount_due"])
    summary = {
        "reference": item["ref"],
        "status": item["status"],
        "currency": item["currency"],
        "amount_due": due,
        "amount_paid": paid,
        "amount_remaining": max(0, due - paid),
        "amount_overpaid": max(0, paid - due),
    }
    for optional in ("bill_date", "due_date", "description", "moment_id"):
        if item.get(optional) is not None:
            summary[optional] = item[optional]
    return summary


def _decode_cursor(cursor: str, keys: set[str], owner_key: str, owner: str) -> dict[str, Any]:
    """A page's start key, only as this API returned it for this very bill or owner."""
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        key = None
    if (
        not isinstance(key, dict)
        or set(key) != keys
        or not all(isinstance(value, dict) and set(value) == {"S"} for value in key.values())
        or not all(isinstance(value["S"], str) and value["S"] for value in key.values())
        or key[owner_key]["S"] != owner
        or not key["pk"]["S"].startswith("BILL#")
        or ("bill_order" not in keys and not is_entry_key(key["sk"]["S"]))  # an entries page's key
    ):
        raise LedgerProblem(400, "invalid-cursor", "Invalid cursor", "cursor is not one this API returned")
    return key
