"""`LedgerClient`: one method per operation of the ledger API (docs/api/openapi.yaml), named after its
operationId, each signed with SigV4 for `execute-api` and retried only where that is safe.

Retries: 429, 502, 503, 504 and a request that got no answer are sent again, after `retry-after` when
the API gives one (else a growing pause), with the very same body. Every write of this API is
idempotent on what that body carries (a charge's id, a balance's expected_version, a PUT's whole
state), so a retry after a lost answer finds the first one done and changes nothing more. Each
attempt is signed afresh (a signature lives 5 minutes).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlencode

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.session import Session

from moment_ledger_client.problems import LedgerUnreachable, problem_for

RETRIED_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER_SECONDS = 30.0
BalanceModel = Literal["customer", "accounts"]


@dataclass(frozen=True, slots=True)
class LedgerAnswer:
    """A successful answer: `created` is true for 201 (a new customer, account or charge)."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def created(self) -> bool:
        return self.status == 201

    def __getitem__(self, name: str) -> Any:
        return self.body[name]


class LedgerClient:
    """The ledger API at `base_url` (the stack's `LedgerApiUrl` output), as the caller's AWS identity.

    `credentials` and `region` default to botocore's own chain (environment, profile, instance or task
    role), as boto3 would find them. `transport` and `sleep` are for tests."""

    def __init__(
        self,
        base_url: str,
        *,
        region: str | None = None,
        credentials: Credentials | None = None,
        timeout: float = 10.0,
        max_attempts: int = 4,
        first_pause_seconds: float = 0.2,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        session = Session()
        self._region = region or session.get_config_variable("region")
        if not self._region:
            raise ValueError("no AWS region: pass region=, or set AWS_REGION")
        resolved = credentials or session.get_credentials()
        if resolved is None:
            raise ValueError("no AWS credentials: pass credentials=, or set AWS_PROFILE or AWS_ACCESS_KEY_ID")
        self._credentials = resolved
        self._base_url = base_url.rstrip("/")
        self._max_attempts = max_attempts
        self._first_pause = first_pause_seconds
        self._sleep = sleep
        self._http = httpx.Client(timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- customers and accounts -------------------------------------------------------------------

    def put_customer(
        self,
        ref: str,
        *,
        currency: str,
        balance_model: BalanceModel = "customer",
        name: str | None = None,
        email: str | None = None,
        phone: str | None = None,
    ) -> LedgerAnswer:
        """Create or replace a customer (fields left out are removed, as a PUT does)."""
        body = _present(currency=currency, balance_model=balance_model, name=name, email=email, phone=phone)
        return self._call("PUT", f"/customers/{_segment(ref)}", body)

    def get_customer(self, ref: str, *, limit: int | None = None, cursor: str | None = None) -> LedgerAnswer:
        """The customer's balance, sync state and entries, newest first (a page of them)."""
        return self._call("GET", f"/customers/{_segment(ref)}", query=_present(limit=limit, cursor=cursor))

    def put_account(
        self, ref: str, *, customer_ref: str, currency: str, name: str | None = None
    ) -> LedgerAnswer:
        body = _present(customer_ref=customer_ref, currency=currency, name=name)
        return self._call("PUT", f"/accounts/{_segment(ref)}", body)

    def get_account(self, ref: str, *, limit: int | None = None, cursor: str | None = None) -> LedgerAnswer:
        return self._call("GET", f"/accounts/{_segment(ref)}", query=_present(limit=limit, cursor=cursor))

    # --- money ------------------------------------------------------------------------------------

    def post_customer_charge(
        self, ref: str, *, charge_id: str, amount: int, description: str | None = None
    ) -> LedgerAnswer:
        """A charge in minor units (negative: a credit), once per `charge_id`: sent again, the same
        charge answers 200 with the same entry; a different one under that id is a Conflict."""
        body = _present(id=charge_id, amount=amount, description=description)
        return self._call("POST", f"/customers/{_segment(ref)}/charges", body)

    def post_account_charge(
        self, ref: str, *, charge_id: str, amount: int, description: str | None = None
    ) -> LedgerAnswer:
        body = _present(id=charge_id, amount=amount, description=description)
        return self._call("POST", f"/accounts/{_segment(ref)}/charges", body)

    def put_customer_balance(self, ref: str, *, balance: int, expected_version: int) -> LedgerAnswer:
        """An absolute balance, only at the version it was computed from (Conflict when stale: read
        again, recompute, send the new version)."""
        body = {"balance": balance, "expected_version": expected_version}
        return self._call("PUT", f"/customers/{_segment(ref)}/balance", body)

    def put_account_balance(self, ref: str, *, balance: int, expected_version: int) -> LedgerAnswer:
        body = {"balance": balance, "expected_version": expected_version}
        return self._call("PUT", f"/accounts/{_segment(ref)}/balance", body)

    # --- webhooks ---------------------------------------------------------------------------------

    def get_event(self, webhook_id: str) -> LedgerAnswer:
        """What became of a webhook Moment sent (by its webhook-id)."""
        return self._call("GET", f"/events/{_segment(webhook_id)}")

    # --- bills ------------------------------------------------------------------------------------

    def put_bill(
        self,
        ref: str,
        *,
        currency: str,
        amount_due: int,
        customer: str | None = None,
        account: str | None = None,
        bill_date: str | None = None,
        due_date: str | None = None,
        description: str | None = None,
    ) -> LedgerAnswer:
        """Raise a bill owed by `customer` or `account` (exactly one). Sent again, the same bill answers
        200; a different amount, currency, owner or date is a Conflict (`bill-immutable`): void it and
        raise a new one."""
        body = _present(
            customer=customer,
            account=account,
            currency=currency,
            amount_due=amount_due,
            bill_date=bill_date,
            due_date=due_date,
            description=description,
        )
        return self._call("PUT", f"/bills/{_segment(ref)}", body)

    def get_bill(self, ref: str, *, limit: int | None = None, cursor: str | None = None) -> LedgerAnswer:
        """The bill (amount due, paid, remaining, overpaid, status), its sync state and its payments."""
        return self._call("GET", f"/bills/{_segment(ref)}", query=_present(limit=limit, cursor=cursor))

    def post_bill_void(self, ref: str) -> LedgerAnswer:
        """Void the bill (idempotent); it keeps its payments, and Moment is told on the next push."""
        return self._call("POST", f"/bills/{_segment(ref)}/void")

    def post_bill_payment(
        self, ref: str, *, payment_id: str, amount: int, description: str | None = None
    ) -> LedgerAnswer:
        """A payment taken outside Moment, once per `payment_id` (sent again: 200, the same entry)."""
        body = _present(id=payment_id, amount=amount, description=description)
        return self._call("POST", f"/bills/{_segment(ref)}/payments", body)

    def get_customer_bills(
        self, ref: str, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> LedgerAnswer:
        """A customer's bills, open ones first (`status`: unpaid, paid or voided)."""
        query = _present(status=status, limit=limit, cursor=cursor)
        return self._call("GET", f"/customers/{_segment(ref)}/bills", query=query)

    def get_account_bills(
        self, ref: str, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> LedgerAnswer:
        query = _present(status=status, limit=limit, cursor=cursor)
        return self._call("GET", f"/accounts/{_segment(ref)}/bills", query=query)

    # --- the one way out ----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
    ) -> LedgerAnswer:
        url = self._base_url + path + (f"?{urlencode(query)}" if query else "")
        payload = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        for attempt in range(1, self._max_attempts + 1):
            last = attempt == self._max_attempts
            try:
                response = self._http.send(self._signed(method, url, payload))
            except httpx.TransportError as error:
                if last:
                    raise LedgerUnreachable(
                        f"{method} {path}: no answer after {attempt} attempts: {error}"
                    ) from error
                self._sleep(self._pause(attempt, None))
                continue
            if response.status_code < 400:
                return LedgerAnswer(response.status_code, _json(response))
            retry_after = _retry_after(response)
            if response.status_code in RETRIED_STATUSES and not last:
                self._sleep(self._pause(attempt, retry_after))
                continue
            raise problem_for(response.status_code, _json(response), retry_after)
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt

    def _signed(self, method: str, url: str, payload: bytes) -> httpx.Request:
        headers = {"content-type": "application/json"} if payload else {}
        request = AWSRequest(method=method, url=url, data=payload, headers=headers)
        SigV4Auth(self._credentials.get_frozen_credentials(), "execute-api", self._region).add_auth(request)
        return self._http.build_request(method, url, content=payload, headers=dict(request.headers.items()))

    def _pause(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_SECONDS)
        return float(self._first_pause * 2 ** (attempt - 1) * (0.5 + random.random()))  # noqa: S311 -- jitter


def _segment(value: str) -> str:
    return quote(value, safe="")


def _present(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError:
        return {"detail": response.text[:500]}
    return document if isinstance(document, dict) else {"detail": str(document)[:500]}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
