"""What the security scan gate (`make security-check`, checkov) leaves to reasons, and the fixes it
asked for that a scan cannot prove work: the alarm topic's key must let CloudWatch publish, and the
optional customer-managed key of the tables and secrets (DataKmsKeyArn) must reach them when set."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws

from local_stack.template import create_table, load_template

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from translate_template import resolve_conditions


def resources() -> dict[str, Any]:
    resources: dict[str, Any] = load_template()["Resources"]
    return resources


def test_cloudwatch_alarms_can_publish_to_the_encrypted_alarm_topic() -> None:
    # A topic under the AWS-managed SNS key silently drops every alarm: its key policy cannot grant
    # cloudwatch.amazonaws.com. The topic's key is ours, and its policy grants exactly that.
    topic = resources()["AlarmTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Ref": "AlarmTopicKey"}
    key = resources()["AlarmTopicKey"]
    assert key["Type"] == "AWS::KMS::Key"
    assert key["Properties"]["EnableKeyRotation"] is True
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    granted = [
        statement
        for statement in statements
        if statement["Effect"] == "Allow"
        and statement["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert len(granted) == 1
    assert set(granted[0]["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert "Condition" not in granted[0]  # CloudWatch's calls carry no key an alarm could match on
    # and the account can still administer (and so recover) the key.
    assert any(statement["Action"] == "kms:*" and "AWS" in statement["Principal"] for statement in statements)


def test_every_alarm_notifies_the_encrypted_topic() -> None:
    for name, resource in resources().items():
        if resource["Type"] == "AWS::CloudWatch::Alarm":
            assert {"Ref": "AlarmTopic"} in resource["Properties"]["AlarmActions"], name


def test_every_checkov_skip_names_a_check_and_says_why() -> None:
    skipped = 0
    for name, resource in resources().items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert skip["id"].startswith("CKV_"), name
            assert len(skip.get("comment", "")) >= 40, f"{name} skips {skip['id']} without a reason"
            skipped += 1
    assert skipped > 0


def test_the_http_api_writes_an_access_log_without_bodies_or_headers() -> None:
    api = resources()["HttpApi"]["Properties"]
    settings = api["AccessLogSettings"]
    assert settings["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    for field in ("$context.requestId", "$context.routeKey", "$context.status", "$context.identity.userArn"):
        assert field in settings["Format"]
    assert "$request.header" not in settings["Format"] and "$context.requestBody" not in settings["Format"]
    assert resources()["ApiAccessLogGroup"]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


# --- The optional customer-managed key (DataKmsKeyArn) of the tables and the secrets. ---

A_KEY_ARN = "arn:aws:kms:af-south-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
DATA_TABLES = ("WebhookEventsTable", "LedgerTable")
SECRETS = ("MomentApiKeySecret", "WebhookSigningSecret")


def deployed(parameters: dict[str, str]) -> dict[str, Any]:
    resolved: dict[str, Any] = resolve_conditions(load_template(), parameters)["Resources"]
    return resolved


def test_without_a_data_key_the_tables_and_secrets_use_aws_keys() -> None:
    alarm_topic = {"AlarmTopicKey", "AlarmTopic"}  # the alarm topic's own key, always there
    for name, resource in deployed({}).items():
        assert name in alarm_topic or "kms" not in str(resource.get("Properties", {})).lower(), name
    for name in DATA_TABLES:
        assert "SSESpecification" not in deployed({})[name]["Properties"], name
    for name in SECRETS:
        assert "KmsKeyId" not in deployed({})[name]["Properties"], name


def test_with_a_data_key_the_tables_stream_and_secrets_are_under_it() -> None:
    with_key = deployed({"DataKmsKeyArn": A_KEY_ARN})
    for name in DATA_TABLES:
        # The stream and the indexes are encrypted with the table's key.
        assert with_key[name]["Properties"]["SSESpecification"] == {
            "SSEEnabled": True,
            "SSEType": "KMS",
            "KMSMasterKeyId": {"Ref": "DataKmsKeyArn"},
        }, name
    for name in SECRETS:
        assert with_key[name]["Properties"]["KmsKeyId"] == {"Ref": "DataKmsKeyArn"}, name


def test_the_data_key_parameter_takes_a_key_arn_or_nothing() -> None:
    # IAM grants on a key name its key ARN: an alias would deploy but leave every function denied.
    parameter = load_template()["Parameters"]["DataKmsKeyArn"]
    assert parameter["Default"] == ""
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("") and pattern.fullmatch(A_KEY_ARN)
    assert pattern.fullmatch("arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/mrk-1234abcd12ab34cd56ef12")
    for refused in (
        "arn:aws:kms:af-south-1:123456789012:alias/moment",
        "alias/moment",
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn:aws:kms:af-south-1:123456789012:key/*",
    ):
        assert not pattern.fullmatch(refused), refused


@mock_aws
def test_the_local_stack_still_creates_the_tables_from_the_template() -> None:
    # The local stack copies only the key and index properties: moto never sees the SSESpecification.
    client = boto3.client("dynamodb", region_name="af-south-1")
    for name in DATA_TABLES:
        create_table(client, name)
        assert client.describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE"


def test_resolving_the_conditions_follows_the_parameters() -> None:
    # The helper the two tests above rely on: a resource's own Condition decides too.
    assert "AlarmEmailSubscription" not in deployed({})
    assert (
        deployed({"AlarmEmail": "ops@example.com"})["AlarmEmailSubscription"]["Properties"]["Protocol"]
        == "email"
    )
