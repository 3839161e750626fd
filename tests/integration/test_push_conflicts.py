"""A pusher write that meets another transaction on the same head: DynamoDB answers
`TransactionConflictException`, which botocore does not retry. The pusher as the function builds it
(runtime.balance_pusher, over moto, the Moment sandbox over HTTP) tries it again with backoff; what still
conflicts after its tries is that balance's failed push, with its backoff. The conflict is DynamoDB's
400 answer, given at botocore's `before-call` (in-process moto answers at `before-send` whatever a
later hook says, so the refused write must not reach it): the client raises it as it would DynamoDB's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

import balance_pusher_handler
from integration.test_balance_pusher import charge
from local_stack.lambda_context import LocalLambdaContext
from local_stack.made_up_values import LOCAL_MOMENT_API_KEY
from moment_sandbox import MomentSandbox, SandboxSettings
from moment_sync import runtime
from moment_sync.adapters.dynamo_retry import CONFLICT_TRIES, is_transaction_conflict
from support.ledger import LedgerHarness


class HeadConflicts:
    """Answers the next `count` UpdateItems of a balance head with DynamoDB's TransactionConflictException."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.answered = 0
        self.head_writes = 0

    def __call__(self, params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        body = json.loads(params["body"])
        if body["Key"]["sk"]["S"] != "HEAD":
            return None  # the lease, a link: not this test's
        if str(body.get("UpdateExpression", "")).startswith("SET sync_state = :state, sync_transition"):
            return None  # announcing a sync state (docs/events.md): best effort, not the push's write
        self.head_writes += 1
        if self.answered >= self.count:
            return None
        self.answered += 1
        refused = {
            "Error": {
                "Code": "TransactionConflictException",
                "Message": "Transaction is ongoing for the item",
            },
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }
        return AWSResponse("https://dynamodb.af-south-1.amazonaws.com/", 400, {}, None), refused


@pytest.fixture
def sandbox() -> Iterator[MomentSandbox]:
    with MomentSandbox(SandboxSettings(webhook_url=None)) as running:
        yield running


@pytest.fixture
def harness(dynamodb: Any) -> LedgerHarness:
    return LedgerHarness(dynamodb)


@pytest.fixture
def deployed(
    harness: LedgerHarness, sandbox: MomentSandbox, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The environment template.yaml gives the pusher, over moto and the sandbox."""
    secret = boto3.client("secretsmanager").create_secret(
        Name="moment-api-key", SecretString=LOCAL_MOMENT_API_KEY
    )
    for name, value in {
        "LEDGER_TABLE": harness.ledger_name,
        "WEBHOOK_EVENTS_TABLE": harness.events_name,
        "MOMENT_API_KEY_SECRET_ARN": secret["ARN"],
        "MOMENT_BASE_URL": sandbox.url,
        "ENVIRONMENT": "dev",
        "PUSH_CONCURRENCY": "1",
    }.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    yield
    runtime.reset()


def conflicts_on_head_writes(count: int) -> HeadConflicts:
    hook = HeadConflicts(count)
    runtime.aws_client("dynamodb").meta.events.register("before-call.dynamodb.UpdateItem", hook)
    return hook


def push_run() -> dict[str, Any]:
    return balance_pusher_handler.lambda_handler({}, LocalLambdaContext("pusher", timeout_seconds=240))


@pytest.mark.usefixtures("deployed")
def test_a_transaction_conflict_on_a_pusher_write_is_tried_again_and_the_push_goes_through(
    harness: LedgerHarness, sandbox: MomentSandbox
) -> None:
    customer = harness.open_customer("UCR1")
    charge(harness, customer, "inv-1", 100)
    # GIVEN the head's next writes meet a reconciler's transaction, fewer times than the pusher tries
    hook = conflicts_on_head_writes(CONFLICT_TRIES - 1)
    # WHEN the pusher runs
    report = push_run()
    # THEN the write was sent again until it went through, and the push is done
    assert report["results"] == {"created": 1}, report
    assert hook.answered == CONFLICT_TRIES - 1
    head = harness.head(customer)
    assert (head["pushed_balance"], int(head.get("push_attempts", 0))) == (100, 0)
    assert "push_shard" not in head
    [on_moment] = sandbox.state()["customers"]
    assert on_moment["balance"] == 100


@pytest.mark.usefixtures("deployed")
def test_a_conflict_that_outlasts_the_tries_is_a_failed_push_with_its_backoff(
    harness: LedgerHarness,
) -> None:
    customer = harness.open_customer("UCR1")
    charge(harness, customer, "inv-1", 100)
    other = harness.open_customer("OTHER1")
    charge(harness, other, "inv-2", 100)
    # GIVEN the first push's intent conflicts on every try (then the conflict is over)
    hook = conflicts_on_head_writes(CONFLICT_TRIES)
    report = push_run()
    # THEN that balance counts one failed push, the other is pushed, nothing escaped the run
    assert report["results"] == {"created": 1, "failed": 1}, report
    assert hook.answered == CONFLICT_TRIES
    failed = [
        harness.head(balance) for balance in (customer, other) if harness.head(balance).get("push_attempts")
    ]
    [head] = failed
    assert "TransactionConflict" in head["last_push_error"] and head["next_push_at"]


def test_only_a_conflict_is_tried_again_never_a_failed_condition() -> None:
    def refused(code: str, reasons: list[str] | None = None) -> ClientError:
        response: dict[str, Any] = {"Error": {"Code": code, "Message": "refused"}}
        if reasons is not None:
            response["CancellationReasons"] = [{"Code": reason} for reason in reasons]
        return ClientError(response, "TransactWriteItems")  # type: ignore[arg-type]

    assert is_transaction_conflict(refused("TransactionConflictException"))
    assert is_transaction_conflict(refused("TransactionCanceledException", ["None", "TransactionConflict"]))
    assert not is_transaction_conflict(
        refused("TransactionCanceledException", ["ConditionalCheckFailed", "TransactionConflict"])
    )
    assert not is_transaction_conflict(refused("ConditionalCheckFailedException"))
    assert not is_transaction_conflict(refused("TransactionCanceledException", []))
