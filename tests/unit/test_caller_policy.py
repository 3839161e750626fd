"""The managed policy the template offers the merchant's callers grants exactly execute-api:Invoke on
every ledger route behind AWS_IAM, and nothing else: not the webhook route, no other action. A route
added to the ledger API without a line in the policy fails here."""

from __future__ import annotations

import re

from local_stack.functions import http_routes, iam_routes
from local_stack.template import load_template, resource_properties

ARN = re.compile(
    r"arn:\$\{AWS::Partition\}:execute-api:\$\{AWS::Region\}:\$\{AWS::AccountId\}:\$\{HttpApi\}/\$default/"
    r"(?P<method>[A-Z]+)/(?P<path>\S+)"
)


def granted() -> set[tuple[str, str]]:
    statements = resource_properties("LedgerApiCallerPolicy")["PolicyDocument"]["Statement"]
    assert [(s["Effect"], s["Action"]) for s in statements] == [("Allow", "execute-api:Invoke")]
    routes = set()
    for resource in statements[0]["Resource"]:
        found = ARN.fullmatch(resource["Fn::Sub"] if isinstance(resource, dict) else resource)
        assert found, resource
        routes.add((found["method"], "/" + found["path"]))
    return routes


def as_pattern(path: str) -> str:
    return re.sub(r"\{\w+\}", "*", path)


def test_the_policy_grants_every_iam_route_and_only_those() -> None:
    ledger = {(method, as_pattern(path)) for method, path in iam_routes("LedgerApiFunction")}
    assert ledger == {(method, as_pattern(path)) for method, path in http_routes("LedgerApiFunction")}
    assert granted() == ledger


def test_the_webhook_route_is_not_granted_and_the_policy_is_an_output() -> None:
    assert not any(path.startswith("/webhooks") for _, path in granted())
    outputs = load_template()["Outputs"]
    assert outputs["LedgerApiCallerPolicyArn"]["Value"] == {"Ref": "LedgerApiCallerPolicy"}
