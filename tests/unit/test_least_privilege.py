"""Least privilege, checked on what CloudFormation will really create: template.yaml translated by
samtranslator. Each function's role grants exactly the actions below, never `*` actions, and never
`*` resources (each names the table, index, stream, queue, secret or log group it needs). With the
optional DataKmsKeyArn every role may also use that key, and only that key; without it, no KMS at all."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from translate_template import resolve_conditions, translate  # noqa: E402

LOGS = {"logs:CreateLogStream", "logs:PutLogEvents"}
LEDGER_WRITES = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"}
MOMENT_KEY = {"secretsmanager:GetSecretValue"}
# Lambda sends a scheduled function's failed run to its on-failure queue with the function's role.
FAILED_RUNS = {"sqs:SendMessage"}
EXPECTED_ACTIONS = {
    "WebhookReceiverFunction": LOGS | {"dynamodb:PutItem", "secretsmanager:GetSecretValue"},
    "ReconcilerFunction": LOGS
    | {
        "dynamodb:DescribeStream",
        "dynamodb:GetRecords",
        "dynamodb:GetShardIterator",
        "dynamodb:ListStreams",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "sqs:SendMessage",
    },
    # pipes:DescribePipe: each run checks the event pipes run (only those pipes: test_event_pipe_state)
    "RedriveFunction": LOGS
    | LEDGER_WRITES
    | MOMENT_KEY
    | FAILED_RUNS
    | {"dynamodb:Query", "dynamodb:BatchGetItem", "pipes:DescribePipe"},
    "BalancePusherFunction": LOGS | LEDGER_WRITES | MOMENT_KEY | FAILED_RUNS | {"dynamodb:Query"},
    "PushDispatcherFunction": LOGS | FAILED_RUNS | {"lambda:InvokeFunction", "dynamodb:GetItem"},
    "LedgerApiFunction": LOGS | LEDGER_WRITES | {"dynamodb:Query"},
    "DailyReconcileFunction": LOGS
    | MOMENT_KEY
    | FAILED_RUNS
    | {"dynamodb:Scan", "dynamodb:GetItem", "dynamodb:UpdateItem"},
}
# What AWS documents a caller needs on the customer-managed key of a DynamoDB table (and its stream)
# or of a Secrets Manager secret. GenerateDataKey* is AWS's own spelling, the one `*` allowed.
DATA_KEY = {"kms:Decrypt", "kms:GenerateDataKey*", "kms:DescribeKey"}
A_KEY_ARN = "arn:aws:kms:af-south-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
# Deployed without the parameter (the default), and with it.
DEPLOYMENTS = {"no-data-key": {}, "data-key": {"DataKmsKeyArn": A_KEY_ARN}}


@cache
def translated() -> dict[str, Any]:
    return translate()


@cache
def _resources(deployment: str) -> dict[str, Any]:
    resolved: dict[str, Any] = resolve_conditions(translated(), DEPLOYMENTS[deployment])["Resources"]
    return resolved


def resources(deployment: str = "no-data-key") -> dict[str, Any]:
    return _resources(deployment)


def role_of(function: str, deployment: str = "no-data-key") -> dict[str, Any]:
    role = resources(deployment)[function]["Properties"]["Role"]
    assert isinstance(role, dict) and "Fn::GetAtt" in role, f"{function} has no role of the template's"
    return resources(deployment)[role["Fn::GetAtt"][0]]


def statements(function: str, deployment: str = "no-data-key") -> list[dict[str, Any]]:
    role = role_of(function, deployment)["Properties"]
    assert not role.get("ManagedPolicyArns"), f"{function}: managed policies grant more than it needs"
    found: list[dict[str, Any]] = []
    for policy in role.get("Policies", []):
        found.extend(policy["PolicyDocument"]["Statement"])
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("function", sorted(EXPECTED_ACTIONS))
def test_each_function_is_granted_exactly_what_it_uses(function: str) -> None:
    granted = {action for statement in statements(function) for action in as_list(statement["Action"])}
    assert granted == EXPECTED_ACTIONS[function]


@pytest.mark.parametrize("function", sorted(EXPECTED_ACTIONS))
def test_with_a_data_key_each_function_may_use_that_key_and_nothing_more(function: str) -> None:
    # Every function reads or writes a table (or the stream) under the key, so each needs it.
    granted = statements(function, "data-key")
    kms = [statement for statement in granted if "kms:" in str(statement["Action"])]
    assert len(kms) == 1, (function, kms)
    assert set(as_list(kms[0]["Action"])) == DATA_KEY
    assert kms[0]["Resource"] == {"Ref": "DataKmsKeyArn"}
    assert "Condition" not in kms[0]
    others = {
        action for statement in granted if statement is not kms[0] for action in as_list(statement["Action"])
    }
    assert others == EXPECTED_ACTIONS[function]


def test_without_a_data_key_no_role_has_any_kms_action() -> None:
    for name, resource in resources().items():
        if resource["Type"] == "AWS::IAM::Role":
            for policy in resource["Properties"].get("Policies", []):
                assert "kms:" not in str(policy["PolicyDocument"]), name


def test_the_data_key_grant_is_there_only_when_the_parameter_is_set() -> None:
    # The unresolved template: the grant is one Fn::If on HasDataKmsKey, whose other branch is nothing.
    condition = translated()["Conditions"]["HasDataKmsKey"]
    assert condition == {"Fn::Not": [{"Fn::Equals": [{"Ref": "DataKmsKeyArn"}, ""]}]}
    assert translated()["Parameters"]["DataKmsKeyArn"]["Default"] == ""
    for function in EXPECTED_ACTIONS:
        role = translated()["Resources"][f"{function}Role"]["Properties"]
        conditional = [
            statement
            for policy in role["Policies"]
            for statement in policy["PolicyDocument"]["Statement"]
            if "Fn::If" in statement
        ]
        assert len(conditional) == 1, function
        name, _grant, otherwise = conditional[0]["Fn::If"]
        assert (name, otherwise) == ("HasDataKmsKey", {"Ref": "AWS::NoValue"}), function


@pytest.mark.parametrize("deployment", sorted(DEPLOYMENTS))
@pytest.mark.parametrize("function", sorted(EXPECTED_ACTIONS))
def test_no_wildcard_actions_or_resources(function: str, deployment: str) -> None:
    for statement in statements(function, deployment):
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            assert "*" not in action or action == "kms:GenerateDataKey*", (function, action)
        for resource in as_list(statement["Resource"]):
            assert resource != "*", (function, statement)
            assert isinstance(resource, dict), f"{function}: {resource!r} is not derived from a resource"


def test_every_function_in_the_template_is_checked() -> None:
    functions = {name for name, item in resources().items() if item["Type"] == "AWS::Lambda::Function"}
    assert functions == set(EXPECTED_ACTIONS)


def test_the_daily_check_writes_only_its_lease() -> None:
    # It reads balances; its one write is its lease (and the pass's cursor in it), never a balance.
    [write] = [
        s for s in statements("DailyReconcileFunction") if "dynamodb:UpdateItem" in as_list(s["Action"])
    ]
    assert as_list(write["Action"]) == ["dynamodb:UpdateItem"]
    assert write["Resource"] == {"Fn::GetAtt": ["LedgerTable", "Arn"]}
    assert write["Condition"] == {
        "ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["LEASE#daily-check"]}
    }


def test_the_push_dispatcher_starts_only_the_worker_and_reads_only_the_shard_leases() -> None:
    [invoke] = [
        s for s in statements("PushDispatcherFunction") if "lambda:InvokeFunction" in as_list(s["Action"])
    ]
    assert as_list(invoke["Action"]) == ["lambda:InvokeFunction"]
    assert invoke["Resource"] == {"Fn::GetAtt": ["BalancePusherFunction", "Arn"]}
    [read] = [s for s in statements("PushDispatcherFunction") if "dynamodb:GetItem" in as_list(s["Action"])]
    assert read["Resource"] == {"Fn::GetAtt": ["LedgerTable", "Arn"]}
    assert read["Condition"] == {
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["LEASE#pusher#shard-*"]}
    }
    # No other function may start a function: the worker never fans out again.
    for function, actions in EXPECTED_ACTIONS.items():
        if function != "PushDispatcherFunction":
            assert not any(action.startswith("lambda:") for action in actions), function
    # The worker is the dispatcher's target, by name, on the push schedule's behalf.
    variables = resources()["PushDispatcherFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["PUSH_WORKER_FUNCTION"] == {"Ref": "BalancePusherFunction"}


# Each index a function's code queries (grep `IndexName`), by table. moto enforces no IAM, so without
# this a query the role does not allow passes every local test and is refused on AWS.
INDEX_QUERIES = {
    "RedriveFunction": {
        ("WebhookEventsTable", "Unfinished"),  # the cursors' reads
        ("WebhookEventsTable", "UnmatchedDue"),  # payments parked unmatched, due
        ("WebhookEventsTable", "Parked"),  # all of them (an operator's run, the one unkeyed pass)
        ("WebhookEventsTable", "UnmatchedByMomentId"),
    },
    "BalancePusherFunction": {("LedgerTable", "PendingPush")},
    "LedgerApiFunction": {("LedgerTable", "BillsByOwner")},  # entries: the base table (no index)
}


def _index_arns(function: str) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for statement in statements(function):
        if "dynamodb:Query" not in as_list(statement["Action"]):
            continue
        for resource in as_list(statement["Resource"]):
            text = resource.get("Fn::Sub") if isinstance(resource, dict) else None
            if isinstance(text, str) and "/index/" in text:
                table = text.split("${", 1)[1].split(".Arn}", 1)[0]
                found.add((table, text.rsplit("/index/", 1)[1]))
    return found


@pytest.mark.parametrize("function", sorted(INDEX_QUERIES))
def test_each_index_a_function_queries_is_granted(function: str) -> None:
    assert INDEX_QUERIES[function] <= _index_arns(function)


def test_the_redrive_may_read_statuses_a_hundred_at_a_time() -> None:
    [status] = [s for s in statements("RedriveFunction") if "dynamodb:BatchGetItem" in as_list(s["Action"])]
    assert status["Resource"] == {"Fn::GetAtt": ["WebhookEventsTable", "Arn"]}
