"""Peer (a): the receiver AWS's guidance leads a merchant to, measured beside the project's receiver.

For the benchmarks only, never deployed. `standardwebhooks` verifies the signature first (the
reference library of the scheme Moment signs with); then Powertools' `idempotent_function` with its
DynamoDB persistence layer, keyed on `webhook-id`, stores the delivery: the function's return value
(the body) is saved in the idempotency record itself, the cheapest way to keep the body with this
pattern (no second table). A redelivery gets the saved result back from the failed conditional put.
The key comes from an environment variable, decoded at import, as for the baseline; the client is
created at import. No logs or metrics of its own (Powertools' idempotency logs at DEBUG only).
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import boto3
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from standardwebhooks import Webhook, WebhookVerificationError

TABLE_NAME = os.environ.get("PEER_IDEMPOTENCY_TABLE", "IdempotencyRecords")
# Moment retries for days: a record that expired after Powertools' default hour would let one in twice.
RECORD_SECONDS = 3 * 86_400
webhook = Webhook(os.environ.get("BASELINE_WEBHOOK_SECRETS", "").split()[0])
dynamodb = boto3.client("dynamodb")
persistence = DynamoDBPersistenceLayer(table_name=TABLE_NAME, boto3_client=dynamodb)
config = IdempotencyConfig(event_key_jmespath="webhook_id", expires_after_seconds=RECORD_SECONDS)


def _answer(status_code: int, /, **body: str) -> dict[str, Any]:
    return {
        "statusCode": status_code,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }


@idempotent_function(data_keyword_argument="delivery", persistence_store=persistence, config=config)
def store(delivery: dict[str, str]) -> dict[str, str]:
    # What the idempotency record keeps (its `data` attribute): the delivery itself.
    return {"status": "accepted", **delivery}


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config.register_lambda_context(context)
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    raw = event.get("body") or ""
    body = base64.b64decode(raw).decode() if event.get("isBase64Encoded") else raw
    try:
        webhook.verify(body, headers)
    except WebhookVerificationError:
        return _answer(401, status="rejected")
    try:
        result = store(delivery={"webhook_id": headers["webhook-id"], "body": body})
    except Exception:
        return _answer(503, status="retry")
    return _answer(200, status=result["status"], webhook_id=result["webhook_id"])
