"""The events-out resources of template.yaml (docs/events.md), checked on the template samtranslator
translates: the pipes' role may read only the two streams, put only on the bus and send only to the
pipes' dead-letter queue; each pipe reads batches of at most 10 into the bus with its DLQ; the
transformations are allow-lists; the registry's schemas are the files in schemas/."""

from __future__ import annotations

import json
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from translate_template import resolve_conditions, translate  # noqa: E402

A_KEY_ARN = "arn:aws:kms:af-south-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
PIPES = {
    "PaymentEventsPipe": ("LedgerTable", "Payment Applied"),
    "LedgerChangeEventsPipe": ("LedgerTable", "$.dynamodb.NewImage.detail_type.S"),
    "BillEventsPipe": ("LedgerTable", "$.dynamodb.NewImage.detail_type.S"),
    "SyncStateEventsPipe": ("LedgerTable", "Sync State Changed"),
    "ParkedEventsPipe": ("WebhookEventsTable", "Event Parked"),
}
DETAIL_TYPES = (
    "Payment Applied",
    "Charge Posted",
    "Balance Set",
    "Adjustment Made",
    "Sync State Changed",
    "Event Parked",
    "Bill Paid",
    "Bill Voided",
)
# What a head or an event item holds about a person, and free text a person typed.
PERSONAL = ("name", "email", "phone", "description", "operator")
PLACEHOLDER = re.compile(r"<(\$\.[^>]+)>")


@cache
def translated() -> dict[str, Any]:
    return translate()


@cache
def resources(data_key: bool = False) -> dict[str, Any]:
    parameters = {"DataKmsKeyArn": A_KEY_ARN} if data_key else {}
    resolved: dict[str, Any] = resolve_conditions(translated(), parameters)["Resources"]
    return resolved


def pipe_statements(data_key: bool = False) -> list[dict[str, Any]]:
    role = resources(data_key)["EventPipeRole"]["Properties"]
    assert not role.get("ManagedPolicyArns")
    return [statement for policy in role["Policies"] for statement in policy["PolicyDocument"]["Statement"]]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_every_pipe_in_the_template_is_checked_and_uses_the_one_role() -> None:
    pipes = {name for name, item in resources().items() if item["Type"] == "AWS::Pipes::Pipe"}
    assert pipes == set(PIPES)
    for name in PIPES:
        assert resources()[name]["Properties"]["RoleArn"] == {"Fn::GetAtt": ["EventPipeRole", "Arn"]}


def test_the_pipe_role_reads_only_the_two_streams_puts_only_on_the_bus_and_sends_only_to_its_dlq() -> None:
    granted = {
        (action, json.dumps(resource, sort_keys=True))
        for statement in pipe_statements()
        for action in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
    }
    streams = [
        {"Fn::GetAtt": ["LedgerTable", "StreamArn"]},
        {"Fn::GetAtt": ["WebhookEventsTable", "StreamArn"]},
    ]
    expected = {
        (action, json.dumps(stream, sort_keys=True))
        for action in (
            "dynamodb:DescribeStream",
            "dynamodb:GetRecords",
            "dynamodb:GetShardIterator",
            "dynamodb:ListStreams",
        )
        for stream in streams
    }
    expected.add(("events:PutEvents", json.dumps({"Fn::GetAtt": ["MomentEventBus", "Arn"]})))
    expected.add(("sqs:SendMessage", json.dumps({"Fn::GetAtt": ["EventPipeDeadLetterQueue", "Arn"]})))
    assert granted == expected
    for statement in pipe_statements():
        assert statement["Effect"] == "Allow" and "Condition" not in statement


