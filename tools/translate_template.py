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
