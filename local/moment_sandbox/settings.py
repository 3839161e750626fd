"""How a sandbox is set up: every setting in one dataclass, and how the environment sets them.

| Setting | Environment variable | Default |
|---|---|---|
| `port` | `LOCAL_SANDBOX_PORT` | 0 (any free port) in code; 4010 from the environment |
| `api_key` | `SANDBOX_API_KEY` | `made_up_values.LOCAL_MOMENT_API_KEY` |
| `webhook_url` | `SANDBOX_WEBHOOK_URL` | None in code (deliveries are `skipped`); from the environment, (1) |
| `webhook_secrets` | `MOMENT_WEBHOOK_SECRET` (`whsec_…`, space-separated) | `LOCAL_WEBHOOK_SECRET` (2) |
| `applies_payments` | `SANDBOX_APPLIES_PAYMENTS` | true: a payment lowers the balance |
| `background_delivery` | `SANDBOX_BACKGROUND_DELIVERY` | true: webhooks go from a worker thread |
| `webhook_max_attempts` | `SANDBOX_WEBHOOK_MAX_ATTEMPTS` | 5 |
| `webhook_base_delay_seconds` | `SANDBOX_WEBHOOK_BASE_DELAY_SECONDS` | 1.0 (then 2, 4, 8 s) |
| `webhook_timeout_seconds` | `SANDBOX_WEBHOOK_TIMEOUT_SECONDS` | 10 |
| `faults.fail_429_rate` | `SANDBOX_FAIL_429_RATE` | 0.0 |
| `faults.fail_500_rate` | `SANDBOX_FAIL_500_RATE` | 0.0 |
| `faults.latency_ms` | `SANDBOX_LATENCY_MS` | 0 |
| `faults.timeout_rate` | `SANDBOX_TIMEOUT_RATE` | 0.0 (carried out, answered `timeout_ms` late) |
| `faults.timeout_ms` | `SANDBOX_TIMEOUT_MS` | 11000 (past the Moment client's 10 s read timeout) |
| `seed` | `SANDBOX_SEED` | 0 (the fault draws' seed) |
| `bill_parent_ids` | `SANDBOX_BILL_PARENT_IDS` | true: a bill's webhook names its parent ids (3) |
| `bill_underpayment_allowed` | `SANDBOX_BILL_UNDERPAYMENT_ALLOWED` | true: a bill may be paid in parts |
| `bill_overpayment_allowed` | `SANDBOX_BILL_OVERPAYMENT_ALLOWED` | false (a bill's `payment_rules`) |
| `bill_overpaid_patch` | `SANDBOX_BILL_OVERPAID_PATCH` | `refuse` (422), or `cap`, `accept` (4) |
| `paid_bill_patch` | `SANDBOX_PAID_BILL_PATCH` | `refuse` (422), or `apply`, `ignore` (5) |
| `refuse_void_with_payments` | `SANDBOX_REFUSE_VOID_WITH_PAYMENTS` | false: payments do not stop a void |

(1) the local stack's receiver, `http://127.0.0.1:${LOCAL_API_PORT:-3000}/webhooks/moment`; set
`SANDBOX_WEBHOOK_URL=` (empty) for none. (2) The same variable and default as the local stack's,
so the receiver accepts what the sandbox signs. Both made-up defaults are in
`local_stack/made_up_values.py`. (3) `customer_id`, and `account_id` on an account's bill, beside
`bill_id` (Moment does not document whether they come). (4) What a PATCH of `amount_paid` above
`amount_due` does when overpayment is not allowed: refused, stored as `amount_due`, or stored. (5)
What a PATCH that changes a `paid` bill's `amount_paid` does: refused, carried out (the status follows),
or answered 200 with nothing changed. Moment's reference settles neither (4) nor (5).
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from local_stack.made_up_values import LOCAL_MOMENT_API_KEY, LOCAL_WEBHOOK_SECRET
from moment_sandbox.faults import DEFAULT_TIMEOUT_MS, Faults
from moment_sandbox.webhooks import DeliveryPolicy, signing_key

DEFAULT_STANDALONE_PORT = 4010
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})

# Moment's reference leaves open what these PATCHes do; the pusher never sends them, and a setting
# picks each behaviour so a test can show it does not matter.
OverpaidPatch = Literal["refuse", "cap", "accept"]
PaidBillPatch = Literal["refuse", "apply", "ignore"]


@dataclass(frozen=True)
class BillRules:
    """How the sandbox treats bills: the settings named `bill_…`, `paid_bill_patch`, `refuse_void_…`."""

    parent_ids: bool = True
    underpayment_allowed: bool = True
    overpayment_allowed: bool = False
    overpaid_patch: OverpaidPatch = "refuse"
    paid_patch: PaidBillPatch = "refuse"
    refuse_void_with_payments: bool = False

    def __post_init__(self) -> None:
        if self.overpaid_patch not in get_args(OverpaidPatch):
            raise ValueError(f"bill_overpaid_patch must be one of {', '.join(get_args(OverpaidPatch))}")
        if self.paid_patch not in get_args(PaidBillPatch):
            raise ValueError(f"paid_bill_patch must be one of {', '.join(get_args(PaidBillPatch))}")


@dataclass(frozen=True)
class SandboxSettings:
    host: str = "127.0.0.1"
    port: int = 0
    api_key: str = field(default=LOCAL_MOMENT_API_KEY, repr=False)
    webhook_url: str | None = None
    webhook_secrets: tuple[str, ...] = field(default=(LOCAL_WEBHOOK_SECRET,), repr=False)
    applies_payments: bool = True
    background_delivery: bool = True
    webhook_max_attempts: int = 5
    webhook_base_delay_seconds: float = 1.0
    webhook_timeout_seconds: float = 10.0
    faults: Faults = field(default_factory=Faults)
    seed: int = 0
    log_requests: bool = False
    bill_parent_ids: bool = True
    bill_underpayment_allowed: bool = True
    bill_overpayment_allowed: bool = False
    bill_overpaid_patch: OverpaidPatch = "refuse"
    paid_bill_patch: PaidBillPatch = "refuse"
    refuse_void_with_payments: bool = False

    def __post_init__(self) -> None:
        _ = self.bill_rules  # checks the bill settings
        check_webhook_url(self.webhook_url)
        check_webhook_secrets(self.webhook_secrets)
        if not self.api_key:
            raise ValueError("api_key must not be empty")
        if self.webhook_max_attempts < 1:
            raise ValueError("webhook_max_attempts must be at least 1")
        if self.webhook_base_delay_seconds < 0 or self.webhook_timeout_seconds <= 0:
            raise ValueError("webhook delays must not be negative, and the timeout must be positive")

    @property
    def delivery_policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(
            max_attempts=self.webhook_max_attempts,
            base_delay_seconds=self.webhook_base_delay_seconds,
            timeout_seconds=self.webhook_timeout_seconds,
        )

    @property
    def bill_rules(self) -> BillRules:
        return BillRules(
            parent_ids=self.bill_parent_ids,
            underpayment_allowed=self.bill_underpayment_allowed,
            overpayment_allowed=self.bill_overpayment_allowed,
            overpaid_patch=self.bill_overpaid_patch,
            paid_patch=self.paid_bill_patch,
            refuse_void_with_payments=self.refuse_void_with_payments,
        )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> SandboxSettings:
        receiver = f"http://127.0.0.1:{environ.get('LOCAL_API_PORT', '3000')}/webhooks/moment"
        return cls(
            port=int(environ.get("LOCAL_SANDBOX_PORT", DEFAULT_STANDALONE_PORT)),
            api_key=environ.get("SANDBOX_API_KEY", LOCAL_MOMENT_API_KEY),
            webhook_url=environ.get("SANDBOX_WEBHOOK_URL", receiver) or None,
            webhook_secrets=tuple(environ.get("MOMENT_WEBHOOK_SECRET", "").split())
            or (LOCAL_WEBHOOK_SECRET,),
            applies_payments=_flag(environ, "SANDBOX_APPLIES_PAYMENTS", default=True),
            background_delivery=_flag(environ, "SANDBOX_BACKGROUND_DELIVERY", default=True),
            webhook_max_attempts=int(environ.get("SANDBOX_WEBHOOK_MAX_ATTEMPTS", "5")),
            webhook_base_delay_seconds=float(environ.get("SANDBOX_WEBHOOK_BASE_DELAY_SECONDS", "1.0")),
            webhook_timeout_seconds=float(environ.get("SANDBOX_WEBHOOK_TIMEOUT_SECONDS", "10")),
            faults=Faults(
                fail_429_rate=float(environ.get("SANDBOX_FAIL_429_RATE", "0")),
                fail_500_rate=float(environ.get("SANDBOX_FAIL_500_RATE", "0")),
                latency_ms=int(environ.get("SANDBOX_LATENCY_MS", "0")),
                timeout_rate=float(environ.get("SANDBOX_TIMEOUT_RATE", "0")),
                timeout_ms=int(environ.get("SANDBOX_TIMEOUT_MS", str(DEFAULT_TIMEOUT_MS))),
            ),
            seed=int(environ.get("SANDBOX_SEED", "0")),
            bill_parent_ids=_flag(environ, "SANDBOX_BILL_PARENT_IDS", default=True),
            bill_underpayment_allowed=_flag(environ, "SANDBOX_BILL_UNDERPAYMENT_ALLOWED", default=True),
            bill_overpayment_allowed=_flag(environ, "SANDBOX_BILL_OVERPAYMENT_ALLOWED", default=False),
            bill_overpaid_patch=_choice(environ, "SANDBOX_BILL_OVERPAID_PATCH", get_args(OverpaidPatch)),
            paid_bill_patch=_choice(environ, "SANDBOX_PAID_BILL_PATCH", get_args(PaidBillPatch)),
            refuse_void_with_payments=_flag(environ, "SANDBOX_REFUSE_VOID_WITH_PAYMENTS", default=False),
        )


def check_webhook_url(url: str | None) -> None:
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the webhook URL must be an http(s) URL, not {url!r}")


def check_webhook_secrets(secrets: tuple[str, ...]) -> None:
    if not secrets:
        raise ValueError("at least one webhook signing secret is needed")
    for secret in secrets:
        try:
            key = signing_key(secret)
        except (binascii.Error, ValueError):
            key = b""
        if not key:
            raise ValueError("a webhook signing secret must be whsec_ followed by base64 of the key")


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in TRUE_WORDS | FALSE_WORDS:
        return value in TRUE_WORDS
    raise ValueError(f"{name} must be true or false, not {value!r}")


def _choice(environ: Mapping[str, str], name: str, choices: tuple[str, ...]) -> Any:
    """One of `choices` (the first is the default when the variable is unset or empty)."""
    value = environ.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value
