"""Bills in the Ledger table (docs/ledger.md#bills): the bill head, its entries, its link to Moment's
bill id, and the pusher's bookkeeping. `LedgerTable` inherits these methods.

Every change to a bill's money is conditional on the `version` read, in one transaction with its
entry (and, for a Moment payment, the event's status and the ledger-wide application guard): the
head's `status` and listing key depend on the new total, which an update expression cannot compute.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError

from moment_sync.adapters.dynamo_items import error_code, from_item, to_item, to_values
from moment_sync.adapters.entry_keys import (
    APPLICATION_PREFIX,
    ENTRY_PREFIX,
    ClaimAge,
    application_key,
    claim_age_rule,
    claim_still_dated,
    entry_key,
    entry_sort_key,
    source_item,
    source_key,
)
from moment_sync.adapters.pending_index import pending_pages
from moment_sync.adapters.webhook_events_table import WebhookEventsTable, iso_time
from moment_sync.events_out import (
    BILL_PAID,
    BILL_VOID_ENTRY_ID,
    BILL_VOID_KIND,
    BILL_VOIDED,
    bill_entry_event_attributes,
)
from moment_sync.ledger.bills import (
    BILL_PUSH_SHARD_PREFIX,
    BillEntry,
    BillRef,
    BillStatus,
    is_bill_key,
    listing_order,
    status_for,
)
from moment_sync.ledger.sync import Booking

BILLS_BY_OWNER_INDEX = "BillsByOwner"
LINKED_INDEX_NAME = "LinkedBalances"
_HEAD = "HEAD"
# A bill whose head keeps moving under a payment (many payments at once) is retried this many
# times before the whole operation is reported as transient (the stream or the API retries it).
_HEAD_RETRIES = 8


class BillWriteOutcome(StrEnum):
    APPLIED = "applied"
    EXISTS = "exists"  # an entry with this source is already on the bill
    NO_BILL = "no_bill"
    VOIDED = "voided"
    CURRENCY_MISMATCH = "currency_mismatch"
    # this Moment application id is already applied elsewhere (a balance, another bill) or otherwise
    APPLICATION_CONFLICT = "application_conflict"
    DUPLICATE = "duplicate"  # this Moment application is already an entry of this bill


@dataclass(frozen=True, slots=True)
class BillWriteResult:
    outcome: BillWriteOutcome
    head: dict[str, Any] | None = None  # the head after the change (applied) or as refused
    existing_entry: dict[str, Any] | None = None
    guard: dict[str, Any] | None = None  # for a duplicate or a conflict: the application guard


class BillTransient(Exception):
    """The bill kept changing under the write; retry the whole operation."""


def bill_head_key(bill: BillRef) -> dict[str, Any]:
    return {"pk": {"S": bill.partition_key}, "sk": {"S": _HEAD}}


def bill_entry_item(
    bill: BillRef,
    entry: BillEntry,
    currency: str,
    webhook_id: str | None,
    announce: dict[str, Any],
    recorded_at: str | None = None,
) -> dict[str, Any]:
    """`announce`: what BillEventsPipe reads (events_out.bill_entry_event_attributes). `recorded_at`:
    when this attempt wrote it (`created_at` may be its claim's: entry_keys.py)."""
    return to_item(
        {
            "pk": bill.partition_key,
            "sk": entry_sort_key(entry.created_at, entry.entry_id),
            "entry_id": entry.entry_id,
            "recorded_at": recorded_at or entry.created_at,
            "kind": entry.kind.value,
            "amount": entry.amount,
            "currency": currency,
            "source": entry.source,
            "created_at": entry.created_at,
            "webhook_id": webhook_id,
            **announce,  # its webhook_id is this one, or "" for an outside payment
        }
    )


def _bill_duplicate(
    bill: BillRef, entry: BillEntry, currency: str, applied: dict[str, Any]
) -> BillWriteResult:
    same = (applied.get("amount"), applied.get("currency")) == (entry.amount, currency)
    outcome = BillWriteOutcome.DUPLICATE if same else BillWriteOutcome.APPLICATION_CONFLICT
    return BillWriteResult(outcome, guard={**applied, "balance_pk": bill.partition_key})


def claim_key_of(claim: dict[str, Any]) -> dict[str, Any]:
    return {"pk": {"S": str(claim["pk"])}, "sk": {"S": str(claim["sk"])}}


class LedgerBills:
    """Mixed into LedgerTable: it provides the client, the table name and the events table."""

    _client: Any
    table_name: str
    _events: WebhookEventsTable | None
    attempts_bounded: bool
    _bill_links: dict[str, tuple[BillRef, float]]

    def claim_application(self, guard: dict[str, Any]) -> dict[str, Any] | None:
        raise NotImplementedError  # LedgerTable's: the one ledger-wide application guard

    # --- reads --------------------------------------------------------------------------------

    def get_bill(self, bill: BillRef) -> dict[str, Any] | None:
        response = self._client.get_item(
            TableName=self.table_name, Key=bill_head_key(bill), ConsistentRead=True
        )
        item = response.get("Item")
        return from_item(item) if item else None

    def get_bill_entry(self, bill: BillRef, entry_id: str) -> dict[str, Any] | None:
        return self.find_entry(bill.partition_key, entry_id)

    # --- entries keyed by time (adapters/entry_keys.py) ------------------------------------------

    def entry_at(self, partition_key: str, created_at: str, entry_id: str) -> dict[str, Any] | None:
        response = self._client.get_item(
            TableName=self.table_name, Key=entry_key(partition_key, created_at, entry_id), ConsistentRead=True
        )
        item = response.get("Item")
        return from_item(item) if item else None

    def find_entry(self, partition_key: str, entry_id: str) -> dict[str, Any] | None:
        """An entry by its id (two reads): a Moment payment's time is in its ledger-wide claim (which
        must name this partition), anything else's in its source guard in the same partition."""
        kind, _, source_id = entry_id.partition(":")
        if kind == "payment":
            guard = self._application_guard(source_id)
            if guard is None or guard.get("balance_pk") != partition_key:
                return None
        else:
            response = self._client.get_item(
                TableName=self.table_name, Key=source_key(partition_key, entry_id), ConsistentRead=True
            )
            guard = from_item(response["Item"]) if response.get("Item") else None
            if guard is None:
                return None
        return self.entry_at(partition_key, str(guard["created_at"]), entry_id)

    def claimed_time(
        self, partition_key: str, entry_id: str, claim: dict[str, Any], now: float, claimer: str
    ) -> tuple[str, dict[str, Any] | None]:
        """The time a payment whose claim is already there is keyed by, or the entry already there.
        A claim younger than CLAIM_FRESH_SECONDS: its time (a retry writes the same key, refused by
        the entry's `attribute_not_exists`). Older: its entry is read at that time; there, it is the
        answer. Absent while an attempt that read the claim fresh may still be writing (under
        CLAIM_FRESH_SECONDS + ATTEMPT_LIFETIME_SECONDS): TransientLedgerError, nothing is written,
        the event stays `received` for the stream or the re-drive. Absent after that: the claim is
        re-dated to this attempt's time, conditional on the time read (a lost race reads it again).
        So at most one key is ever written for one application (docs/ledger.md#entries-keyed-by-time)."""
        from moment_sync.adapters.ledger_table import TransientLedgerError  # noqa: PLC0415 -- a cycle

        for _ in range(_HEAD_RETRIES):
            claimed_at = str(claim["created_at"])
            age = claim_age_rule(claimed_at, now)
            if age is ClaimAge.FRESH:
                return claimed_at, None
            stored = self.entry_at(partition_key, claimed_at, entry_id)
            if stored is not None:
                return claimed_at, stored
            if age is ClaimAge.UNSETTLED:
                raise TransientLedgerError(
                    f"the claim of {entry_id} dated {claimed_at} may still be applied by the attempt "
                    "that made it: retried later"
                )
            new_time = iso_time(now)
            try:
                self._client.update_item(
                    TableName=self.table_name,
                    Key=dict(claim_key_of(claim)),
                    UpdateExpression="SET created_at = :new, webhook_id = :claimer, redated_from = :old",
                    ConditionExpression="created_at = :old",
                    ExpressionAttributeValues=to_values(
                        {":new": new_time, ":old": claimed_at, ":claimer": claimer}
                    ),
                )
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise
                claim = self._application_guard(str(claim["pk"]).removeprefix(APPLICATION_PREFIX)) or claim
                continue
            return new_time, None
        raise TransientLedgerError(f"the claim of {entry_id} kept changing: retried later")

    def bills_of(
        self,
        owner_pk: str,
        *,
        status: str | None = None,
        limit: int = 50,
        cursor: dict[str, Any] | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """An owner's bills from the BillsByOwner index: open ones first, soonest due first. Unpaid
        ones are a key condition; paid or voided (both closed) a filter on the closed ones, so a page
        may hold fewer than `limit` and still have a next one."""
        condition = "bill_owner = :owner"
        values: dict[str, Any] = {":owner": {"S": owner_pk}}
        request: dict[str, Any] = {}
        if status is not None:
            condition += " AND begins_with(bill_order, :order)"
            values[":order"] = {"S": ("0#" if status == BillStatus.UNPAID else "1#")}
        if status in (BillStatus.PAID, BillStatus.VOIDED):
            request["FilterExpression"] = "#status = :status"
            request["ExpressionAttributeNames"] = {"#status": "status"}
            values[":status"] = {"S": status}
        request |= {
            "TableName": self.table_name,
            "IndexName": BILLS_BY_OWNER_INDEX,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "Limit": limit,
        }
        if cursor:
            request["ExclusiveStartKey"] = cursor
        response = self._client.query(**request)
        return [from_item(item) for item in response.get("Items", [])], response.get("LastEvaluatedKey")

    def linked_bills(self) -> list[BillRef]:
        """Every bill linked to a Moment bill id (the LinkedBalances index holds bill heads too)."""
        found: list[BillRef] = []
        paginator = self._client.get_paginator("scan")
        for page in paginator.paginate(TableName=self.table_name, IndexName=LINKED_INDEX_NAME):
            for item in page.get("Items", []):
                if is_bill_key(item["pk"]["S"]):
                    found.append(BillRef.from_partition_key(item["pk"]["S"]))
        return found

    def all_bills_of(self, owner_pk: str) -> list[dict[str, Any]]:
        """Every bill of one owner (all pages of `bills_of`)."""
        found: list[dict[str, Any]] = []
        cursor: dict[str, Any] | None = None
        while True:
            page, cursor = self.bills_of(owner_pk, limit=100, cursor=cursor)
            found.extend(page)
            if cursor is None:
                return found

    def erase_bill_personal_data(
        self, bill: BillRef, head: dict[str, Any], now: str
    ) -> tuple[bool, list[str]]:
        """A data-subject request: the bill's `description` and the descriptions of its outside
        payments go (free text a merchant may fill with a name or an e-mail). Amounts, ids, statuses and
        each payment's request hash (its idempotency) stay. Returns whether the head's description went,
        and the ids of the entries whose description went."""
        head_erased = head.get("description") is not None
        if head_erased:
            self._client.update_item(
                TableName=self.table_name,
                Key=bill_head_key(bill),
                UpdateExpression="REMOVE description SET personal_data_erased_at = :now",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":now": {"S": now}},
            )
        erased: list[str] = []
        paginator = self._client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :entry)",
            ExpressionAttributeValues={":pk": {"S": bill.partition_key}, ":entry": {"S": ENTRY_PREFIX}},
            ConsistentRead=True,
        ):
            for item in page.get("Items", []):
                if "description" not in item.get("source", {}).get("M", {}):
                    continue
                self._client.update_item(
                    TableName=self.table_name,
                    Key={"pk": item["pk"], "sk": item["sk"]},
                    UpdateExpression="REMOVE #source.description SET personal_data_erased_at = :now",
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeNames={"#source": "source"},
                    ExpressionAttributeValues={":now": {"S": now}},
                )
                erased.append(item["entry_id"]["S"])
        return head_erased, erased

    # --- the merchant's changes ---------------------------------------------------------------

    def put_bill(self, head: dict[str, Any]) -> dict[str, Any] | None:
        """Raise a bill: None when created, else the bill already under that reference."""
        bill = BillRef(str(head["ref"]))
        try:
            self._client.put_item(
                TableName=self.table_name,
                Item=to_item({"pk": bill.partition_key, "sk": _HEAD, **head}),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise
            return self.get_bill(bill) or {}
        return None

    def void_bill(self, bill: BillRef, read: dict[str, Any], now: float) -> bool:
        """Void it in the ledger and make it pending (Moment is told by the next push), with its
        `ENTRY#void` (amount 0: `Bill Voided` on the stream, docs/events.md) in the same transaction;
        False if the bill changed since `read` (read again and retry) or was voided meanwhile."""
        values = {
            ":now": iso_time(now),
            ":voided": BillStatus.VOIDED.value,
            ":order": listing_order(BillStatus.VOIDED, read.get("due_date"), bill.ref),
            ":one": 1,
            ":version": read["version"],
            ":shard": bill.push_shard,
        }
        paid = int(read.get("amount_paid", 0))
        void_entry = {
            "pk": bill.partition_key,
            "sk": ENTRY_PREFIX + BILL_VOID_ENTRY_ID,
            # `ENTRY#void`: outside the time-keyed range the entries listing reads (it shows payments)
            "entry_id": BILL_VOID_ENTRY_ID,
            "kind": BILL_VOID_KIND,
            "amount": 0,  # a void changes no amount_paid: a reader that adds it up stays right
            "currency": read["currency"],
            "created_at": iso_time(now),
            **bill_entry_event_attributes(
                read,
                detail_type=BILL_VOIDED,
                source_id=bill.ref,
                amount_paid=paid,
                status=BillStatus.VOIDED.value,
                ids={},
            ),
        }
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": bill_head_key(bill),
                            "UpdateExpression": "SET #status = :voided, void_requested_at = :now, "
                            "bill_order = :order, updated_at = :now, "
                            "push_shard = if_not_exists(push_shard, :shard), "
                            "pending_since = if_not_exists(pending_since, :now) ADD version :one",
                            "ConditionExpression": "version = :version "
                            "AND attribute_not_exists(void_requested_at)",
                            "ExpressionAttributeNames": {"#status": "status"},
                            "ExpressionAttributeValues": to_values(values),
                        }
                    },
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": to_item(void_entry),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
        except ClientError as error:
            codes = [reason.get("Code") for reason in error.response.get("CancellationReasons") or []]
            if "ConditionalCheckFailed" in codes:
                return False
            from moment_sync.adapters.ledger_table import _transient_or  # noqa: PLC0415 -- a cycle

            raise _transient_or(error) from error
        return True

    def add_outside_payment(
        self, bill: BillRef, read: dict[str, Any], entry: BillEntry, request_hash: str
    ) -> BillWriteResult:
        """A payment taken outside Moment: its entry and the head (outside_paid, amount_paid, status;
        pending, since Moment must hear of it), only at the version read and only if not voided."""
        amount = entry.amount
        new_paid = int(read.get("amount_paid", 0)) + amount
        status = status_for(int(read["amount_due"]), new_paid, voided=False)
        announce = bill_entry_event_attributes(
            read,
            detail_type=BILL_PAID,
            source_id=entry.source_id,
            amount_paid=new_paid,
            status=status,
            ids={},
        )
        item = bill_entry_item(bill, entry, str(read["currency"]), None, announce)
        item["request_hash"] = {"S": request_hash}
        update = {
            "TableName": self.table_name,
            "Key": bill_head_key(bill),
            "UpdateExpression": "ADD outside_paid :amount, amount_paid :amount, version :one "
            "SET #status = :status, bill_order = :order, updated_at = :now, "
            "push_shard = if_not_exists(push_shard, :shard), "
            "pending_since = if_not_exists(pending_since, :now)",
            "ConditionExpression": "version = :version AND attribute_not_exists(void_requested_at)",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": to_values(
                {
                    ":amount": amount,
                    ":one": 1,
                    ":status": status.value,
                    ":order": listing_order(status, read.get("due_date"), bill.ref),
                    ":now": entry.created_at,
                    ":shard": bill.push_shard,
                    ":version": read["version"],
                }
            ),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        # The source's guard: the entry's key holds its time, so only this item refuses a second
        # entry from the same payment id (entry_keys.py).
        guard = {
            "TableName": self.table_name,
            "Item": source_item(bill.partition_key, entry.entry_id, entry.created_at),
            "ConditionExpression": "attribute_not_exists(pk)",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        put = {"TableName": self.table_name, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}
        try:
            self._client.transact_write_items(
                TransactItems=[{"Put": guard}, {"Put": put}, {"Update": update}]
            )
        except ClientError as error:
            reasons = error.response.get("CancellationReasons") or []
            codes = [reason.get("Code") for reason in reasons]
            if len(codes) == 3 and "ConditionalCheckFailed" in codes[:2]:
                source = from_item(reasons[0].get("Item") or {})
                existing = (
                    self.entry_at(bill.partition_key, str(source["created_at"]), entry.entry_id)
                    if source
                    else None
                )
                return BillWriteResult(BillWriteOutcome.EXISTS, existing_entry=existing)
            if len(codes) == 3 and codes[2] == "ConditionalCheckFailed":
                head = from_item(reasons[2].get("Item") or {})
                if head.get("void_requested_at"):
                    return BillWriteResult(BillWriteOutcome.VOIDED, head=head)
                raise BillTransient(f"{bill} changed while the payment was recorded") from error
            # A conflict or a throttle is worth the caller's retry (503), not a bug (500).
            from moment_sync.adapters.ledger_table import _transient_or  # noqa: PLC0415 -- a cycle

            raise _transient_or(error) from error
        return BillWriteResult(BillWriteOutcome.APPLIED)

    # --- Moment's payments (the reconciler) ---------------------------------------------------

    def resolve_bill_id(self, moment_id: str) -> BillRef | None:
        """The bill a Moment bill id is linked to (cached: links of bills never change)."""
        cached = self._bill_links.get(moment_id)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        response = self._client.get_item(
            TableName=self.table_name,
            Key={"pk": {"S": f"MOMENT#{moment_id}"}, "sk": {"S": "MOMENT"}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        if not item or "bill_pk" not in item:
            return None
        bill = BillRef.from_partition_key(item["bill_pk"]["S"])
        self._bill_links[moment_id] = (bill, time.monotonic() + 60.0)
        return bill

    def apply_bill_payment(
        self, bill: BillRef, entry: BillEntry, currency: str, webhook_id: str, now: float
    ) -> BillWriteResult:
        """Claim the application ledger-wide (the guard balances use, a plain conditional put), then in
        one transaction the entry (keyed by the application id) and the bill's amount_paid and status.
        The event's status is the caller's to write afterwards. A Moment payment alone makes the bill
        pending only when it has outside payments (a PATCH may have overwritten it)."""
        claimed = False
        for _ in range(_HEAD_RETRIES):
            head = self.get_bill(bill)
            if head is None:
                return BillWriteResult(BillWriteOutcome.NO_BILL)
            refused = self._refused(bill, head, entry, currency, webhook_id)
            if refused is not None:
                return refused
            if not claimed:
                dated = self._claim_and_date(bill, entry, currency, webhook_id, now)
                if isinstance(dated, BillWriteResult):
                    return dated
                entry, claimed = dated, True
            new_paid = int(head.get("amount_paid", 0)) + entry.amount
            status = status_for(int(head["amount_due"]), new_paid, voided=False)
            # A bill with outside payments was PATCHed with an absolute amount_paid, which may have
            # overwritten this payment at Moment (it landed between a push's read and its PATCH, its
            # webhook after the booking): the bill is checked again (a GET; a PATCH only if Moment lacks it).
            recheck, recheck_values = "", {}
            if int(head.get("outside_paid", 0)) > 0:
                recheck = (
                    ", push_shard = if_not_exists(push_shard, :shard), "
                    "pending_since = if_not_exists(pending_since, :now)"
                )
                recheck_values = {":shard": bill.push_shard}
            items = [
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": bill_entry_item(
                            bill,
                            entry,
                            currency,
                            webhook_id,
                            bill_entry_event_attributes(
                                head,
                                detail_type=BILL_PAID,
                                source_id=entry.source_id,
                                amount_paid=new_paid,
                                status=status,
                                ids=entry.source,
                            ),
                            iso_time(now),
                        ),
                        "ConditionExpression": "attribute_not_exists(pk)",
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": bill_head_key(bill),
                        "UpdateExpression": "ADD amount_paid_moment :amount, amount_paid :amount, "
                        "version :one SET #status = :status, bill_order = :order, updated_at = :now"
                        + recheck,
                        "ConditionExpression": "version = :version "
                        "AND attribute_not_exists(void_requested_at)",
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": to_values(
                            {
                                ":amount": entry.amount,
                                ":one": 1,
                                ":status": status.value,
                                ":order": listing_order(status, head.get("due_date"), bill.ref),
                                ":now": iso_time(now),
                                ":version": head["version"],
                                **recheck_values,
                            }
                        ),
                    }
                },
            ]
            if not self.attempts_bounded:
                items.append(claim_still_dated(self.table_name, entry.source_id, entry.created_at))
            try:
                self._client.transact_write_items(TransactItems=items)
            except ClientError as error:
                duplicate = _bill_payment_refusal(error, bill, entry, currency)
                if duplicate is not None:
                    return duplicate
                continue  # the bill moved (another payment) or was voided: read it again
            head.update(amount_paid=new_paid, status=status.value)
            return BillWriteResult(BillWriteOutcome.APPLIED, head=head)
        raise BillTransient(f"{bill} kept changing while a payment was applied")

    def _claim_and_date(
        self, bill: BillRef, entry: BillEntry, currency: str, webhook_id: str, now: float
    ) -> BillEntry | BillWriteResult:
        """Claim the application: a conflict, a duplicate already there, or the entry as it is to be
        keyed (a claim already there for this bill fixes its time, or is re-dated: `claimed_time`)."""
        conflict, existing = self._claim(bill, entry, currency, webhook_id)
        if conflict is not None:
            return BillWriteResult(BillWriteOutcome.APPLICATION_CONFLICT, guard=conflict)
        if existing is None:
            return entry
        created_at, stored = self.claimed_time(bill.partition_key, entry.entry_id, existing, now, webhook_id)
        if stored is not None:
            return _bill_duplicate(bill, entry, currency, stored)
        return replace(entry, created_at=created_at)

    def _refused(
        self, bill: BillRef, head: dict[str, Any], entry: BillEntry, currency: str, webhook_id: str
    ) -> BillWriteResult | None:
        """A voided bill or another currency takes no payment. An application applied already (before
        the void) is a duplicate or a conflict, never money to refund: the ledger-wide guard decides
        before the bill's state does, and for this bill its entry (a claim whose writer crashed before
        its transaction applied nothing: that payment is refused like any other). A payment refused
        here still claims its application, as a parked balance payment does, so the same id sent for
        another balance or bill is parked as a conflict, never applied there."""
        if not head.get("void_requested_at") and head.get("currency") == currency:
            return None
        applied = self._application_guard(entry.source_id)
        if applied is None:
            conflict = self._claim_for_bill(bill, entry, currency, webhook_id)
            if conflict is not None:
                return BillWriteResult(BillWriteOutcome.APPLICATION_CONFLICT, guard=conflict)
        if applied is not None:
            known = _duplicate_or_conflict(applied, bill, entry, currency)
            if known.outcome is BillWriteOutcome.APPLICATION_CONFLICT:
                return known
            stored = self.get_bill_entry(bill, entry.entry_id)
            if stored is not None:
                # The entry names who applied it: the claim's writer may have died before its transaction.
                return BillWriteResult(
                    known.outcome, guard={**applied, "webhook_id": stored.get("webhook_id")}
                )
        if head.get("void_requested_at"):
            return BillWriteResult(BillWriteOutcome.VOIDED, head=head)
        return BillWriteResult(BillWriteOutcome.CURRENCY_MISMATCH, head=head)

    def _application_guard(self, application_id: str) -> dict[str, Any] | None:
        """The ledger-wide guard of a Moment application, if it was applied (to a balance or a bill)."""
        response = self._client.get_item(
            TableName=self.table_name,
            Key=application_key(application_id),
            ConsistentRead=True,
        )
        item = response.get("Item")
        return from_item(item) if item else None

    def _claim_for_bill(
        self, bill: BillRef, entry: BillEntry, currency: str, webhook_id: str
    ) -> dict[str, Any] | None:
        """The application's guard for this bill; None when written or when one already names this bill
        and amount (its writer applied it or crashed before its transaction), else that other guard."""
        return self._claim(bill, entry, currency, webhook_id)[0]

    def _claim(
        self, bill: BillRef, entry: BillEntry, currency: str, webhook_id: str
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(another balance's or amount's guard, or None; this bill's guard already there, or None)."""
        guard = self.claim_application(
            to_item(
                {
                    "pk": APPLICATION_PREFIX + entry.source_id,
                    "sk": "APPLICATION",
                    "balance_pk": bill.partition_key,
                    "entry_id": entry.entry_id,
                    "amount": entry.amount,
                    "currency": currency,
                    "webhook_id": webhook_id,
                    "created_at": entry.created_at,
                }
            )
        )
        if guard is None:
            return None, None
        named = (guard.get("balance_pk"), guard.get("amount"), guard.get("currency"))
        return (None, guard) if named == (bill.partition_key, entry.amount, currency) else (guard, None)

    # --- the pusher's port --------------------------------------------------------------------

    def pending_bill_pushes(
        self, now: float, limit: int = 1000, shards: Collection[int] | None = None
    ) -> list[tuple[str, BillRef]]:
        """Bills due a push and not backing off, oldest first across the `billpush#N` shards (or in the
        one `shard` a fanned-out worker pushes): the first `limit` of `pending_bill_pages`."""
        return next(iter(self.pending_bill_pages(now, limit, shards)), [])

    def pending_bill_pages(
        self, now: float, page_size: int = 1000, shards: Collection[int] | None = None
    ) -> Iterator[list[tuple[str, BillRef]]]:
        """Every bill due a push and not backing off, oldest first across the shards, a page at a time:
        each page reads on where the last ended (each shard's own cursor, DynamoDB's
        `LastEvaluatedKey`), never from the start again, so bills left pending by an earlier page
        (waiting for their owner, moved while pushed) never hide the ones after them (the balances'
        reading too: `pending_index.pending_pages`)."""
        return pending_pages(
            self._client,
            self.table_name,
            shard_prefix=BILL_PUSH_SHARD_PREFIX,
            shards=shards,
            now=now,
            page_size=page_size,
            ref_of=BillRef.from_partition_key,
        )

    def link_bill(self, bill: BillRef, moment_id: str) -> None:
        """Moment knows `bill` as `moment_id` (a create or an adoption, or the re-drive's link): the
        link item and the head in one transaction; linking the same pair again is a no-op.
        MappingConflict (from ledger_table) if either is already linked to something else."""
        # ledger_table imports this module: its errors are imported when first needed.
        from moment_sync.adapters.ledger_table import MappingConflict, _transient_or  # noqa: PLC0415

        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": {
                                "pk": {"S": f"MOMENT#{moment_id}"},
                                "sk": {"S": "MOMENT"},
                                "bill_pk": {"S": bill.partition_key},
                                "kind": {"S": "bill"},
                                "ref": {"S": bill.ref},
                            },
                            "ConditionExpression": "attribute_not_exists(pk) OR bill_pk = :pk",
                            "ExpressionAttributeValues": {":pk": {"S": bill.partition_key}},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": bill_head_key(bill),
                            "UpdateExpression": "SET moment_id = :id",
                            "ConditionExpression": "attribute_exists(pk) AND "
                            "(attribute_not_exists(moment_id) OR moment_id = :id)",
                            "ExpressionAttributeValues": {":id": {"S": moment_id}},
                        }
                    },
                ]
            )
        except ClientError as error:
            codes = [reason.get("Code", "") for reason in error.response.get("CancellationReasons") or []]
            if "ConditionalCheckFailed" in codes:
                raise MappingConflict(f"{moment_id} or {bill} is already linked to something else") from error
            raise _transient_or(error) from error
        self._bill_links[moment_id] = (bill, time.monotonic() + 60.0)

    def record_bill_intent(self, bill: BillRef, read: dict[str, Any], amount_paid: int) -> int:
        """Before a PATCH: remember the cumulative amount_paid about to be sent and the outside
        payments it carries, so whatever becomes of its answer the next run knows it may have landed.
        Conditional on the push state read; returns the intent's index."""
        condition, values = _bill_push_condition(read)
        open_intents = len(read.get("push_intents", []))
        self._client.update_item(
            TableName=self.table_name,
            Key=bill_head_key(bill),
            UpdateExpression="SET push_intents = list_append(if_not_exists(push_intents, :none), :intent)",
            ConditionExpression=condition,
            ExpressionAttributeValues=to_values(
                {
                    ":intent": [
                        {"amount_paid": amount_paid, "outside_paid": int(read.get("outside_paid", 0))}
                    ],
                    ":none": [],
                    **values,
                }
            ),
        )
        return open_intents

    def drop_bill_intent(self, bill: BillRef, read: dict[str, Any], index: int) -> None:
        """The PATCH certainly never reached Moment: it explains nothing."""
        condition, values = _bill_push_condition(read, open_intents=index + 1)
        self._client.update_item(
            TableName=self.table_name,
            Key=bill_head_key(bill),
            UpdateExpression=f"REMOVE push_intents[{int(index)}]",
            ConditionExpression=condition,
            ExpressionAttributeValues=to_values(values),
        )

    def record_bill_push(
        self,
        bill: BillRef,
        read: dict[str, Any],
        moment_amount_paid: int,
        now: float,
        *,
        voided_at_moment: bool = False,
    ) -> Booking:
        """After Moment shows what the push meant (re-read): the outside payments read are booked at
        Moment (`outside_booked := outside_paid` read), every open intent is cleared, backoff and flags
        reset; the pending marker goes only if the bill's version is still the one read. REFUSED if
        another push booked since the read (conditional on the push state read); SYNCED when the bill
        left the pending list and this write announced `-> synced` (`Booking`); BOOKED when it stays
        pending (a change came since the read: no transition written) or was read `synced` already."""
        from moment_sync.adapters.ledger_table import _synced_transition  # noqa: PLC0415 -- a cycle

        condition, values = _bill_push_condition(read)
        values |= {
            ":booked": int(read.get("outside_paid", 0)),
            ":moment": moment_amount_paid,
            ":now": iso_time(now),
            ":version": read["version"],
            ":zero": 0,
            ":one": 1,
        }
        sets = (
            "SET outside_booked = :booked, pushed_amount_paid = :moment, pushed_at = :now, "
            "pushed_version = :version, push_attempts = :zero"
        )
        if voided_at_moment:
            sets += ", voided_at_moment = if_not_exists(voided_at_moment, :now)"
        removed = (
            "REMOVE push_intents, last_push_error, next_push_at, defer_count, push_blocked, "
            "blocked_since, push_conflict"
        )
        # One more in the push sequence: a stale read of this push state can write nothing after it.
        added = " ADD push_seq :one"
        # Only the write that takes the bill off the pusher's list announces `-> synced` (docs/events.md):
        # no later look would. A booking that keeps it pending writes no transition (as the balances'
        # `record_push`): the look's end announces what the bill is.
        synced_sets, synced_condition, synced_values = _synced_transition(bill, read, now)
        synced = "".join(", " + clause for clause in synced_sets)
        for update, extra_condition, extra_values, booking in (
            (
                f"{sets}{synced}{added} {removed}, push_shard, pending_since",
                synced_condition + " AND version = :version",
                synced_values,
                Booking.SYNCED if synced_sets else Booking.BOOKED,
            ),
            # still pending: the look's end announces it
            (f"{sets}{added} {removed}", "", {}, Booking.BOOKED),
        ):
            try:
                self._client.update_item(
                    TableName=self.table_name,
                    Key=bill_head_key(bill),
                    UpdateExpression=update,
                    ConditionExpression=condition + extra_condition,
                    ExpressionAttributeValues=to_values(values | extra_values),
                )
                return booking
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise
        return Booking.REFUSED

    def record_bill_patch_ignored(
        self, bill: BillRef, read: dict[str, Any], index: int, detail: str, now: float, retry_at: float
    ) -> None:
        """Moment answered the PATCH of intent `index` without taking its amount_paid: the intent is
        kept (its metadata may be at Moment) but marked `ignored`, so its outside payments never count
        as at Moment, and the bill is `blocked`. Conditional on the push state read (`read`: the head
        before the intent)."""
        condition, values = _bill_push_condition(read, open_intents=index + 1)
        self._client.update_item(
            TableName=self.table_name,
            Key=bill_head_key(bill),
            # One more in the push sequence: a read from before the mark must not book the intent's
            # outside payments as at Moment (the number of intents does not change).
            UpdateExpression=f"SET push_intents[{int(index)}].ignored = :yes, push_blocked = :detail, "
            "last_push_error = :detail, next_push_at = :retry, "
            "blocked_since = if_not_exists(blocked_since, :now) ADD push_seq :one",
            ConditionExpression=condition,
            ExpressionAttributeValues=to_values(
                {
                    ":yes": True,
                    ":detail": detail[:500],
                    ":retry": iso_time(retry_at),
                    ":now": iso_time(now),
                    ":one": 1,
                    **values,
                }
            ),
        )

    def record_bill_blocked(self, bill: BillRef, detail: str, now: float, retry_at: float) -> None:
        """An outside payment Moment's reference does not say it can take (the bill is paid at
        Moment, or amount_paid would pass amount_due): the bill shows `blocked` until an operator acts;
        looked at again at `retry_at`."""
        self._client.update_item(
            TableName=self.table_name,
            Key=bill_head_key(bill),
            UpdateExpression="SET push_blocked = :detail, last_push_error = :detail, next_push_at = :retry, "
            "blocked_since = if_not_exists(blocked_since, :now)",
            ConditionExpression="attribute_exists(push_shard)",
            ExpressionAttributeValues=to_values(
                {":detail": detail[:500], ":retry": iso_time(retry_at), ":now": iso_time(now)}
            ),
        )


