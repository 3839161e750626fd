"""API Gateway (payload 2.0) responses: JSON bodies, and RFC 9457 problem details for errors."""

from __future__ import annotations

import json
from typing import Any

PROBLEM_TYPE_PREFIX = "tag:moment-balance-sync,2026:problem/"


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json", **(headers or {})},
        "body": json.dumps(body, separators=(",", ":")),
    }


def problem_response(
    status: int,
    problem: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> dict[str, Any]:
    """An RFC 9457 problem; `problem` is the slug documented in docs/api/problems.md."""
    body = {
        "type": PROBLEM_TYPE_PREFIX + problem,
        "title": title,
        "status": status,
        "detail": detail,
        **extensions,
    }
    return {
        "statusCode": status,
        "headers": {"content-type": "application/problem+json", **(headers or {})},
        "body": json.dumps(body, separators=(",", ":")),
    }