def test_only_pipes_may_assume_the_role_and_only_for_this_account() -> None:
    trust = resources()["EventPipeRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [statement["Principal"] for statement in trust] == [{"Service": "pipes.amazonaws.com"}]
    assert trust[0]["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_with_a_data_key_the_pipes_may_decrypt_the_streams_with_that_key_only() -> None:
    assert "kms:" not in json.dumps(pipe_statements())
    kms = [statement for statement in pipe_statements(data_key=True) if "kms:" in json.dumps(statement)]
    assert len(kms) == 1
    assert set(kms[0]["Action"]) == {"kms:Decrypt", "kms:DescribeKey"}
    assert kms[0]["Resource"] == {"Ref": "DataKmsKeyArn"}


@pytest.mark.parametrize("name", sorted(PIPES))
def test_each_pipe_reads_its_stream_in_batches_of_at_most_ten_into_the_bus_with_the_dlq(name: str) -> None:
    properties = resources()[name]["Properties"]
    table, detail_type = PIPES[name]
    assert properties["Source"] == {"Fn::GetAtt": [table, "StreamArn"]}
    assert properties["Target"] == {"Fn::GetAtt": ["MomentEventBus", "Arn"]}
    stream = properties["SourceParameters"]["DynamoDBStreamParameters"]
    assert 1 <= stream["BatchSize"] <= 10  # an event-bus target takes at most 10 events per batch
    assert stream["StartingPosition"] == "TRIM_HORIZON"
    assert stream["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["EventPipeDeadLetterQueue", "Arn"]}}
    assert stream["OnPartialBatchItemFailure"] == "AUTOMATIC_BISECT"
    bus = properties["TargetParameters"]["EventBridgeEventBusParameters"]
    assert (bus["Source"], bus["DetailType"]) == ("moment-balance-sync", detail_type)


@pytest.mark.parametrize("name", sorted(PIPES))
def test_each_transformation_is_an_allow_list_with_no_personal_field(name: str) -> None:
    properties = resources()[name]["Properties"]
    template = properties["TargetParameters"]["InputTemplate"]
    paths = PLACEHOLDER.findall(template)
    assert paths, "an allow-list names each field it copies"
    for path in paths:
        assert path.startswith("$.dynamodb.NewImage."), path
        assert not any(path.endswith("." + field) or f".{field}." in path for field in PERSONAL), path
        assert "*" not in path and "source.M.reason" not in path, path  # an adjustment's reason is free text
    # Every field the transformation names is required by the filter, so none is ever missing.
    filters = [
        json.loads(entry["Pattern"]) for entry in properties["SourceParameters"]["FilterCriteria"]["Filters"]
    ]
    for pattern in filters:
        for path in paths:
            node: Any = pattern
            for part in path.removeprefix("$.").split(".")[:-1]:
                if path.split(".")[-2] in {"pk", "sk"}:  # the keys: in every image
                    node = None
                    break
                assert isinstance(node, dict) and part in node, (name, path)
                node = node[part]


def test_both_streams_carry_old_and_new_images() -> None:
    for table in ("LedgerTable", "WebhookEventsTable"):
        specification = resources()[table]["Properties"]["StreamSpecification"]
        assert specification == {"StreamViewType": "NEW_AND_OLD_IMAGES"}, table


def test_the_bus_policy_exists_only_with_account_ids_and_limits_rules_to_their_creators() -> None:
    policy = translated()["Resources"]["MomentEventBusRulePolicy"]
    assert policy["Condition"] == "HasEventRuleAccounts"
    assert translated()["Parameters"]["EventRuleAccountIds"]["Default"] == ""
    assert "MomentEventBusRulePolicy" not in resources()
    with_accounts = resolve_conditions(translated(), {"EventRuleAccountIds": "222222222222"})["Resources"]
    statement = with_accounts["MomentEventBusRulePolicy"]["Properties"]["Statement"]
    assert statement["Condition"] == {
        "StringEqualsIfExists": {"events:creatorAccount": "${aws:PrincipalAccount}"}
    }
    assert "events:PutEvents" not in statement["Action"]
    assert all(action.startswith("events:") and "*" not in action for action in statement["Action"])


def test_the_registry_holds_one_draft_4_schema_per_detail_type_equal_to_its_file() -> None:
    schemas = {
        name: item["Properties"]
        for name, item in resources().items()
        if item["Type"] == "AWS::EventSchemas::Schema"
    }
    files = {path.name: json.loads(path.read_text()) for path in (ROOT / "schemas").glob("*.json")}
    assert len(schemas) == len(files) == len(DETAIL_TYPES)
    titles = set()
    for properties in schemas.values():
        assert properties["Type"] == "JSONSchemaDraft4"
        content = json.loads(properties["Content"])
        [file_name] = re.findall(r"schemas/([a-z-]+\.json)", properties["Description"])
        assert content == files[file_name], file_name
        jsonschema.Draft4Validator.check_schema(content)
        titles.add(content["title"])
    assert titles == set(DETAIL_TYPES)


def test_the_bus_name_is_an_output() -> None:
    assert translated()["Outputs"]["EventBusName"]["Value"] == {"Ref": "MomentEventBus"}


def test_each_pipe_has_an_alarm_on_its_failures_and_the_dlq_one_on_its_depth() -> None:
    alarms = [item["Properties"] for item in resources().values() if item["Type"] == "AWS::CloudWatch::Alarm"]
    watched = {
        (alarm["Namespace"], alarm["MetricName"], json.dumps(alarm["Dimensions"], sort_keys=True))
        for alarm in alarms
        if "MetricName" in alarm  # not the metric-math ones
    }
    for name in PIPES:
        dimensions = [{"Name": "PipeName", "Value": {"Ref": name}}]
        assert ("AWS/EventBridge/Pipes", "ExecutionFailed", json.dumps(dimensions, sort_keys=True)) in watched
    queue = [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["EventPipeDeadLetterQueue", "QueueName"]}}]
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible", json.dumps(queue, sort_keys=True)) in watched


def test_event_parked_names_every_reason_the_reconciler_parks_for() -> None:
    """A parking for a reason the schema lacks (bills added `bill_voided`) would be announced against
    its own schema: a consumer validating events would drop it."""
    from moment_sync.reconciliation import ParkReason

    schema = json.loads((ROOT / "schemas" / "event-parked.json").read_text())
    reasons = schema["properties"]["detail"]["properties"]["reason"]["enum"]
    assert sorted(reasons) == sorted(reason.value for reason in ParkReason)
