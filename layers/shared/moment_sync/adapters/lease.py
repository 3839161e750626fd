"""Leases in the Ledger table: pk `LEASE#<name>`, sk `LEASE` (docs/ledger.md#the-ledger-table).

One item per lease name, written only with conditions: taken when it has no holder or its `expires_at`
has passed; saved and released only by its holder. The item carries none of the indexes' key
attributes, so it is in no index. Every write is an UpdateItem (it creates the item the first time
and keeps `state`, which a PutItem would overwrite).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from moment_sync.adapters.dynamo_items import error_code, from_item, to_values

LEASE_PREFIX = "LEASE#"
LEASE = "LEASE"


def lease_key(name: str) -> dict[str, Any]:
    return {"pk": {"S": LEASE_PREFIX + name}, "sk": {"S": LEASE}}


class DynamoLeases:
    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self.table_name = table_name

    def acquire(self, name: str, holder: str, *, now: float, expires_at: float) -> DynamoLease | None:
        try:
            response = self._client.update_item(
                TableName=self.table_name,
                Key=lease_key(name),
                UpdateExpression="SET holder = :holder, expires_at = :expires, acquired_at = :now",
                ConditionExpression="attribute_not_exists(holder) OR expires_at <= :now",
                ExpressionAttributeValues=to_values(
                    {":holder": holder, ":expires": _number(expires_at), ":now": _number(now)}
                ),
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return None
            raise
        item = from_item(response.get("Attributes", {}))
        return DynamoLease(self, name, holder, expires_at, dict(item.get("state") or {}))

    def current(self, name: str) -> dict[str, Any] | None:
        """The lease item as stored (the operator's view; the runbook)."""
        response = self._client.get_item(TableName=self.table_name, Key=lease_key(name), ConsistentRead=True)
        item = response.get("Item")
        return from_item(item) if item else None

    def _held_update(
        self, lease: DynamoLease, update: str, values: dict[str, Any], names: dict[str, str] | None = None
    ) -> bool:
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": lease_key(lease.name),
            "UpdateExpression": update,
            "ConditionExpression": "holder = :holder",
            "ExpressionAttributeValues": to_values({":holder": lease.holder, **values}),
        }
        if names:
            request["ExpressionAttributeNames"] = names
        try:
            self._client.update_item(**request)
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True


@dataclass
class DynamoLease:
    _leases: DynamoLeases = field(repr=False)
    name: str
    holder: str
    expires_at: float
    _state: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> Mapping[str, Any]:
        return self._state

    def save(self, state: Mapping[str, Any]) -> bool:
        saved = self._leases._held_update(
            self, "SET #state = :state", {":state": dict(state)}, {"#state": "state"}
        )
        if saved:
            self._state = dict(state)
        return saved

    def release(self) -> bool:
        # The holder goes; the state stays for the next holder.
        return self._leases._held_update(self, "SET expires_at = :zero REMOVE holder", {":zero": 0})


def _number(seconds: float) -> Decimal:
    return Decimal(str(round(seconds, 3)))


# The lease-table item every pusher worker reads before each push (push_run.SharedBackoff).
MOMENT_BACKOFF = "moment-backoff"


class DynamoBackoff:
    """Moment's rate limit, shared by the pusher's workers: item `LEASE#moment-backoff` with `until`
    (Unix seconds). Read at most once a `cache_seconds` per worker (a GetItem per push would add a
    read to every push for a state that changes once per 429)."""

    def __init__(self, client: Any, table_name: str, *, cache_seconds: float = 1.0) -> None:
        self._client = client
        self.table_name = table_name
        self._cache_seconds = cache_seconds
        self._read: tuple[float, float] | None = None  # (when read, until), Unix seconds

    def until(self, now: float | None = None) -> float:
        at = time.time() if now is None else now
        if self._read is not None and 0 <= at - self._read[0] < self._cache_seconds:
            return self._read[1]
        response = self._client.get_item(
            TableName=self.table_name, Key=lease_key(MOMENT_BACKOFF), ConsistentRead=True
        )
        until = float(from_item(response.get("Item") or {}).get("until", 0))
        self._read = (at, until)
        return until

    def hold_off(self, until: float) -> None:
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key=lease_key(MOMENT_BACKOFF),
                UpdateExpression="SET #until = :until",
                ConditionExpression="attribute_not_exists(#until) OR #until < :until",
                ExpressionAttributeNames={"#until": "until"},
                ExpressionAttributeValues=to_values({":until": _number(until)}),
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":  # a later until is already set
                raise
        self._read = None
