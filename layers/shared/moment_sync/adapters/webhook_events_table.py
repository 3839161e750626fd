"""The WebhookEvents table: one conditional PutItem per delivery, never a read before it.

Attribute names here are the table's contract with the reconciler, the ledger API and the CLI;
the key schema itself lives in template.yaml.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from moment_sync.webhook_store import ReceivedWebhook, StorageUnavailable, StoreResult

RECEIVED = "received"


def iso_time(unix_seconds: float) -> str:
    return (
        datetime.fromtimestamp(unix_seconds, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def webhook_item(webhook: ReceivedWebhook) -> dict[str, Any]:
    """The item as DynamoDB's low-level API spells it: the raw body verbatim, plus what is queried."""
    envelope = webhook.envelope
    item: dict[str, Any] = {
        "webhook_id": {"S": webhook.webhook_id},
        "webhook_timestamp": {"N": str(webhook.webhook_timestamp)},
        "received_at": {"S": iso_time(webhook.received_at)},
        "body": {"B": webhook.body},
        "status": {"S": RECEIVED},
        "expires_at": {"N": str(webhook.expires_at)},
    }
    if envelope.event_id is not None:
        item["event_id"] = {"S": envelope.event_id}
    if envelope.event_type is not None:
        item["event_type"] = {"S": envelope.event_type}
    if envelope.problem is not None:
        item["envelope_problem"] = {"S": envelope.problem}
    for name, value in envelope.summary.items():
        # data.id is the Moment application id: name it so, beside the envelope's own event id.
        attribute = "application_id" if name == "id" else name
        item[attribute] = {"N": str(value)} if isinstance(value, int) else {"S": value}
    return item


class WebhookEventsTable:
    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table_name = table_name

    def store_once(self, webhook: ReceivedWebhook) -> StoreResult:
        try:
            self._client.put_item(
                TableName=self._table_name,
                Item=webhook_item(webhook),
                ConditionExpression="attribute_not_exists(webhook_id)",
                # A duplicate comes back with the stored item in the same request: no second read.
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                stored = error.response.get("Item", {})
                body = stored.get("body", {}).get("B")
                return StoreResult(created=False, stored_body=bytes(body) if body is not None else None)
            raise StorageUnavailable(_describe(error)) from error
        except BotoCoreError as error:
            raise StorageUnavailable(type(error).__name__) from error
        return StoreResult(created=True)


def _describe(error: ClientError) -> str:
    details = error.response.get("Error", {})
    return f"{details.get('Code', 'ClientError')}: {details.get('Message', '')}".strip()
