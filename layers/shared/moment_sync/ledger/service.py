"""The merchant's and the operator's ways to change the ledger: customers, accounts, charges,
absolute balances and audited adjustments, and how a balance reads back.

Shared by the ledger API and the CLI. Validation of the request's shape happens before this
(`moment_sync.ledger.requests`); here are the rules that need the ledger's state. Every change to
money is an entry, in the same transaction as the balance it changes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from moment_sync.adapters.entry_keys import is_entry_key
from moment_sync.adapters.ledger_table import EntryOutcome, EntryResult, LedgerTable
from moment_sync.adapters.webhook_events_table import WebhookEventsTable, iso_time
from moment_sync.ledger.model import (
    MOMENT_ID_PREFIXES,
    MOMENT_MAX_BALANCE,
    BalanceKind,
    BalanceRef,
    Entry,
    EntryKind,
    reserved_reference,
)
from moment_sync.ledger.sync import sync_view

PERSONAL_FIELDS = ("name", "email", "phone")


@dataclass(eq=False)  # an exception compares (and hashes) by identity, as every other exception does
class LedgerProblem(Exception):
    """A request the ledger's state refuses; rendered as an RFC 9457 problem by the API."""

    status: int
    problem: str
    title: str
    detail: str
    extensions: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.detail


def not_found(what: str) -> LedgerProblem:
    return LedgerProblem(404, "not-found", "Not found", f"{what} does not exist")


def refuse_reserved_reference(ref: str, what: str) -> None:
    if reserved_reference(ref):
        raise LedgerProblem(
            422,
            "reference-reserved",
            "Reference reserved",
            f"{what} {ref} starts with one of {', '.join(MOMENT_ID_PREFIXES)}: Moment would read it as "
            "one of its own ids, which may be another object's",
        )


# --- customers and accounts ---------------------------------------------------------------------


def put_customer(
    ledger: LedgerTable, ref: str, change: dict[str, Any], now: float
) -> tuple[bool, dict[str, Any]]:
    """Create or update a customer. Returns (created, the customer as read back)."""
    refuse_reserved_reference(ref, "the customer reference")
    balance = BalanceRef(BalanceKind.CUSTOMER, ref)
    model = change.get("balance_model", "customer")
    head = ledger.get_head(balance)
    if head is None and ledger.open_balance(balance, change["currency"], now, balance_model=model):
        _update_head(ledger, balance, {name: change.get(name) for name in PERSONAL_FIELDS}, None, now)
        return True, read_balance(ledger, balance)
    # Created by a concurrent request since it was read: this one is an update of it.
    head = head or _existing_head(ledger, balance)
    if head.get("balance_model", "customer") != model:
        raise LedgerProblem(
            409,
            "balance-model-fixed",
            "Balance model cannot change",
            f"customer {ref} is on the {head.get('balance_model')!r} model",
        )
    fields = {name: change.get(name) for name in PERSONAL_FIELDS}
    _update_head(ledger, balance, fields, _currency_change(head, change["currency"]), now)
    return False, read_balance(ledger, balance)


def put_account(
    ledger: LedgerTable, ref: str, change: dict[str, Any], now: float
) -> tuple[bool, dict[str, Any]]:
    refuse_reserved_reference(ref, "the account reference")
    refuse_reserved_reference(change["customer_ref"], "customer_ref")
    balance = BalanceRef(BalanceKind.ACCOUNT, ref)
    customer = ledger.get_head(BalanceRef(BalanceKind.CUSTOMER, change["customer_ref"]))
    if customer is None or customer.get("balance_model") != "accounts":
        raise LedgerProblem(
            422,
            "customer-not-on-account-model",
            "Unusable customer",
            f"customer {change['customer_ref']} must exist with balance_model 'accounts'",
        )
    head = ledger.get_head(balance)
    if head is None and ledger.open_balance(
        balance, change["currency"], now, customer_ref=change["customer_ref"]
    ):
        _update_head(ledger, balance, {"name": change.get("name")}, None, now)
        return True, read_balance(ledger, balance)
    head = head or _existing_head(ledger, balance)
    if head.get("customer_ref") != change["customer_ref"]:
        raise LedgerProblem(
            409,
            "customer-fixed",
            "An account cannot move",
            f"account {ref} belongs to customer {head.get('customer_ref')}",
        )
    currency = _currency_change(head, change["currency"])
    _update_head(ledger, balance, {"name": change.get("name")}, currency, now)
    return False, read_balance(ledger, balance)


def _existing_head(ledger: LedgerTable, balance: BalanceRef) -> dict[str, Any]:
    head = ledger.get_head(balance)
    if head is None:  # heads are never deleted: only a broken table gets here
        raise RuntimeError(f"{balance} was created and is gone")
    return head


def _currency_change(head: dict[str, Any], currency: str) -> tuple[str, int | None] | None:
    """The new currency and the version the change is conditional on (None: the head tracks no
    balance, as a customer on the account-balance model, so nothing can be kept in the old one)."""
    if head.get("currency") == currency:
        return None
    if "version" not in head:
        return currency, None
    if head["version"] != 0:
        raise LedgerProblem(
            409,
            "currency-fixed",
            "Currency cannot change",
            f"the balance is kept in {head.get('currency')} and has entries",
        )
    return currency, 0


