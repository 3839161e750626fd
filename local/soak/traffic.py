"""The soak's two outside parties, over real HTTP, and the record of everything they sent.

- `Deliveries`: Moment's webhook delivery. Each attempt is signed afresh (or forged, or stale, as the
  step says); an answer of 5xx or a dropped connection is retried with backoff, as Moment retries;
  several deliveries are in flight at once, so the order they arrive in is not the order they were
  started in.
- `Merchant`: the merchant's own systems calling the ledger API at the same time: charges (some sent
  twice, as a client retries), balance sets (read the version, set, and on 409 read again), new
  accounts, cash taken for bills (some sent twice; refused once the bill is voided), voids. A 503 (a
  throttled table) is retried, as a client would.

Both keep what they did in `Sent`, which `verdict` checks the tables against.
"""

from __future__ import annotations

import base64
import json
import queue
import secrets
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx

from moment_sandbox.webhooks import signature_header
from soak.workload import Balance, Bill, BillCash, Charge, MerchantStep, OpenAccount, SetBalance, VoidBill

MAX_DELIVERY_ATTEMPTS = 60  # Moment keeps trying for days; here, well past any injected fault
MAX_REQUEST_ATTEMPTS = 60
BACKOFF_SECONDS = (0.02, 0.5)  # first retry, cap


@dataclass
class Sent:
    """What went out, and how it was answered. Filled from several threads; read when all is quiet."""

    bodies: dict[str, bytes] = field(default_factory=dict)  # valid webhook id -> body
    answers: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # valid id -> statuses
    payments: dict[str, tuple[str, str, int]] = field(
        default_factory=dict
    )  # application -> (kind, ref, amount)
    messages_of: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # application -> ids
    strangers: set[str] = field(default_factory=set)  # applications for no one the merchant has
    ignored: set[str] = field(default_factory=set)  # webhook ids of events of another type
    rejected_ids: set[str] = field(default_factory=set)  # forged/stale deliveries under an id of their own
    rejected_answers: Counter[int] = field(default_factory=Counter)  # status -> forged/stale deliveries
    deliveries: int = 0
    duplicates: int = 0
    undelivered: list[str] = field(default_factory=list)  # valid ids never acknowledged
    charges: dict[tuple[str, str], dict[str, int]] = field(
        default_factory=lambda: defaultdict(dict)
    )  # (kind, ref) -> charge id -> amount, every charge the ledger API acknowledged
    balance_sets: Counter[tuple[str, str]] = field(default_factory=Counter)  # acknowledged, per balance
    opened: list[Balance] = field(default_factory=list)  # late accounts the ledger API acknowledged
    # bill ref -> payment id -> amount: every outside payment the ledger API acknowledged
    outside_payments: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    voided_bills: set[str] = field(default_factory=set)  # voids the ledger API acknowledged
    merchant_failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    body: bytes
    secret: str
    valid: bool
    seconds_off: int = 0  # signed this far from now (stale)
    body_sent: bytes | None = None  # a body other than the one signed (tampered)
    signature: str | None = None  # a made-up signature header


def _backoff(attempt: int) -> float:
    first, cap = BACKOFF_SECONDS
    return float(min(cap, first * 2 ** min(attempt, 10)))


