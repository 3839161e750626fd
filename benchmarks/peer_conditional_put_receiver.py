"""Peer (b): `standardwebhooks` verification and one conditional put, measured beside the project's receiver.

For the benchmarks only, never deployed. What a merchant writes by hand with the scheme's reference
library: verify, then one PutItem of `webhook_id`, the body and `received_at` on
`attribute_not_exists(webhook_id)`; a failed condition is a duplicate. Key from an environment
variable, client created at import, no logs or metrics: the baseline with the library's verification.
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import boto3
from botocore.exceptions import ClientError
from standardwebhooks import Webhook, WebhookVerificationError

TABLE_NAME = os.environ.get("WEBHOOK_EVENTS_TABLE", "WebhookEvents")
webhook = Webhook(os.environ.get("BASELINE_WEBHOOK_SECRETS", "").split()[0])
dynamodb = boto3.client("dynamodb")


def _answer(status_code: int, /, **body: str) -> dict[str, Any]:
    return {
        "statusCode": status_code,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    raw = event.get("body") or ""
    body = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode()
    try:
        webhook.verify(body, headers)
    except WebhookVerificationError:
        return _answer(401, status="rejected")
    webhook_id = headers["webhook-id"]
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
