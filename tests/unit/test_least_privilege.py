"""Least privilege, checked on what CloudFormation will really create: template.yaml translated by
samtranslator. Each function's role grants exactly the actions below, never `*` actions, and never
`*` resources (each names the table, index, stream, queue, secret or log group it needs)."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from translate_template import translate  # noqa: E402

LOGS = {"logs:CreateLogStream", "logs:PutLogEvents"}
LEDGER_WRITES = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"}
MOMENT_KEY = {"secretsmanager:GetSecretValue"}
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
    "RedriveFunction": LOGS | LEDGER_WRITES | MOMENT_KEY | {"dynamodb:Query"},
    "BalancePusherFunction": LOGS | LEDGER_WRITES | MOMENT_KEY | {"dynamodb:Query"},
    "LedgerApiFunction": LOGS | LEDGER_WRITES | {"dynamodb:Query"},
    "DailyReconcileFunction": LOGS | MOMENT_KEY | {"dynamodb:Scan", "dynamodb:GetItem"},
}


@cache
def resources() -> dict[str, Any]:
    translated: dict[str, Any] = translate()["Resources"]
    return translated


def role_of(function: str) -> dict[str, Any]:
    role = resources()[function]["Properties"]["Role"]
    assert isinstance(role, dict) and "Fn::GetAtt" in role, f"{function} has no role of the template's"
    return resources()[role["Fn::GetAtt"][0]]


def statements(function: str) -> list[dict[str, Any]]:
    role = role_of(function)["Properties"]
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
def test_no_wildcard_actions_or_resources(function: str) -> None:
    for statement in statements(function):
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            assert "*" not in action, (function, action)
        for resource in as_list(statement["Resource"]):
            assert resource != "*", (function, statement)
            assert isinstance(resource, dict), f"{function}: {resource!r} is not derived from a resource"


def test_every_function_in_the_template_is_checked() -> None:
    functions = {name for name, item in resources().items() if item["Type"] == "AWS::Lambda::Function"}
    assert functions == set(EXPECTED_ACTIONS)