class Deliveries:
    """Moment's delivery queue: `send` hands a delivery over; `workers` threads deliver them."""

    def __init__(self, api_url: str, sent: Sent, workers: int = 4, backlog: int = 32) -> None:
        self._url = f"{api_url}/webhooks/moment"
        self._sent = sent
        self._queue: queue.Queue[Delivery | None] = queue.Queue(maxsize=backlog)
        self._client = httpx.Client(timeout=30, trust_env=False)
        self._threads = [
            threading.Thread(target=self._work, name=f"soak-delivery-{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def send(self, delivery: Delivery) -> None:
        """Blocks while `backlog` deliveries wait: Moment does not run far ahead of the receiver."""
        self._queue.put(delivery)

    def close(self) -> None:
        """Deliver everything handed over, then stop."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        self._client.close()

    def _work(self) -> None:
        while (delivery := self._queue.get()) is not None:
            status = self._deliver(delivery)
            with self._sent.lock:
                if delivery.valid:
                    self._sent.answers[delivery.webhook_id].append(status)
                    if status != 200:
                        self._sent.undelivered.append(delivery.webhook_id)
                else:
                    self._sent.rejected_answers[status] += 1

    def _deliver(self, delivery: Delivery) -> int:
        status = 0
        for attempt in range(MAX_DELIVERY_ATTEMPTS):
            timestamp = int(time.time()) + delivery.seconds_off
            signature = delivery.signature or signature_header(
                [delivery.secret], delivery.webhook_id, timestamp, delivery.body
            )
            headers = {
                "content-type": "application/json",
                "webhook-id": delivery.webhook_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature,
            }
            try:
                response = self._client.post(
                    self._url, content=delivery.body_sent or delivery.body, headers=headers
                )
                status = response.status_code
            except httpx.TransportError:
                status = 0
            if 0 < status < 500:
                return status
            time.sleep(_backoff(attempt))
        return status


def made_up_signature() -> str:
    return "v1," + base64.b64encode(secrets.token_bytes(32)).decode()


class Merchant:
    """The merchant's systems: one thread working through its requests in order, beside Moment's."""

    def __init__(self, api_url: str, sent: Sent) -> None:
        self._client = httpx.Client(base_url=api_url, timeout=30, trust_env=False)
        self._sent = sent
        self._queue: queue.Queue[MerchantStep | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="soak-merchant", daemon=True)
        self._thread.start()

    def ask(self, step: MerchantStep) -> None:
        self._queue.put(step)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._client.close()

    def open_books(
        self, customers: dict[str, str], balances: list[Balance], charges: list[Charge], bills: list[Bill]
    ) -> None:
        """Before the traffic, in this thread: every customer, every first account, a charge on each,
        every bill."""
        for ref, model in customers.items():
            body = {"currency": "ZAR", "name": f"Soak {ref}"}
            if model == "accounts":
                body["balance_model"] = "accounts"
            self._request("PUT", f"/customers/{ref}", body)
        for balance in balances:
            if balance.kind == "account":
                self._open_account(balance)
        for charge in charges:
            self.charge(charge)
        for bill in bills:
            body = {"customer": bill.customer_ref, "currency": "ZAR", "amount_due": bill.amount_due}
            self._request("PUT", f"/bills/{bill.ref}", body)

    def _work(self) -> None:
        while (step := self._queue.get()) is not None:
            try:
                if isinstance(step, Charge):
                    self.charge(step)
                elif isinstance(step, SetBalance):
                    self._set_balance(step)
                elif isinstance(step, BillCash):
                    self._bill_cash(step)
                elif isinstance(step, VoidBill):
                    self._request("POST", f"/bills/{step.bill.ref}/void")
                    with self._sent.lock:
                        self._sent.voided_bills.add(step.bill.ref)
                elif isinstance(step, OpenAccount):
                    self._open_account(step.account)
                    self.charge(Charge(step.account, f"open-{step.account.ref}", step.first_charge, False))
                    with self._sent.lock:
                        self._sent.opened.append(step.account)
            except Exception as error:  # recorded, and the verdict fails on it; the traffic goes on
                with self._sent.lock:
                    self._sent.merchant_failures.append(f"{step}: {error}")

    def _open_account(self, account: Balance) -> None:
        self._request(
            "PUT", f"/accounts/{account.ref}", {"customer_ref": account.customer_ref, "currency": "ZAR"}
        )

    def charge(self, charge: Charge) -> None:
        target = charge.target
        body = {"id": charge.charge_id, "amount": charge.amount}
        path = f"/{target.kind}s/{target.ref}/charges"
        first = self._request("POST", path, body)
        if charge.sent_twice:
            again = self._request("POST", path, body)
            if again.status_code != 200 or again.json() != first.json():
                raise AssertionError(f"a charge sent twice was answered {again.status_code}: {again.text}")
        with self._sent.lock:
            self._sent.charges[(target.kind, target.ref)][charge.charge_id] = charge.amount

    def _bill_cash(self, step: BillCash) -> None:
        path = f"/bills/{step.bill.ref}/payments"
        body = {"id": step.payment_id, "amount": step.amount}
        first = self._request("POST", path, body, accept=(409,))
        if first.status_code == 409:  # the bill is voided: the counter refuses the cash
            if step.bill.ref not in self._sent.voided_bills:
                raise AssertionError(f"cash for {step.bill.ref}, not voided, refused: {first.text}")
            return
        if step.sent_twice:
            again = self._request("POST", path, body)
            if again.status_code != 200 or again.json() != first.json():
                raise AssertionError(f"cash sent twice was answered {again.status_code}: {again.text}")
        with self._sent.lock:
            self._sent.outside_payments[step.bill.ref][step.payment_id] = step.amount

    def _set_balance(self, step: SetBalance) -> None:
        path = f"/{step.target.kind}s/{step.target.ref}"
        for _ in range(MAX_REQUEST_ATTEMPTS):
            version = self._request("GET", path).json()["version"]
            answer = self._request(
                "PUT",
                f"{path}/balance",
                {"balance": step.balance, "expected_version": version},
                accept=(409,),
            )
            if answer.status_code == 200:
                with self._sent.lock:
                    self._sent.balance_sets[(step.target.kind, step.target.ref)] += 1
                return
        raise AssertionError(f"{path}: the balance never held still long enough to be set")

    def _request(
        self, method: str, path: str, body: Any = None, accept: tuple[int, ...] = ()
    ) -> httpx.Response:
        """Retried on 503 and dropped connections; anything else but 2xx or `accept` is a failure."""
        for attempt in range(MAX_REQUEST_ATTEMPTS):
            try:
                response = self._client.request(method, path, json=body)
            except httpx.TransportError:
                time.sleep(_backoff(attempt))
                continue
            if response.status_code == 503:
                time.sleep(_backoff(attempt))
                continue
            if response.is_success or response.status_code in accept:
                return response
            raise AssertionError(f"{method} {path} -> {response.status_code}: {response.text}")
        raise AssertionError(f"{method} {path} still unavailable after {MAX_REQUEST_ATTEMPTS} attempts")


class Moment:
    """Moment's side of the traffic: payments made in the sandbox (over its control API), then their
    webhooks handed to `Deliveries`; which balances are on Moment, refreshed now and then."""

    def __init__(self, sandbox_url: str) -> None:
        self._client = httpx.Client(base_url=sandbox_url, timeout=30, trust_env=False)
        self.on_moment: set[tuple[str, str]] = set()
        self.bills_on_moment: set[str] = set()

    def refresh(self) -> dict[str, Any]:
        state: dict[str, Any] = self._client.get("/_sandbox/state").json()
        self.on_moment = {
            (kind, item["external_reference"])
            for kind in ("customer", "account")
            for item in state[f"{kind}s"]
            if item.get("external_reference") and item.get("balance") is not None
        }
        self.bills_on_moment = {item["external_reference"] for item in state.get("bills", [])}
        return state

    def pay(self, order: dict[str, Any]) -> dict[str, Any]:
        response = self._client.post("/_sandbox/payments", json=order)
        response.raise_for_status()
        payment: dict[str, Any] = response.json()
        return payment

    def faults(self) -> dict[str, Any]:
        faults: dict[str, Any] = self._client.get("/_sandbox/faults").json()
        return faults

    def set_faults(self, **changes: Any) -> None:
        self._client.post("/_sandbox/faults", json=changes).raise_for_status()

    def close(self) -> None:
        self._client.close()


def event_body(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()