def _update_head(
    ledger: LedgerTable,
    balance: BalanceRef,
    fields: dict[str, Any],
    currency: tuple[str, int | None] | None,
    now: float,
) -> None:
    item = {"kind": balance.kind.value, "ref": balance.ref, "updated_at": iso_time(now), **fields}
    expected_version = None
    if currency is not None:
        item["currency"], expected_version = currency
    if not ledger.put_head(item, create=False, expected_version=expected_version):
        raise LedgerProblem(
            409,
            "currency-fixed",
            "Currency cannot change",
            "an entry was added while the currency was being changed",
        )


# --- money --------------------------------------------------------------------------------------


def post_charge(
    ledger: LedgerTable, balance: BalanceRef, charge: dict[str, Any], now: float
) -> tuple[bool, dict[str, Any]]:
    """Post a merchant's charge (or credit, if negative) once per charge id.
    Returns (created, the entry); the same id with another body is a conflict."""
    head = _tracked_head(ledger, balance)
    request_hash = _hash({"amount": charge["amount"], "description": charge.get("description")})
    source = {"charge_id": charge["id"]}
    if charge.get("description"):
        source["description"] = charge["description"]
    entry = Entry(EntryKind.CHARGE, charge["amount"], charge["id"], source, iso_time(now))
    result = ledger.apply_entry(
        balance, entry, head["currency"], request_hash=request_hash, balance_limit=MOMENT_MAX_BALANCE
    )
    if result.outcome is EntryOutcome.EXISTS and result.existing_entry is not None:
        if result.existing_entry.get("request_hash") != request_hash:
            raise LedgerProblem(
                409,
                "charge-id-reused",
                "Charge id already used",
                f"charge {charge['id']} was posted with a different body",
            )
        return False, entry_view(result.existing_entry)
    _raise_unless_applied(result, balance)
    return True, entry_view(_entry_item_view(entry))


def set_balance(
    ledger: LedgerTable, balance: BalanceRef, new_balance: int, expected_version: int, now: float
) -> dict[str, Any]:
    """Set an absolute balance, recorded as an entry of the difference, only if nothing changed the
    balance since `expected_version` (so a balance computed before a payment never erases it)."""
    head = _tracked_head(ledger, balance)
    if head["version"] != expected_version:
        return _replayed_or_stale(ledger, balance, head, new_balance, expected_version)
    difference = new_balance - head["balance"]
    if difference == 0:
        return read_balance(ledger, balance)
    source = {
        "previous_balance": str(head["balance"]),
        "new_balance": str(new_balance),
        "expected_version": str(expected_version),
    }
    entry = Entry(EntryKind.BALANCE_SET, difference, f"v{expected_version + 1}", source, iso_time(now))
    result = ledger.apply_entry(balance, entry, head["currency"], expected_version=expected_version)
    if result.outcome is EntryOutcome.EXISTS:
        return _replayed_or_stale(
            ledger, balance, ledger.get_head(balance) or head, new_balance, expected_version
        )
    _raise_unless_applied(result, balance)
    return read_balance(ledger, balance)


def _replayed_or_stale(
    ledger: LedgerTable, balance: BalanceRef, head: dict[str, Any], new_balance: int, expected_version: int
) -> dict[str, Any]:
    """The balance is no longer at `expected_version`. If this very request moved it (its answer was
    lost and the client sent it again), PUT is idempotent: the current view, 200. Otherwise 409."""
    entry = ledger.get_entry(balance, f"{EntryKind.BALANCE_SET.value}:v{expected_version + 1}")
    source = (entry or {}).get("source") or {}
    if source.get("expected_version") == str(expected_version) and source.get("new_balance") == str(
        new_balance
    ):
        return read_balance(ledger, balance)
    raise _stale(head)


def adjust(
    ledger: LedgerTable,
    balance: BalanceRef,
    amount: int,
    *,
    reason: str,
    operator: str,
    adjustment_id: str,
    now: float,
) -> dict[str, Any]:
    """An operator's audited correction (for example, accepting Moment's balance for a payment
    whose webhook never came): an entry that says who did it and why."""
    head = _tracked_head(ledger, balance)
    source = {"reason": reason, "operator": operator, "adjustment_id": adjustment_id}
    entry = Entry(EntryKind.ADJUSTMENT, amount, adjustment_id, source, iso_time(now))
    result = ledger.apply_entry(balance, entry, head["currency"], balance_limit=MOMENT_MAX_BALANCE)
    if result.outcome is EntryOutcome.EXISTS:
        raise LedgerProblem(
            409,
            "adjustment-id-reused",
            "Adjustment id already used",
            f"adjustment {adjustment_id} is already an entry of {balance}",
        )
    _raise_unless_applied(result, balance)
    return entry_view(_entry_item_view(entry))


