"""AWS resources built from template.yaml's own definitions, so the schema lives in one place."""

from __future__ import annotations

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
