"""Two stacks of this template in one account and region (dev next to prod) must not collide.

Many AWS names are unique per account and region: a schedule in its group, a layer, an alarm, a
dashboard, a queue, a role. A name fixed in the template (or one SAM derives from a logical id, as it
does for a schedule without `Name`) makes the second stack fail with "already exists" and roll back.
So every name the translated template sets must be derived from the stack name, or left to
CloudFormation, which makes one from the stack name and a random suffix.

Which properties are names comes from CloudFormation's own resource schemas (the ones cfn-lint
ships): every top-level property ending in `Name` of every resource type the template uses, so a
resource type added later is checked without anyone remembering to list it.
"""

from __future__ import annotations

import re
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from translate_template import translate  # noqa: E402

REGION = "af-south-1"
ACCOUNT = "123456789012"
# Two stacks in one account, as docs/deploy.md asks for.
STACKS = ("moment-balance-sync-dev", "moment-balance-sync-prod")

# Properties that end in `Name` but name no resource of their own, each with the reason.
NOT_A_NAME = {
    ("AWS::CloudWatch::Alarm", "MetricName"): "the metric watched, not the alarm",
    ("AWS::SNS::Topic", "DisplayName"): "the sender shown in e-mails; topics need not differ in it",
    ("AWS::ApiGatewayV2::Stage", "StageName"): "unique only within its own API (`$default`)",
    # `source@DetailType`, as EventBridge names the schemas it discovers; the registry is `<stack>-events`.
    ("AWS::EventSchemas::Schema", "SchemaName"): "unique only within its own registry, named per stack",
}


@cache
def translated() -> dict[str, Any]:
    return translate()


@cache
def schema(resource_type: str) -> dict[str, Any]:
    found: dict[str, Any] = PROVIDER_SCHEMA_MANAGER.get_resource_schema(REGION, resource_type).schema
    return found


def name_properties(resource_type: str) -> list[str]:
    spec = schema(resource_type)
    read_only = {path.removeprefix("/properties/") for path in spec.get("readOnlyProperties", [])}
    return [
        name
        for name in spec["properties"]
        if name.endswith("Name") and name not in read_only and (resource_type, name) not in NOT_A_NAME
    ]


class Reference:
    """A value that names another resource of this template: not a name of its own."""


def resolve(value: Any, stack: str) -> str | Reference:
    """The value CloudFormation would give a name property in stack `stack`."""
    pseudo = {
        "AWS::StackName": stack,
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
        "AWS::Partition": "aws",
    }
    resources = translated()["Resources"]
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        [(function, argument)] = value.items()
        if function == "Ref" and argument in pseudo:
            return pseudo[argument]
        if function in ("Ref", "Fn::GetAtt"):
            target = argument if function == "Ref" else argument[0]
            assert target in resources, f"{value} names nothing in the template"
            return Reference()
        if function == "Fn::Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else argument

            def substitute(match: re.Match[str]) -> str:
                name = match.group(1)
                if name in variables:
                    resolved = resolve(variables[name], stack)
                    assert isinstance(resolved, str), f"{value}: ${{{name}}} names a resource"
                    return resolved
                assert name in pseudo, f"{value}: ${{{name}}} is not a pseudo parameter"
                return pseudo[name]

            return re.sub(r"\$\{([^}!]+)\}", substitute, text)
        if function == "Fn::Join":
            separator, parts = argument
            resolved_parts = [resolve(part, stack) for part in parts]
            assert all(isinstance(part, str) for part in resolved_parts), value
            return separator.join(str(part) for part in resolved_parts)
    raise AssertionError(f"cannot resolve the name {value!r}")


def names_set(stack: str) -> dict[tuple[str, str, str], str]:
    """(resource type, property, logical id) -> the name, for every name the template sets itself."""
    found: dict[tuple[str, str, str], str] = {}
    for logical_id, resource in translated()["Resources"].items():
        properties = resource.get("Properties", {})
        for name in name_properties(resource["Type"]):
            if name in properties:
                resolved = resolve(properties[name], stack)
                if isinstance(resolved, str):
                    found[(resource["Type"], name, logical_id)] = resolved
    return found


def test_the_schemas_tell_names_apart() -> None:
    # The check is only as good as its list of name properties: it must see the usual ones.
    assert name_properties("AWS::Scheduler::Schedule") == ["GroupName", "Name"]
    assert "LayerName" in name_properties("AWS::Lambda::LayerVersion")
    assert "AlarmName" in name_properties("AWS::CloudWatch::Alarm")
    assert "QueueName" in name_properties("AWS::SQS::Queue")
    assert "TableName" in name_properties("AWS::DynamoDB::Table")
    assert "MetricName" not in name_properties("AWS::CloudWatch::Alarm")


def test_every_name_the_template_sets_is_derived_from_the_stack_name() -> None:
    for stack in STACKS:
        fixed = {key: name for key, name in names_set(stack).items() if stack not in name}
        assert not fixed, f"names not derived from the stack name: {fixed}"


def test_two_stacks_in_one_account_share_no_name() -> None:
    dev, prod = (names_set(stack) for stack in STACKS)
    assert dev, "the template sets names: the check must see them"
    prod_names = {(resource_type, name) for (resource_type, _property, _id), name in prod.items()}
    shared = {key: name for key, name in dev.items() if (key[0], name) in prod_names}
    assert not shared, f"both stacks would create {shared}"


def test_no_two_resources_of_one_stack_share_a_name() -> None:
    for stack in STACKS:
        seen: dict[tuple[str, str], str] = {}
        for (resource_type, _property_name, logical_id), name in names_set(stack).items():
            assert (resource_type, name) not in seen, (logical_id, seen.get((resource_type, name)))
            seen[(resource_type, name)] = logical_id


def samconfig_stack_names() -> list[str]:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    return [
        section["global"]["parameters"]["stack_name"]
        for section in config.values()
        if isinstance(section, dict) and "global" in section
    ]


@pytest.mark.parametrize("stack", samconfig_stack_names())
def test_names_fit_their_limits_for_the_configured_stacks(stack: str) -> None:
    for (resource_type, property_name, logical_id), name in names_set(stack).items():
        spec = schema(resource_type)["properties"][property_name]
        assert len(name) <= spec.get("maxLength", 255), (logical_id, name)
        pattern = spec.get("pattern")
        if pattern:
            assert re.fullmatch(pattern, name), (logical_id, name, pattern)


def test_samconfig_names_the_two_stacks_this_test_uses() -> None:
    assert sorted(samconfig_stack_names()) == sorted(STACKS)
