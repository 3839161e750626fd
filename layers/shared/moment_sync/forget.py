"""A data-subject request (POPIA, GDPR): erase a customer's personal data, keep the money.

Erased: the name, e-mail and phone on the customer and the names of its accounts, and the raw bodies
of every stored webhook that names the customer or one of its accounts (by Moment id), whatever the
event's status; the description of each of their bills and of each outside payment on those bills
(free text), and the bodies of webhooks that name one of those bills. Kept: amounts, references,
entries, event statuses and ids, and each webhook's summary (amount, currency, Moment ids, event
type): what settling a payment needs, which the law
allows keeping. The reconciler and the re-drive decide from that summary alone, so a payment still
`received` or parked when the customer is forgotten is applied exactly once afterwards, as it would
have been. The events table is read in full to find those webhooks: a data-subject request is rare,
and an index for it would cost every webhook an extra write. Moment's own copy of the personal data
is not touched here (ask Moment, or PATCH it); a bill's description never went to Moment (its
metadata carries only this service's markers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moment_sync.adapters.ledger_table import LedgerTable
from moment_sync.adapters.webhook_events_table import WebhookEventsTable, iso_time
from moment_sync.ledger.bills import BillRef
from moment_sync.ledger.model import BalanceKind, BalanceRef
from moment_sync.ledger.service import PERSONAL_FIELDS, not_found
from moment_sync.reconciliation import EventStatus

# Fields of the stored webhook item that can carry personal data: the raw body, and nothing else
# (the summary fields are ids and amounts).
WEBHOOK_PERSONAL_FIELDS = ("body",)


@dataclass
class Erasure:
    customer: str
    fields_erased: dict[str, list[str]] = field(default_factory=dict)  # balance or bill -> fields
    # bill -> its outside payments (entry ids) whose description was erased
    bill_entries_erased: dict[str, list[str]] = field(default_factory=dict)
    webhook_bodies_erased: list[str] = field(default_factory=list)
    # Of those, events not final yet (received or parked): they still settle, from the kept summary.
    unsettled_webhooks: list[str] = field(default_factory=list)


def forget_customer(ledger: LedgerTable, events: WebhookEventsTable, ref: str, now: float) -> Erasure:
    customer = BalanceRef(BalanceKind.CUSTOMER, ref)
    head = ledger.get_head(customer)
    if head is None:
        raise not_found(str(customer))
    erasure = Erasure(ref)
    moment_ids = {head["moment_id"]} if head.get("moment_id") else set()

    balances: list[tuple[BalanceRef, dict[str, Any], tuple[str, ...]]] = [(customer, head, PERSONAL_FIELDS)]
    for account_head in ledger.accounts_of(ref):
        account = BalanceRef(BalanceKind.ACCOUNT, account_head["ref"])
        balances.append((account, account_head, ("name",)))
        if account_head.get("moment_id"):
            moment_ids.add(account_head["moment_id"])
    for balance, item, personal in balances:
        present = [name for name in personal if item.get(name) is not None]
        if present:
            ledger.erase_fields(balance, present, iso_time(now))
            erasure.fields_erased[str(balance)] = present

    for balance, _, _ in balances:
        moment_ids |= _erase_bills_of(ledger, balance, erasure, iso_time(now))

    for webhook_id, status in events.webhooks_naming(moment_ids):
        if events.erase_body(webhook_id, iso_time(now)):
            erasure.webhook_bodies_erased.append(webhook_id)
            if status in {EventStatus.RECEIVED, EventStatus.PARKED}:
                erasure.unsettled_webhooks.append(webhook_id)
    return erasure


def _erase_bills_of(ledger: LedgerTable, owner: BalanceRef, erasure: Erasure, now: str) -> set[str]:
    """The free text of the owner's bills and their outside payments; returns the bills' Moment ids."""
    moment_ids: set[str] = set()
    for bill_head in ledger.all_bills_of(owner.partition_key):
        bill = BillRef(str(bill_head["ref"]))
        if bill_head.get("moment_id"):
            moment_ids.add(bill_head["moment_id"])
        head_erased, entries = ledger.erase_bill_personal_data(bill, bill_head, now)
        if head_erased:
            erasure.fields_erased[str(bill)] = ["description"]
        if entries:
            erasure.bill_entries_erased[str(bill)] = entries
    return moment_ids
