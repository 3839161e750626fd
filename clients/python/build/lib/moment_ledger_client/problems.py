"""What the client raises: one exception per kind of answer, each carrying the RFC 9457 problem.

LedgerClientError            anything this client raises
├── LedgerUnreachable        no answer (connection refused, dropped, timed out), after the retries
└── LedgerProblem            the API answered with an error; status, problem, title, detail, ...
    ├── RequestInvalid       400, 413, 415, 428: fix the request (`errors` lists the fields)
    ├── Forbidden            403: the signature or the caller's IAM policy (API Gateway's answer)
    ├── NotFound             404
    ├── Conflict             409: stale-version (current_version, current_balance), charge-id-reused, ...
    ├── Unprocessable        422
    ├── LedgerBusy           429, 502, 503, 504 still, after the retries (retry later)
    └── ServerError          500 and any other 5xx
"""

from __future__ import annotations

from typing import Any

PROBLEM_TYPE_PREFIX = "tag:moment-balance-sync,2026:problem/"
_STANDARD_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})


class LedgerClientError(Exception):
    """Anything this client raises."""


class LedgerUnreachable(LedgerClientError):
    """No answer from the API, even after the retries."""


class LedgerProblem(LedgerClientError):
    """An error answer. `problem` is the slug of `type` (e.g. "stale-version"), `extensions` the
    problem's other members (e.g. current_version), `errors` the field errors of a 400."""

    def __init__(self, status: int, document: dict[str, Any], retry_after: float | None = None) -> None:
        self.status = status
        self.type = str(document.get("type") or "about:blank")
        self.problem = (
            self.type.removeprefix(PROBLEM_TYPE_PREFIX) if self.type.startswith(PROBLEM_TYPE_PREFIX) else None
        )
        self.title = str(document.get("title") or document.get("message") or f"HTTP {status}")
        self.detail = str(document.get("detail") or document.get("message") or self.title)
        self.extensions = {name: value for name, value in document.items() if name not in _STANDARD_MEMBERS}
        raw_errors = document.get("errors")
        self.errors: list[dict[str, str]] = raw_errors if isinstance(raw_errors, list) else []
        self.retry_after = retry_after
        super().__init__(f"{status} {self.problem or self.title}: {self.detail}")


class RequestInvalid(LedgerProblem):
    pass


class Forbidden(LedgerProblem):
    pass


class NotFound(LedgerProblem):
    pass


class Conflict(LedgerProblem):
    @property
    def current_version(self) -> int | None:
        value = self.extensions.get("current_version")
        return value if isinstance(value, int) else None

    @property
    def current_balance(self) -> int | None:
        value = self.extensions.get("current_balance")
        return value if isinstance(value, int) else None


class Unprocessable(LedgerProblem):
    pass


class LedgerBusy(LedgerProblem):
    pass


class ServerError(LedgerProblem):
    pass


_BY_STATUS: dict[int, type[LedgerProblem]] = {
    400: RequestInvalid,
    413: RequestInvalid,
    415: RequestInvalid,
    428: RequestInvalid,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: Unprocessable,
    429: LedgerBusy,
    502: LedgerBusy,
    503: LedgerBusy,
    504: LedgerBusy,
}


def problem_for(status: int, document: dict[str, Any], retry_after: float | None = None) -> LedgerProblem:
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else RequestInvalid)
    return kind(status, document, retry_after)
