"""What the sandbox's routes speak: a parsed HTTP request, a response, and Moment's problem details.

Every error leaves the sandbox as an RFC 9457 problem (`application/problem+json`) shaped the way
Moment's API documents it: `{"type": "https://docs.momentco.io/errors#<slug>", "title", "status",
"detail", "instance"}`. Code anywhere below a route raises `Problem`; the route turns it into a response.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "https://docs.momentco.io/errors#"

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
}


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # percent-decoding is left to the route that reads a path parameter
    headers: Mapping[str, str]  # names lower-cased
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def with_header(self, name: str, value: str) -> Response:
        return replace(self, headers={**self.headers, name: value})

    def json(self) -> Any:
        return json.loads(self.body)


def json_response(status: int, payload: Any) -> Response:
    return Response(status, json.dumps(payload).encode(), {"content-type": JSON})


class Problem(Exception):
    """An error answer. `slug` is the fragment of the problem type URI, e.g. `not-found`."""

    def __init__(self, status: int, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail

    def to_response(self, instance: str) -> Response:
        payload = {
            "type": PROBLEM_TYPE_BASE + self.slug,
            "title": TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        return Response(self.status, json.dumps(payload).encode(), {"content-type": PROBLEM_JSON})


def invalid(detail: str) -> Problem:
    return Problem(400, "invalid-parameter", detail)


def missing(detail: str) -> Problem:
    return Problem(400, "missing-parameter", detail)


def not_found(detail: str) -> Problem:
    return Problem(404, "not-found", detail)


def conflict(detail: str) -> Problem:
    return Problem(409, "conflict", detail)


def json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 problem saying why it is not one."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise Problem(400, "invalid-body", f"the body is not valid JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise Problem(400, "invalid-body", "the body must be a JSON object")
    return parsed
