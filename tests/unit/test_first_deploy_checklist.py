"""docs/deploy.md's first-deploy checklist, held to what it cites.

No AWS account is here, so the checklist cannot be run; what can be checked is that everything it
names exists and every number it states is the template's: parameters, outputs, resources and
properties in template.yaml, environments, stack names and the region in samconfig.toml, targets in
the Makefile, and every `aws` command an operation of the AWS API (botocore's models, which the AWS
CLI is built from) with options that operation takes.
"""

from __future__ import annotations

import re
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from local_stack.template import load_template

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from translate_template import translate  # noqa: E402

DEPLOY = ROOT / "docs" / "deploy.md"
# The AWS CLI's own options, which belong to no operation.
GLOBAL_OPTIONS = {"region", "query", "output", "profile", "endpoint-url", "no-cli-pager"}
# Regions AWS ships disabled: an account must opt in before anything can be deployed there.
OPT_IN_REGIONS = {
    "af-south-1",
    "ap-east-1",
    "ap-south-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ca-west-1",
    "eu-central-2",
    "eu-south-1",
    "eu-south-2",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
}
SCHEDULE_NAME_LIMIT = 64


@cache
def checklist() -> str:
    text = DEPLOY.read_text()
    assert "\n## First-deploy checklist\n" in text
    return text.split("\n## First-deploy checklist\n", 1)[1].split("\n## ", 1)[0]


@cache
def samconfig() -> dict[str, Any]:
    return tomllib.loads((ROOT / "samconfig.toml").read_text())


def environments() -> dict[str, dict[str, Any]]:
    return {name: section for name, section in samconfig().items() if isinstance(section, dict)}


def stack_names() -> set[str]:
    return {section["global"]["parameters"]["stack_name"] for section in environments().values()}


def regions() -> set[str]:
    return {section["deploy"]["parameters"]["region"] for section in environments().values()}


def template_resources(resource_type: str) -> dict[str, Any]:
    return {
        name: resource
        for name, resource in load_template()["Resources"].items()
        if resource["Type"] == resource_type
    }


def stated(pattern: str) -> list[int]:
    """Every number the checklist states where `pattern` (with one `(\\d+)`) matches."""
    found = [int(number.replace(",", "")) for number in re.findall(pattern, checklist())]
    assert found, f"the checklist no longer says {pattern!r}"
    return found


# --- what it names --------------------------------------------------------------------------------


