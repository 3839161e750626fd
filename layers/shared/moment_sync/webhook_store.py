"""What the receiver needs from storage, and the item it stores (the table's schema is template.yaml's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from moment_sync.envelope import WebhookEnvelope


class StorageUnavailable(Exception):
    """The durable write did not happen (throttled, timed out, refused): Moment must retry."""


@dataclass(frozen=True, slots=True)
class ReceivedWebhook:
    webhook_id: str
    webhook_timestamp: int
    received_at: float
    body: bytes
    envelope: WebhookEnvelope
    # Unix seconds after which DynamoDB's TTL may delete the item.
    expires_at: int


@dataclass(frozen=True, slots=True)
class StoreResult:
    created: bool
    # For a webhook id already stored: that item's body (returned by the failed conditional write
    # itself, so a duplicate costs no extra read). None when the stored body was erased.
    stored_body: bytes | None = None


class WebhookStore(Protocol):
    def store_once(self, webhook: ReceivedWebhook) -> StoreResult:
        """Store the webhook unless its id is stored already; raise StorageUnavailable on failure."""
        ...
