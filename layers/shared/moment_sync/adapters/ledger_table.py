"""The Ledger table (single-table design; the schema lives in template.yaml).

- a customer's or an account's head (balance, version, currency, Moment id, sync state):
  pk `CUSTOMER#<ref>` or `ACCOUNT#<ref>`, sk `HEAD`;
- one immutable entry per change, keyed by its source so a repeat is refused:
  the same pk, sk `ENTRY#<kind>:<source id>`;
- a Moment id's link to its reference: pk `MOMENT#<bcus_…|bacc_…>`, sk `MOMENT`.

Entries are listed newest first through the local index `EntriesNewestFirst` (`entry_order`).
A head whose version is ahead of what Moment has carries `push_shard` and `pending_since`, which
put it in the sparse `PendingPush` index the pusher reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError

from moment_sync.adapters.dynamo_items import error_code, from_item, to_item, to_values
from moment_sync.adapters.webhook_events_table import WebhookEventsTable, iso_time
from moment_sync.ledger.model import BalanceKind, BalanceRef, Entry
from moment_sync.reconciliation import EventStatus

HEAD = "HEAD"
ENTRY_PREFIX = "ENTRY#"
ENTRIES_INDEX = "EntriesNewestFirst"


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


@dataclass(frozen=True, slots=True)
class PaymentResult:
    outcome: PaymentOutcome
    entry_id: str
    # For a duplicate: the webhook whose delivery applied the entry first.
    applied_by_webhook: str | None = None
    balance_currency: str | None = None


def mapping_key(moment_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"MOMENT#{moment_id}"}, "sk": {"S": "MOMENT"}}


def head_key(balance: BalanceRef) -> dict[str, Any]:
    return {"pk": {"S": balance.partition_key}, "sk": {"S": HEAD}}


def entry_item(
    balance: BalanceRef, entry: Entry, currency: str, webhook_id: str | None = None
) -> dict[str, Any]:
    return to_item(
        {
            "pk": balance.partition_key,
            "sk": ENTRY_PREFIX + entry.entry_id,
            "entry_order": f"{entry.created_at}#{entry.entry_id}",
            "entry_id": entry.entry_id,
            "kind": entry.kind.value,
            "amount": entry.amount,
            "currency": currency,
            "source": entry.source,
            "created_at": entry.created_at,
            "webhook_id": webhook_id,
        }
    )


class LedgerTable:
    def __init__(self, client: Any, table_name: str, events: WebhookEventsTable | None = None) -> None:
        self._client = client
        self.table_name = table_name
        self._events = events
        # Moment id → reference links never change once made: cache them per execution environment.
        self._links: dict[str, BalanceRef] = {}

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
        if moment_id in self._links:
            return self._links[moment_id]
        response = self._client.get_item(
            TableName=self.table_name, Key=mapping_key(moment_id), ConsistentRead=True
        )
        item = response.get("Item")
        if not item:
            return None
        balance = BalanceRef.from_partition_key(item["balance_pk"]["S"])
        self._links[moment_id] = balance
        return balance

    def link_moment_id(self, balance: BalanceRef, moment_id: str) -> None:
        """Record that Moment knows `balance` as `moment_id`; linking the same pair again is a no-op."""
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
                            "UpdateExpression": "SET moment_id = :id",
                            "ConditionExpression": "attribute_exists(pk) AND "
                            "(attribute_not_exists(moment_id) OR moment_id = :id)",
                            "ExpressionAttributeValues": {":id": {"S": moment_id}},
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
        self._links[moment_id] = balance

    # --- money ------------------------------------------------------------------------------

    def apply_payment(
        self, balance: BalanceRef, entry: Entry, currency: str, webhook_id: str, now: float
    ) -> PaymentResult:
        """In one transaction: the entry (refused if this application is already there), the balance
        and its sync bookkeeping, and the event's status `applied`."""
        if self._events is None:
            raise RuntimeError("apply_payment needs the events table")
        event_update = self._events.status_update(
            webhook_id, EventStatus.APPLIED, now, entry_id=entry.entry_id, balance_key=balance.partition_key
        )
        event_update["ConditionExpression"] = "attribute_exists(webhook_id)"
        event_update["ExpressionAttributeValues"] = {
            key: value
            for key, value in event_update["ExpressionAttributeValues"].items()
            if key not in {":received", ":parked"}
        }
        items = [
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": entry_item(balance, entry, currency, webhook_id),
                    "ConditionExpression": "attribute_not_exists(pk)",
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
            {
                "Update": {
                    "TableName": self.table_name,
                    "Key": head_key(balance),
                    "UpdateExpression": "ADD balance :delta, version :one, payments_since_push :paid "
                    "SET push_shard = if_not_exists(push_shard, :shard), "
                    "pending_since = if_not_exists(pending_since, :now), updated_at = :now",
                    "ConditionExpression": "attribute_exists(version) AND currency = :currency",
                    "ExpressionAttributeValues": to_values(
                        {
                            ":delta": entry.amount,
                            ":one": 1,
                            ":paid": -entry.amount,
                            ":shard": balance.push_shard,
                            ":now": iso_time(now),
                            ":currency": currency,
                        }
                    ),
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
            {"Update": event_update},
        ]
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as error:
            return self._explain_refused_payment(error, entry)
        return PaymentResult(PaymentOutcome.APPLIED, entry.entry_id)

    def _explain_refused_payment(self, error: ClientError, entry: Entry) -> PaymentResult:
        reasons = error.response.get("CancellationReasons") or []
        codes = [reason.get("Code") for reason in reasons]
        if len(codes) == 3 and codes[0] == "ConditionalCheckFailed":
            existing = from_item(reasons[0].get("Item") or {})
            return PaymentResult(PaymentOutcome.DUPLICATE, entry.entry_id, existing.get("webhook_id"))
        if len(codes) == 3 and codes[1] == "ConditionalCheckFailed":
            head = from_item(reasons[1].get("Item") or {})
            if not head:
                return PaymentResult(PaymentOutcome.NO_BALANCE, entry.entry_id)
            if "version" not in head:
                return PaymentResult(PaymentOutcome.NOT_TRACKED, entry.entry_id)
            return PaymentResult(
                PaymentOutcome.CURRENCY_MISMATCH, entry.entry_id, balance_currency=head.get("currency")
            )
        raise _transient_or(error)

    # --- reads ------------------------------------------------------------------------------

    def entries(
        self, balance: BalanceRef, limit: int = 50, cursor: dict[str, Any] | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Entries newest first, `limit` at a time; the second value pages on."""
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": ENTRIES_INDEX,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": balance.partition_key}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if cursor:
            request["ExclusiveStartKey"] = cursor
        response = self._client.query(**request)
        return [from_item(item) for item in response.get("Items", [])], response.get("LastEvaluatedKey")

    def scan_all(self) -> Iterator[dict[str, Any]]:
        """Every item (the operator's `verify` only: never on a request path)."""
        paginator = self._client.get_paginator("scan")
        for page in paginator.paginate(TableName=self.table_name, ConsistentRead=True):
            for item in page.get("Items", []):
                yield from_item(item)


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
