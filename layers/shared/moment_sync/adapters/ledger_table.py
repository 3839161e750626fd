"""The Ledger table (single-table design; the schema lives in template.yaml).

- a customer's or an account's head (balance, version, currency, Moment id, sync state):
  pk `CUSTOMER#<ref>` or `ACCOUNT#<ref>`, sk `HEAD`;
- one immutable entry per change, keyed by its time and source: the same pk, sk
  `ENTRY#<created_at>#<kind>:<source id>` (adapters/entry_keys.py); a repeat is refused by the item
  that fixes its time: the payment's `APPLICATION#` claim, or a merchant's entry's `SOURCE#<entry id>`;
- a Moment id's link to its reference: pk `MOMENT#<bcus_…|bacc_…>`, sk `MOMENT`;
- a Moment application's guard, ledger-wide: pk `APPLICATION#<data.id>`, sk `APPLICATION`, holding
  the balance, amount and currency it was applied as (entries are keyed per balance, so only this
  stops one application from changing two balances).

Entries are listed newest first by the base table's own order (a strongly consistent Query).
A head whose version is ahead of what Moment has carries `push_shard` and `pending_since`, which
put it in the sparse `PendingPush` index the pusher reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from moment_sync.adapters.dynamo_items import error_code, from_item, to_item, to_values
from moment_sync.adapters.entry_keys import (
    ENTRY_RANGE,
    application_key,
    claim_still_dated,
    entry_sort_key,
    source_item,
)
from moment_sync.adapters.ledger_bills import LedgerBills, _bill_push_condition
from moment_sync.adapters.pending_index import PENDING_INDEX, pending_pages
from moment_sync.adapters.webhook_events_table import WebhookEventsTable, iso_time
from moment_sync.events_out import entry_event_attributes
from moment_sync.ledger.bills import BillRef, is_bill_key
from moment_sync.ledger.model import PUSH_SHARD_PREFIX, PUSH_SHARDS, BalanceKind, BalanceRef, Entry, EntryKind
from moment_sync.ledger.sync import SYNC_FIELDS, Booking, sync_state

if TYPE_CHECKING:
    from moment_sync.adapters.lease import DynamoLeases

HEAD = "HEAD"
LINKED_INDEX = "LinkedBalances"
ACCOUNTS_INDEX = "AccountsByCustomer"
LINK_CACHE_SECONDS = 60.0


class TransientLedgerError(Exception):
    """Throttled, conflicting with another transaction, or timed out: retry the whole operation."""


class MappingConflict(Exception):
    """The Moment id, or the balance, is already linked to something else."""


class PaymentOutcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this application is already an entry of the balance
    CURRENCY_MISMATCH = "currency_mismatch"
    NO_BALANCE = "no_balance"  # the mapping points at a balance that does not exist
    NOT_TRACKED = "not_tracked"  # a customer on the account-balance model carries no balance
    # this application id is already applied to another balance, or as another amount or currency
    APPLICATION_CONFLICT = "application_conflict"


@dataclass(frozen=True, slots=True)
class AppliedApplication:
    """How a Moment application was applied: to which balance, as which amount and currency."""

    balance: BalanceRef | BillRef  # the guard is ledger-wide: a balance or a bill (docs/ledger.md#bills)
    amount: int  # as Moment sent it (positive), not the entry's signed amount
    currency: str
    webhook_id: str | None


@dataclass(frozen=True, slots=True)
class PaymentResult:
    outcome: PaymentOutcome
    entry_id: str
    # For a duplicate or a conflict: the webhook whose delivery applied the entry first.
    applied_by_webhook: str | None = None
    balance_currency: str | None = None
    # For a conflict: what the ledger already holds for this application id.
    applied_as: AppliedApplication | None = None


class EntryOutcome(StrEnum):
    APPLIED = "applied"
    EXISTS = "exists"  # an entry with this source is already there
    STALE = "stale"  # the balance moved past the expected version
    CURRENCY_MISMATCH = "currency_mismatch"
    NO_BALANCE = "no_balance"
    NOT_TRACKED = "not_tracked"
    OUT_OF_RANGE = "out_of_range"  # the balance would leave -limit..limit (Moment's bound)


@dataclass(frozen=True, slots=True)
class EntryResult:
    outcome: EntryOutcome
    existing_entry: dict[str, Any] | None = None
    head: dict[str, Any] | None = None


def mapping_key(moment_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"MOMENT#{moment_id}"}, "sk": {"S": "MOMENT"}}


def head_key(balance: BalanceRef | BillRef) -> dict[str, Any]:
    return {"pk": {"S": balance.partition_key}, "sk": {"S": HEAD}}


def application_item(
    balance: BalanceRef, entry: Entry, currency: str, webhook_id: str | None
) -> dict[str, Any]:
    """The guard of a payment entry. It carries none of the indexes' key attributes: in no index."""
    return {
        **application_key(entry.source_id),
        **to_item(
            {
                "balance_pk": balance.partition_key,
                "entry_id": entry.entry_id,
                "amount": -entry.amount,
                "currency": currency,
                "webhook_id": webhook_id,
                "created_at": entry.created_at,
            }
        ),
    }


def entry_item(
    balance: BalanceRef,
    entry: Entry,
    currency: str,
    webhook_id: str | None = None,
    recorded_at: str | None = None,
) -> dict[str, Any]:
    """`recorded_at`: when this attempt wrote it (`created_at` may be its claim's, up to
    entry_keys.CLAIM_FRESH_SECONDS earlier); what republish's window reads."""
    return to_item(
        {
            "pk": balance.partition_key,
            "sk": entry_sort_key(entry.created_at, entry.entry_id),
            "entry_id": entry.entry_id,
            "recorded_at": recorded_at or entry.created_at,
            "kind": entry.kind.value,
            "amount": entry.amount,
            "currency": currency,
            "source": entry.source,
            "created_at": entry.created_at,
            "webhook_id": webhook_id,
            # For the event pipes (docs/events.md): the detail-type and the fields a transformation needs.
            **entry_event_attributes(balance.partition_key, entry.kind, entry.source_id),
        }
    )


