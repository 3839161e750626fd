"""The merchant's way into the ledger, for the demo and the end-to-end tests: the ledger API over HTTP
when its handler exists, else the same use cases (`moment_sync.ledger.service`) called directly.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import httpx


class LedgerError(Exception):
    pass


class LedgerAccess(Protocol):
    via: str

    def put_customer(
        self, ref: str, *, currency: str, balance_model: str = "customer", name: str | None = None
    ) -> None: ...

    def put_account(self, ref: str, *, customer_ref: str, currency: str, name: str | None = None) -> None: ...

    def charge(self, kind: str, ref: str, charge_id: str, amount: int, description: str) -> None: ...

    def balance(self, kind: str, ref: str) -> dict[str, Any]:
        """The balance as the ledger API reads it back: `balance`, `version`, `sync`, `entries`…"""
        ...


class HttpLedger:
    """The ledger API through the local HTTP front (no IAM check locally)."""

    via = "the ledger API over HTTP"

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def put_customer(
        self, ref: str, *, currency: str, balance_model: str = "customer", name: str | None = None
    ) -> None:
        body = _present(currency=currency, balance_model=balance_model, name=name)
        self._expect(self._client.put(f"/customers/{ref}", json=body), 200, 201)

    def put_account(self, ref: str, *, customer_ref: str, currency: str, name: str | None = None) -> None:
        body = _present(customer_ref=customer_ref, currency=currency, name=name)
        self._expect(self._client.put(f"/accounts/{ref}", json=body), 200, 201)

    def charge(self, kind: str, ref: str, charge_id: str, amount: int, description: str) -> None:
        body = {"id": charge_id, "amount": amount, "description": description}
        self._expect(self._client.post(f"/{kind}s/{ref}/charges", json=body), 200, 201)

    def balance(self, kind: str, ref: str) -> dict[str, Any]:
        response = self._expect(self._client.get(f"/{kind}s/{ref}"), 200)
        view: dict[str, Any] = response.json()
        return view

    @staticmethod
    def _expect(response: httpx.Response, *statuses: int) -> httpx.Response:
        if response.status_code not in statuses:
            request = response.request
            raise LedgerError(
                f"{request.method} {request.url.path} -> {response.status_code} {response.text}"
            )
        return response


class DirectLedger:
    """`moment_sync.ledger.service` on the stack's tables, for while the ledger API is not built."""

    via = "moment_sync.ledger.service directly (the ledger API is not built yet)"

    def __init__(self, dynamodb: Any, ledger_table: str, events_table: str) -> None:
        from moment_sync.adapters.ledger_table import LedgerTable  # noqa: PLC0415
        from moment_sync.adapters.webhook_events_table import WebhookEventsTable  # noqa: PLC0415

        self._ledger = LedgerTable(dynamodb, ledger_table, WebhookEventsTable(dynamodb, events_table))

    def put_customer(
        self, ref: str, *, currency: str, balance_model: str = "customer", name: str | None = None
    ) -> None:
        from moment_sync.ledger import service  # noqa: PLC0415

        service.put_customer(
            self._ledger,
            ref,
            {"currency": currency, "balance_model": balance_model, "name": name},
            time.time(),
        )

    def put_account(self, ref: str, *, customer_ref: str, currency: str, name: str | None = None) -> None:
        from moment_sync.ledger import service  # noqa: PLC0415

        service.put_account(
            self._ledger, ref, {"customer_ref": customer_ref, "currency": currency, "name": name}, time.time()
        )

    def charge(self, kind: str, ref: str, charge_id: str, amount: int, description: str) -> None:
        from moment_sync.ledger import service  # noqa: PLC0415
        from moment_sync.ledger.model import BalanceKind, BalanceRef  # noqa: PLC0415

        service.post_charge(
            self._ledger,
            BalanceRef(BalanceKind(kind), ref),
            {"id": charge_id, "amount": amount, "description": description},
            time.time(),
        )

    def balance(self, kind: str, ref: str) -> dict[str, Any]:
        from moment_sync.ledger import service  # noqa: PLC0415
        from moment_sync.ledger.model import BalanceKind, BalanceRef  # noqa: PLC0415

        return service.read_balance(self._ledger, BalanceRef(BalanceKind(kind), ref), limit=1000)


def _present(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def ledger_access(stack: Any, api: httpx.Client) -> LedgerAccess:
    """HTTP through `api` when the stack serves the ledger API, else the use cases directly."""
    if stack.functions.has("LedgerApiFunction"):
        return HttpLedger(api)
    return DirectLedger(
        stack.client("dynamodb"), stack.names["LedgerTable"], stack.names["WebhookEventsTable"]
    )
