"""The sandbox's Moment without its HTTP server: the parts, wired together, and what they do together.

Owns the runtime settings (some may change while it runs), a payment from order to webhook, the
state snapshot, and reset. The Billing API and control routes (`billing_api.py`, `control.py`) and
`MomentSandbox` (`server.py`) all act through a `FakeMoment`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from moment_sandbox.faults import FaultInjector, Faults
from moment_sandbox.idempotency import IdempotencyKeys
from moment_sandbox.messages import conflict
from moment_sandbox.payments import PaymentOrder, amount_applied_event
from moment_sandbox.settings import SandboxSettings
from moment_sandbox.store import BillingStore, PaymentTarget
from moment_sandbox.webhooks import WebhookSender

# What `configure` may change while the sandbox runs; the rest is fixed when it is made.
RUNTIME_SETTINGS = frozenset(
    {
        "webhook_url",
        "webhook_secrets",
        "applies_payments",
        "bill_parent_ids",
        "bill_underpayment_allowed",
        "bill_overpayment_allowed",
        "bill_overpaid_patch",
        "paid_bill_patch",
        "refuse_void_with_payments",
    }
)


class FakeMoment:
    """`clock` is the wall clock (Unix seconds) of webhook timestamps and event times."""

    def __init__(
        self, settings: SandboxSettings | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._settings = settings or SandboxSettings()
        self._clock = clock
        self._settings_lock = threading.Lock()
        self.store = BillingStore()
        self.idempotency = IdempotencyKeys()
        self.faults = FaultInjector(self._settings.faults, self._settings.seed)
        self.webhooks = WebhookSender(
            self._settings.delivery_policy, self._settings.background_delivery, clock=clock
        )

    @property
    def settings(self) -> SandboxSettings:
        """The settings now, with the faults now (which `set_faults` may have changed)."""
        with self._settings_lock:
            return replace(self._settings, faults=self.faults.faults, seed=self.faults.seed)

    def configure(self, **changes: Any) -> SandboxSettings:
        """Change any of RUNTIME_SETTINGS (`applies_payments`, the bill rules…); ValueError if not allowed."""
        fixed = sorted(set(changes) - RUNTIME_SETTINGS)
        if fixed:
            raise ValueError(f"{fixed[0]} cannot change while the sandbox runs")
        with self._settings_lock:
            self._settings = replace(self._settings, **changes)
        return self.settings

    def set_faults(self, faults: Faults, seed: int | None = None) -> None:
        self.faults.configure(faults, seed)

    def pay(self, order: PaymentOrder) -> dict[str, Any]:
        """Apply a payment as Moment does, then send its `obligation.amount_applied` webhook."""
        settings = self.settings
        target = self._apply(order, settings)
        now = datetime.fromtimestamp(self._clock(), UTC)
        event = amount_applied_event(target, order, now, settings.bill_parent_ids)
        webhook_id = self.webhooks.send(
            event, settings.webhook_url, settings.webhook_secrets, order.duplicates
        )
        data = event["data"]
        return {
            "application_id": data["id"],
            "payment_id": data["payment_id"],
            "event_id": event["id"],
            "webhook_id": webhook_id,
            "customer_id": target.customer_id,
            "account_id": target.account_id,
            "amount": order.amount,
            "currency": target.currency,
            "balance": target.balance,
            "balance_lowered": _lowers_balance(order, target, settings.applies_payments),
            "bill_id": target.bill_id,
            "bill": target.bill,
            "event": event,
            "deliveries": self.webhooks.deliveries(webhook_id),
        }

    def state(self) -> dict[str, Any]:
        return {**self.store.snapshot(self.settings.bill_rules), "deliveries": self.webhooks.deliveries()}

    def reset(self) -> None:
        """Forget customers, accounts, bills, idempotency keys and deliveries; keep settings and faults."""
        self.store.reset()
        self.idempotency.reset()
        self.webhooks.forget()

    def wait_for_deliveries(self, timeout: float | None = None) -> bool:
        return self.webhooks.wait(timeout)

    def close(self) -> None:
        self.webhooks.close()

    def _apply(self, order: PaymentOrder, settings: SandboxSettings) -> PaymentTarget:
        if isinstance(order.target, str) and order.kind == "bill":
            return self.store.pay_bill(order.target, order.amount, settings.bill_rules)
        if isinstance(order.target, str):
            return self.store.apply_payment(order.kind, order.target, order.amount, settings.applies_payments)
        for moment_id in (order.target.customer_id, order.target.account_id, order.target.bill_id):
            if moment_id is not None and self.store.knows(moment_id):
                raise conflict(f"the sandbox knows {moment_id}: pay it as customer, account or bill instead")
        return order.target


def _lowers_balance(order: PaymentOrder, target: PaymentTarget, applies_payments: bool) -> bool:
    return applies_payments and isinstance(order.target, str) and target.balance is not None