class LedgerTable(LedgerBills):
    def __init__(
        self,
        client: Any,
        table_name: str,
        events: WebhookEventsTable | None = None,
        *,
        attempts_bounded: bool = True,
    ) -> None:
        self._client = client
        self.table_name = table_name
        self._events = events
        # False where a payment's attempt is not a Lambda's (the operator's CLI: its own clock, no
        # timeout, may sleep between claim and write): its transactions also check that the claim
        # still names the entry's time, so a re-date meanwhile refuses it
        # (docs/ledger.md#entries-keyed-by-time).
        self.attempts_bounded = attempts_bounded
        # Moment id → reference links change only by an operator's `unlink`: cache them per execution
        # environment for LINK_CACHE_SECONDS, so an unlinked id stops resolving within that bound.
        self._links: dict[str, tuple[BalanceRef, float]] = {}
        self._bill_links: dict[str, tuple[BillRef, float]] = {}

    # --- heads ----------------------------------------------------------------------------

    def get_head(self, balance: BalanceRef) -> dict[str, Any] | None:
        response = self._client.get_item(
            TableName=self.table_name, Key=head_key(balance), ConsistentRead=True
        )
        item = response.get("Item")
        return from_item(item) if item else None

    def open_balance(
        self,
        balance: BalanceRef,
        currency: str,
        now: float,
        *,
        customer_ref: str | None = None,
        balance_model: str | None = None,
        moment_id: str | None = None,
    ) -> bool:
        """Create a head with a zero balance; False if it exists already (nothing is changed)."""
        tracked = balance.kind is BalanceKind.ACCOUNT or balance_model != "accounts"
        item: dict[str, Any] = {
            "pk": balance.partition_key,
            "sk": HEAD,
            "kind": balance.kind.value,
            "ref": balance.ref,
            "currency": currency,
            "customer_ref": customer_ref,
            "balance_model": balance_model,
            "created_at": iso_time(now),
            "updated_at": iso_time(now),
        }
        if tracked:
            item.update({"balance": 0, "version": 0, "payments_since_push": 0})
            item["sync_state"] = "synced"  # the state last announced (docs/events.md)
        try:
            self._client.put_item(
                TableName=self.table_name, Item=to_item(item), ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        if moment_id:
            self.link_moment_id(balance, moment_id)
        return True

    # --- Moment ids -------------------------------------------------------------------------

    def resolve_moment_id(self, moment_id: str) -> BalanceRef | None:
        cached = self._links.get(moment_id)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        response = self._client.get_item(
            TableName=self.table_name, Key=mapping_key(moment_id), ConsistentRead=True
        )
        item = response.get("Item")
        if not item or "balance_pk" not in item:  # a bill's link has bill_pk: never a balance
            self._links.pop(moment_id, None)
            return None
        balance = BalanceRef.from_partition_key(item["balance_pk"]["S"])
        self._links[moment_id] = (balance, time.monotonic() + LINK_CACHE_SECONDS)
        return balance

    def link_moment_id(self, balance: BalanceRef, moment_id: str, *, pending_at: float | None = None) -> None:
        """Record that Moment knows `balance` as `moment_id`; linking the same pair again is a no-op.
        With `pending_at` (a tracked balance never pushed), the balance is also made pending: the
        pusher must look at an object linked from outside its own create, or nothing ever compares
        Moment's balance with the ledger's (a balance with no change since would stay `synced`)."""
        head_update = "SET moment_id = :id"
        head_values: dict[str, Any] = {":id": moment_id}
        if pending_at is not None:
            head_update += (
                ", push_shard = if_not_exists(push_shard, :shard), "
                "pending_since = if_not_exists(pending_since, :now)"
            )
            head_values |= {":shard": balance.push_shard, ":now": iso_time(pending_at)}
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": {
                                **mapping_key(moment_id),
                                "balance_pk": {"S": balance.partition_key},
                                "kind": {"S": balance.kind.value},
                                "ref": {"S": balance.ref},
                            },
                            "ConditionExpression": "attribute_not_exists(pk) OR balance_pk = :pk",
                            "ExpressionAttributeValues": {":pk": {"S": balance.partition_key}},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": head_key(balance),
                            "UpdateExpression": head_update,
                            "ConditionExpression": "attribute_exists(pk) AND "
                            "(attribute_not_exists(moment_id) OR moment_id = :id)",
                            "ExpressionAttributeValues": to_values(head_values),
                        }
                    },
                ]
            )
        except ClientError as error:
            reasons = _cancellation_codes(error)
            if "ConditionalCheckFailed" in reasons:
                raise MappingConflict(
                    f"{moment_id} or {balance} is already linked to something else"
                ) from error
            raise _transient_or(error) from error
        self._links[moment_id] = (balance, time.monotonic() + LINK_CACHE_SECONDS)

    def unlink_moment_id(
        self, balance: BalanceRef, moment_id: str, now: float, *, tracked: bool = True
    ) -> None:
        """An operator's way out of a wrong link: forget that `balance` is `moment_id` at Moment, with
        the push state that belonged to that object, and make the balance pending so the next run
        creates (or adopts) the right object. MappingConflict if they are not linked to each other.
        A customer on the account-balance model (`tracked` False) holds no balance: only the link goes."""
        head_update: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": head_key(balance),
            "UpdateExpression": "REMOVE moment_id",
            "ConditionExpression": "moment_id = :id",
            "ExpressionAttributeValues": {":id": {"S": moment_id}},
        }
        if tracked:
            head_update = {
                "TableName": self.table_name,
                "Key": head_key(balance),
                "UpdateExpression": "REMOVE moment_id, pushed_balance, pushed_version, "
                "push_intent, push_intent_payments, push_intents, payments_list, payments_pushed, "
                "payments_merged, payments_merged_count, defer_count, "
                "deferred_since, last_moment_balance, next_push_at, adoption_decision, "
                + _CONFLICT_FIELDS
                + " SET payments_since_push = :zero, push_attempts = :zero, "
                "push_shard = if_not_exists(push_shard, :shard), "
                "pending_since = if_not_exists(pending_since, :now)",
                "ConditionExpression": "moment_id = :id AND attribute_exists(version)",
                "ExpressionAttributeValues": to_values(
                    {":id": moment_id, ":zero": 0, ":shard": balance.push_shard, ":now": iso_time(now)}
                ),
            }
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Delete": {
                            "TableName": self.table_name,
                            "Key": mapping_key(moment_id),
                            "ConditionExpression": "balance_pk = :pk",
                            "ExpressionAttributeValues": {":pk": {"S": balance.partition_key}},
                        }
                    },
                    {"Update": head_update},
                ]
            )
        except ClientError as error:
            if "ConditionalCheckFailed" in _cancellation_codes(error):
                raise MappingConflict(f"{balance} is not linked to {moment_id}") from error
            raise _transient_or(error) from error
        self._links.pop(moment_id, None)

    # --- money ------------------------------------------------------------------------------

    def apply_payment(
        self, balance: BalanceRef, entry: Entry, currency: str, webhook_id: str, now: float
    ) -> PaymentResult:
        """Claim the application ledger-wide (its guard, a plain conditional put), then in one
        transaction the entry (refused if this application is already there) and the balance with its
        sync bookkeeping. The event's status is the caller's to write afterwards, on every path that
        finds the payment applied (docs/ledger.md#the-reconciler)."""
        claimed = self.claim_payment(balance, entry, currency, webhook_id, now)
        if isinstance(claimed, PaymentResult):
            return claimed
        entry, claim = claimed
        return self.write_payment(balance, entry, currency, webhook_id, now, claim)

    def claim_payment(
        self, balance: BalanceRef, entry: Entry, currency: str, webhook_id: str, now: float
    ) -> PaymentResult | tuple[Entry, dict[str, Any] | None]:
        """`apply_payment`'s first half: the claim, and the entry as it is to be keyed (with the claim
        found, if there was one), or the outcome already known (a conflict, a duplicate)."""
        claim = self.claim_application(application_item(balance, entry, currency, webhook_id))
        if claim is not None:
            applied = _applied_as(claim)
            if (applied.balance, applied.amount, applied.currency) != (balance, -entry.amount, currency):
                conflict = PaymentOutcome.APPLICATION_CONFLICT
                return PaymentResult(conflict, entry.entry_id, applied.webhook_id, applied_as=applied)
            # The claim names this balance and amount: its writer applied it, or crashed before, or was
            # refused. The claim fixes the entry's time (its key), or is re-dated (`claimed_time`).
            created_at, stored = self.claimed_time(
                balance.partition_key, entry.entry_id, claim, now, webhook_id
            )
            if stored is not None:
                found = AppliedApplication(
                    balance, -int(stored["amount"]), str(stored["currency"]), stored.get("webhook_id")
                )
                return _duplicate_or_conflict(found, balance, entry, currency)
            entry = replace(entry, created_at=created_at)
        return entry, claim

    def write_payment(
        self,
        balance: BalanceRef,
        entry: Entry,
        currency: str,
        webhook_id: str,
        now: float,
        claim: dict[str, Any] | None,
    ) -> PaymentResult:
        """`apply_payment`'s second half: the entry at the time `claim_payment` fixed, and the head."""
        listed = True
        while True:
            items = [
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": entry_item(balance, entry, currency, webhook_id, iso_time(now)),
                        "ConditionExpression": "attribute_not_exists(pk)",
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": head_key(balance),
                        **_payment_head_update(entry.amount, currency, balance.push_shard, now, listed),
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
            ]
            if not self.attempts_bounded:
                items.append(claim_still_dated(self.table_name, entry.source_id, entry.created_at))
            try:
                self._client.transact_write_items(TransactItems=items)
            except ClientError as error:
                if listed and _payments_list_full(error, currency):
                    listed = False  # the head's list is at its cap: merge this payment instead
                    continue
                refused = self._explain_refused_payment(error, balance, entry, currency)
                if claim is None and refused.applied_by_webhook not in (None, webhook_id):
                    # A payment from before guards existed: the claim just written must name it instead.
                    self._guard_as_entry(balance, entry, error, webhook_id)
                return refused
            return PaymentResult(PaymentOutcome.APPLIED, entry.entry_id, webhook_id)

    def _guard_as_entry(self, balance: BalanceRef, entry: Entry, error: ClientError, claimer: str) -> None:
        """Rewrite the claim `claimer` just wrote to name the entry already there (as the operator's
        `backfill-application-guards` would have), so later deliveries compare against the truth."""
        reasons = error.response.get("CancellationReasons") or []
        existing = from_item(reasons[0].get("Item") or {})
        applied = Entry(
            kind=entry.kind,
            amount=int(existing["amount"]),
            source_id=entry.source_id,
            source={},
            created_at=str(existing.get("created_at", entry.created_at)),
        )
        item = application_item(balance, applied, str(existing["currency"]), existing.get("webhook_id"))
        try:
            self._client.put_item(
                TableName=self.table_name,
                Item=item,
                ConditionExpression="webhook_id = :claimer",
                ExpressionAttributeValues={":claimer": {"S": claimer}},
            )
        except ClientError as put_error:
            if error_code(put_error) != "ConditionalCheckFailedException":
                raise _transient_or(put_error) from put_error

    def claim_application(self, guard: dict[str, Any]) -> dict[str, Any] | None:
        """Put an application's guard (invariant 2 ledger-wide: entries are keyed per balance, the
        guard per application). None when written; otherwise the guard already there. A claim is
        never removed: whatever it names is the only place that application may ever be applied."""
        try:
            self._client.put_item(
                TableName=self.table_name,
                Item=guard,
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise _transient_or(error) from error
            return from_item(error.response.get("Item") or {})
        return None

    def _explain_refused_payment(
        self, error: ClientError, balance: BalanceRef, entry: Entry, currency: str
    ) -> PaymentResult:
        reasons = error.response.get("CancellationReasons") or []
        codes = [reason.get("Code") for reason in reasons]
        if len(codes) in (2, 3) and codes[0] == "ConditionalCheckFailed":
            # The entry is there: applied before, by the webhook the entry names (the claim may be
            # another's that crashed before its transaction, so the entry, not the claim, says who).
            existing = from_item(reasons[0].get("Item") or {})
            applied = AppliedApplication(
                balance, -int(existing["amount"]), str(existing["currency"]), existing.get("webhook_id")
            )
            return _duplicate_or_conflict(applied, balance, entry, currency)
        if len(codes) == 3 and codes[2] == "ConditionalCheckFailed":
            raise TransientLedgerError(f"the claim of {entry.entry_id} was re-dated meanwhile: retried later")
        if len(codes) in (2, 3) and codes[1] == "ConditionalCheckFailed":
            head = from_item(reasons[1].get("Item") or {})
            if not head:
                return PaymentResult(PaymentOutcome.NO_BALANCE, entry.entry_id)
            if "version" not in head:
                return PaymentResult(PaymentOutcome.NOT_TRACKED, entry.entry_id)
            return PaymentResult(
                PaymentOutcome.CURRENCY_MISMATCH, entry.entry_id, balance_currency=head.get("currency")
            )
        raise _transient_or(error)

    def apply_entry(
        self,
        balance: BalanceRef,
        entry: Entry,
        currency: str,
        *,
        expected_version: int | None = None,
        request_hash: str | None = None,
        balance_limit: int | None = None,
    ) -> EntryResult:
        """A merchant's or an operator's change: the entry (refused if its source is already there) and
        the balance in one transaction, optionally only if the balance is still at `expected_version`,
        and only if the new balance stays within -balance_limit..balance_limit."""
        condition = "attribute_exists(version) AND currency = :currency"
        values: dict[str, Any] = {
            ":delta": entry.amount,
            ":one": 1,
            ":shard": balance.push_shard,
            ":now": entry.created_at,
            ":currency": currency,
        }
        if expected_version is not None:
            condition += " AND version = :expected"
            values[":expected"] = expected_version
        if balance_limit is not None:
            condition += " AND balance BETWEEN :low AND :high"
            values[":low"], values[":high"] = -balance_limit - entry.amount, balance_limit - entry.amount
        item = entry_item(balance, entry, currency)
        if request_hash is not None:
            item["request_hash"] = {"S": request_hash}
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        # The source's guard: the entry's key holds its time, so only this item
                        # refuses a second entry from the same source (entry_keys.py).
                        "Put": {
                            "TableName": self.table_name,
                            "Item": source_item(balance.partition_key, entry.entry_id, entry.created_at),
                            "ConditionExpression": "attribute_not_exists(pk)",
                            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                        }
                    },
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": item,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": head_key(balance),
                            "UpdateExpression": "ADD balance :delta, version :one "
                            "SET push_shard = if_not_exists(push_shard, :shard), "
                            "pending_since = if_not_exists(pending_since, :now), updated_at = :now",
                            "ConditionExpression": condition,
                            "ExpressionAttributeValues": to_values(values),
                            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                        }
                    },
                ]
            )
        except ClientError as error:
            reasons = error.response.get("CancellationReasons") or []
            codes = [reason.get("Code") for reason in reasons]
            if len(codes) == 3 and "ConditionalCheckFailed" in codes[:2]:
                guard = from_item(reasons[0].get("Item") or {})
                existing = (
                    self.entry_at(balance.partition_key, str(guard["created_at"]), entry.entry_id)
                    if guard
                    else None
                )
                return EntryResult(EntryOutcome.EXISTS, existing_entry=existing)
            if len(codes) == 3 and codes[2] == "ConditionalCheckFailed":
                head = from_item(reasons[2].get("Item") or {})
                return _head_refusal(head, currency, entry.amount, balance_limit)
            raise _transient_or(error) from error
        return EntryResult(EntryOutcome.APPLIED)

    def put_head(self, item: dict[str, Any], *, create: bool, expected_version: int | None = None) -> bool:
        """Write a head's descriptive fields: create it (only if absent), or replace them while the
        balance is still at `expected_version` (money fields are never written here)."""
        values: dict[str, Any] = {}
        if create:
            condition = "attribute_not_exists(pk)"
        else:
            condition = "attribute_exists(pk)"
            if expected_version is not None:
                condition += " AND version = :expected"
                values[":expected"] = expected_version
        request: dict[str, Any] = {"TableName": self.table_name, "ConditionExpression": condition}
        if values:
            request["ExpressionAttributeValues"] = to_values(values)
        try:
            if create:
                self._client.put_item(Item=to_item(item), **request)
            else:
                key = head_key(BalanceRef(BalanceKind(item["kind"]), item["ref"]))
                fields = {name: value for name, value in item.items() if name not in {"pk", "sk"}}
                names = {f"#{name}": name for name in fields}
                sets = ", ".join(f"#{name} = :v_{name}" for name in fields if fields[name] is not None)
                removals = ", ".join(f"#{name}" for name in fields if fields[name] is None)
                expression = f"SET {sets}" + (f" REMOVE {removals}" if removals else "")
                request["ExpressionAttributeValues"] = to_values(
                    {**values, **{f":v_{name}": value for name, value in fields.items() if value is not None}}
                )
                self._client.update_item(
                    Key=key, UpdateExpression=expression, ExpressionAttributeNames=names, **request
                )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def guard_applied_entry(self, stored: dict[str, Any]) -> AppliedApplication | None:
        """Write the guard of a payment entry applied before guards existed (the operator's
        `backfill-application-guards`). None when written, or already there for this very entry;
        otherwise what the guard holds: the application was also applied elsewhere or otherwise."""
        balance = BalanceRef.from_partition_key(str(stored["pk"]))
        entry = Entry(
            kind=EntryKind.PAYMENT,
            amount=int(stored["amount"]),
            source_id=str(stored["entry_id"]).removeprefix(f"{EntryKind.PAYMENT.value}:"),
            source={},
            created_at=str(stored["created_at"]),
        )
        currency = str(stored["currency"])
        try:
            self._client.put_item(
                TableName=self.table_name,
                Item=application_item(balance, entry, currency, stored.get("webhook_id")),
                ConditionExpression="attribute_not_exists(pk)",
            )
            return None
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise
        guard = self._client.get_item(
            TableName=self.table_name, Key=application_key(entry.source_id), ConsistentRead=True
        )
        applied = _applied_as(from_item(guard["Item"]))
        if _duplicate_or_conflict(applied, balance, entry, currency).outcome is PaymentOutcome.DUPLICATE:
            return None
        return applied

    def get_entry(self, balance: BalanceRef | BillRef, entry_id: str) -> dict[str, Any] | None:
        """An entry by its id: its time (its key) is in its claim or its source guard (`find_entry`)."""
        return self.find_entry(balance.partition_key, entry_id)

    # --- push state (the pusher's) ----------------------------------------------------------

    def pending_pushes(
        self, now: float, limit: int = 1000, shards: Collection[int] | None = None
    ) -> list[tuple[str, BalanceRef]]:
        """Balances whose version is ahead of Moment's and not backing off, oldest first across shards
        (or in `shards` only: a fanned-out worker's one): the first `limit` of `pending_push_pages`."""
        return next(iter(self.pending_push_pages(now, limit, shards)), [])

    def pending_push_pages(
        self, now: float, page_size: int = 1000, shards: Collection[int] | None = None
    ) -> Iterator[list[tuple[str, BalanceRef]]]:
        """Every balance due a push and not backing off, oldest first across the `push#N` shards, a page
        at a time, each page read on where the last ended (as the bills': `pending_index.pending_pages`),
        so balances left pending by an earlier page never hide the ones after them."""
        return pending_pages(
            self._client,
            self.table_name,
            shard_prefix=PUSH_SHARD_PREFIX,
            shards=shards,
            now=now,
            page_size=page_size,
            ref_of=BalanceRef.from_partition_key,
        )

    def record_push(
        self, balance: BalanceRef, read: dict[str, Any], moment_balance: int | None, now: float
    ) -> Booking:
        """After Moment took (or already had) the balance read: P := what Moment shows, the payments
        this push read are behind it, every open intent is superseded, attempts and deferrals reset;
        the pending marker goes only if no change came since. Conditional on the push state read, so
        two pushers could never both book one push. Every expression is the same size however many
        payments or intents there are (DynamoDB's 4 KB / 300-operator limits). Returns what it did
        (`Booking`: SYNCED tells the pusher the head needs no announcing after the push)."""
        values: dict[str, Any] = {
            ":used": -int(read.get("payments_since_push", 0)),
            ":version": read["version"],
            ":now": iso_time(now),
            ":zero": 0,
            ":one": 1,
        }
        sets = ["pushed_version = :version", "pushed_at = :now", "push_attempts = :zero"]
        if moment_balance is not None:
            values[":moment"] = moment_balance
            sets.append("pushed_balance = :moment")
        condition, condition_values = _push_state_condition(read)
        removed = "REMOVE last_push_error, next_push_at, defer_count, deferred_since, " + ", ".join(
            ["push_intents", *_LEGACY_INTENT]
        )
        # Nothing came since the read: every listed and merged payment is behind this push.
        # (It also announces -> synced: the head leaves the pusher's list, so no later look would.)
        booked = sets, condition, condition_values
        synced_sets, synced_condition, synced_values = _synced_transition(balance, read, now)
        sets, condition = [*sets, *synced_sets], condition + synced_condition
        condition_values = {**condition_values, **synced_values}
        try:
            self._update_head(
                balance,
                f"SET {', '.join(sets)} ADD payments_since_push :used, push_seq :one {removed}, "
                "payments_list, payments_pushed, payments_merged, payments_merged_count, "
                "push_shard, pending_since",
                condition + " AND version = :version",
                {**values, **condition_values},
            )
            return Booking.SYNCED if synced_sets else Booking.BOOKED
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise
        sets, condition, condition_values = booked
        # The balance moved while we pushed: book the push, keep it pending for the next run. The
        # reconciler only appends, so the payments read are the first `payments_pushed` of the list
        # (a watermark: one SET however long the list) and `payments_merged_read` of the merged sum.
        listed, merged, merged_count = _payments_read(read)
        values.update({":listed": listed, ":merged": -merged, ":merged_count": -merged_count})
        try:
            response = self._update_head(
                balance,
                f"SET {', '.join(sets)}, payments_pushed = :listed ADD payments_since_push :used, "
                f"push_seq :one, payments_merged :merged, payments_merged_count :merged_count {removed}",
                condition,
                {**values, **condition_values},
                return_values="ALL_NEW",
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return Booking.REFUSED
            raise
        self._compact_payments(balance, from_item(response.get("Attributes", {})))
        return Booking.BOOKED

    def _compact_payments(self, balance: BalanceRef, head: dict[str, Any]) -> None:
        """Drop the payments behind the watermark, if no payment comes meanwhile (best effort: the
        watermark already says which ones count, this only keeps the list short)."""
        pushed = int(head.get("payments_pushed", 0))
        if not pushed or "version" not in head:
            return
        try:
            self._update_head(
                balance,
                "SET payments_list = :rest REMOVE payments_pushed",
                "version = :version AND payments_pushed = :pushed",
                {
                    ":rest": list(head.get("payments_list", []))[pushed:],
                    ":version": head["version"],
                    ":pushed": pushed,
                },
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise

    def record_intent(
        self, balance: BalanceRef, read: dict[str, Any], target: int, *, create: bool = False
    ) -> int:
        """Before a PATCH or a create: remember what is about to be sent, so whatever becomes of its
        answer (lost, timed out, 5xx, the run stopped) the next run can explain Moment's balance.
        Appended to the open intents (a booked push clears them all); returns its index. A create's
        is marked `create`: it can explain only an object the pusher made (docs/pusher.md)."""
        condition, values = _intent_write(read, target, create=create)
        self._update_head(
            balance,
            "SET push_intents = list_append(if_not_exists(push_intents, :none), :intent)",
            condition,
            values,
        )
        return len(read.get("push_intents", []))

    def record_intent_announced(
        self, balance: BalanceRef, read: dict[str, Any], target: int, now: float
    ) -> tuple[int, dict[str, Any]]:
        """A PATCH's intent (as `record_intent`) and, in the same write, the sync state's transition the
        head still owes (a steady push's `synced -> pending`, docs/events.md): one request fewer than
        `settle_sync_state` then `record_intent`. Returns the intent's index and `read` with the sync
        state written, for the booking (which announces `-> synced` conditional on it).

        Both conditions in one: a refusal is re-read. The push state (sequence, last pushed, open
        intents) moved: the intent alone would have been refused too, and the refusal is raised as
        `record_intent` raises it (ConditionalCheckFailed). Only the announcement's part moved
        (another writer announced, or a count the state is derived from changed): it is decided again
        from the fresh head, the intent still the one `read` planned, so the push goes on and no
        transition is written twice."""
        return self._intent_announced(
            balance,
            read,
            now,
            _intent_write(read, target),
            lambda: self.record_intent(balance, read, target),
        )

    def record_bill_intent_announced(
        self, bill: BillRef, read: dict[str, Any], amount_paid: int, now: float
    ) -> int:
        """A bill's PATCH intent (as `record_bill_intent`) with the transition its head still owes in
        the same write, as `record_intent_announced` (the bill pusher reads the bill again after the
        PATCH, so only the index is returned)."""
        condition, values = _bill_push_condition(read)
        intent = {":intent": [{"amount_paid": amount_paid, "outside_paid": int(read.get("outside_paid", 0))}]}
        index, _head = self._intent_announced(
            bill,
            read,
            now,
            (condition, {**intent, ":none": [], **values}),
            lambda: self.record_bill_intent(bill, read, amount_paid),
        )
        return index

    def _intent_announced(
        self,
        ref: BalanceRef | BillRef,
        read: dict[str, Any],
        now: float,
        intent: tuple[str, dict[str, Any]],
        alone: Callable[[], int],
    ) -> tuple[int, dict[str, Any]]:
        """`intent` (its condition and values) appended to the head's push_intents with the transition
        the head owes, in one write; `alone` writes the intent without it (nothing owed)."""
        head = read
        for _ in range(ANNOUNCE_WITH_INTENT_TRIES):
            due = _due_transition(ref, head, now) if "version" in head else None
            if due is None:
                return alone(), {**read, **_sync_fields(head)}
            condition, values = intent
            try:
                self._update_head(
                    ref,
                    "SET push_intents = list_append(if_not_exists(push_intents, :none), :intent), "
                    "sync_state = :state, sync_transition = :transition ADD sync_transitions :one",
                    f"{condition} AND {due.condition}",
                    {**values, **due.values},
                )
                return len(read.get("push_intents", [])), {**read, **due.written}
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise
                refused = error
            fresh = self.get_bill(ref) if isinstance(ref, BillRef) else self.get_head(ref)
            if fresh is None or not _same_push_state(read, fresh):
                raise refused
            head = fresh
        # Lost to another announcer every time (not seen: only pushers announce, one per shard):
        # the intent alone; the look after the push announces what is due.
        return alone(), {**read, **_sync_fields(head)}

    def drop_intent(self, balance: BalanceRef, read: dict[str, Any], index: int) -> None:
        """The request never reached Moment (it failed before it was sent, or Moment refused it): it
        explains nothing, so it must not widen what counts as explained."""
        condition, condition_values = _push_state_condition(read)
        self._update_head(
            balance,
            f"REMOVE push_intents[{int(index)}]",
            condition + " AND size(push_intents) = :open",
            {":open": index + 1, **condition_values},
        )

    def record_deferral(
        self, balance: BalanceRef, read: dict[str, Any], moment_balance: int, now: float, *, at_least: int = 1
    ) -> int:
        """Count one more deferral (or jump to `at_least` in a row); returns how many in a row."""
        condition, condition_values = _push_state_condition(read)
        step = max(1, at_least - int(read.get("defer_count", 0)))
        response = self._update_head(
            balance,
            "ADD defer_count :step SET deferred_since = if_not_exists(deferred_since, :now), "
            "last_moment_balance = :moment",
            condition,
            {":step": step, ":now": iso_time(now), ":moment": moment_balance, **condition_values},
            return_values="UPDATED_NEW",
        )
        return int(from_item(response.get("Attributes", {})).get("defer_count", 1))

    def record_failure(self, balance: BalanceRef | BillRef, error: str, now: float, retry_at: float) -> int:
        """Count a failed push and when to try again; returns the attempts so far."""
        response = self._update_head(
            balance,
            "ADD push_attempts :one SET last_push_error = :error, next_push_at = :retry",
            "attribute_exists(push_shard)",
            {":one": 1, ":error": error[:500], ":retry": iso_time(retry_at)},
            return_values="UPDATED_NEW",
        )
        return int(from_item(response.get("Attributes", {})).get("push_attempts", 1))

    def _update_head(
        self,
        balance: BalanceRef | BillRef,
        update: str,
        condition: str,
        values: dict[str, Any],
        return_values: str | None = None,
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": head_key(balance),
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": to_values(values),
        }
        if return_values:
            request["ReturnValues"] = return_values
        response: dict[str, Any] = self._client.update_item(**request)
        return response

    # --- reads ------------------------------------------------------------------------------

    def entries(
        self, balance: BalanceRef | BillRef, limit: int = 50, cursor: dict[str, Any] | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Entries newest first, `limit` at a time; the second value pages on."""
        request: dict[str, Any] = {
            "TableName": self.table_name,
            # Keyed `ENTRY#<created_at>#<entry id>`: the table's own order is time order. The range
            # leaves out a bill's `ENTRY#void` (not a payment) and every other item of the partition.
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :first AND :last",
            "ExpressionAttributeValues": {
                ":pk": {"S": balance.partition_key},
                ":first": {"S": ENTRY_RANGE[0]},
                ":last": {"S": ENTRY_RANGE[1]},
            },
            "ScanIndexForward": False,
            "Limit": limit,
            # As consistent as the head read beside it: an entry already in the balance is listed.
            "ConsistentRead": True,
        }
        if cursor:
            request["ExclusiveStartKey"] = cursor
        response = self._client.query(**request)
        return [from_item(item) for item in response.get("Items", [])], response.get("LastEvaluatedKey")

    def linked_balances(self) -> Iterator[BalanceRef]:
        """Every balance linked to a Moment id, from the sparse LinkedBalances index."""
        paginator = self._client.get_paginator("scan")
        for page in paginator.paginate(TableName=self.table_name, IndexName=LINKED_INDEX):
            for item in page.get("Items", []):
                if not is_bill_key(item["pk"]["S"]):  # bills are listed by linked_bills
                    yield BalanceRef.from_partition_key(item["pk"]["S"])

    def accounts_of(self, customer_ref: str) -> list[dict[str, Any]]:
        """The heads of a customer's accounts (sparse AccountsByCustomer index, then each head)."""
        response = self._client.query(
            TableName=self.table_name,
            IndexName=ACCOUNTS_INDEX,
            KeyConditionExpression="customer_ref = :customer",
            ExpressionAttributeValues={":customer": {"S": customer_ref}},
        )
        refs = [BalanceRef.from_partition_key(item["pk"]["S"]) for item in response.get("Items", [])]
        return [head for head in map(self.get_head, refs) if head is not None]

    def erase_fields(self, balance: BalanceRef, names: list[str], now: str) -> None:
        """Remove personal fields from a head (a data-subject request); money fields are never named."""
        placeholders = {f"#f{number}": name for number, name in enumerate(names)}
        self._client.update_item(
            TableName=self.table_name,
            Key=head_key(balance),
            UpdateExpression=f"REMOVE {', '.join(placeholders)} SET personal_data_erased_at = :now",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames=placeholders,
            ExpressionAttributeValues={":now": {"S": now}},
        )

    # --- conflicts and adoption (what an operator resolves) ------------------------------------

    def record_conflict(
        self,
        balance: BalanceRef | BillRef,
        detail: str,
        now: float,
        retry_at: float,
        *,
        adoption_balance: int | None = None,
    ) -> int:
        """The balance is in `conflict`: Moment's object is not this balance's, or an adopted object's
        balance awaits an operator's choice (`adoption_balance`: Moment's when adopted). Counted and
        backed off like a failed push; returns the attempts so far."""
        values: dict[str, Any] = {":one": 1, ":detail": detail[:500], ":retry": iso_time(retry_at)}
        values[":now"] = iso_time(now)
        update = (
            "ADD push_attempts :one SET push_conflict = :detail, last_push_error = :detail, "
            "next_push_at = :retry, conflict_since = if_not_exists(conflict_since, :now)"
        )
        if adoption_balance is not None:
            update += ", adoption_held = :held"
            values[":held"] = adoption_balance
        response = self._client.update_item(
            TableName=self.table_name,
            Key=head_key(balance),
            UpdateExpression=update,
            ConditionExpression="attribute_exists(push_shard)",
            ExpressionAttributeValues=to_values(values),
            ReturnValues="UPDATED_NEW",
        )
        return int(from_item(response.get("Attributes", {})).get("push_attempts", 1))

    def clear_conflict(self, balance: BalanceRef | BillRef, *, adoption_decision: str | None = None) -> None:
        """The conflict is resolved (by the pusher, or by an operator's link, unlink or adopt): retry
        at the next run. `adoption_decision` records which side an operator said wins."""
        update = f"REMOVE {_CONFLICT_FIELDS}, next_push_at SET push_attempts = :zero"
        values: dict[str, Any] = {":zero": 0}
        if adoption_decision is not None:
            update += ", adoption_decision = :decision"
            values[":decision"] = adoption_decision
        self._client.update_item(
            TableName=self.table_name,
            Key=head_key(balance),
            UpdateExpression=update,
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues=to_values(values),
        )

    def flag_push_waiting(self, balance: BalanceRef, detail: str | None) -> None:
        """Show (or, with None, clear) why a first push to a linked object is held back."""
        if detail is None:
            update, values = "REMOVE push_waiting", None
        else:
            update, values = "SET push_waiting = :detail", {":detail": {"S": detail[:500]}}
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": head_key(balance),
            "UpdateExpression": update,
            "ConditionExpression": "attribute_exists(pk)",
        }
        if values:
            request["ExpressionAttributeValues"] = values
        self._client.update_item(**request)

    def held_adoptions(self) -> list[dict[str, Any]]:
        """Heads held in `conflict` after adopting an object whose balance differs (from the sparse
        PendingPush index, whatever their backoff)."""
        held: list[dict[str, Any]] = []
        paginator = self._client.get_paginator("query")
        for shard in range(PUSH_SHARDS):
            for page in paginator.paginate(
                TableName=self.table_name,
                IndexName=PENDING_INDEX,
                KeyConditionExpression="push_shard = :shard",
                ExpressionAttributeValues={":shard": {"S": f"push#{shard}"}},
            ):
                for item in page.get("Items", []):
                    head = self.get_head(BalanceRef.from_partition_key(item["pk"]["S"]))
                    if head is not None and "adoption_held" in head:
                        held.append(head)
        return held

    def settle_sync_state(
        self, balance: BalanceRef | BillRef, head: dict[str, Any] | None, now: float
    ) -> dict[str, Any] | None:
        """Write the head's sync state as `sync_state` when it differs from the one last written, with
        `sync_transition` (id, from, to, at) in the same write: the stream's `Sync State Changed`
        (docs/events.md; event patterns cannot compare two images' derived states). Conditional on
        everything the state was derived from and on the transitions counted, so a transition is
        written once, by one writer; a lost race leaves it for the next caller. Returns the head.
        A bill's head too (the bill pusher's; its `blocked` state is its `push_blocked`)."""
        read = self.get_bill if isinstance(balance, BillRef) else self.get_head
        head = head if head is not None else read(balance)  # type: ignore[arg-type]
        if head is None or "version" not in head:
            return head
        due = _due_transition(balance, head, now)
        if due is None:
            return head
        try:
            self._update_head(
                balance,
                "SET sync_state = :state, sync_transition = :transition ADD sync_transitions :one",
                due.condition,
                due.values,
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise
            return read(balance)  # type: ignore[arg-type]  # changed meanwhile: the next look announces it
        return {**head, **due.written}

    def scan_all(self) -> Iterator[dict[str, Any]]:
        """Every item (the operator's `verify` only: never on a request path)."""
        paginator = self._client.get_paginator("scan")
        for page in paginator.paginate(TableName=self.table_name, ConsistentRead=True):
            for item in page.get("Items", []):
                yield from_item(item)

    def linked_balances_page(
        self, start: dict[str, Any] | None, limit: int
    ) -> tuple[list[tuple[BalanceRef | BillRef, dict[str, Any]]], dict[str, Any] | None]:
        """One page of the LinkedBalances index (bill heads are in it too): each balance or bill with
        its index key (a cursor that continues just after it), and where the next page starts (None
        after the last page)."""
        request: dict[str, Any] = {"TableName": self.table_name, "IndexName": LINKED_INDEX, "Limit": limit}
        if start:
            request["ExclusiveStartKey"] = start
        response = self._client.scan(**request)
        found = [
            (
                BillRef.from_partition_key(item["pk"]["S"])
                if is_bill_key(item["pk"]["S"])
                else BalanceRef.from_partition_key(item["pk"]["S"]),
                {name: item[name] for name in ("pk", "sk", "moment_id")},
            )
            for item in response.get("Items", [])
        ]
        return found, response.get("LastEvaluatedKey")

    def leases(self) -> DynamoLeases:
        """The scheduled runs' leases live in this table (pk `LEASE#<name>`; adapters/lease.py)."""
        from moment_sync.adapters.lease import DynamoLeases  # noqa: PLC0415 -- only the scheduled runs

        return DynamoLeases(self._client, self.table_name)

    def request_first_push(self, balance: BalanceRef, now: float) -> bool:
        """Make a tracked balance that Moment does not have yet pending, so the balance pusher creates
        it (a bill's owner with no charges would otherwise never be created: bills wait for it). False
        when it is linked already, untracked, or gone."""
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key=head_key(balance),
                UpdateExpression="SET push_shard = if_not_exists(push_shard, :shard), "
                "pending_since = if_not_exists(pending_since, :now)",
                ConditionExpression="attribute_exists(version) AND attribute_not_exists(moment_id)",
                ExpressionAttributeValues=to_values({":shard": balance.push_shard, ":now": iso_time(now)}),
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True


# The head lists each payment reconciled since the last booked push (the pusher explains Moment's
# balance by any subset of them) up to this many; past it they are merged into one sum, which only
# narrows what counts as explained. 10,000 amounts of at most 99,999,999 are at most ~60 KB of the
# head's 400 KB.
PAYMENTS_LISTED_MAX = 10_000
# Heads written before push intents were a list kept one intent in these two attributes.
_LEGACY_INTENT = ("push_intent", "push_intent_payments")


def _payment_head_update(amount: int, currency: str, shard: str, now: float, listed: bool) -> dict[str, Any]:
    """The head's part of applying a payment: the balance, the pending marker, and the payment kept
    for the pusher: appended to the list while it is under its cap, else added to the merged sum."""
    values: dict[str, Any] = {
        ":delta": amount,
        ":one": 1,
        ":paid": -amount,
        ":shard": shard,
        ":now": iso_time(now),
        ":currency": currency,
    }
    update = (
        "ADD balance :delta, version :one, payments_since_push :paid{merged} "
        "SET push_shard = if_not_exists(push_shard, :shard), "
        "pending_since = if_not_exists(pending_since, :now), updated_at = :now{listed}"
    )
    condition = "attribute_exists(version) AND currency = :currency"
    if listed:
        update = update.format(
            merged="",
            listed=", payments_list = list_append(if_not_exists(payments_list, :none), :paid_list)",
        )
        condition += " AND (attribute_not_exists(payments_list) OR size(payments_list) < :listed_max)"
        values.update({":paid_list": [-amount], ":none": [], ":listed_max": PAYMENTS_LISTED_MAX})
    else:
        update = update.format(merged=", payments_merged :paid, payments_merged_count :one", listed="")
    return {
        "UpdateExpression": update,
        "ConditionExpression": condition,
        "ExpressionAttributeValues": to_values(values),
    }


def _payments_list_full(error: ClientError, currency: str) -> bool:
    """The payment was refused only because the head's list is at its cap."""
    reasons = error.response.get("CancellationReasons") or []
    if len(reasons) < 2 or reasons[1].get("Code") != "ConditionalCheckFailed":
        return False
    head = from_item(reasons[1].get("Item") or {})
    return (
        "version" in head
        and head.get("currency") == currency
        and len(head.get("payments_list", [])) >= PAYMENTS_LISTED_MAX
    )


def _payments_read(read: dict[str, Any]) -> tuple[int, int, int]:
    """How many listed payments (from the start of the list), and what merged sum and count, a read saw."""
    return (
        len(read.get("payments_list", [])),
        int(read.get("payments_merged", 0)),
        int(read.get("payments_merged_count", 0)),
    )


def _open_intents_condition(open_intents: int) -> str:
    if open_intents == 0:
        return "(attribute_not_exists(push_intents) OR size(push_intents) = :open)"
    return "size(push_intents) = :open"


def _applied_as(guard: dict[str, Any]) -> AppliedApplication:
    target = str(guard["balance_pk"])
    return AppliedApplication(
        BillRef.from_partition_key(target) if is_bill_key(target) else BalanceRef.from_partition_key(target),
        int(guard["amount"]),
        str(guard["currency"]),
        guard.get("webhook_id"),
    )


def _duplicate_or_conflict(
    applied: AppliedApplication, balance: BalanceRef, entry: Entry, currency: str
) -> PaymentResult:
    """A true redelivery names the same balance, amount and currency; anything else is a conflict."""
    if (applied.balance, applied.amount, applied.currency) == (balance, -entry.amount, currency):
        return PaymentResult(PaymentOutcome.DUPLICATE, entry.entry_id, applied.webhook_id)
    return PaymentResult(
        PaymentOutcome.APPLICATION_CONFLICT, entry.entry_id, applied.webhook_id, applied_as=applied
    )


# How often a steady push's intent is written again with a freshly derived announcement after another
# writer's announcement refused it (record_intent_announced).
ANNOUNCE_WITH_INTENT_TRIES = 3


@dataclass(frozen=True)
class _Transition:
    """The sync-state transition a head owes: its write's condition and values (`:state`,
    `:transition`, `:one`), and the head's sync fields once written."""

    condition: str
    values: dict[str, Any]
    written: dict[str, Any]


def _due_transition(balance: BalanceRef | BillRef, head: dict[str, Any], now: float) -> _Transition | None:
    """The transition from the state last announced (`sync_state`) to the one the head's fields give,
    or None. Conditional on everything the state was derived from and on the transitions counted, so
    it is written once, by one writer (settle_sync_state; record_intent_announced)."""
    old, new = str(head.get("sync_state", "synced")), sync_state(head)
    if old == new:
        return None
    count = int(head.get("sync_transitions", 0))
    transition = {
        "id": f"{balance.partition_key}|sync|{count + 1}",
        "from": old,
        "to": new,
        "at": iso_time(now),
    }
    conditions, values = _as_read(
        head, ("push_shard", "push_conflict", "push_blocked", "defer_count", "push_attempts")
    )
    conditions.append(
        "attribute_not_exists(sync_transitions)" if count == 0 else "sync_transitions = :read_count"
    )
    if count:
        values[":read_count"] = count
    return _Transition(
        " AND ".join(conditions),
        {**values, ":state": new, ":transition": transition, ":one": 1},
        {"sync_state": new, "sync_transition": transition, "sync_transitions": count + 1},
    )


def _sync_fields(head: dict[str, Any]) -> dict[str, Any]:
    return {name: head[name] for name in SYNC_FIELDS if name in head}


def _same_push_state(read: dict[str, Any], fresh: dict[str, Any]) -> bool:
    """Whether an intent conditional on `read`'s push state (`_push_state_condition`, or a bill's
    `_bill_push_condition`: the sequence, the last booking, the open intents) could still be written
    on `fresh`."""
    return (
        "version" in fresh
        and all(read.get(name) == fresh.get(name) for name in ("push_seq", "pushed_balance", "pushed_at"))
        and len(read.get("push_intents", [])) == len(fresh.get("push_intents", []))
    )


def _intent_write(read: dict[str, Any], target: int, *, create: bool = False) -> tuple[str, dict[str, Any]]:
    """The condition and values of appending an intent to the head `read` (`record_intent`)."""
    condition, condition_values = _push_state_condition(read)
    open_intents = len(read.get("push_intents", []))
    listed, merged, _count = _payments_read(read)
    return condition + " AND " + _open_intents_condition(open_intents), {
        ":intent": [
            {"balance": target, "listed": listed, "merged": merged} | ({"create": True} if create else {})
        ],
        ":none": [],
        ":open": open_intents,
        **condition_values,
    }


def _synced_transition(
    balance: BalanceRef | BillRef, read: dict[str, Any], now: float
) -> tuple[list[str], str, dict[str, Any]]:
    """What a booked push adds to announce `-> synced` in its own write (docs/events.md): SET
    clauses, a condition (the transitions still as read), values."""
    old = str(read.get("sync_state", "synced"))
    if old == "synced" or "version" not in read:
        return [], "", {}
    count = int(read.get("sync_transitions", 0))
    transition = {
        "id": f"{balance.partition_key}|sync|{count + 1}",
        "from": old,
        "to": "synced",
        "at": iso_time(now),
    }
    condition = (
        " AND attribute_not_exists(sync_transitions)" if count == 0 else " AND sync_transitions = :read_count"
    )
    values: dict[str, Any] = {":synced": "synced", ":transition": transition, ":transitions": count + 1}
    if count:
        values[":read_count"] = count
    return (
        ["sync_state = :synced", "sync_transition = :transition", "sync_transitions = :transitions"],
        condition,
        values,
    )


def _as_read(head: dict[str, Any], names: tuple[str, ...]) -> tuple[list[str], dict[str, Any]]:
    """Conditions that each named attribute is still as `head` shows it (absent, or equal)."""
    conditions: list[str] = []
    values: dict[str, Any] = {}
    for name in names:
        if head.get(name) is None:
            conditions.append(f"attribute_not_exists({name})")
        else:
            conditions.append(f"{name} = :read_{name}")
            values[f":read_{name}"] = head[name]
    return conditions, values


# What a conflict leaves on a head (docs/pusher.md#conflicts); an operator's link, unlink or adopt clears it.
_CONFLICT_FIELDS = "push_conflict, conflict_since, adoption_held, last_push_error, push_waiting"


def _head_refusal(head: dict[str, Any], currency: str, amount: int, balance_limit: int | None) -> EntryResult:
    """Why the head refused `apply_entry`'s update, from the item it returned."""
    if not head:
        return EntryResult(EntryOutcome.NO_BALANCE)
    if "version" not in head:
        return EntryResult(EntryOutcome.NOT_TRACKED, head=head)
    if head.get("currency") != currency:
        return EntryResult(EntryOutcome.CURRENCY_MISMATCH, head=head)
    if balance_limit is not None and abs(int(head.get("balance", 0)) + amount) > balance_limit:
        return EntryResult(EntryOutcome.OUT_OF_RANGE, head=head)
    return EntryResult(EntryOutcome.STALE, head=head)


def _push_state_condition(read: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The head still has the push state the pusher read (only a push changes it). The push sequence
    (`push_seq`, one more at every booking) makes it exact: the last pushed value alone is ABA-prone (a
    stale worker's read of P = 100 would still match after pushes of 200 and then 100 again)."""
    if read.get("push_seq") is None:
        sequence, values = "attribute_not_exists(push_seq)", {}
    else:
        sequence, values = "push_seq = :read_seq", {":read_seq": read["push_seq"]}
    if read.get("pushed_balance") is None:
        return f"attribute_exists(version) AND attribute_not_exists(pushed_balance) AND {sequence}", values
    return f"pushed_balance = :read_pushed AND {sequence}", {":read_pushed": read["pushed_balance"], **values}


def _cancellation_codes(error: ClientError) -> list[str]:
    return [reason.get("Code", "") for reason in error.response.get("CancellationReasons") or []]


def _transient_or(error: ClientError) -> Exception:
    """Throttling, conflicts and server errors are worth retrying; anything else is a bug to surface."""
    transient = {
        "TransactionConflict",
        "TransactionConflictException",
        "ThrottlingError",
        "ThrottlingException",
        "ProvisionedThroughputExceeded",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
    }
    codes = {error_code(error), *_cancellation_codes(error)}
    if codes & transient:
        return TransientLedgerError(", ".join(sorted(code for code in codes if code and code != "None")))
    return error  # type: ignore[no-any-return]  # botocore is untyped
