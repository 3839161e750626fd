"""The operator's way to announce again what the ledger recorded in a time range (docs/events.md).

After a pipe gave up on a batch (its dead-letter queue), was stopped longer than the stream keeps
records, or a consumer lost what it had: the same events, with the same `event_id` and `detail`, put
again on the bus. Consumers deduplicate by `event_id`, so re-publishing too much is harmless.

An erased customer's past events are not re-published (POPIA, GDPR): a balance whose head, or whose
customer's head, carries `personal_data_erased_at`, and a webhook whose body was erased.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from moment_sync.adapters.entry_keys import ENTRY_PREFIX
from moment_sync.adapters.ledger_table import HEAD, LedgerTable
from moment_sync.adapters.webhook_events_table import WebhookEventsTable
from moment_sync.events_out import (
    EVENT_PARKED,
    EVENT_SOURCE,
    bill_entry_event,
    entry_event,
    parking_event,
    sync_transition_event,
)
from moment_sync.ledger.bills import is_bill_key
from moment_sync.reconciliation import ParkReason

PUT_EVENTS_MAX = 10  # PutEvents' limit
Announcement = tuple[str, dict[str, Any]]  # (detail-type, detail)
# Puts up to 10 PutEvents entries; returns how many the bus refused.
PutEvents = Callable[[list[dict[str, Any]]], int]


@dataclass
class Republication:
    found: Counter[str] = field(default_factory=Counter)  # by detail-type
    published: int = 0
    refused: int = 0
    skipped_erased: int = 0


def recorded_between(
    ledger: LedgerTable,
    events: WebhookEventsTable,
    since: str,
    until: str,
    detail_types: set[str] | None = None,
) -> tuple[list[Announcement], int]:
    """What the ledger recorded in [since, until) (ISO times as the ledger writes them), oldest first,
    and how many announcements were skipped because their customer was erased."""
    items = list(ledger.scan_all())
    heads = {str(item["pk"]): item for item in items if item.get("sk") == HEAD}
    erased = {pk for pk, head in heads.items() if _erased(head, heads)}
    found: list[tuple[str, Announcement]] = []
    skipped = 0
    for item in items:
        announcement: Announcement | None = None
        # The window is on when the entry was written (`recorded_at`): a payment's `created_at` is its
        # claim's, up to entry_keys.CLAIM_FRESH_SECONDS earlier (a void entry has only created_at).
        written = str(item.get("recorded_at") or item.get("created_at", ""))
        if str(item.get("sk", "")).startswith(ENTRY_PREFIX) and since <= written < until:
            # a bill's entry as BillEventsPipe announces it (None: written before bills were announced)
            announcement = bill_entry_event(item) if is_bill_key(str(item["pk"])) else entry_event(item)
        elif item.get("sk") == HEAD and item.get("sync_transition"):
            at = str(item["sync_transition"]["at"])
            announcement = sync_transition_event(item) if since <= at < until else None
        if announcement is None or (detail_types and announcement[0] not in detail_types):
            continue
        if str(item["pk"]) in erased:
            skipped += 1
            continue
        found.append((announcement[1]["occurred_at"], announcement))
    if not detail_types or EVENT_PARKED in detail_types:
        parkings, erased_parkings = _parkings(events, since, until)
        found.extend((detail["occurred_at"], (detail_type, detail)) for detail_type, detail in parkings)
        skipped += erased_parkings
    found.sort(key=lambda pair: (pair[0], pair[1][1]["event_id"]))
    return [announcement for _at, announcement in found], skipped


def republish(announcements: Iterable[Announcement], put_events: PutEvents | None) -> Republication:
    """Put each announcement on the bus, 10 at a time (None: only count them, a dry run)."""
    report = Republication()
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        if batch and put_events is not None:
            refused = put_events(batch)
            report.refused += refused
            report.published += len(batch) - refused
        batch.clear()

    for detail_type, detail in announcements:
        report.found[detail_type] += 1
        batch.append({"Source": EVENT_SOURCE, "DetailType": detail_type, "Detail": json.dumps(detail)})
        if len(batch) == PUT_EVENTS_MAX:
            flush()
    flush()
    return report


def _parkings(events: WebhookEventsTable, since: str, until: str) -> tuple[list[Announcement], int]:
    """Events parked (first) in the range, from the Parked index; those whose body was erased skipped."""
    found: list[Announcement] = []
    skipped = 0
    for reason in ParkReason:
        for webhook_id in events.parked_ids(reason):
            event = events.get(webhook_id) or {}
            parked = parking_event(event)
            if parked is None or not since <= parked[1]["occurred_at"] < until:
                continue
            if "body_erased_at" in event:
                skipped += 1
            else:
                found.append(parked)
    return found, skipped


def _erased(head: dict[str, Any], heads: dict[str, dict[str, Any]]) -> bool:
    if "personal_data_erased_at" in head:
        return True
    if head.get("kind") == "bill":  # a bill is as erased as the balance that owes it
        owner = heads.get(f"{str(head.get('owner_kind', '')).upper()}#{head.get('owner_ref')}", {})
        return bool(owner) and _erased(owner, heads)
    customer = head.get("customer_ref")
    return bool(customer) and "personal_data_erased_at" in heads.get(f"CUSTOMER#{customer}", {})
