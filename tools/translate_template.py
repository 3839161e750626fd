"""Translate template.yaml to plain CloudFormation with samtranslator, offline.

cfn-lint on the SAM template cannot see the resources SAM generates (event source mappings,
roles, permissions); linting the translated JSON does. Tests use `translate()` too, to check the
generated IAM policies.

Usage: python tools/translate_template.py [template.yaml] [out.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import boto3
from samtranslator.parser.parser import Parser
from samtranslator.public.translator import ManagedPolicyLoader
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parent.parent


class OfflinePolicyLoader(ManagedPolicyLoader):  # type: ignore[misc]
    """Managed policy ARNs without calling IAM (the names SAM looks up are stable AWS ones)."""

    def __init__(self) -> None:
        pass

    def load(self) -> dict[str, str]:
        names = ["AWSLambdaBasicExecutionRole", "AWSXrayWriteOnlyAccess", "AWSLambdaDynamoDBExecutionRole"]
        return {name: f"arn:aws:iam::aws:policy/service-role/{name}" for name in names}


def _as_packaged(sam_template: dict[str, Any]) -> dict[str, Any]:
    """Point local code folders at placeholder S3 objects, as `sam package` would."""
    uri_property = {"AWS::Serverless::Function": "CodeUri", "AWS::Serverless::LayerVersion": "ContentUri"}
    for resource in sam_template.get("Resources", {}).values():
        name = uri_property.get(resource.get("Type", ""))
        location = resource.get("Properties", {}).get(name) if name else None
        if isinstance(location, str) and not location.startswith("s3://"):
            resource["Properties"][name] = f"s3://packaged-artifacts/{location.strip('/')}.zip"
    return sam_template


def translate(template_path: Path = ROOT / "template.yaml") -> dict[str, Any]:
    sam_template = _as_packaged(yaml_parse(template_path.read_text()))
    # Cape Town, where a South African merchant would deploy; no credentials are used.
    session = boto3.session.Session(region_name="af-south-1")
    translator = Translator(None, Parser(), boto_session=session)
    translated: dict[str, Any] = translator.translate(
        sam_template,
        parameter_values={"AWS::AccountId": "123456789012"},
        get_managed_policy_map=OfflinePolicyLoader().load,
    )
    return translated


class _NoValue:
    """AWS::NoValue: the property or list item is left out."""


_NO_VALUE = _NoValue()
_LOGIC = {
    "Fn::Not": lambda truths: not truths[0],
    "Fn::And": all,
    "Fn::Or": any,
}


class _Deployment:
    """Evaluates a template's Conditions for given parameter values, as CloudFormation does."""

    def __init__(self, template: dict[str, Any], parameter_values: dict[str, str]) -> None:
        declared = template.get("Parameters", {})
        unknown = set(parameter_values) - set(declared)
        if unknown:
            raise ValueError(f"the template has no parameter {sorted(unknown)}")
        self._values = {name: str(spec.get("Default", "")) for name, spec in declared.items()}
        self._values.update(parameter_values)
        self._conditions = template.get("Conditions", {})

    def condition(self, name: str) -> bool:
        return self._truth(self._conditions[name])

    def _scalar(self, value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in self._values:
            return self._values[value["Ref"]]
        if isinstance(value, dict) and set(value) == {"Fn::Join"}:
            # A CommaDelimitedList parameter joined (EventRuleAccountIds): its text, joined again.
            separator, items = value["Fn::Join"]
            return separator.join(str(self._scalar(items)).split(","))
        return value

    def _truth(self, value: Any) -> bool:
        [(function, argument)] = value.items()
        if function == "Fn::Equals":
            return bool(self._scalar(argument[0]) == self._scalar(argument[1]))
        if function == "Condition":
            return self.condition(argument)
        if function in _LOGIC:
            return bool(_LOGIC[function]([self._truth(item) for item in argument]))
        raise ValueError(f"cannot evaluate the condition {value!r}")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in map(self.resolve, value) if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Fn::If"}:
            name, when_true, when_false = value["Fn::If"]
            return self.resolve(when_true if self.condition(name) else when_false)
        if value == {"Ref": "AWS::NoValue"}:
            return _NO_VALUE
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not _NO_VALUE}


def resolve_conditions(
    template: dict[str, Any], parameter_values: dict[str, str] | None = None
) -> dict[str, Any]:
    """The template as CloudFormation deploys it with these parameters (defaults for the rest):
    every `Fn::If` replaced by its chosen branch, `AWS::NoValue` left out, resources whose
    `Condition` is false dropped. Other intrinsics stay as they are, so tests still see which
    resource or parameter a value names."""
    deployment = _Deployment(template, parameter_values or {})
    resources = {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if "Condition" not in resource or deployment.condition(resource["Condition"])
    }
    resolved: dict[str, Any] = deployment.resolve({**template, "Resources": resources})
    return resolved


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "template.yaml"
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "build" / "template.translated.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(translate(source), indent=2, default=str))
    print(
        f"translated {source.name} -> {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}"
    )


if __name__ == "__main__":
    main()
