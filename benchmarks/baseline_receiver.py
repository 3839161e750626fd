"""The floor the real receiver is measured against: the least a Standard Webhooks receiver can do.

For the benchmarks only, never deployed. Stdlib hmac and base64 verify the signature, one boto3
DynamoDB conditional PutItem (`attribute_not_exists`) stores the delivery; no Powertools, no logs, no
metrics, no envelope parsing, no Secrets Manager (the keys come from an environment variable, decoded
once at import). The client is created at import, as a minimal Lambda function would do it.
It answers 200 for a new or duplicate delivery, 401 for anything it cannot verify, 503 when the write
fails, and skips what the real receiver adds for operations: problem details, the body-size cap,
header validation, the reconciler's summary fields, the TTL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from typing import Any

import boto3
from botocore.exceptions import ClientError

TABLE_NAME = os.environ.get("WEBHOOK_EVENTS_TABLE", "WebhookEvents")
TOLERANCE_SECONDS = 180
KEYS = [
    base64.b64decode(secret.removeprefix("whsec_") + "==")
    for secret in os.environ.get("BASELINE_WEBHOOK_SECRETS", "").split()
]
dynamodb = boto3.client("dynamodb")


def _answer(status_code: int, /, **body: str) -> dict[str, Any]:
    return {
        "statusCode": status_code,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }


def _verified(headers: dict[str, str], body: bytes) -> str | None:
    """The webhook id when a v1 signature matches a key and the timestamp is fresh, else None."""
    webhook_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    if not webhook_id or not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        return None
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    for key in KEYS:
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
        for entry in headers.get("webhook-signature", "").split():
            version, _, signature = entry.partition(",")
            if version == "v1" and hmac.compare_digest(expected, signature.encode()):
                return webhook_id
    return None


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    raw = event.get("body") or ""
    body = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode()
    webhook_id = _verified(headers, body)
    if webhook_id is None:
        return _answer(401, status="rejected")
    try:
        dynamodb.put_item(
            TableName=TABLE_NAME,
            Item={
                "webhook_id": {"S": webhook_id},
                "body": {"B": body},
                "received_at": {"N": str(int(time.time()))},
            },
            ConditionExpression="attribute_not_exists(webhook_id)",
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return _answer(200, status="duplicate", webhook_id=webhook_id)
        return _answer(503, status="retry")
    return _answer(200, status="accepted", webhook_id=webhook_id)
