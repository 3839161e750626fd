"""The simulation's Moment: the sandbox's Billing API (`local/moment_sandbox`, its store, validation and
Idempotency-Key rules) run in-process behind an httpx.MockTransport, with Moment's faults in front of it.

Moment's behaviour is a mode the state machine sets (`healthy`, `flaky`, `unavailable`, `throttled`,
`lose_answers`), and a crash can strike just before a request leaves or just after Moment carried it
out. It keeps the ground truth the checks need: every payment Moment applied (and whether it lowered
the balance), and, for each object, which payments it had applied when the pusher last read it, so a
PATCH that overwrites a payment the pusher had already seen is caught as it happens.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx

from moment_sandbox import store as sandbox_store
from moment_sandbox.billing_api import BillingApi
from moment_sandbox.messages import Request
from moment_sandbox.moment import FakeMoment
from moment_sandbox.settings import SandboxSettings
from simulation.storage import Crash

MODES = ("healthy", "flaky", "unavailable", "throttled", "lose_answers", "refuses_writes")
WRITES = ("POST", "PATCH")


@dataclass
class Payment:
    application_id: str
    kind: str  # "customer" or "account"
    moment_id: str
    amount: int
    currency: str
    lowered: bool  # Moment lowered the object's balance itself
    sequence: int  # Moment's own order of events (payments and reads)


@dataclass
class MomentPlan:
    """Crash for one invocation: at the k-th Moment request (odd: before it leaves; even: after Moment
    carried it out, its answer never read)."""

    crash_at: int | None = None
    calls: int = 0
    patches: int = 0  # the PATCHes Moment carried out (their answers read or not)


@dataclass
class MomentModel:
    api_key: str
    random: random.Random
    lowers_balances: bool
    on_erased: Callable[[str], None]  # told when a PATCH overwrites a payment read before it
    mode: str = "healthy"
    plan: MomentPlan = field(default_factory=MomentPlan)
    payments: list[Payment] = field(default_factory=list)
    bill_payments: list[Payment] = field(default_factory=list)  # kind "bill", apart from the balances'
    faults_injected: dict[str, int] = field(default_factory=dict)
    ledger_has: Callable[[str], bool] = lambda _application_id: True

    def __post_init__(self) -> None:
        self.fake = FakeMoment(SandboxSettings(api_key=self.api_key, background_delivery=False))
        self.api = BillingApi(self.fake)
        self._sequence = itertools.count(1)
        self._ids = itertools.count(1)
        self._read_at: dict[str, int] = {}  # Moment id -> sequence of the last GET of it
        # Deterministic ids (the sandbox draws them from `secrets`): a seed must replay exactly.
        self._new_id = sandbox_store.new_id
        sandbox_store.new_id = lambda prefix, length=21: f"{prefix}sim{next(self._ids):0{length - 3}d}"

    def close(self) -> None:
        sandbox_store.new_id = self._new_id
        self.fake.close()

    @property
    def store(self) -> sandbox_store.BillingStore:
        return self.fake.store

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def arm(self, plan: MomentPlan) -> None:
        self.plan = plan

    def disarm(self) -> None:
        self.plan = MomentPlan()

    def _count(self, kind: str) -> None:
        self.faults_injected[kind] = self.faults_injected.get(kind, 0) + 1

    # --- the Billing API, with Moment's faults -----------------------------------------------------

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.plan.calls += 1
        call = self.plan.calls
        crash_at = self.plan.crash_at
        if crash_at is not None and crash_at % 2 and (crash_at + 1) // 2 == call:
            self._count("crash before a Moment request")
            raise Crash(f"before Moment request {call} ({request.method} {request.url.path})")
        fault = self._draw_fault(request.method in WRITES)
        if fault == "503":
            self._count("Moment 503")
            return httpx.Response(503, json={"title": "Service Unavailable", "status": 503})
        if fault == "429":
            self._count("Moment 429")
            return httpx.Response(
                429, headers={"Retry-After": "2"}, json={"title": "Too Many", "status": 429}
            )
        if fault == "connect":
            self._count("Moment unreachable")
            raise httpx.ConnectTimeout("injected: never reached Moment", request=request)
        answer = self._carry_out(request)
        if request.method == "PATCH":
            self.plan.patches += 1
        if crash_at is not None and crash_at % 2 == 0 and crash_at // 2 == call:
            self._count("crash after Moment carried a request out")
            raise Crash(f"after Moment request {call} ({request.method} {request.url.path}) was carried out")
        if fault == "lost":
            self._count("Moment answer lost")
            raise httpx.ReadTimeout("injected: carried out, answer lost", request=request)
        return answer

    def _draw_fault(self, write: bool) -> str | None:
        """`lose_answers`: every write carried out and its answer lost; `refuses_writes`: every write
        answered 503 before it is carried out (reads are answered in both)."""
        if self.mode == "unavailable" or (self.mode == "refuses_writes" and write):
            return "503"
        if self.mode == "throttled":
            return "429"
        if self.mode == "lose_answers" and write:
            return "lost"
        if self.mode == "flaky":
            roll = self.random.random()
            for rate, fault in ((0.08, "429"), (0.08, "503"), (0.05, "connect"), (0.08, "lost")):
                if roll < rate:
                    return fault
                roll -= rate
        return None

    def _carry_out(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        target = unquote(path.rsplit("/", 1)[-1]) if path.count("/") >= 3 else None
        if request.method == "PATCH" and target is not None and "/bills/" in path:
            self._check_bill_patch(target, request.content)
        elif request.method == "PATCH" and target is not None:
            self._check_patch(path, target)
        answer = self.api.handle(
            Request(
                request.method,
                path,
                {name.lower(): value for name, value in request.headers.items()},
                request.content,
            )
        )
        if request.method == "GET" and answer.status == 200:
            self._read_at[json.loads(answer.body)["id"]] = next(self._sequence)
        return httpx.Response(answer.status, headers=dict(answer.headers), content=answer.body)

    def _check_patch(self, path: str, key: str) -> None:
        """A PATCH sets an absolute balance: any payment Moment lowered the balance by, that it had
        applied before the pusher's read, and that the ledger has not applied, is erased by it."""
        kind = "account" if "/accounts/" in path else "customer"
        found = self.store._accounts.find(key) if kind == "account" else self.store._customers.find(key)
        if found is None:
            return
        read_at = self._read_at.get(found.id, 0)
        for payment in self.payments:
            if (
                payment.moment_id == found.id
                and payment.lowered
                and payment.sequence < read_at
                and not self.ledger_has(payment.application_id)
            ):
                self.on_erased(
                    f"PATCH {path} overwrote payment {payment.application_id} ({payment.amount}) that Moment "
                    "had applied before the pusher read the balance, and that the ledger has not applied"
                )

    def _check_bill_patch(self, key: str, content: bytes) -> None:
        """A PATCH sets a bill's cumulative amount_paid: one below the payments Moment took on the bill
        before the pusher's last read of it erases a Moment payment (Moment counts its own)."""
        found = self.store._bills.find(key)
        sent = json.loads(content or b"{}").get("amount_paid")
        if found is None or not isinstance(sent, int):
            return
        read_at = self._read_at.get(found.id, 0)
        seen = sum(
            payment.amount
            for payment in self.bill_payments
            if payment.moment_id == found.id and payment.sequence < read_at
        )
        if sent < seen:
            self.on_erased(
                f"PATCH of bill {found.external_reference} set amount_paid {sent}, below the {seen} Moment "
                "itself took on it before the pusher read it: a Moment payment erased"
            )

    # --- Moment's own doings ---------------------------------------------------------------------------

    def pay(self, kind: str, moment_id: str, amount: int) -> tuple[Payment, dict[str, Any]]:
        """A customer pays: Moment applies it (lowering the balance if it does that) and makes its webhook."""
        target = self.store.apply_payment(kind, moment_id, amount, self.lowers_balances)  # type: ignore[arg-type]
        number = len(self.payments) + 1
        payment = Payment(
            f"ob_sim{number:06d}",
            kind,
            moment_id,
            amount,
            target.currency,
            self.lowers_balances and target.balance is not None,
            next(self._sequence),
        )
        self.payments.append(payment)
        data: dict[str, Any] = {
            "id": payment.application_id,
            "amount": amount,
            "currency": target.currency,
            "payment_id": f"pay_sim{number:06d}",
            "customer_id": target.customer_id,
        }
        if target.account_id is not None:
            data["account_id"] = target.account_id
        return payment, {"id": f"evt_sim{number:06d}", "type": "obligation.amount_applied", "data": data}

    def pay_bill(self, bill_id: str, amount: int, parent_ids: bool) -> tuple[Payment, dict[str, Any]] | None:
        """A payer pays a bill at Moment (the sandbox's rules: partial payments allowed, no overpayment,
        none on a voided bill): its amount_paid rises and Moment makes the webhook with `data.bill_id`,
        its parent ids only if `parent_ids` (Moment does not document whether they come). None if
        Moment would not take it."""
        try:
            target = self.store.pay_bill(bill_id, amount, self.fake.settings.bill_rules)
        except Exception:  # the sandbox's 409/422: voided, or more than remains
            return None
        number = len(self.bill_payments) + 1
        payment = Payment(
            f"ob_simbill{number:06d}", "bill", bill_id, amount, target.currency, False, next(self._sequence)
        )
        self.bill_payments.append(payment)
        data: dict[str, Any] = {
            "id": payment.application_id,
            "amount": amount,
            "currency": target.currency,
            "payment_id": f"pay_simbill{number:06d}",
            "bill_id": bill_id,
        }
        if parent_ids:
            data["customer_id"] = target.customer_id
            if target.account_id is not None:
                data["account_id"] = target.account_id
        event = {"id": f"evt_simbill{number:06d}", "type": "obligation.amount_applied", "data": data}
        return payment, event

    def bills(self) -> list[dict[str, Any]]:
        """Every bill Moment holds, in its shape, with `moment_payments`: the part of amount_paid paid at
        Moment (the rest was PATCHed)."""
        return self.store.snapshot(self.fake.settings.bill_rules)["bills"]

    def objects(self) -> list[tuple[str, dict[str, Any]]]:
        """Every customer and account Moment holds, as ("customer"|"account", its JSON)."""
        snapshot = self.store.snapshot()
        return [("customer", item) for item in snapshot["customers"]] + [
            ("account", item) for item in snapshot["accounts"]
        ]

    def find(self, kind: str, key: str) -> dict[str, Any] | None:
        if kind == "bill":
            bill = self.store._bills.find(key)
            return bill.to_json(self.fake.settings.bill_rules) if bill is not None else None
        registry = self.store._accounts if kind == "account" else self.store._customers
        found = registry.find(key)
        return found.to_json() if found is not None else None

    def create_outside(self, kind: str, reference: str, balance: int, owner: str | None = None) -> str | None:
        """An object the merchant made at Moment without the ledger (a migration, a dashboard): None if
        the reference is taken."""
        fields = {"external_reference": reference, "currency": "ZAR", "balance": balance}
        try:
            if kind == "customer":
                return str(self.store.create_customer(fields)["id"])
            owner_fields = {"external_reference": owner or f"outside-{reference}", "currency": "ZAR"}
            existing = self.store._customers.find(owner_fields["external_reference"])
            created = self.store.create_account(fields, existing.id if existing else owner_fields)
            return str(created["id"])
        except Exception:  # the sandbox's 409: already there
            return None
