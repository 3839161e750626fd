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
# The detail-type each kind of entry is announced as (the entry carries it as `detail_type`; the
# pipe of the other entries reads it from there, so a new kind needs no new pipe).
ENTRY_DETAIL_TYPES: Final = {
    EntryKind.PAYMENT: PAYMENT_APPLIED,
    EntryKind.CHARGE: "Charge Posted",
    EntryKind.BALANCE_SET: "Balance Set",
    EntryKind.ADJUSTMENT: "Adjustment Made",
}
DETAIL_TYPES: Final = (*ENTRY_DETAIL_TYPES.values(), SYNC_STATE_CHANGED, EVENT_PARKED)
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