def _duplicate_or_conflict(
    applied: dict[str, Any], bill: BillRef, entry: BillEntry, currency: str
) -> BillWriteResult:
    """This application is already applied: the same bill, amount and currency is a duplicate."""
    same = (applied.get("balance_pk"), applied.get("amount"), applied.get("currency")) == (
        bill.partition_key,
        entry.amount,
        currency,
    )
    outcome = BillWriteOutcome.DUPLICATE if same else BillWriteOutcome.APPLICATION_CONFLICT
    return BillWriteResult(outcome, guard=applied)


def _bill_push_condition(read: dict[str, Any], open_intents: int | None = None) -> tuple[str, dict[str, Any]]:
    """The bill still has the push state the pusher read: the same push sequence, last booked push
    and number of open intents (only the pusher changes them). The sequence (`push_seq`, one more at
    every booking and at every intent marked ignored) makes it exact, as the balances' does: the
    booking's time alone comes back when two bookings share a millisecond (two execution
    environments' clocks, a clock set back), and marking an intent ignored changes neither it nor
    the number of intents."""
    count = len(read.get("push_intents", [])) if open_intents is None else open_intents
    values: dict[str, Any] = {":open": count}
    if count == 0:
        intents = "(attribute_not_exists(push_intents) OR size(push_intents) = :open)"
    else:
        intents = "size(push_intents) = :open"
    if read.get("push_seq") is None:
        sequence = "attribute_not_exists(push_seq)"
    else:
        sequence, values[":read_seq"] = "push_seq = :read_seq", read["push_seq"]
    if read.get("pushed_at") is None:
        never_booked = "attribute_exists(pk) AND attribute_not_exists(pushed_at)"
        return f"{never_booked} AND {sequence} AND {intents}", values
    values[":read_pushed"] = read["pushed_at"]
    return f"pushed_at = :read_pushed AND {sequence} AND {intents}", values


def _bill_payment_refusal(
    error: ClientError, bill: BillRef, entry: BillEntry, currency: str
) -> BillWriteResult | None:
    """Why a bill payment's transaction was refused: the entry already there (a duplicate or a
    conflict), None when the bill moved (read it again), or raised (the claim re-dated meanwhile, or
    anything else)."""
    reasons = error.response.get("CancellationReasons") or []
    codes = [reason.get("Code") for reason in reasons]
    if len(codes) in (2, 3) and codes[0] == "ConditionalCheckFailed":
        # The entry is there: the webhook it names applied it (the claim's may have crashed).
        return _bill_duplicate(bill, entry, currency, from_item(reasons[0].get("Item") or {}))
    if len(codes) == 3 and codes[2] == "ConditionalCheckFailed":
        raise BillTransient(f"the claim of {entry.entry_id} was re-dated meanwhile") from error
    if len(codes) in (2, 3) and codes[1] == "ConditionalCheckFailed":
        return None
    raise error
