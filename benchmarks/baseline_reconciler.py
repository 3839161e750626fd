"""The floor the reconciler is measured against: one plain UpdateItem per payment record, nothing else.

For the benchmarks only, never deployed, and not correct: a redelivered record lowers the balance
again (no entry, no condition), no event status is kept, nothing is parked, nothing is logged or
counted. It reads the same DynamoDB stream records the reconciler gets (INSERTs; the raw body as
base64 text in `NewImage`), decodes the envelope, and `ADD`s the negative amount to the balance of
the account or customer the payment names. Moment ids resolve through `LINKS`, filled by the
benchmark before the first call: the reconciler's own links are cached per execution environment
too, so in a warm process neither side reads them. Its client is created at import, with boto3's
defaults, as a minimal Lambda function would.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import boto3

LEDGER_TABLE = os.environ.get("LEDGER_TABLE", "Ledger")
# Moment id (bcus_…, bacc_…) -> the balance's partition key (CUSTOMER#ref, ACCOUNT#ref).
LINKS: dict[str, str] = {}
dynamodb = boto3.client("dynamodb")


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    for record in event["Records"]:
        if record.get("eventName") != "INSERT":
            continue
        image = record["dynamodb"]["NewImage"]
        data = json.loads(base64.b64decode(image["body"]["B"]))["data"]
        target = data.get("account_id") or data["customer_id"]
        dynamodb.update_item(
            TableName=LEDGER_TABLE,
            Key={"pk": {"S": LINKS[target]}, "sk": {"S": "HEAD"}},
            UpdateExpression="ADD balance :delta",
            ExpressionAttributeValues={":delta": {"N": str(-int(data["amount"]))}},
        )
    return {"batchItemFailures": []}
