"""Hostile input: a fuzzed receiver never errors, never stores a forged event, and answers 5xx only
for a storage fault; Moment answering garbage fails that one balance and nothing else."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import webhook_receiver_handler
from local_stack.lambda_context import LocalLambdaContext
from local_stack.made_up_values import LOCAL_MOMENT_API_KEY
from moment_sandbox import MomentSandbox, SandboxSettings
from moment_sync.adapters.webhook_events_table import WebhookEventsTable
from moment_sync.ledger.model import Entry, EntryKind
from moment_sync.moment_client import MomentClient, RetryPolicy
from moment_sync.pusher import BalancePusher
from moment_sync.receiver import ReceiverSettings
from moment_sync.runtime import ReceiverDependencies
from support.ledger import LedgerHarness
from support.webhooks import NOW, TEST_SECRET, key_bytes, sign, webhook_event

WEBHOOK_NUMBERS = itertools.count()
MUTATIONS = ("none", "body", "id", "timestamp", "signature", "secret", "stale")


@pytest.fixture
def receiver(events_table: str, dynamodb: Any) -> ReceiverDependencies:
    return ReceiverDependencies(
        keys=lambda: [key_bytes(TEST_SECRET)],
        store=WebhookEventsTable(dynamodb, events_table),
        settings=ReceiverSettings(max_body_bytes=4096),
        clock=lambda: NOW,
    )


def stored_ids(dynamodb: Any, table: str) -> set[str]:
    return {item["webhook_id"]["S"] for item in dynamodb.scan(TableName=table)["Items"]}


def mutate(
    mutation: str, body: bytes, webhook_id: str, flip: int, as_base64: bool
) -> tuple[bytes, str, int, str]:
    """A delivery of `body` signed with the test secret, then changed as `mutation` says."""
    signature = sign(TEST_SECRET, webhook_id, NOW, body)
    sent_body, sent_id, timestamp = body, webhook_id, NOW
    if mutation == "body" and as_base64:
        mutated = bytearray(body + b" ")
        mutated[flip % len(mutated)] ^= 0x20
        sent_body = bytes(mutated)
    elif mutation == "body":  # a text body stays text: change one character
        text = body.decode() or " "
        at = flip % len(text)
        sent_body = (text[:at] + chr(ord(text[at]) ^ 1) + text[at + 1 :]).encode("utf-8", "surrogatepass")
    elif mutation == "id":
        sent_id = webhook_id + "x"
    elif mutation == "timestamp":
        timestamp = NOW + 1
    elif mutation == "signature":
        raw = bytearray(base64.b64decode(signature[3:]))
        raw[flip % len(raw)] ^= 0x01
        signature = "v1," + base64.b64encode(bytes(raw)).decode()
    elif mutation == "secret":
        signature = sign("whsec_" + base64.b64encode(b"not-the-key").decode(), webhook_id, NOW, body)
    elif mutation == "stale":
        timestamp = NOW - 3600
        signature = sign(TEST_SECRET, webhook_id, timestamp, body)
    return sent_body, sent_id, timestamp, signature


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=6000),
    mutation=st.sampled_from(MUTATIONS),
    flip=st.integers(min_value=0, max_value=10_000),
    as_base64=st.booleans(),
    storage_fault=st.booleans(),
)
def test_fuzzed_deliveries_are_stored_only_when_authentic_and_5xx_only_on_a_storage_fault(
    receiver: ReceiverDependencies,
    dynamodb: Any,
    events_table: str,
    body: bytes,
    mutation: str,
    flip: int,
    as_base64: bool,
    storage_fault: bool,
) -> None:
    webhook_id = f"msg_fuzz{next(WEBHOOK_NUMBERS)}"  # the table outlives one example: a fresh id each
    if not as_base64:
        body = body.decode("utf-8", "replace").encode()
    sent_body, sent_id, timestamp, signature = mutate(mutation, body, webhook_id, flip, as_base64)
    event = webhook_event(b"{}", webhook_id=sent_id, timestamp=timestamp, signature=signature)
    event["isBase64Encoded"] = as_base64
    event["body"] = (
        base64.b64encode(sent_body).decode() if as_base64 else sent_body.decode("utf-8", "surrogatepass")
    )

    def fail(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}}, "PutItem")

    if storage_fault:
        dynamodb.meta.events.register("before-call.dynamodb.PutItem", fail, unique_id="fuzz-fault")
    try:
        response = webhook_receiver_handler.lambda_handler(event, LocalLambdaContext("receiver"), receiver)
    finally:
        dynamodb.meta.events.unregister("before-call.dynamodb.PutItem", unique_id="fuzz-fault")

    authentic = mutation == "none" and len(body) <= 4096
    status = response["statusCode"]
    if status >= 500:
        assert storage_fault and authentic
        assert json.loads(response["body"])["type"].endswith("/storage-unavailable")
    assert (status == 200) == (authentic and not storage_fault)
    assert (sent_id in stored_ids(dynamodb, events_table)) == (authentic and not storage_fault)


class GarbageFor(httpx.BaseTransport):
    """Forwards to the sandbox, except that every answer about one reference is replaced."""

    def __init__(self, reference: str, garbage: httpx.Response) -> None:
        self.reference = reference
        self.garbage = garbage
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        touches = self.reference in request.url.path or self.reference.encode() in (request.content or b"")
        if touches:
            return httpx.Response(
                self.garbage.status_code, headers=self.garbage.headers, content=self.garbage.content
            )
        return self.inner.handle_request(request)


@pytest.fixture
def sandbox() -> Iterator[MomentSandbox]:
    with MomentSandbox(SandboxSettings(webhook_url=None)) as running:
        yield running


@pytest.mark.parametrize(
    ("garbage", "error"),
    [
        (httpx.Response(201, content=b"<html>gateway hiccup</html>"), "not JSON"),
        (
            httpx.Response(201, json={"id": "bcus_x", "external_reference": "BAD1", "balance": "12"}),
            "balance",
        ),
        (httpx.Response(201, json={"external_reference": "BAD1", "balance": 12}), "id"),
        (httpx.Response(201, json=[1, 2, 3]), ""),
    ],
    ids=["non-json", "balance-as-string", "missing-id", "not-an-object"],
)
def test_moment_answering_garbage_fails_that_balance_only(
    dynamodb: Any, sandbox: MomentSandbox, garbage: httpx.Response, error: str
) -> None:
    harness = LedgerHarness(dynamodb)
    client = MomentClient(
        LOCAL_MOMENT_API_KEY,
        environment="dev",
        base_url=sandbox.url,
        transport=GarbageFor("BAD1", garbage),
        retry=RetryPolicy(max_attempts=1, base_delay_seconds=0, max_delay_seconds=0),
        sleep=lambda _: None,
    )
    pusher = BalancePusher(ledger=harness.ledger, moment=client, now=harness.clock, jitter=lambda: 0.5)
    for ref in ("GOOD1", "BAD1", "GOOD2"):
        balance = harness.open_customer(ref)
        entry = Entry(EntryKind.CHARGE, 100, f"inv-{ref}", {"charge_id": ref}, "2026-09-21T00:00:00.000Z")
        harness.ledger.apply_entry(balance, entry, "ZAR")

    report = pusher.push_pending(time_left=lambda: 300)

    assert report.results == {"created": 2, "failed": 1}
    bad = harness.head(harness.open_customer("BAD1"))
    assert "invalid" in bad["last_push_error"].lower() or "moment" in bad["last_push_error"].lower()
    assert error.lower() in bad["last_push_error"].lower()
    assert bad["push_attempts"] == 1 and "moment_id" not in bad
    assert {c["external_reference"]: c["balance"] for c in sandbox.state()["customers"]} == {
        "GOOD1": 100,
        "GOOD2": 100,
    }
    client.close()
