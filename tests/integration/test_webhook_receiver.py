"""The webhook receiver end to end in-process: the real handler, moto's DynamoDB and Secrets Manager."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from botocore.exceptions import ClientError, ReadTimeoutError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import webhook_receiver_handler as webhook_receiver
from local_stack.lambda_context import LocalLambdaContext
from moment_sync.adapters.signing_secrets import SecretsManagerSigningKeys
from moment_sync.adapters.webhook_events_table import WebhookEventsTable
from moment_sync.receiver import ReceiverSettings
from moment_sync.runtime import ReceiverDependencies
from support.webhooks import (
    NOW,
    OTHER_SECRET,
    TEST_SECRET,
    amount_applied_body,
    key_bytes,
    sign,
    webhook_event,
)

SECRET_NAME = "moment/webhook-signing-secrets"


@pytest.fixture
def secrets(aws: None) -> Any:
    client = boto3.client("secretsmanager")
    client.create_secret(Name=SECRET_NAME, SecretString=json.dumps([TEST_SECRET]))
    return client


@pytest.fixture
def calls(dynamodb: Any) -> list[str]:
    """Every DynamoDB operation the code under test sends."""
    seen: list[str] = []
    dynamodb.meta.events.register("before-call.dynamodb.*", lambda model, **_: seen.append(model.name))
    return seen


@pytest.fixture
def dependencies(events_table: str, dynamodb: Any, secrets: Any, calls: list[str]) -> ReceiverDependencies:
    return ReceiverDependencies(
        keys=SecretsManagerSigningKeys(
            SecretsProvider(boto3_client=secrets), SECRET_NAME, max_age_seconds=60
        ),
        store=WebhookEventsTable(dynamodb, events_table),
        settings=ReceiverSettings(),
        clock=lambda: NOW + 0.25,
    )


@pytest.fixture
def invoke(dependencies: ReceiverDependencies) -> Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]:
    def call(event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        response = webhook_receiver.lambda_handler(
            event, LocalLambdaContext("webhook_receiver"), dependencies
        )
        return response["statusCode"], json.loads(response["body"])

    return call


def stored(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = dynamodb.scan(TableName=table)["Items"]
    return items


def test_the_sample_event_from_events_folder_is_accepted_and_stored_verbatim(
    dynamodb: Any, events_table: str, secrets: Any, calls: list[str]
) -> None:
    from local_stack.made_up_values import LOCAL_WEBHOOK_SECRET
    from support.webhooks import EVENTS

    # GIVEN the file a user passes to `sam local invoke -e`, signed with the local secret
    event = json.loads((EVENTS / "webhook_receiver" / "moment-webhook.json").read_text())
    secrets.put_secret_value(SecretId=SECRET_NAME, SecretString=json.dumps([LOCAL_WEBHOOK_SECRET]))
    dependencies = ReceiverDependencies(
        keys=SecretsManagerSigningKeys(SecretsProvider(boto3_client=secrets), SECRET_NAME, 60),
        store=WebhookEventsTable(dynamodb, events_table),
        settings=ReceiverSettings(),
        clock=lambda: int(event["headers"]["webhook-timestamp"]) + 3,
    )
    # WHEN the handler receives it
    response = webhook_receiver.lambda_handler(event, LocalLambdaContext("webhook_receiver"), dependencies)
    # THEN it is acknowledged after exactly one write, and stored with the fields the reconciler needs
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {
        "status": "accepted",
        "webhook_id": event["headers"]["webhook-id"],
    }
    assert calls == ["PutItem"]
    [item] = stored(dynamodb, events_table)
    assert item["body"]["B"] == event["body"].encode()
    assert item["status"] == {"S": "received"}
    assert item["event_type"] == {"S": "obligation.amount_applied"}
    assert item["event_id"] == {"S": "evt_2341234567890abcdef"}
    assert item["application_id"] == {"S": "ob_N2a38DJQWPL8K4X42354234"}
    assert item["amount"] == {"N": "2000"}
    assert item["currency"] == {"S": "ZAR"}
    assert item["customer_id"] == {"S": "bcus_H4jp6KnU5cPw263v1jyz4"}
    assert item["payment_id"] == {"S": "pay_1313235234843nmafdsa"}
    assert item["webhook_timestamp"] == {"N": event["headers"]["webhook-timestamp"]}
    assert int(item["expires_at"]["N"]) == int(event["headers"]["webhook-timestamp"]) + 3 + 400 * 86400


def test_a_redelivery_is_acknowledged_with_one_request_and_changes_nothing(
    invoke: Callable[..., Any], dynamodb: Any, events_table: str, calls: list[str]
) -> None:
    body = amount_applied_body()
    assert invoke(webhook_event(body)) == (
        200,
        {"status": "accepted", "webhook_id": "msg_2mXnTestDelivery0001"},
    )
    first = stored(dynamodb, events_table)
    calls.clear()
    # Moment signs every retry afresh, with a new timestamp
    status, answer = invoke(webhook_event(body, timestamp=NOW + 60))
    assert (status, answer["status"]) == (200, "duplicate")
    assert calls == ["PutItem"]
    assert stored(dynamodb, events_table) == first


def test_a_duplicate_id_with_another_body_keeps_the_first_and_says_so(
    invoke: Callable[..., Any],
    dynamodb: Any,
    events_table: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    invoke(webhook_event(amount_applied_body(amount=2000)))
    status, answer = invoke(webhook_event(amount_applied_body(amount=9999)))
    assert (status, answer["status"]) == (200, "duplicate")
    [item] = stored(dynamodb, events_table)
    assert item["amount"] == {"N": "2000"}
    assert "duplicate webhook id with a different body" in caplog.text
    assert '"WebhookDuplicateBodyMismatch"' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("event", "status", "problem"),
    [
        (
            webhook_event(
                amount_applied_body(),
                signature=sign(TEST_SECRET, "msg_2mXnTestDelivery0001", NOW, amount_applied_body(amount=1)),
            ),
            401,
            "signature-mismatch",
        ),
        (webhook_event(amount_applied_body(), secret=OTHER_SECRET), 401, "signature-mismatch"),
        (webhook_event(amount_applied_body(), timestamp=NOW - 181), 401, "timestamp-out-of-window"),
        (webhook_event(amount_applied_body(), timestamp=NOW + 182), 401, "timestamp-out-of-window"),
        (webhook_event(amount_applied_body(), drop=("webhook-id",)), 400, "missing-header"),
        (webhook_event(amount_applied_body(), drop=("webhook-signature",)), 400, "missing-header"),
        (webhook_event(amount_applied_body(), drop=("webhook-timestamp",)), 400, "missing-header"),
        (webhook_event(amount_applied_body(), signature="v1AAAA"), 400, "malformed-header"),
        (
            webhook_event(amount_applied_body(), extra_headers={"webhook-timestamp": "yesterday"}),
            400,
            "malformed-header",
        ),
        (
            webhook_event(b"not json at all", signature="v1,c2lnbmVkIGJ5IG5vYm9keQ=="),
            401,
            "signature-mismatch",
        ),
        (webhook_event(b"x" * (64 * 1024 + 1)), 413, "body-too-large"),
        (webhook_event(b"x" * (64 * 1024 + 1), base64_body=True), 413, "body-too-large"),
    ],
    ids=[
        "tampered-body",
        "wrong-secret",
        "stale",
        "future",
        "no-id",
        "no-signature",
        "no-timestamp",
        "entry-without-comma",
        "timestamp-not-a-number",
        "unsigned-non-json",
        "oversize",
        "oversize-base64",
    ],
)
def test_refused_deliveries_store_nothing(
    invoke: Callable[..., Any],
    dynamodb: Any,
    events_table: str,
    event: dict[str, Any],
    status: int,
    problem: str,
) -> None:
    answer_status, answer = invoke(event)
    assert answer_status == status
    assert answer["type"].endswith("/" + problem)
    assert answer["status"] == status
    assert answer["title"] and answer["detail"]
    assert stored(dynamodb, events_table) == []


def test_problem_responses_are_problem_json(
    invoke: Callable[..., Any], dependencies: ReceiverDependencies
) -> None:
    event = webhook_event(amount_applied_body(), secret=OTHER_SECRET)
    response = webhook_receiver.lambda_handler(event, LocalLambdaContext("webhook_receiver"), dependencies)
    assert response["headers"]["content-type"] == "application/problem+json"


def test_both_secrets_pass_during_a_rotation(
    invoke: Callable[..., Any], secrets: Any, dynamodb: Any, events_table: str
) -> None:
    secrets.put_secret_value(SecretId=SECRET_NAME, SecretString=json.dumps([TEST_SECRET, OTHER_SECRET]))
    assert invoke(webhook_event(b"{}", webhook_id="msg_old", secret=TEST_SECRET))[0] == 200
    assert invoke(webhook_event(b"{}", webhook_id="msg_new", secret=OTHER_SECRET))[0] == 200
    assert len(stored(dynamodb, events_table)) == 2


def test_a_plain_string_secret_counts_as_a_list_of_one(invoke: Callable[..., Any], secrets: Any) -> None:
    secrets.put_secret_value(SecretId=SECRET_NAME, SecretString=OTHER_SECRET)
    assert invoke(webhook_event(b"{}", secret=OTHER_SECRET))[0] == 200


def test_secrets_are_cached_and_a_rotation_is_seen_once_the_cache_expires(
    dynamodb: Any, events_table: str, secrets: Any
) -> None:
    reads: list[str] = []
    secrets.meta.events.register(
        "before-call.secretsmanager.GetSecretValue", lambda **_: reads.append("read")
    )

    def dependencies(max_age: int, provider: SecretsProvider) -> ReceiverDependencies:
        return ReceiverDependencies(
            keys=SecretsManagerSigningKeys(provider, SECRET_NAME, max_age),
            store=WebhookEventsTable(dynamodb, events_table),
            settings=ReceiverSettings(),
            clock=lambda: NOW,
        )

    cached = dependencies(300, SecretsProvider(boto3_client=secrets))
    for number in range(3):
        webhook_receiver.lambda_handler(
            webhook_event(b"{}", webhook_id=f"msg_{number}"), LocalLambdaContext("r"), cached
        )
    assert reads == ["read"]

    secrets.put_secret_value(SecretId=SECRET_NAME, SecretString=json.dumps([OTHER_SECRET]))
    expired = dependencies(0, SecretsProvider(boto3_client=secrets))
    response = webhook_receiver.lambda_handler(
        webhook_event(b"{}", webhook_id="msg_rotated", secret=OTHER_SECRET), LocalLambdaContext("r"), expired
    )
    assert response["statusCode"] == 200


def test_signed_non_json_is_stored_and_acknowledged(
    invoke: Callable[..., Any], dynamodb: Any, events_table: str
) -> None:
    assert invoke(webhook_event(b"not json at all"))[0] == 200
    [item] = stored(dynamodb, events_table)
    assert item["body"]["B"] == b"not json at all"
    assert item["envelope_problem"] == {"S": "body is not JSON"}
    assert "event_type" not in item


def test_signed_non_utf8_bytes_are_stored_verbatim(
    invoke: Callable[..., Any], dynamodb: Any, events_table: str
) -> None:
    body = b"\xff\xfe\x00binary\x80"
    assert invoke(webhook_event(body, base64_body=True))[0] == 200
    [item] = stored(dynamodb, events_table)
    assert item["body"]["B"] == body


def test_unsigned_non_utf8_bytes_are_refused(invoke: Callable[..., Any]) -> None:
    event = webhook_event(b"\xff\xfe", base64_body=True, signature="v1,AAAA")
    assert invoke(event)[0] == 401


def test_base64_encoded_body_is_decoded_before_verifying(
    invoke: Callable[..., Any], dynamodb: Any, events_table: str
) -> None:
    body = amount_applied_body()
    assert invoke(webhook_event(body, base64_body=True))[0] == 200
    assert stored(dynamodb, events_table)[0]["body"]["B"] == body


def test_a_body_marked_base64_that_is_not_is_refused(invoke: Callable[..., Any]) -> None:
    event = webhook_event(b"{}")
    event["isBase64Encoded"] = True
    event["body"] = "@@not base64@@"
    assert invoke(event)[0] == 400


def test_mixed_case_header_names_are_accepted(invoke: Callable[..., Any]) -> None:
    event = webhook_event(b"{}")
    event["headers"] = {
        (
            "Webhook-ID" if name == "webhook-id" else name.upper() if name.startswith("webhook") else name
        ): value
        for name, value in event["headers"].items()
    }
    assert invoke(event)[0] == 200


def _fail_writes_with(dynamodb: Any, error: Exception) -> None:
    def fail(**_: Any) -> None:
        raise error

    dynamodb.meta.events.register("before-call.dynamodb.PutItem", fail)


@pytest.mark.parametrize(
    "error",
    [
        ClientError(
            {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "PutItem"
        ),
        ClientError({"Error": {"Code": "InternalServerError", "Message": "oops"}}, "PutItem"),
        ReadTimeoutError(endpoint_url="https://dynamodb.af-south-1.amazonaws.com"),
    ],
    ids=["throttled", "internal-error", "timeout"],
)
def test_a_failed_write_answers_503_and_nothing_is_stored(
    invoke: Callable[..., Any],
    dynamodb: Any,
    events_table: str,
    error: Exception,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _fail_writes_with(dynamodb, error)
    status, answer = invoke(webhook_event(amount_applied_body()))
    assert status == 503
    assert answer["type"].endswith("/storage-unavailable")
    dynamodb.meta.events.unregister("before-call.dynamodb.PutItem")
    assert stored(dynamodb, events_table) == []
    assert '"WebhookStorageFailed"' in capsys.readouterr().out


@pytest.mark.parametrize("secret_value", ["[]", '[""]', "{not json", '{"key": "value"}', "whsec_!!!"])
def test_unusable_signing_secrets_answer_503_so_moment_retries(
    invoke: Callable[..., Any], secrets: Any, dynamodb: Any, events_table: str, secret_value: str
) -> None:
    secrets.put_secret_value(SecretId=SECRET_NAME, SecretString=secret_value)
    status, answer = invoke(webhook_event(b"{}"))
    assert (status, answer["type"].rsplit("/", 1)[1]) == (503, "signing-secrets-unavailable")
    assert stored(dynamodb, events_table) == []


def test_an_unreadable_secret_answers_503(invoke: Callable[..., Any], secrets: Any) -> None:
    secrets.delete_secret(SecretId=SECRET_NAME, ForceDeleteWithoutRecovery=True)
    assert invoke(webhook_event(b"{}"))[0] == 503


def test_no_secret_or_signature_ever_reaches_a_response_or_a_log(
    invoke: Callable[..., Any], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    body = amount_applied_body()
    good = webhook_event(body)
    forged = webhook_event(body, secret=OTHER_SECRET)
    answers = [invoke(good), invoke(good), invoke(forged), invoke(webhook_event(body, timestamp=NOW - 999))]
    caplog.set_level("DEBUG")
    seen = capsys.readouterr().out + caplog.text + json.dumps(answers)
    expected_signature = good["headers"]["webhook-signature"].split(",", 1)[1]
    for secret in (TEST_SECRET, OTHER_SECRET):
        assert secret not in seen
        assert base64.b64encode(key_bytes(secret)).decode().rstrip("=") not in seen
    assert expected_signature not in seen


def test_metrics_count_each_outcome_with_the_rejection_reason(
    invoke: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    invoke(webhook_event(b"{}", secret=OTHER_SECRET))
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    rejected = [blob for blob in emf if "WebhookRejected" in blob]
    assert rejected and rejected[0]["Reason"] == "signature_mismatch"
    assert rejected[0]["service"] == "moment-balance-sync"


headers_strategy = st.dictionaries(
    st.sampled_from(["webhook-id", "Webhook-Timestamp", "webhook-signature", "WEBHOOK-ID", "content-type"]),
    st.one_of(st.text(max_size=60), st.from_regex(r"v1,[A-Za-z0-9+/=]{0,50}( v1,[A-Za-z0-9+/=]{0,50})*")),
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(headers=headers_strategy, body=st.binary(max_size=2048), as_base64=st.booleans())
def test_arbitrary_headers_and_bodies_get_200_400_401_or_413_and_never_raise(
    dependencies: ReceiverDependencies, headers: dict[str, str], body: bytes, as_base64: bool
) -> None:
    event = webhook_event(b"{}")
    event["headers"] = headers
    event["isBase64Encoded"] = as_base64
    event["body"] = base64.b64encode(body).decode() if as_base64 else body.decode("utf-8", "replace")
    response = webhook_receiver.lambda_handler(event, LocalLambdaContext("webhook_receiver"), dependencies)
    assert response["statusCode"] in {200, 400, 401, 413}


def test_an_accepted_webhook_is_one_log_line_with_its_metric_inside(
    invoke: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a warm execution environment (its first call is the cold start)
    invoke(webhook_event(amount_applied_body(), webhook_id="msg_first"))
    capsys.readouterr()
    # WHEN a new webhook is accepted
    assert invoke(webhook_event(amount_applied_body(), webhook_id="msg_one_line"))[0] == 200
    # THEN one line: the record an operator follows and the EMF block of the metric the dashboard reads
    [line] = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert line["message"] == "webhook accepted"
    assert line["level"] == "INFO"
    assert line["correlation_id"] == "msg_one_line"
    assert line["function_name"] == "webhook_receiver"
    assert line["cold_start"] is False
    assert line["event_type"] == "obligation.amount_applied"
    [directive] = line["_aws"]["CloudWatchMetrics"]
    assert directive == {
        "Namespace": "MomentBalanceSync",
        "Dimensions": [["service"]],
        "Metrics": [{"Name": "WebhookAccepted", "Unit": "Count"}],
    }
    assert line["service"] == "moment-balance-sync"
    assert line["WebhookAccepted"] == [1.0]


def test_the_first_call_counts_the_cold_start_and_outcomes_beside_accepted_still_go_through_powertools(
    invoke: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moment_sync import observability

    monkeypatch.setattr(observability, "_cold_start", [True])
    capsys.readouterr()
    invoke(webhook_event(amount_applied_body(), webhook_id="msg_cold"))
    [cold] = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert cold["cold_start"] is True and cold["ColdStart"] == [1.0]
    assert ["function_name", "service"] in [d["Dimensions"][0] for d in cold["_aws"]["CloudWatchMetrics"]]
    # A rejection: Powertools' record, with the Lambda context's keys, and its metric flushed
    invoke(webhook_event(b"{}", secret=OTHER_SECRET, webhook_id="msg_forged"))
    lines = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    [record] = [record for record in caplog.records if record.getMessage() == "webhook rejected"]
    written = json.loads(observability.logger.registered_formatter.format(record))
    assert written["function_name"] == "webhook_receiver" and written["correlation_id"] == "msg_forged"
    assert written["cold_start"] is False
    assert any(line.get("WebhookRejected") for line in lines)
    assert not any("ColdStart" in line for line in lines)


def test_the_decoded_keys_are_kept_while_the_cache_holds_the_secret(
    secrets: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moment_sync.adapters import signing_secrets

    decoded: list[str] = []
    real_decode = signing_secrets.decode_signing_key
    monkeypatch.setattr(
        signing_secrets, "decode_signing_key", lambda secret: decoded.append(secret) or real_decode(secret)
    )
    clock = [100.0]
    keys = SecretsManagerSigningKeys(
        SecretsProvider(boto3_client=secrets), SECRET_NAME, 60, monotonic=lambda: clock[0]
    )
    # WHEN three warm calls come within the cache's lifetime
    first = keys()
    clock[0] += 30
    assert keys() == keys() == first
    # THEN the secret was decoded once
    assert decoded == [TEST_SECRET]
    # AND a rotation is seen once the cache expires
    secrets.put_secret_value(SecretId=SECRET_NAME, SecretString=json.dumps([OTHER_SECRET]))
    clock[0] += 31
    keys._provider.clear_cache()  # Powertools' own 60 s, which this clock does not drive
    assert keys() == [key_bytes(OTHER_SECRET)]


def test_at_log_level_warning_the_accepted_line_still_carries_its_metric(
    invoke: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from moment_sync.observability import logger

    level = logger.log_level
    logger.setLevel("WARNING")
    try:
        capsys.readouterr()
        assert invoke(webhook_event(amount_applied_body(), webhook_id="msg_quiet"))[0] == 200
        [line] = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    finally:
        logger.setLevel(level)
    assert "message" not in line  # no INFO record at WARNING
    assert line["WebhookAccepted"] == [1.0] and line["service"] == "moment-balance-sync"
