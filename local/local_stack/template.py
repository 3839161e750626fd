"""AWS resources built from template.yaml's own definitions, so the schema lives in one place."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"

# The CreateTable properties the template's AWS::DynamoDB::Table resources use.
_CREATE_TABLE_PROPERTIES = (
    "AttributeDefinitions",
    "KeySchema",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "BillingMode",
)


@cache
def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    template: dict[str, Any] = yaml_parse(path.read_text())
    return template


def resource_properties(logical_id: str, template: dict[str, Any] | None = None) -> dict[str, Any]:
    resources = (template or load_template())["Resources"]
    properties: dict[str, Any] = resources[logical_id].get("Properties", {})
    return properties


def parameter_default(name: str, template: dict[str, Any] | None = None) -> Any:
    return (template or load_template())["Parameters"][name]["Default"]


def create_table(client: Any, logical_id: str, table_name: str | None = None) -> str:
    """Create the table `logical_id` of template.yaml (keys, indexes, stream, TTL, backups)."""
    properties = resource_properties(logical_id)
    name = table_name or logical_id
    request = {key: properties[key] for key in _CREATE_TABLE_PROPERTIES if key in properties}
    stream = properties.get("StreamSpecification")
    if stream:
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    client.create_table(
        TableName=name,
        DeletionProtectionEnabled=bool(properties.get("DeletionProtectionEnabled", False)),
        **request,
    )
    ttl = properties.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        client.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
        )
    pitr = properties.get("PointInTimeRecoverySpecification", {})
    if pitr.get("PointInTimeRecoveryEnabled"):
        client.update_continuous_backups(
            TableName=name,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )
    return name


def function_logical_ids(template: dict[str, Any] | None = None) -> list[str]:
    """Every AWS::Serverless::Function of the template, in template order."""
    resources = (template or load_template())["Resources"]
    return [
        logical_id
        for logical_id, resource in resources.items()
        if resource.get("Type") == "AWS::Serverless::Function"
    ]


def function_timeout_seconds(logical_id: str, template: dict[str, Any] | None = None) -> float:
    template = template or load_template()
    default = template.get("Globals", {}).get("Function", {}).get("Timeout", 3)
    return float(resource_properties(logical_id, template).get("Timeout", default))


class Intrinsics:
    """Resolves the intrinsic functions template.yaml uses (`Ref`, `Fn::GetAtt`, `Fn::Sub`) the way
    the local stack deploys it: parameters take their defaults unless overridden (as
    `sam deploy --parameter-overrides` would), resources take the names and ARNs the stack gave them."""

    def __init__(
        self,
        resources: dict[str, str],
        attributes: dict[tuple[str, str], str] | None = None,
        parameter_overrides: dict[str, str] | None = None,
        template: dict[str, Any] | None = None,
    ) -> None:
        self._resources = resources
        self._attributes = attributes or {}
        self._overrides = parameter_overrides or {}
        self._template = template or load_template()

    def parameter(self, name: str) -> str:
        if name in self._overrides:
            return str(self._overrides[name])
        return str(parameter_default(name, self._template))

    def ref(self, name: str) -> str:
        if name in self._resources:
            return self._resources[name]
        if name in self._template.get("Parameters", {}):
            return self.parameter(name)
        raise ValueError(f"the local stack has no value for !Ref {name}")

    def resolve(self, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            return self.ref(value["Ref"])
        if set(value) == {"Fn::GetAtt"}:
            resource, attribute = _get_att(value["Fn::GetAtt"])
            if (resource, attribute) not in self._attributes:
                raise ValueError(f"the local stack has no value for !GetAtt {resource}.{attribute}")
            return self._attributes[(resource, attribute)]
        if set(value) == {"Fn::Sub"}:
            return self._sub(value["Fn::Sub"])
        raise ValueError(f"the local stack cannot resolve {value!r}")

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(self.resolve(variables[name]))
            if "." in name:
                resource, attribute = name.split(".", 1)
                return str(self.resolve({"Fn::GetAtt": [resource, attribute]}))
            return self.ref(name)

        return re.sub(r"\$\{([^!}][^}]*)\}", replace, text)


def _get_att(argument: Any) -> tuple[str, str]:
    if isinstance(argument, str):
        resource, attribute = argument.split(".", 1)
        return resource, attribute
    return str(argument[0]), str(argument[1])
