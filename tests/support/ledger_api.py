"""The ledger API for tests: API Gateway payload 2.0 events built as the local front builds them, the
real handler, and every answer checked against docs/api/openapi.yaml before a test sees it."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import quote

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

import ledger_api_handler
from local_stack.api_gateway import Route, build_event
from local_stack.functions import http_routes
from local_stack.lambda_context import LocalLambdaContext
from local_stack.template import ROOT
from moment_sync.runtime import LedgerDependencies

OPENAPI_PATH = ROOT / "docs" / "api" / "openapi.yaml"
SPEC_URI = "urn:moment-balance-sync:ledger-api"
PROBLEM_PREFIX = "tag:moment-balance-sync,2026:problem/"


@cache
def openapi() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(OPENAPI_PATH.read_text())
    return spec


@cache
def _registry() -> Registry[Any]:
    resource: Resource[Any] = Resource.from_contents(openapi(), default_specification=DRAFT202012)
    return Registry().with_resource(SPEC_URI, resource)


def validator_at(pointer: str) -> Draft202012Validator:
    """A validator for the schema at `pointer` (a JSON pointer into openapi.yaml), its $refs resolved."""
    return Draft202012Validator(
        {"$ref": f"{SPEC_URI}#{quote(pointer, safe='/~')}"},
        registry=_registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def spec_path(raw_path: str) -> str | None:
    """The openapi path template `raw_path` falls under, if any."""
    for template in openapi()["paths"]:
        pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, raw_path):
            return str(template)
    return None


def request_validator(template: str, method: str) -> Draft202012Validator:
    body = openapi()["paths"][template][method.lower()]["requestBody"]
    pointer = f"/paths/{_escape(template)}/{method.lower()}/requestBody"
    if "$ref" in body:
        pointer = body["$ref"].removeprefix("#")
    return validator_at(f"{pointer}/content/application~1json/schema")


def check_against_contract(
    method: str, raw_path: str, status: int, headers: dict[str, str], body: Any
) -> None:
    """The answer is one openapi.yaml documents for this operation and status, and its body fits."""
    template = spec_path(raw_path)
    operation = openapi()["paths"].get(template, {}).get(method.lower()) if template else None
    if operation is None:
        # Not an operation: only the function's own route problems may answer.
        assert status in (404, 405), f"{method} {raw_path} answered {status}"
        pointer = f"/components/responses/{'NotFound' if status == 404 else 'MethodNotAllowed'}"
    else:
        assert str(status) in operation["responses"], f"{status} is not documented for {method} {template}"
        pointer = f"/paths/{_escape(template or '')}/{method.lower()}/responses/{status}"
        response = operation["responses"][str(status)]
        if "$ref" in response:
            pointer = response["$ref"].removeprefix("#")
    media_type = "application/json" if status < 400 else "application/problem+json"
    assert headers.get("content-type") == media_type, headers
    errors = sorted(
        validator_at(f"{pointer}/content/{_escape(media_type)}/schema").iter_errors(body), key=str
    )
    assert not errors, f"{method} {raw_path} {status}: {[error.message for error in errors]} in {body}"
    if status >= 400:
        assert body["status"] == status and body["type"].startswith(PROBLEM_PREFIX)
    if status == 405:
        assert headers.get("allow")
    if status == 503:
        assert headers.get("retry-after")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def problem(self) -> str:
        return str(self.body["type"]).removeprefix(PROBLEM_PREFIX)

    @property
    def error_fields(self) -> list[str]:
        return [error["field"] for error in self.body.get("errors", [])]


@dataclass
class LedgerApi:
    """Requests to the real handler, as API Gateway would send them for the routes template.yaml declares."""

    dependencies: LedgerDependencies
    answers: list[Answer] = field(default_factory=list)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        query: str = "",
        base64_body: bool = False,
        mangle_base64: bool = False,
        content_type: str | None = "application/json",
    ) -> Answer:
        payload = raw if raw is not None else b"" if body is None else json.dumps(body).encode()
        route, parameters = _route_for(method, path)
        event = build_event(
            route,
            method,
            path,
            query,
            {"host": "ledger.local", "user-agent": "tests"}
            | ({"content-type": content_type} if content_type is not None else {}),
            payload,
            parameters,
            "127.0.0.1",
        )
        if base64_body:  # as API Gateway passes a body it did not take for text
            event["body"] = base64.b64encode(payload).decode() + ("!" if mangle_base64 else "")
            event["isBase64Encoded"] = True
        response = ledger_api_handler.lambda_handler(
            event, LocalLambdaContext("ledger_api"), self.dependencies
        )
        headers = {name.lower(): value for name, value in (response.get("headers") or {}).items()}
        answer = Answer(response["statusCode"], headers, json.loads(response["body"]))
        check_against_contract(method, path, answer.status, headers, answer.body)
        self.answers.append(answer)
        return answer

    def get(self, path: str, query: str = "") -> Answer:
        return self.request("GET", path, query=query)

    def put(self, path: str, body: Any = None, **kwargs: Any) -> Answer:
        return self.request("PUT", path, body, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Answer:
        return self.request("POST", path, body, **kwargs)


@cache
def template_routes() -> tuple[Route, ...]:
    return tuple(
        Route(method, path, "ledger_api", lambda *_: {}) for method, path in http_routes("LedgerApiFunction")
    )


def _route_for(method: str, path: str) -> tuple[Route, dict[str, str]]:
    for route in template_routes():
        parameters = route.match(method, path)
        if parameters is not None:
            return route, parameters
    # API Gateway would answer this itself; the handler is still made to answer it sensibly.
    return Route(method, path, "ledger_api", lambda *_: {}), {}
