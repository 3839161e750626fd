"""The events the ledger announces on the event bus (docs/events.md), as details built from stored items.

The pipes in template.yaml build the same details from the streams' new images with their input
transformations; this is what the operator's `republish-events` puts again, and the contract tests
hold both to the JSON Schemas in schemas/ and to each other. Allow-lists only: no name, e-mail,
phone or free text a person typed ever leaves the ledger.
"""

from __future__ import annotations

from typing import Any, Final

from moment_sync.ledger.model import EntryKind

EVENT_SOURCE: Final = "moment-balance-sync"
PAYMENT_APPLIED: Final = "Payment Applied"
SYNC_STATE_CHANGED: Final = "Sync State Changed"
EVENT_PARKED: Final = "Event Parked"
BILL_PAID: Final = "Bill Paid"
BILL_VOIDED: Final = "Bill Voided"
# A bill's void is an entry of its own (`ENTRY#void`, amount 0, not in the entries listing): the
# stream's INSERT announces it once. Readers adding up a bill's payments skip it.
BILL_VOID_KIND: Final = "void"
BILL_VOID_ENTRY_ID: Final = "void"
# The detail-type each kind of entry is announced as (the entry carries it as `detail_type`; the
# pipe of the other entries reads it from there, so a new kind needs no new pipe).
ENTRY_DETAIL_TYPES: Final = {
    EntryKind.PAYMENT: PAYMENT_APPLIED,
    EntryKind.CHARGE: "Charge Posted",
    EntryKind.BALANCE_SET: "Balance Set",
    EntryKind.ADJUSTMENT: "Adjustment Made",
}
DETAIL_TYPES: Final = (*ENTRY_DETAIL_TYPES.values(), SYNC_STATE_CHANGED, EVENT_PARKED, BILL_PAID, BILL_VOIDED)
# What BillEventsPipe copies from a bill's entry, besides pk, sk and created_at: every one is on
# every bill entry (empty text where it does not apply), so one transformation fits both types.
BILL_EVENT_TEXT_FIELDS: Final = (
    "detail_type",
    "bill_ref",
    "owner_kind",
    "owner_ref",
    "entry_id",
    "kind",
    "source_id",
    "currency",
    "status",
    "bill_moment_id",
    "application_id",
    "payment_id",
    "webhook_id",
)
BILL_EVENT_NUMBER_FIELDS: Final = ("amount", "amount_due", "amount_paid", "amount_remaining")
# Never in a detail: what heads hold about a person, and free text (a charge's description, an
# adjustment's reason and operator).
PERSONAL_FIELDS: Final = frozenset({"name", "email", "phone", "description", "operator"})


def entry_event_attributes(balance_pk: str, kind: EntryKind, source_id: str) -> dict[str, str]:
    """What an entry carries for its pipe besides its amount and source: its detail-type, its
    balance's kind and reference apart (a transformation cannot split `pk`), and its source id."""
    balance_kind, _, balance_ref = balance_pk.partition("#")
    return {
        "detail_type": ENTRY_DETAIL_TYPES[kind],
        "balance_kind": balance_kind.lower(),
        "balance_ref": balance_ref,
        "source_id": source_id,
    }


def bill_entry_event_attributes(
    head: dict[str, Any],
    *,
    detail_type: str,
    source_id: str,
    amount_paid: int,
    status: str,
    ids: dict[str, str],
) -> dict[str, Any]:
    """What a bill's entry carries for BillEventsPipe: the bill and its owner, the bill's amounts just
    after this entry (the write is conditional on the version read, so they are exact), and Moment's
    ids (empty for an outside payment or a void). Never the bill's or a payment's description."""
    amount_due = int(head["amount_due"])
    return {
        "detail_type": detail_type,
        "bill_ref": str(head["ref"]),
        "owner_kind": str(head["owner_kind"]),
        "owner_ref": str(head["owner_ref"]),
        "source_id": source_id,
        "status": status,
        "amount_due": amount_due,
        "amount_paid": amount_paid,
        "amount_remaining": max(0, amount_due - amount_paid),
        # not `moment_id`: that names the LinkedBalances index's key, which only heads may carry
        "bill_moment_id": str(head.get("moment_id") or ids.get("moment_id") or ""),
        "application_id": ids.get("application_id", ""),
        "payment_id": ids.get("payment_id", ""),
        "webhook_id": ids.get("webhook_id", ""),
    }


def is_bill_void_entry(entry: dict[str, Any]) -> bool:
    return entry.get("kind") == BILL_VOID_KIND


def bill_entry_event(entry: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(detail-type, detail) of a bill's stored entry, as BillEventsPipe announces it; None for an
    entry written before bills were announced (it lacks the pipe's fields, so no pipe announced it)."""
    if "detail_type" not in entry:
        return None
    detail: dict[str, Any] = {"event_id": f"{entry['pk']}|{entry['sk']}"}
    for name in BILL_EVENT_TEXT_FIELDS:
        if name != "detail_type":
            shown = {"kind": "entry_kind", "bill_moment_id": "moment_id"}.get(name, name)
            detail[shown] = str(entry.get(name, ""))
    for name in BILL_EVENT_NUMBER_FIELDS:
        detail[name] = str(int(entry[name]))  # a stream carries numbers as text
    detail["occurred_at"] = entry["created_at"]
    return str(entry["detail_type"]), detail


def entry_event(entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(detail-type, detail) of a stored entry, as the pipes announce it."""
    balance_kind, _, balance_ref = str(entry["pk"]).partition("#")
    kind = EntryKind(entry["kind"])
    source_id = str(entry.get("source_id") or str(entry["entry_id"]).partition(":")[2])
    detail: dict[str, Any] = {
        "event_id": f"{entry['pk']}|{entry['sk']}",
        "balance_kind": balance_kind.lower(),
        "balance_ref": balance_ref,
        "entry_id": entry["entry_id"],
        "amount": str(int(entry["amount"])),  # a stream carries numbers as text
        "currency": entry["currency"],
    }
    if kind is EntryKind.PAYMENT:
        source = entry.get("source") or {}
        detail |= {
            "application_id": source_id,
            "payment_id": str(source.get("payment_id", "")),
            "webhook_id": str(source.get("webhook_id", entry.get("webhook_id", ""))),
            "moment_id": str(source.get("moment_id", "")),
        }
    else:
        detail["source_id"] = source_id
    detail["occurred_at"] = entry["created_at"]
    return ENTRY_DETAIL_TYPES[kind], detail


def sync_transition_event(head: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The head's last sync state change, as announced; None if it never changed."""
    transition = head.get("sync_transition")
    if not transition:
        return None
    return SYNC_STATE_CHANGED, {
        "event_id": transition["id"],
        "balance_kind": head["kind"],
        "balance_ref": head["ref"],
        "old_state": transition["from"],
        "new_state": transition["to"],
        "occurred_at": transition["at"],
    }


def parking_event(event: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """A parked webhook event, as announced; None if it is not parked."""
    if event.get("status") != "parked" or "reason" not in event:
        return None
    return EVENT_PARKED, {
        "event_id": f"{event['webhook_id']}|parked",
        "webhook_id": event["webhook_id"],
        "reason": event["reason"],
        "reason_detail": str(event.get("reason_detail", "")),
        "occurred_at": event.get("parked_at", event["resolved_at"]),
    }
