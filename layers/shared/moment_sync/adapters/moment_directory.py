"""Moment's own record of a Moment id (for the re-drive of unmatched payments), through the client.

The client is made on first use: a re-drive run with no unmatched payment never needs Moment, so a
missing or refused API key, or a Moment outage, never stops it finishing what the stream missed.
"""

from __future__ import annotations

from collections.abc import Callable

from moment_sync.ledger.model import BalanceKind
from moment_sync.moment_client import MomentBill, MomentClient
from moment_sync.moment_errors import MomentNotFound


class MomentClientDirectory:
    def __init__(self, client: Callable[[], MomentClient]) -> None:
        self._client = client

    def external_reference(self, kind: BalanceKind, moment_id: str) -> str | None:
        client = self._client()
        try:
            if kind is BalanceKind.ACCOUNT:
                return client.get_account(moment_id).external_reference
            return client.get_customer(moment_id).external_reference
        except MomentNotFound:
            return None

    def account_owner(self, account_id: str) -> tuple[str, str | None]:
        client = self._client()
        customer_id = client.get_account(account_id).customer_id
        try:
            return customer_id, client.get_customer(customer_id).external_reference
        except MomentNotFound:
            return customer_id, None

    def bill(self, bill_id: str) -> MomentBill | None:
        """Moment's bill (for an unmatched bill payment), None when Moment has none."""
        return self._client().get_bill(bill_id)