def test_every_make_target_it_names_exists() -> None:
    targets = set(re.findall(r"^([a-zA-Z_-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    named = set(re.findall(r"`make ([a-z-]+)", checklist()))
    assert named and named <= targets, named - targets


def test_every_environment_and_stack_it_names_is_samconfigs() -> None:
    assert set(re.findall(r"--config-env (\w+)", checklist())) <= set(environments())
    named = set(re.findall(r"moment-balance-sync-[a-z]+", checklist()))
    assert named == stack_names()


def test_every_template_name_it_cites_exists() -> None:
    template = load_template()
    keys = set(re.findall(r"^\s*([A-Z][A-Za-z]+):", (ROOT / "template.yaml").read_text(), re.MULTILINE))
    known = set(template["Parameters"]) | set(template["Outputs"]) | set(template["Resources"]) | keys
    known |= api_output_members()
    cited = set(re.findall(r"[`<]([A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+)[`>]", checklist()))
    assert cited, "the checklist cites no template name: the check would be vacuous"
    assert cited <= known, sorted(cited - known)


def test_the_secrets_it_names_are_the_stacks_secrets_and_their_outputs() -> None:
    secrets = set(template_resources("AWS::SecretsManager::Secret"))
    assert secrets == {"WebhookSigningSecret", "MomentApiKeySecret"}
    outputs = load_template()["Outputs"]
    for secret in secrets:
        assert f"`{secret}`" in checklist()
        assert outputs[f"{secret}Arn"]["Value"] == {"Ref": secret}
        assert f"<{secret}Arn>" in checklist()


def test_the_schedule_names_it_gives_are_the_templates() -> None:
    names = {
        resource["Properties"]["Name"]["Fn::Sub"].replace("${AWS::StackName}", "<stack>")
        for resource in translate()["Resources"].values()
        if resource["Type"] == "AWS::Scheduler::Schedule"
    }
    assert names == set(re.findall(r"`(<stack>-[a-z-]+)`", checklist())) - {
        "<stack>-shared",
        "<stack>-<section>",
    }
    longest_suffix = max(len(name) - len("<stack>") for name in names)
    assert stated(r"at most (\d+) characters") == [SCHEDULE_NAME_LIMIT - longest_suffix]
    assert all(len(stack) <= SCHEDULE_NAME_LIMIT - longest_suffix for stack in stack_names())


# --- the AWS commands -----------------------------------------------------------------------------


def commands() -> list[str]:
    """Every `aws …` command line of the checklist: code block lines and inline code (which may wrap)."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", checklist(), re.DOTALL):
        found += [line.split("#", 1)[0].strip() for line in block.splitlines()]
    without_blocks = re.sub(r"```sh\n.*?```", "", checklist(), flags=re.DOTALL)
    found += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", without_blocks)]
    return [command for command in found if command.startswith("aws ")]


@cache
def session() -> botocore.session.Session:
    return botocore.session.get_session()


def pascal(kebab: str) -> str:
    return "".join(part.capitalize() for part in kebab.split("-"))


def operation(service: str, command: str) -> Any:
    model = session().get_service_model(service)
    names = {name.lower(): name for name in model.operation_names}
    assert pascal(command).lower() in names, f"aws {service} has no {command}"
    return model.operation_model(names[pascal(command).lower()])


def api_output_members() -> set[str]:
    """Fields the checklist may name from what its commands answer (e.g. AccountLimit)."""
    members: set[str] = set()
    for command in commands():
        _aws, service, name, *_ = command.split()
        output = operation(service, name).output_shape
        if output is not None:
            members |= set(output.members)
            for member in output.members.values():
                members |= set(getattr(member, "members", {}))
    return members


def test_it_cites_the_commands_an_operator_needs() -> None:
    cited = {tuple(command.split()[1:3]) for command in commands()}
    assert {
        ("account", "get-region-opt-status"),
        ("account", "enable-region"),
        ("lambda", "get-account-settings"),
        ("service-quotas", "request-service-quota-increase"),
        ("secretsmanager", "put-secret-value"),
    } <= cited


@pytest.mark.parametrize("command", commands())
def test_each_aws_command_is_an_operation_with_the_options_it_gives(command: str) -> None:
    _aws, service, name, *rest = command.split()
    assert service in session().get_available_services(), service
    model = operation(service, name)
    members = {member.lower() for member in model.input_shape.members} if model.input_shape else set()
    for option in (token[2:] for token in rest if token.startswith("--")):
        if option not in GLOBAL_OPTIONS:
            assert pascal(option).lower() in members, f"{command}: {name} takes no --{option}"
    for required in model.input_shape.required_members if model.input_shape else []:
        assert f"--{re.sub(r'(?<!^)(?=[A-Z])', '-', required).lower()}" in rest, f"{command}: --{required}?"


def test_each_region_it_names_is_samconfigs() -> None:
    named = set(re.findall(r"--region(?:-name)? ([a-z0-9-]+)", checklist()))
    assert named == regions()


# --- the region ----------------------------------------------------------------------------------


@pytest.mark.parametrize("region", sorted(regions()))
def test_an_opt_in_region_is_named_so_with_how_to_enable_it(region: str) -> None:
    if region not in OPT_IN_REGIONS:
        pytest.skip(f"{region} is enabled by default")
    assert f"aws account enable-region --region-name {region}" in checklist()
    assert "opt-in" in checklist()
    text = (ROOT / "samconfig.toml").read_text()
    for section in re.findall(r"\[\w+\.deploy\.parameters\]\n(.*?)region = ", text, re.DOTALL):
        assert "opt-in" in section.lower(), "each deploy section says the region must be enabled first"
    assert "enable-region" in text


# --- the numbers ---------------------------------------------------------------------------------


def test_the_concurrency_it_states_is_what_the_template_reserves() -> None:
    reserved = sum(
        int(function["Properties"].get("ReservedConcurrentExecutions", 0))
        for function in template_resources("AWS::Serverless::Function").values()
    )
    # Lambda keeps 10 of the account's concurrency unreserved.
    if reserved:
        assert stated(r"reserves (\d+) of its own") == [reserved]
        assert stated(r"quota is below (\d+)") == [10 + reserved]
    else:
        assert "reserves no concurrency" in checklist()


def test_the_counts_it_states_are_the_templates() -> None:
    assert set(stated(r"(\d+) (?:CloudWatch )?alarms")) == {len(template_resources("AWS::CloudWatch::Alarm"))}
    assert set(stated(r"(\d+) tables")) == {len(template_resources("AWS::DynamoDB::Table"))}
    assert stated(r"(\d+) schedules") == [len(translated_resources("AWS::Scheduler::Schedule"))]
    assert stated(r"(\d+) functions") == [len(template_resources("AWS::Serverless::Function"))]
    assert stated(r"(\d+)\s+secrets") == [len(template_resources("AWS::SecretsManager::Secret"))]
    assert stated(r"(\d+) dashboard") == [len(template_resources("AWS::CloudWatch::Dashboard"))]
    assert stated(r"(\d+) KMS key") == [len(template_resources("AWS::KMS::Key"))]


def translated_resources(resource_type: str) -> dict[str, Any]:
    return {name: item for name, item in translate()["Resources"].items() if item["Type"] == resource_type}
