"""The largest webhook body `WebhookMaxBodyBytes` may allow, end to end: signed, stored, reconciled.

A DynamoDB item holds 400 KB, the body and every other attribute of the webhook's item together.
The parameter's bound (`MAX_STORABLE_BODY_BYTES`) leaves room for the rest of the item at its
largest: a 255-character webhook id, every summary value at its 255-byte limit, then what the
reconciler adds. Here a body of exactly the bound, with all of those at their largest, goes through
the real receiver and the real reconciler on moto, while tests/support/dynamodb_limits.py measures
every item written (moto itself would store any size). One byte more is a 413 and stores nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters import SecretsProvider

import webhook_receiver_handler
from local_stack.lambda_context import LocalLambdaContext
from local_stack.template import load_template
from moment_sync.adapters.signing_secrets import SecretsManagerSigningKeys
from moment_sync.adapters.webhook_events_table import webhook_item
from moment_sync.envelope import MAX_TEXT_BYTES, SUMMARY_FIELDS, WebhookEnvelope
from moment_sync.receiver import MAX_STORABLE_BODY_BYTES, ReceiverSettings
from moment_sync.reconciliation import EventStatus, ParkReason
from moment_sync.runtime import ReceiverDependencies
from moment_sync.webhook_store import ReceivedWebhook
from support.dynamodb_limits import ITEM_BYTES, item_size
from support.ledger import LedgerHarness
from support.webhooks import NOW, TEST_SECRET, webhook_event

SECRET_NAME = "moment/webhook-signing-secrets"
# The longest webhook id the receiver accepts (255 printable ASCII characters).
LONGEST_WEBHOOK_ID = "msg_" + "W" * 251
MOMENT_CUSTOMER = "bcus_" + "C" * (MAX_TEXT_BYTES - len("bcus_"))


def largest_body(size: int) -> bytes:
    """A payment whose every summary value is as long as the receiver copies, padded to `size` bytes."""
    data: dict[str, Any] = {
        "id": "ob_" + "A" * (MAX_TEXT_BYTES - 3),
        "amount": 99_999_999,
        "currency": "ZAR",
        "payment_id": "pay_" + "P" * (MAX_TEXT_BYTES - 4),
        "customer_id": MOMENT_CUSTOMER,
        "padding": "",
    }
    envelope = {"id": "evt_" + "E" * (MAX_TEXT_BYTES - 4), "type": "obligation.amount_applied", "data": data}
    short = len(json.dumps(envelope).encode())
    assert short <= size
    data["padding"] = "x" * (size - short)
    body = json.dumps(envelope).encode()
    assert len(body) == size
    return body


@pytest.fixture
def harness(dynamodb: Any) -> LedgerHarness:
    return LedgerHarness(dynamodb)


@pytest.fixture
def receive(harness: LedgerHarness, aws: None) -> Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]:
    secrets = boto3.client("secretsmanager")
    secrets.create_secret(Name=SECRET_NAME, SecretString=json.dumps([TEST_SECRET]))
    dependencies = ReceiverDependencies(
        keys=SecretsManagerSigningKeys(
            SecretsProvider(boto3_client=secrets), SECRET_NAME, max_age_seconds=60
        ),
        store=harness.events,
        settings=ReceiverSettings(max_body_bytes=MAX_STORABLE_BODY_BYTES),
        clock=lambda: NOW + 0.25,
    )

    def call(event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        response = webhook_receiver_handler.lambda_handler(
            event, LocalLambdaContext("webhook_receiver"), dependencies
        )
        return response["statusCode"], json.loads(response["body"])

    return call


def stored_item(harness: LedgerHarness) -> dict[str, Any]:
    [item] = harness.dynamodb.scan(TableName=harness.events_name)["Items"]
    return item


def test_the_template_bounds_the_parameter_by_what_an_item_holds() -> None:
    parameter = load_template()["Parameters"]["WebhookMaxBodyBytes"]
    assert parameter["MaxValue"] == MAX_STORABLE_BODY_BYTES
    assert parameter["Default"] <= MAX_STORABLE_BODY_BYTES < ITEM_BYTES


def test_the_receiver_refuses_a_setting_its_items_cannot_hold() -> None:
    with pytest.raises(ValueError, match="WEBHOOK_MAX_BODY_BYTES must be 1 to 393216"):
        ReceiverSettings.from_environment({"WEBHOOK_MAX_BODY_BYTES": str(MAX_STORABLE_BODY_BYTES + 1)})
    assert ReceiverSettings.from_environment({}).max_body_bytes == 64 * 1024


@pytest.mark.parametrize("base64_body", [False, True], ids=["text", "base64"])
def test_the_largest_allowed_body_is_stored_and_its_payment_applied(
    harness: LedgerHarness, receive: Callable[..., tuple[int, dict[str, Any]]], base64_body: bool
) -> None:
    balance = harness.open_customer("UCR-LARGEST", moment_id=MOMENT_CUSTOMER)
    body = largest_body(MAX_STORABLE_BODY_BYTES)

    status, answer = receive(webhook_event(body, webhook_id=LONGEST_WEBHOOK_ID, base64_body=base64_body))
    assert (status, answer["status"]) == (200, "accepted")
    item = stored_item(harness)
    assert bytes(item["body"]["B"]) == body
    assert len(item["webhook_id"]["S"]) == 255 and len(item["application_id"]["S"]) == MAX_TEXT_BYTES

    assert harness.invoke(harness.next_batch()) == []
    event = harness.event(LONGEST_WEBHOOK_ID)
    assert event["status"] == "applied"
    assert harness.head(balance)["balance"] == -99_999_999
    # The item as the reconciler left it, measured as DynamoDB measures it.
    assert item_size(stored_item(harness)) <= ITEM_BYTES


def test_the_largest_allowed_body_parked_with_its_longest_reason_still_fits(
    harness: LedgerHarness, receive: Callable[..., tuple[int, dict[str, Any]]]
) -> None:
    # No balance is linked to the customer: parked unmatched, with the detail and the indexed Moment id.
    body = largest_body(MAX_STORABLE_BODY_BYTES)
    assert receive(webhook_event(body, webhook_id=LONGEST_WEBHOOK_ID))[0] == 200
    assert harness.invoke(harness.next_batch()) == []
    item = stored_item(harness)
    assert (item["status"]["S"], item["reason"]["S"]) == ("parked", "unmatched")
    assert item["unmatched_moment_id"]["S"] == MOMENT_CUSTOMER
    assert item_size(item) <= ITEM_BYTES


@pytest.mark.parametrize("base64_body", [False, True], ids=["text", "base64"])
def test_one_byte_over_is_a_413_problem_and_nothing_is_stored(
    harness: LedgerHarness, receive: Callable[..., tuple[int, dict[str, Any]]], base64_body: bool
) -> None:
    body = largest_body(MAX_STORABLE_BODY_BYTES + 1)
    status, problem = receive(webhook_event(body, webhook_id=LONGEST_WEBHOOK_ID, base64_body=base64_body))
    assert status == 413
    assert problem["type"].endswith("/body-too-large") and problem["status"] == 413
    assert harness.dynamodb.scan(TableName=harness.events_name)["Items"] == []


def test_the_room_left_holds_the_rest_of_the_item_at_its_largest() -> None:
    """The room, added up: the receiver's own item without its body, with every value it copies at
    its limit, and every attribute a later write may set (webhook_events_table.py's status updates
    and park, the payment transaction, `forget`), each at its longest, as if all were there at once."""
    longest = "\U0001f600" * (MAX_TEXT_BYTES // 4)  # 252 bytes: 4-byte characters, as long as allowed
    summary: dict[str, str | int] = {name: longest for name in SUMMARY_FIELDS}
    summary["amount"] = -(10**38 - 1)
    envelope = WebhookEnvelope(longest, longest, summary=summary, problem="data is not an object")
    received = ReceivedWebhook(LONGEST_WEBHOOK_ID, 10**12 - 1, NOW, b"", envelope, expires_at=10**12 - 1)
    receiver_part = item_size(webhook_item(received))
    id_bytes = MAX_TEXT_BYTES
    timestamp = {"S": "2026-09-21T12:00:00.000Z"}
    later = {
        "status": {"S": max((status.value for status in EventStatus), key=len)},
        "resolved_at": timestamp,
        "reason": {"S": max((reason.value for reason in ParkReason), key=len)},
        "parked_reason": {"S": max((reason.value for reason in ParkReason), key=len)},
        # park() keeps 500 characters of the detail; 4 bytes each at worst.
        "reason_detail": {"S": "\U0001f600" * 500},
        "unmatched_moment_id": {"S": "x" * id_bytes},
        "unmatched_grace_from": timestamp,
        "redrive_attempts": {"N": str(10**38 - 1)},
        "ignored_type": {"S": "x" * id_bytes},
        "entry_id": {"S": "payment:" + "x" * id_bytes},
        "balance_key": {"S": "CUSTOMER#" + "x" * 255},
        "duplicate_of": {"S": "x" * 255},
        "conflicts_with": {"S": "x" * 255},
        "body_erased_at": timestamp,
    }
    room = ITEM_BYTES - MAX_STORABLE_BODY_BYTES
    needed = receiver_part + item_size(later)
    assert needed <= room, (receiver_part, item_size(later), room)
    # docs/webhooks.md gives the sum; keep it true.
    assert needed < 7 * 1024
