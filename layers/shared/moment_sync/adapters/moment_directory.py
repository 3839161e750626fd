"""Moment's own record of a Moment id (for the re-drive of unmatched payments), through the client."""

from __future__ import annotations

from moment_sync.ledger.model import BalanceKind
from moment_sync.moment_client import MomentClient
from moment_sync.moment_errors import MomentNotFound


class MomentClientDirectory:
    def __init__(self, client: MomentClient) -> None:
        self._client = client

    def external_reference(self, kind: BalanceKind, moment_id: str) -> str | None:
        try:
            if kind is BalanceKind.ACCOUNT:
                return self._client.get_account(moment_id).external_reference
            return self._client.get_customer(moment_id).external_reference
        except MomentNotFound:
            return None