def _tracked_head(ledger: LedgerTable, balance: BalanceRef) -> dict[str, Any]:
    head = ledger.get_head(balance)
    if head is None:
        raise not_found(str(balance))
    if "version" not in head:
        raise _not_tracked(balance)
    return head


def _not_tracked(balance: BalanceRef) -> LedgerProblem:
    return LedgerProblem(
        409,
        "balance-not-tracked",
        "No balance here",
        f"{balance} is on the account-balance model: post to its accounts",
    )


def _raise_unless_applied(result: EntryResult, balance: BalanceRef) -> None:
    """Every refusal of `apply_entry` as the problem the API documents (docs/api/problems.md)."""
    if result.outcome is EntryOutcome.APPLIED:
        return
    if result.outcome is EntryOutcome.NO_BALANCE:
        raise not_found(str(balance))
    if result.outcome is EntryOutcome.NOT_TRACKED:
        raise _not_tracked(balance)
    if result.outcome is EntryOutcome.STALE and result.head is not None:
        raise _stale(result.head)
    if result.outcome is EntryOutcome.OUT_OF_RANGE and result.head is not None:
        raise LedgerProblem(
            422,
            "balance-out-of-range",
            "The balance would leave Moment's range",
            f"{balance} is {result.head.get('balance')}; Moment holds balances from -{MOMENT_MAX_BALANCE:,} "
            f"to {MOMENT_MAX_BALANCE:,} minor units, so this change is refused",
        )
    if result.outcome is EntryOutcome.CURRENCY_MISMATCH:
        raise LedgerProblem(
            409,
            "currency-mismatch",
            "Currency changed",
            f"{balance} changed currency while the request was applied; read it and try again",
        )
    raise LedgerProblem(
        409,
        "concurrent-change",
        "Conflict",
        f"{balance} changed while the request was applied; read it and try again",
    )


def _stale(head: dict[str, Any]) -> LedgerProblem:
    return LedgerProblem(
        409,
        "stale-version",
        "Balance changed since it was read",
        f"the balance is at version {head.get('version')}",
        {"current_version": head.get("version"), "current_balance": head.get("balance")},
    )


def _hash(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# --- reading ------------------------------------------------------------------------------------


def read_balance(
    ledger: LedgerTable, balance: BalanceRef, *, limit: int = 50, cursor: str | None = None
) -> dict[str, Any]:
    head = ledger.get_head(balance)
    if head is None:
        raise not_found(str(balance))
    start = decode_cursor(cursor, balance) if cursor else None
    entries, next_key = ledger.entries(balance, limit=limit, cursor=start)
    view: dict[str, Any] = {
        "ref": balance.ref,
        "kind": balance.kind.value,
        "currency": head["currency"],
        "balance": head.get("balance"),
        "version": head.get("version", 0),
        "sync": sync_view(head),
        "entries": [entry_view(entry) for entry in entries],
    }
    for optional in ("customer_ref", "balance_model", "moment_id", *PERSONAL_FIELDS):
        if head.get(optional) is not None:
            view[optional] = head[optional]
    if next_key:
        view["next_cursor"] = encode_cursor(next_key)
    return view


def read_event(events: WebhookEventsTable, webhook_id: str) -> dict[str, Any]:
    event = events.get(webhook_id)
    if event is None:
        raise not_found(f"webhook {webhook_id}")
    view = {
        "webhook_id": event["webhook_id"],
        "event_id": event.get("event_id"),
        "type": event.get("event_type"),
        "status": event["status"],
        "received_at": event["received_at"],
    }
    for name, key in (
        ("reason", "reason"),
        ("reason_detail", "reason_detail"),
        ("entry_id", "entry_id"),
        ("duplicate_of", "duplicate_of"),
        ("conflicts_with", "conflicts_with"),
    ):
        if event.get(key) is not None:
            view[name] = event[key]
    return view


def entry_view(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": entry["entry_id"],
        "kind": entry["kind"],
        "amount": entry["amount"],
        "source": entry.get("source", {}),
        "created_at": entry["created_at"],
    }


def _entry_item_view(entry: Entry) -> dict[str, Any]:
    return {
        "entry_id": entry.entry_id,
        "kind": entry.kind.value,
        "amount": entry.amount,
        "source": entry.source,
        "created_at": entry.created_at,
    }


def encode_cursor(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


_CURSOR_KEYS = frozenset({"pk", "sk"})  # the base table's key: entries are keyed by time


def decode_cursor(cursor: str, balance: BalanceRef) -> dict[str, Any]:
    """The start key of the next page of `balance`'s entries. Anything else (another balance's key,
    other attributes, other types) is refused here: DynamoDB would answer it with an error."""
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        key = None
    if (
        not isinstance(key, dict)
        or set(key) != _CURSOR_KEYS
        or not all(isinstance(value, dict) and set(value) == {"S"} for value in key.values())
        or not all(isinstance(value["S"], str) and value["S"] for value in key.values())
        or key["pk"]["S"] != balance.partition_key
        or not is_entry_key(key["sk"]["S"])
    ):
        raise LedgerProblem(400, "invalid-cursor", "Invalid cursor", "cursor is not one this API returned")
    return key
