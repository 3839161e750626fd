"""The WebhookEvents table: one conditional PutItem per delivery, then one status per event.

Attribute names here are the table's contract with the reconciler, the ledger API and the CLI;
the key schema and indexes live in template.yaml. Indexes keep operators and the re-drive off table
scans: `Unfinished` holds every event by its shard (`unfinished_shard`, written by the receiver and
never removed: a status write that removed it would cost a second write unit, so the re-drive reads
it forward from a cursor instead, docs/ledger.md#re-drive), `Parked` holds every parked event by
reason (`parked_reason`), `UnmatchedByMomentId` holds payments parked unmatched by the Moment id
they name (`unmatched_moment_id`), and `UnmatchedDue` holds payments parked unmatched by
`unmatched_grace_from` (the scheduled re-drive tries one again its grace after that time, so it reads
only those due: docs/ledger.md#re-drive).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from moment_sync.adapters.dynamo_items import error_code, from_item
from moment_sync.envelope import SUMMARY_FIELDS, WebhookEnvelope, stored_envelope
from moment_sync.reconciliation import EventStatus, ParkReason
from moment_sync.webhook_store import ReceivedWebhook, StorageUnavailable, StoreResult

UNFINISHED_SHARDS = 8
UNFINISHED_INDEX = "Unfinished"
PARKED_INDEX = "Parked"
UNMATCHED_INDEX = "UnmatchedByMomentId"
UNMATCHED_DUE_INDEX = "UnmatchedDue"
# BatchGetItem's limit, and how often its unprocessed keys are asked for again before giving up.
_BATCH_GET_LIMIT = 100
_UNPROCESSED_ATTEMPTS = 6
# An event may only move out of these; applied, duplicate and ignored are final.
_OPEN = "attribute_exists(webhook_id) AND #status IN (:received, :parked)"


class StatusesUnread(Exception):
    """DynamoDB kept some of a BatchGetItem's keys unprocessed after every retry (throttled)."""


