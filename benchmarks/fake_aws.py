"""In-memory DynamoDB and Secrets Manager behind botocore's `before-send` hook, and signed webhooks.

Why this backend for timing, rather than moto or botocore's Stubber: `before-send` is the last step
before the HTTP request leaves, so botocore still validates the parameters, serialises the request,
signs it with SigV4, and parses the response (an error into a ClientError with its modeled fields),
which is what a real call costs the function's CPU. Only the network round trip and the service are
replaced, by a dict. moto also answers at `before-send` but then emulates DynamoDB in Python (the
figure would be mostly moto); the Stubber answers at `before-call`, skipping serialisation, signing
and parsing (the figure would leave out the SDK). Requests are counted so a timed loop can prove
that each call made exactly the one request it should.

Imported inside cold-start children after their timed import: use only what boto3 has loaded already.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

from botocore.awsrequest import AWSResponse

_JSON_1_0 = "application/x-amz-json-1.0"
_JSON_1_1 = "application/x-amz-json-1.1"


class _RawBody:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Any:
        yield self._body


def _answer(request: Any, status: int, document: dict[str, Any], content_type: str) -> AWSResponse:
    body = json.dumps(document).encode()
    headers = {
        "content-type": content_type,
        "x-amzn-requestid": "0" * 52,
        # DynamoDB sends it and botocore checks it: part of what a real response costs.
        "x-amz-crc32": str(binascii.crc32(body) & 0xFFFFFFFF),
    }
    return AWSResponse(request.url, status, headers, _RawBody(body))


# Powertools' idempotency record put: a record that exists and has not expired makes it fail. Records
# here never expire within a run (the peer keeps them 3 days), so an existing key is enough.
_POWERTOOLS_PUT = "attribute_not_exists(#id) OR #expiry < :now OR ("


class InMemoryDynamoDB:
    """PutItem with `attribute_not_exists(<key>)` (or Powertools' idempotency condition), and
    UpdateItem with a plain `SET`: the calls the receivers and their peers make; nothing else."""

    def __init__(self, key: str = "webhook_id") -> None:
        self.key = key
        self.items: dict[str, dict[str, Any]] = {}
        self.requests = 0

    def attach(self, events: Any) -> None:
        """`events`: a client's `meta.events`, or a botocore session (clients created later inherit it)."""
        events.register("before-send.dynamodb", self._send)

    def _send(self, request: Any, event_name: str = "", **_: Any) -> AWSResponse:
        operation = event_name.rsplit(".", 1)[-1]
        if operation == "UpdateItem":
            self.requests += 1
            return self._update(request, json.loads(request.body))
        if operation != "PutItem":
            raise NotImplementedError(f"the in-memory DynamoDB does not do {operation}")
        self.requests += 1
        call = json.loads(request.body)
        item = call["Item"]
        key = item[self.key]["S"]
        condition = call.get("ConditionExpression")
        powertools = (
            condition is not None
            and condition.startswith(_POWERTOOLS_PUT)
            and call["ExpressionAttributeNames"]["#id"] == self.key
        )
        if condition not in {None, f"attribute_not_exists({self.key})"} and not powertools:
            raise NotImplementedError(f"the in-memory DynamoDB does not evaluate {condition!r}")
        if condition and key in self.items:
            error: dict[str, Any] = {
                "__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
                "message": "The conditional request failed",
            }
            if call.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD":
                error["Item"] = self.items[key]
            return _answer(request, 400, error, _JSON_1_0)
        self.items[key] = item  # as sent: binary values stay base64, as DynamoDB returns them
        return _answer(request, 200, {}, _JSON_1_0)

    def _update(self, request: Any, call: dict[str, Any]) -> AWSResponse:
        expression = call["UpdateExpression"]
        if not expression.startswith("SET ") or call.get("ConditionExpression"):
            raise NotImplementedError(f"the in-memory DynamoDB does not do {expression!r}")
        names, values = call.get("ExpressionAttributeNames", {}), call["ExpressionAttributeValues"]
        item = self.items.setdefault(call["Key"][self.key]["S"], dict(call["Key"]))
        for assignment in expression.removeprefix("SET ").split(","):
            name, _, value = (part.strip() for part in assignment.partition("="))
            item[names.get(name, name)] = values[value]
        return _answer(request, 200, {}, _JSON_1_0)


class InMemorySecretsManager:
    """GetSecretValue of one secret."""

    def __init__(self, secret_id: str, secret_string: str) -> None:
        self.secret_id = secret_id
        self.secret_string = secret_string
        self.requests = 0

    def attach(self, events: Any) -> None:
        events.register("before-send.secrets-manager", self._send)

    def _send(self, request: Any, event_name: str = "", **_: Any) -> AWSResponse:
        operation = event_name.rsplit(".", 1)[-1]
        call = json.loads(request.body)
        if operation != "GetSecretValue" or call.get("SecretId") != self.secret_id:
            raise NotImplementedError(f"the in-memory Secrets Manager does not do {operation} {call}")
        self.requests += 1
        document = {
            "ARN": f"arn:aws:secretsmanager:af-south-1:123456789012:secret:{self.secret_id}-AbCdEf",
            "Name": self.secret_id,
            "SecretString": self.secret_string,
            "VersionId": "00000000-0000-0000-0000-000000000000",
            "VersionStages": ["AWSCURRENT"],
            "CreatedDate": 1_790_000_000.0,
        }
        return _answer(request, 200, document, _JSON_1_1)


class BenchLambdaContext:
    """The fields of Lambda's context object the handlers and Powertools read."""

    def __init__(self, function_name: str, request_number: int) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:af-south-1:123456789012:function:{function_name}"
        self.aws_request_id = f"00000000-0000-4000-8000-{request_number:012d}"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def signing_key(secret: str) -> bytes:
    """A Standard Webhooks secret's key bytes (`whsec_` prefix, base64, padding optional)."""
    return base64.b64decode(secret.removeprefix("whsec_") + "==")


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` Moment would send, made independently of the code under test."""
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_event(
    template: dict[str, Any], body: bytes, *, webhook_id: str, timestamp: int, key: bytes
) -> dict[str, Any]:
    """An API Gateway (payload 2.0) event shaped like `template` (the file in events/), signed afresh."""
    event = copy.deepcopy(template)
    event["headers"] = {
        **template["headers"],
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, webhook_id, timestamp, body),
        "content-length": str(len(body)),
    }
    event["body"] = body.decode()
    event["isBase64Encoded"] = False
    return event


class CannedDynamoDB:
    """The reconciler's DynamoDB calls answered with what DynamoDB would send back, and nothing kept.

    TransactWriteItems, UpdateItem and PutItem (the application's claim) succeed with `{}` (no return
    values asked), or, with `cancel_transactions` set, every transaction is cancelled with the answer
    it builds from the request (`cancelled_as_already_applied`: the way a payment already applied by
    another webhook is), and with `refuse_claims` every claim refused with the guard that webhook
    wrote (`claimed_by_another`). GetItem answers from `items` by the key's `pk` (the Moment-id links
    the reconciler reads once per execution environment). The work done here is a dict lookup and a
    counter: the same for both sides of a comparison and small beside botocore's. `requests` counts
    each operation, so a timed loop can prove afterwards that it made exactly the calls it should.
    """

    def __init__(self, items: dict[str, dict[str, Any]] | None = None) -> None:
        self.items = items or {}
        self.requests: dict[str, int] = {}
        self.cancel_transactions: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.refuse_claims: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.last_body: dict[str, bytes] = {}

    def attach(self, events: Any) -> None:
        events.register("before-send.dynamodb", self._send)

    def _send(self, request: Any, event_name: str = "", **_: Any) -> AWSResponse:
        operation = event_name.rsplit(".", 1)[-1]
        self.requests[operation] = self.requests.get(operation, 0) + 1
        self.last_body[operation] = request.body
        if operation == "TransactWriteItems":
            if self.cancel_transactions is not None:
                return _answer(request, 400, self.cancel_transactions(json.loads(request.body)), _JSON_1_0)
            return _answer(request, 200, {}, _JSON_1_0)
        if operation == "UpdateItem":
            return _answer(request, 200, {}, _JSON_1_0)
        if operation == "PutItem":
            if self.refuse_claims is not None:
                return _answer(request, 400, self.refuse_claims(json.loads(request.body)), _JSON_1_0)
            return _answer(request, 200, {}, _JSON_1_0)
        if operation == "GetItem":
            key = json.loads(request.body)["Key"]["pk"]["S"]
            item = self.items.get(key)
            return _answer(request, 200, {"Item": item} if item else {}, _JSON_1_0)
        raise NotImplementedError(f"the canned DynamoDB does not do {operation}")


def claimed_by_another(put: dict[str, Any]) -> dict[str, Any]:
    """DynamoDB's answer to an application's claim when another webhook claimed the same payment (same
    balance, same amount) first: the guard it would write, naming that webhook."""
    return {
        "__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
        "message": "The conditional request failed",
        "Item": {**put["Item"], "webhook_id": {"S": "msg_bench_applied_first"}},
    }


def cancelled_as_already_applied(transaction: dict[str, Any]) -> dict[str, Any]:
    """DynamoDB's answer to a payment's transaction when another webhook applied the same payment
    first: every put on `attribute_not_exists` (the entry and the application guard) found the item
    it would write, as that other webhook wrote it; the updates were not the cause."""
    reasons: list[dict[str, Any]] = []
    for action in transaction["TransactItems"]:
        put = action.get("Put", {})
        if put.get("ConditionExpression") == "attribute_not_exists(pk)":
            found = {**put["Item"], "webhook_id": {"S": "msg_bench_applied_first"}}
            reasons.append(
                {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed", "Item": found}
            )
        else:
            reasons.append({"Code": "None"})
    codes = ", ".join(reason["Code"] for reason in reasons)
    return {
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]",
        "CancellationReasons": reasons,
    }


class SnapshotLedger:
    """The pusher's DynamoDB calls answered from a snapshot of the ledger, kept up to date by the run's
    own writes, for timing without an emulator.

    The items (heads, links, leases) are read from moto just before the timed runs. GetItem answers
    from them; UpdateItem evaluates its condition and applies its update to them as DynamoDB would
    (benchmarks/dynamodb_expressions.py), refusing with ConditionalCheckFailedException when the
    condition does not hold; Query on the PendingPush index answers from the items as they are now (the
    sparse index: items with both of its keys, sorted by `pending_since`, with its projection and the
    request's filter), a page at a time when asked (`Limit` before the filter, `ExclusiveStartKey`,
    `LastEvaluatedKey`: the pending bills' pages). So a read after a write sees it, as the pusher's
    re-read of a head after its push must. Every write is kept in the order it was applied, with whether
    it was accepted (`writes`), so the benchmark can replay them on moto and check that moto agrees on
    each one and ends with the same items. `reset()` sets the items back to the snapshot. Registered
    first on `before-send`, so it answers before moto's own hook. Thread-safe: one lock around each
    request, as DynamoDB makes each single-item request atomic.
    """

    INDEX = "PendingPush"
    INDEX_KEYS = ("push_shard", "pending_since")
    INDEX_PROJECTED = ("pk", "sk", "push_shard", "pending_since", "next_push_at")

    def __init__(self, items: list[dict[str, Any]]) -> None:
        import threading  # noqa: PLC0415 -- see the module's note on imports

        from benchmarks import dynamodb_expressions  # noqa: PLC0415

        self._expressions = dynamodb_expressions
        self._snapshot = {self._key(item): item for item in items}
        self.items = dict(self._snapshot)  # by (pk, sk); items are replaced on write, never changed
        self._lock = threading.Lock()
        self.requests: list[str] = []
        self.writes: list[tuple[dict[str, Any], bool]] = []  # (UpdateItem request, accepted), applied order

    @staticmethod
    def _key(item: dict[str, Any]) -> tuple[str, str]:
        return item["pk"]["S"], item["sk"]["S"]

    def reset(self) -> None:
        """Back to the snapshot, for the next run; the requests and writes are cleared."""
        with self._lock:
            self.items = dict(self._snapshot)
            self.requests.clear()
            self.writes.clear()

    def attach(self, events: Any) -> None:
        events.register_first("before-send.dynamodb", self._send)

    def _send(self, request: Any, event_name: str = "", **_: Any) -> AWSResponse:
        operation = event_name.rsplit(".", 1)[-1]
        call = json.loads(request.body)
        with self._lock:
            self.requests.append(operation)
            if operation == "GetItem":
                if "ProjectionExpression" in call:
                    raise NotImplementedError("the snapshot ledger does not project GetItem")
                item = self.items.get(self._key(call["Key"]))
                status, document = 200, ({"Item": item} if item else {})
            elif operation == "UpdateItem":
                status, document = self._update(call)
            elif operation == "Query":
                status, document = 200, self._query(call)
            else:
                raise NotImplementedError(f"the snapshot ledger does not do {operation}")
        # Items are replaced on write, never changed in place: serialising outside the lock is safe.
        return _answer(request, status, document, _JSON_1_0)

    def _update(self, call: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        expressions = self._expressions
        names = expressions.Names(call)
        key = self._key(call["Key"])
        old = self.items.get(key)
        current = old if old is not None else dict(call["Key"])
        condition = call.get("ConditionExpression")
        if condition and not expressions.condition(condition)(current if old is not None else {}, names):
            self.writes.append((call, False))
            error: dict[str, Any] = {
                "__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
                "message": "The conditional request failed",
            }
            if old is not None and call.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD":
                error["Item"] = old
            return 400, error
        new, touched = expressions.update(call["UpdateExpression"])(current, names)
        self.items[key] = new
        self.writes.append((call, True))
        returned = call.get("ReturnValues", "NONE")
        if returned == "NONE":
            return 200, {}
        if returned == "ALL_NEW":
            return 200, {"Attributes": new}
        if returned == "UPDATED_NEW":
            return 200, {"Attributes": {name: new[name] for name in touched if name in new}}
        raise NotImplementedError(f"the snapshot ledger does not return {returned}")

    def _query(self, call: dict[str, Any]) -> dict[str, Any]:
        expressions = self._expressions
        unsupported = {"ProjectionExpression", "Select"} & set(call)
        if call.get("IndexName") != self.INDEX or unsupported:
            raise NotImplementedError(f"the snapshot ledger queries only {self.INDEX}, plainly: {call}")
        names = expressions.Names(call)
        key_condition = expressions.condition(call["KeyConditionExpression"])
        # The sparse index holds the items that have both of its keys, with its projection.
        indexed = [
            {name: item[name] for name in self.INDEX_PROJECTED if name in item}
            for item in self.items.values()
            if all(name in item for name in self.INDEX_KEYS)
        ]

        # Ties of the sort key in the table's key order (DynamoDB's own order of ties is unspecified).
        def order(item: dict[str, Any]) -> tuple[str, str, str]:
            return str(item["pending_since"]["S"]), str(item["pk"]["S"]), str(item["sk"]["S"])

        backwards = call.get("ScanIndexForward") is False
        found = sorted((item for item in indexed if key_condition(item, names)), key=order, reverse=backwards)
        if "ExclusiveStartKey" in call:  # a page reads on just after the last one's key
            start = order(call["ExclusiveStartKey"])
            found = [item for item in found if (order(item) < start if backwards else order(item) > start)]
        # `Limit` bounds the items evaluated, before the filter; a query it stopped returns the
        # last one's key (the pending bills' pages: adapters/ledger_bills.pending_bill_pages).
        last_key: dict[str, Any] | None = None
        if "Limit" in call and len(found) >= int(call["Limit"]):
            found = found[: int(call["Limit"])]
            last_key = {name: found[-1][name] for name in ("pk", "sk", *self.INDEX_KEYS)}
        scanned = len(found)
        if "FilterExpression" in call:
            kept = expressions.condition(call["FilterExpression"])
            found = [item for item in found if kept(item, names)]
        answer: dict[str, Any] = {"Items": found, "Count": len(found), "ScannedCount": scanned}
        if last_key is not None:
            answer["LastEvaluatedKey"] = last_key
        return answer
