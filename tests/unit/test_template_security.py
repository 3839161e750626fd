"""What the security scan gate (`make security-check`, checkov) leaves to reasons, and the fixes it
asked for that a scan cannot prove work: the alarm topic's key must let CloudWatch publish."""

from __future__ import annotations

from typing import Any

from local_stack.template import load_template


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