def iso_time(unix_seconds: float) -> str:
    return (
        datetime.fromtimestamp(unix_seconds, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def unfinished_shard(webhook_id: str) -> str:
    return f"u#{hashlib.sha256(webhook_id.encode()).digest()[0] % UNFINISHED_SHARDS}"


def webhook_item(webhook: ReceivedWebhook) -> dict[str, Any]:
    """The item as DynamoDB's low-level API spells it: the raw body verbatim, plus what is queried."""
    item: dict[str, Any] = {
        "webhook_id": {"S": webhook.webhook_id},
        "webhook_timestamp": {"N": str(webhook.webhook_timestamp)},
        "received_at": {"S": iso_time(webhook.received_at)},
        "body": {"B": webhook.body},
        "status": {"S": EventStatus.RECEIVED.value},
        "unfinished_shard": {"S": unfinished_shard(webhook.webhook_id)},
        "expires_at": {"N": str(webhook.expires_at)},
    }
    item.update(_summary_values(webhook.envelope))
    return item


def _summary_values(envelope: WebhookEnvelope) -> dict[str, Any]:
    """The attributes that record what the envelope says (each one only when it is readable)."""
    values: dict[str, Any] = {}
    if envelope.event_id is not None:
        values["event_id"] = {"S": envelope.event_id}
    if envelope.event_type is not None:
        values["event_type"] = {"S": envelope.event_type}
    if envelope.problem is not None:
        values["envelope_problem"] = {"S": envelope.problem}
    for name, value in envelope.summary.items():
        values[_summary_attribute(name)] = {"N": str(value)} if isinstance(value, int) else {"S": value}
    return values


def envelope_of(event: dict[str, Any]) -> WebhookEnvelope:
    """What the reconciler and the re-drive decide from: the summary `webhook_item` stored, never the
    body (which `forget` may have erased). Items stored by every earlier version carry the same
    summary, made by the same `read_envelope`, so they decide as their bodies did."""
    return stored_envelope(
        event.get("event_id"),
        event.get("event_type"),
        event.get("envelope_problem"),
        {name: event.get(_summary_attribute(name)) for name in SUMMARY_FIELDS},
    )


def event_from_item(item: dict[str, Any]) -> dict[str, Any]:
    """A stored event as plain values. A number boto3 cannot read comes back as text (it is then no
    amount, and the event is parked invalid): one such item must never stop a batch or a re-drive."""
    return from_item(item, unreadable_numbers_as_text=True)


def _summary_attribute(name: str) -> str:
    # data.id is the Moment application id: name it so, beside the envelope's own event id.
    return "application_id" if name == "id" else name


_ENVELOPE_ATTRIBUTES = (
    "event_id",
    "event_type",
    "envelope_problem",
    *(_summary_attribute(name) for name in SUMMARY_FIELDS),
)


class WebhookEventsTable:
    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self.table_name = table_name

    # --- the receiver ---------------------------------------------------------------------

    def store_once(self, webhook: ReceivedWebhook) -> StoreResult:
        try:
            self._client.put_item(
                TableName=self.table_name,
                Item=webhook_item(webhook),
                ConditionExpression="attribute_not_exists(webhook_id)",
                # A duplicate comes back with the stored item in the same request: no second read.
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                stored = error.response.get("Item", {})
                body = stored.get("body", {}).get("B")
                return StoreResult(created=False, stored_body=bytes(body) if body is not None else None)
            raise StorageUnavailable(_describe(error)) from error
        except BotoCoreError as error:
            raise StorageUnavailable(type(error).__name__) from error
        return StoreResult(created=True)

    # --- statuses (the reconciler and the re-drive) ------------------------------------------

    def status_update(
        self, webhook_id: str, status: EventStatus, now: float, *, only_if_open: bool = True, **fields: Any
    ) -> dict[str, Any]:
        """The Update action that moves an event to `status` (also used inside transactions). With
        `only_if_open` a final status is never overwritten; without it the event need only exist (the
        payment transaction, whose entry's condition already guards against doing it twice)."""
        names = {"#status": "status"}
        values: dict[str, Any] = {":status": {"S": status.value}, ":resolved_at": {"S": iso_time(now)}}
        if only_if_open:
            values[":received"] = {"S": EventStatus.RECEIVED.value}
            values[":parked"] = {"S": EventStatus.PARKED.value}
        sets = ["#status = :status", "resolved_at = :resolved_at"]
        for name, value in fields.items():
            values[f":{name}"] = {"S": str(value)}
            sets.append(f"{name} = :{name}")
        # Not `unfinished_shard`: leaving the Unfinished index would cost this write a second unit.
        removals = ["reason", "reason_detail", "parked_reason", "unmatched_moment_id", "unmatched_grace_from"]
        return {
            "TableName": self.table_name,
            "Key": {"webhook_id": {"S": webhook_id}},
            "UpdateExpression": f"SET {', '.join(sets)} REMOVE {', '.join(removals)}",
            "ConditionExpression": _OPEN if only_if_open else "attribute_exists(webhook_id)",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    def finish(self, webhook_id: str, status: EventStatus, now: float, **fields: Any) -> bool:
        """Move an open event to a final status; False when it was already final (nothing changed)."""
        return self._update_if_open(self.status_update(webhook_id, status, now, **fields))

    def park(
        self,
        webhook_id: str,
        reason: ParkReason,
        detail: str,
        now: float,
        moment_id: str | None = None,
        *,
        unmatched_wait: float = 0.0,
        **fields: Any,
    ) -> bool:
        """Park an open event. An unmatched payment names its Moment id (`moment_id`), which puts it in
        the sparse `UnmatchedByMomentId` index: linking that id re-drives it at once; and it enters (or
        moves in) the sparse `UnmatchedDue` index at `unmatched_grace_from` = now + `unmatched_wait`
        (its backoff beyond the re-drive's grace), in this same write."""
        update = self.status_update(webhook_id, EventStatus.PARKED, now, **fields)
        values = update["ExpressionAttributeValues"]
        values.update({":reason": {"S": reason.value}, ":detail": {"S": detail[:500]}})
        sets = "SET #status = :status, resolved_at = :resolved_at, reason = :reason, reason_detail = :detail"
        sets += ", parked_reason = :reason" + "".join(f", {name} = :{name}" for name in fields)
        # When it was first parked: a re-drive that parks it again is the same parking (docs/events.md).
        sets += ", parked_at = if_not_exists(parked_at, :resolved_at)"
        removals = ""
        if reason is ParkReason.UNMATCHED:
            # The scheduled re-drive keeps trying these: it finds them through `Parked`.
            if moment_id:
                sets += ", unmatched_moment_id = :moment_id"
                values[":moment_id"] = {"S": moment_id}
            # Through `UnmatchedDue`, only once due: its grace after this (docs/ledger.md#re-drive).
            sets += ", unmatched_grace_from = :grace_from"
            values[":grace_from"] = {"S": iso_time(now + max(0.0, unmatched_wait))}
            sets += " ADD redrive_attempts :one"
            values[":one"] = {"N": "1"}
        else:
            # Out of UnmatchedByMomentId: an event once parked unmatched and now parked for another
            # reason (an application conflict, say) must not hold a first push waiting for ever; and
            # out of UnmatchedDue's key (its `parked_reason` is no longer `unmatched` anyway).
            removals = " REMOVE unmatched_moment_id, unmatched_grace_from"
        update["UpdateExpression"] = sets + removals
        return self._update_if_open(update)

    def _update_if_open(self, update: dict[str, Any]) -> bool:
        try:
            self._client.update_item(**update)
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    # --- reads --------------------------------------------------------------------------------

    def get(self, webhook_id: str) -> dict[str, Any] | None:
        response = self._client.get_item(
            TableName=self.table_name, Key={"webhook_id": {"S": webhook_id}}, ConsistentRead=True
        )
        item = response.get("Item")
        return event_from_item(item) if item else None

    def received_pages(
        self, shard: int, after: str | None, through: str, page_size: int = 100
    ) -> Iterator[list[tuple[str, str]]]:
        """(webhook id, received_at) of the events of one `Unfinished` shard received in (after,
        through], oldest first, a page at a time (KEYS_ONLY: about 100 bytes an event). The index never
        shrinks, so the re-drive asks only for what lies past its cursor."""
        yield from self._received_pages(
            UNFINISHED_INDEX, "unfinished_shard", f"u#{shard}", after, through, page_size
        )

    def parked_unmatched_pages(
        self, after: str | None, through: str, page_size: int = 100
    ) -> Iterator[list[tuple[str, str]]]:
        """(webhook id, received_at) of the payments parked unmatched (`Parked`) received in (after,
        through], oldest first, a page at a time: the re-drive's one pass over those an earlier
        version parked without `unmatched_grace_from`."""
        yield from self._received_pages(
            PARKED_INDEX, "parked_reason", ParkReason.UNMATCHED.value, after, through, page_size
        )

    def _received_pages(
        self, index: str, partition: str, value: str, after: str | None, through: str, page_size: int
    ) -> Iterator[list[tuple[str, str]]]:
        values: dict[str, Any] = {":value": {"S": value}, ":through": {"S": through}}
        condition = f"{partition} = :value AND received_at <= :through"
        if after is not None:
            # BETWEEN is inclusive: the events received exactly at `after` are dropped below.
            condition = f"{partition} = :value AND received_at BETWEEN :after AND :through"
            values[":after"] = {"S": after}
        paginator = self._client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.table_name,
            IndexName=index,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            PaginationConfig={"PageSize": page_size},
        ):
            found = [(item["webhook_id"]["S"], item["received_at"]["S"]) for item in page.get("Items", [])]
            found = [(webhook_id, at) for webhook_id, at in found if after is None or at > after]
            if found:
                yield found

    def statuses(self, webhook_ids: list[str], *, consistent: bool = True) -> dict[str, str]:
        """The status of each event (BatchGetItem, at most 100 ids a request; an event no longer stored
        is absent). Read units are charged on each item's whole size, 1 per 4 KB strongly consistent,
        half that eventually consistent, whatever is projected: the projection only keeps the answer
        small. A stale answer can only show an earlier status (`received`), never a later one."""
        found: dict[str, str] = {}
        for start in range(0, len(webhook_ids), _BATCH_GET_LIMIT):
            keys = [
                {"webhook_id": {"S": webhook_id}}
                for webhook_id in webhook_ids[start : start + _BATCH_GET_LIMIT]
            ]
            request: dict[str, Any] = {
                self.table_name: {
                    "Keys": keys,
                    "ConsistentRead": consistent,
                    "ProjectionExpression": "webhook_id, #status",
                    "ExpressionAttributeNames": {"#status": "status"},
                }
            }
            for attempt in range(_UNPROCESSED_ATTEMPTS):
                response = self._client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table_name, []):
                    found[item["webhook_id"]["S"]] = item.get("status", {}).get("S", "")
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(1.0, 0.05 * 2**attempt))  # throttled: DynamoDB's advice is to back off
            else:
                raise StatusesUnread(f"{len(request[self.table_name]['Keys'])} events left unprocessed")
        return found

    def unmatched_due_ids(self, grace_from_through: str) -> Iterator[str]:
        """Payments parked unmatched whose `unmatched_grace_from` is at or before the given time (the
        re-drive's now - grace): those whose next try is due, soonest due first (sparse `UnmatchedDue`
        index). A key condition, not a filter: the ones not due yet are never read."""
        yield from self._query_ids(
            UNMATCHED_DUE_INDEX,
            "parked_reason = :reason AND unmatched_grace_from <= :through",
            {":reason": {"S": ParkReason.UNMATCHED.value}, ":through": {"S": grace_from_through}},
        )

    def parked_unmatched_ids(self, received_before: str) -> Iterator[str]:
        """Every payment parked unmatched received before the cutoff, due or not (sparse `Parked`
        index, oldest first): the operator's re-drives, which try them all."""
        yield from self._query_ids(
            PARKED_INDEX,
            "parked_reason = :reason AND received_at < :before",
            {":reason": {"S": ParkReason.UNMATCHED.value}, ":before": {"S": received_before}},
        )

    def unmatched_naming(self, moment_id: str) -> Iterator[str]:
        """Payments parked unmatched that name this Moment id (sparse `UnmatchedByMomentId` index)."""
        yield from self._query_ids(UNMATCHED_INDEX, "unmatched_moment_id = :id", {":id": {"S": moment_id}})

    def parked_ids(self, reason: ParkReason) -> Iterator[str]:
        yield from self._query_ids(PARKED_INDEX, "parked_reason = :reason", {":reason": {"S": reason.value}})

    def webhooks_naming(self, moment_ids: set[str]) -> Iterator[tuple[str, str]]:
        """(webhook id, status) of the stored webhooks whose data names one of these Moment ids. Reads
        the whole table: only a data-subject request needs this, and an index for it would cost every
        webhook a write."""
        if not moment_ids:
            return
        # Filtered here, not in a FilterExpression: DynamoDB's IN takes at most 100 operands, and a
        # customer may have more linked accounts than that.
        paginator = self._client.get_paginator("scan")
        for page in paginator.paginate(
            TableName=self.table_name,
            ExpressionAttributeNames={"#status": "status"},
            ProjectionExpression="webhook_id, #status, customer_id, account_id, bill_id",
        ):
            for item in page.get("Items", []):
                # A bill payment may name only its bill (Moment does not document the parent ids).
                named = {item.get(name, {}).get("S") for name in ("customer_id", "account_id", "bill_id")}
                if named & moment_ids:
                    yield item["webhook_id"]["S"], item.get("status", {}).get("S", "")

    def restate_summary(self, webhook_id: str, envelope: WebhookEnvelope) -> dict[str, Any] | None:
        """Write an event's summary again from `envelope` (its stored body read by today's code), only
        while it is parked invalid: a summary that moved money is never rewritten. Returns the event
        as it now stands, or None when it was no longer parked invalid with a body."""
        stated = _summary_values(envelope)
        names: dict[str, str] = {"#status": "status", "#reason": "reason"}
        values: dict[str, Any] = {
            ":parked": {"S": EventStatus.PARKED.value},
            ":invalid": {"S": ParkReason.INVALID.value},
        }
        sets: list[str] = []
        removals: list[str] = []
        for number, attribute in enumerate(_ENVELOPE_ATTRIBUTES):
            names[f"#a{number}"] = attribute
            if attribute in stated:
                values[f":a{number}"] = stated[attribute]
                sets.append(f"#a{number} = :a{number}")
            else:
                removals.append(f"#a{number}")
        clauses = [f"SET {', '.join(sets)}"] if sets else []
        clauses += [f"REMOVE {', '.join(removals)}"] if removals else []
        try:
            response = self._client.update_item(
                TableName=self.table_name,
                Key={"webhook_id": {"S": webhook_id}},
                UpdateExpression=" ".join(clauses),
                ConditionExpression="#status = :parked AND #reason = :invalid AND attribute_exists(body)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return None
            raise
        return event_from_item(response["Attributes"])

    def erase_body(self, webhook_id: str, now: str) -> bool:
        """Remove a stored body (a data-subject request). The summary stays (ids, amounts, currency,
        event type): it is all the reconciler decides from, so an unfinished payment still settles."""
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key={"webhook_id": {"S": webhook_id}},
                UpdateExpression="REMOVE body SET body_erased_at = :now",
                ConditionExpression="attribute_exists(body)",
                ExpressionAttributeValues={":now": {"S": now}},
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _query_ids(self, index: str, condition: str, values: dict[str, Any]) -> Iterator[str]:
        paginator = self._client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.table_name,
            IndexName=index,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            ProjectionExpression="webhook_id",
        ):
            for item in page.get("Items", []):
                yield item["webhook_id"]["S"]


def _describe(error: ClientError) -> str:
    details = error.response.get("Error", {})
    return f"{details.get('Code', 'ClientError')}: {details.get('Message', '')}".strip()
