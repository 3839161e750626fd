"""A client for Moment Balance Sync's ledger API: `LedgerClient(url, region=...)`, typed problems."""

from moment_ledger_client.client import LedgerAnswer, LedgerClient
from moment_ledger_client.problems import (
    Conflict,
    Forbidden,
    LedgerBusy,
    LedgerClientError,
    LedgerProblem,
    LedgerUnreachable,
    NotFound,
    RequestInvalid,
    ServerError,
    Unprocessable,
)

__all__ = [
    "Conflict",
    "Forbidden",
    "LedgerAnswer",
    "LedgerBusy",
    "LedgerClient",
    "LedgerClientError",
    "LedgerProblem",
    "LedgerUnreachable",
    "NotFound",
    "RequestInvalid",
    "ServerError",
    "Unprocessable",
]
