"""Signed Moment webhooks for tests, made independently of the code under test (stdlib hmac)."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).resolve().parents[2] / "events"

# Made up for tests: base64 of ASCII text that says so.
TEST_SECRET = "whsec_" + base64.b64encode(b"made-up-test-signing-key-number-1").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"made-up-test-signing-key-number-2").decode()
NOW = 1_790_000_000  # a pinned clock: 2026-09-21


def key_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(
        key_bytes(secret), f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256
    ).digest()
    return "v1," + base64.b64encode(digest).decode()


def amount_applied_body(
    application_id: str = "ob_N2a38DJQWPL8K4X42354234",
    amount: int = 2000,
    customer_id: str | None = "bcus_H4jp6KnU5cPw263v1jyz4",
    account_id: str | None = None,
    currency: str = "ZAR",
    event_id: str = "evt_2341234567890abcdef",
) -> bytes:
    data: dict[str, Any] = {
        "id": application_id,
        "amount": amount,
        "currency": currency,
        "payment_id": "pay_1313235234843nmafdsa",
    }
    if customer_id:
        data["customer_id"] = customer_id
    if account_id:
        data["account_id"] = account_id
    return json.dumps({"id": event_id, "type": "obligation.amount_applied", "data": data}).encode()


def webhook_event(
    body: bytes,
    *,
    webhook_id: str = "msg_2mXnTestDelivery0001",
    timestamp: int = NOW,
    secret: str = TEST_SECRET,
    signature: str | None = None,
    base64_body: bool = False,
    extra_headers: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event, shaped like the file in events/."""
    event = copy.deepcopy(json.loads((EVENTS / "webhook_receiver" / "moment-webhook.json").read_text()))
    headers = dict(event["headers"])
    headers.update(
        {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature
            if signature is not None
            else sign(secret, webhook_id, timestamp, body),
            "content-length": str(len(body)),
        }
    )
    headers.update(extra_headers or {})
    for name in drop:
        headers.pop(name, None)
    event["headers"] = headers
    event["isBase64Encoded"] = base64_body
    event["body"] = base64.b64encode(body).decode() if base64_body else body.decode("utf-8")
    return event
