"""`make demo`: the whole flow on this machine alone, as a merchant would see it.

Starts the local stack (moto, the Moment sandbox, the HTTP front, the stream event source) and plays a
month at a gym: members on the customer-balance model and a family with two accounts, charges in the
ledger, balances pushed to Moment, payments at Moment (some delivered twice, one sent again under a
new message id), a forged webhook, a payment for a customer the merchant never opened, an event that
is not a payment, an authentic body that is not JSON, reconciliation from the stream, a new charge,
the next push and a re-drive; then a member on the bill model (an annual fee raised as a bill, part
paid at Moment, cash at the counter, paid off; a second bill voided). It prints what happens as it
happens and exits 0 only if the ledger and Moment agree on every balance and every bill and every
event ended as expected.

Moment's documentation leaves open whether Moment lowers a balance itself when it applies a payment,
so the demo plays the month both ways, unless SANDBOX_APPLIES_PAYMENTS says which.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import standardwebhooks

from local_stack.event_pipe import show_events
from local_stack.ledger_access import LedgerAccess, ledger_access
from local_stack.made_up_values import FORGER_WEBHOOK_SECRET, LOCAL_WEBHOOK_SECRET
from local_stack.stack import FUNCTION_LOG, LocalSettings, RunningStack, function_output_to, running_stack
from local_stack.template import ROOT

Say = Callable[[str], None]


@dataclass(frozen=True)
class Holder:
    """A balance the merchant keeps: a customer on the customer-balance model, or an account."""

    kind: str  # "customer" or "account"
    ref: str
    name: str
    charges: tuple[tuple[str, int, str], ...]  # (charge id, amount in cents, description)
    customer_ref: str | None = None  # an account's customer


MEMBERS = (
    Holder(
        "customer",
        "UCR1001",
        "Thandi Nkosi",
        (("C-1001-06", 45000, "June membership"), ("C-1001-PT", 30000, "Personal training")),
    ),
    Holder("customer", "UCR1002", "Pieter van Wyk", (("C-1002-06", 45000, "June membership"),)),
    Holder("customer", "UCR1003", "Ayesha Khan", (("C-1003-YR", 120000, "Annual membership"),)),
)
FAMILY = ("UCR2001", "Sipho Dlamini")  # on the account-balance model: one account per service
ACCOUNTS = (
    Holder("account", "UCR2001-GYM", "Gym", (("C-2001-GYM-06", 45000, "June membership"),), FAMILY[0]),
    Holder("account", "UCR2001-POOL", "Pool", (("C-2001-POOL-06", 18000, "Pool access"),), FAMILY[0]),
)
LATE_CHARGE = ("customer", "UCR1001", "C-1001-SMOOTHIE", 6500, "Smoothie bar")
UNKNOWN_CUSTOMER = "bcus_NotOneOfTheMerchants01"
# A member on the bill model: no running balance, discrete bills.
BILL_MEMBER = ("UCR3001", "Lerato Mokoena")
ANNUAL_FEE = ("FEE-UCR3001-2026", 240000, "2026-07-31", "Annual membership 2026")
LOCKER = ("LOCKER-UCR3001-2026", 15000, "2026-07-31", "Locker hire 2026")


@dataclass(frozen=True)
class Payment:
    story: str
    kind: str
    ref: str
    amount: int
    duplicates: int = 0


PAYMENTS = (
    Payment("Thandi pays her membership; Moment delivers the webhook twice", "customer", "UCR1001", 45000, 1),
    Payment("Pieter pays in full", "customer", "UCR1002", 45000),
    Payment("Sipho pays the pool account; delivered three times", "account", "UCR2001-POOL", 18000, 2),
    Payment("Sipho pays part of the gym account", "account", "UCR2001-GYM", 20000),
)


@dataclass
class DemoResult:
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)  # webhook id -> status[:reason]
    expected: dict[str, str] = field(default_factory=dict)
    forged_ids: list[str] = field(default_factory=list)
    bill_rows: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.ok = False
        self.problems.append(problem)


def rand(amount: int | None) -> str:
    if amount is None:
        return "-"
    sign = "-" if amount < 0 else ""
    return f"{sign}R{abs(amount) // 100:,}.{abs(amount) % 100:02d}"


# --- the scenario -------------------------------------------------------------------------------


def play(stack: RunningStack, say: Say, verbose: bool = True) -> DemoResult:
    """The month, against a running stack, over real HTTP. Returns what was checked."""
    result = DemoResult()
    step = say if verbose else (lambda _line: None)
    with (
        httpx.Client(base_url=stack.api_url, timeout=60, trust_env=False) as api,
        httpx.Client(base_url=stack.sandbox_url, timeout=60, trust_env=False) as moment,
    ):
        ledger = ledger_access(stack, api)
        _open_the_books(ledger, step)
        _push(api, step, "The pusher creates them on Moment, with their balances (POST /_local/push)")
        _show_moment(moment, step)
        paid = _customers_pay(api, moment, step, result)
        _other_deliveries(api, step, result, paid)
        step("\n5. A new charge, then the next push (Moment is brought up to the ledger)")
        kind, ref, charge_id, amount, description = LATE_CHARGE
        ledger.charge(kind, ref, charge_id, amount, description)
        step(f"   {ref}: {description} {rand(amount)}")
        _push(api, step, None)
        _show_moment(moment, step)
        _redrive(api, step)
        _bill_member(api, moment, step, result)
        _check(stack, ledger, moment, result)
        _check_bills(api, moment, result)
    _report(result, step if verbose else say)
    if stack.events is not None:  # what the merchant's other systems were told (docs/events.md)
        show_events(stack.events, step if verbose else say)
    return result


def _open_the_books(ledger: LedgerAccess, step: Say) -> None:
    step(f"\n1. The merchant's ledger: members, a family with two accounts, June's charges ({ledger.via})")
    for holder in MEMBERS:
        ledger.put_customer(holder.ref, currency="ZAR", name=holder.name)
        _charge(ledger, holder, step, f"{holder.ref} {holder.name}")
    ledger.put_customer(FAMILY[0], currency="ZAR", balance_model="accounts", name=FAMILY[1])
    for holder in ACCOUNTS:
        ledger.put_account(holder.ref, customer_ref=FAMILY[0], currency="ZAR", name=holder.name)
        _charge(ledger, holder, step, f"{holder.ref} {FAMILY[1]}, {holder.name.lower()} account")


def _charge(ledger: LedgerAccess, holder: Holder, step: Say, who: str) -> None:
    for charge_id, amount, description in holder.charges:
        ledger.charge(holder.kind, holder.ref, charge_id, amount, description)
    charges = ", ".join(f"{description} {rand(amount)}" for _, amount, description in holder.charges)
    step(f"   {who:<40} {charges}")


def _push(api: httpx.Client, step: Say, title: str | None) -> dict[str, Any]:
    if title:
        step(f"\n2. {title}")
    response = api.post("/_local/push")
    response.raise_for_status()
    report: dict[str, Any] = response.json()["result"]
    results = ", ".join(f"{name} {count}" for name, count in sorted(report["results"].items()))
    bills = ", ".join(
        f"{name} {count}" for name, count in sorted(report.get("bills", {}).get("results", {}).items())
    )
    done = "; ".join(part for part in (results, f"bills: {bills}" if bills else "") if part)
    step(f"   push run: {done or 'nothing pending'}")
    return report


def _show_moment(moment: httpx.Client, step: Say) -> None:
    state = moment.get("/_sandbox/state").json()
    shown = [
        f"{item['external_reference']} {rand(item['balance'])}"
        for item in state["customers"] + state["accounts"]
        if item["balance"] is not None
    ]
    step(f"   Moment now presents: {', '.join(shown)}")


def _customers_pay(api: httpx.Client, moment: httpx.Client, step: Say, result: DemoResult) -> dict[str, Any]:
    step("\n3. Members pay at Moment (POST /_sandbox/payments); Moment sends a signed webhook for each")
    paid_by_ref: dict[str, Any] = {}
    for payment in PAYMENTS:
        body = {payment.kind: payment.ref, "amount": payment.amount, "duplicates": payment.duplicates}
        paid = _pay(moment, body)
        paid_by_ref[payment.ref] = paid
        result.expected[paid["webhook_id"]] = "applied"
        step(f"   {payment.story} ({rand(payment.amount)})")
    paid = _pay(moment, {"unknown_customer_id": UNKNOWN_CUSTOMER, "amount": 9900})
    result.expected[paid["webhook_id"]] = "parked:unmatched"
    step(f"   A payment for {UNKNOWN_CUSTOMER}, whom the merchant never opened ({rand(9900)})")
    _wait(api, step, "Moment's deliveries, and the stream event source reconciling them")
    _show_moment(moment, step)
    return paid_by_ref


def _pay(moment: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = moment.post("/_sandbox/payments", json=body)
    response.raise_for_status()
    paid: dict[str, Any] = response.json()
    return paid


def _other_deliveries(api: httpx.Client, step: Say, result: DemoResult, paid: dict[str, Any]) -> None:
    step("\n4. What else arrives at POST /webhooks/moment")
    thandi = paid["UCR1001"]["customer_id"]
    not_a_payment = {"id": "evt_demo_created", "type": "customer.created", "data": {"id": thandi}}
    forged = {
        "id": "evt_demo_forged",
        "type": "obligation.amount_applied",
        "data": {"id": "ob_forged", "amount": 1_000_000, "currency": "ZAR", "customer_id": thandi},
    }
    deliveries: list[tuple[str, str, bytes, str, int, str | None]] = [
        (
            "Moment sends Pieter's payment again, under a new message id",
            "msg_demo_resent",
            json.dumps(paid["UCR1002"]["event"]).encode(),
            LOCAL_WEBHOOK_SECRET,
            200,
            "duplicate",
        ),
        (
            "Moment announces customer.created (not a payment)",
            "msg_demo_customer_created",
            json.dumps(not_a_payment).encode(),
            LOCAL_WEBHOOK_SECRET,
            200,
            "ignored",
        ),
        (
            "An authentic body that is not JSON",
            "msg_demo_garbled",
            b"<html>oops</html>",
            LOCAL_WEBHOOK_SECRET,
            200,
            "parked:invalid",
        ),
        (
            f"A forged {rand(1_000_000)} payment for Thandi, signed with another key",
            "msg_demo_forged",
            json.dumps(forged).encode(),
            FORGER_WEBHOOK_SECRET,
            401,
            None,
        ),
    ]
    for story, webhook_id, body, secret, expected_status, expected_outcome in deliveries:
        response = _send_signed(api, webhook_id, body, secret)
        answer = response.json()
        outcome = answer.get("status") if response.status_code == 200 else answer.get("title")
        mark = "as expected" if response.status_code == expected_status else "UNEXPECTED"
        step(f"   {story}: {response.status_code} {outcome} ({mark})")
        if response.status_code != expected_status:
            result.fail(f"{webhook_id}: answered {response.status_code}, expected {expected_status}")
        if expected_outcome is None:
            result.forged_ids.append(webhook_id)
        else:
            result.expected[webhook_id] = expected_outcome
    _wait(api, step, "the stream")


def _send_signed(api: httpx.Client, webhook_id: str, body: bytes, secret: str) -> httpx.Response:
    """Signed with the Standard Webhooks reference library, not with this project's code."""
    signed_at = datetime.fromtimestamp(time.time(), tz=UTC)
    signature = standardwebhooks.Webhook(secret).sign(webhook_id, signed_at, body.decode())
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(signed_at.timestamp())),
        "webhook-signature": signature,
    }
    return api.post("/webhooks/moment", content=body, headers=headers)


def _wait(api: httpx.Client, step: Say, what: str) -> None:
    started = time.monotonic()
    step(f"   ... waiting for {what}")
    response = api.post("/_local/wait", json={"timeout_seconds": 45})
    quiet = response.status_code == 200 and response.json()["quiet"]
    step(f"   ... {'done' if quiet else 'STILL BUSY'} after {time.monotonic() - started:.1f}s")


def _redrive(api: httpx.Client, step: Say) -> None:
    step("\n6. The re-drive (scheduled; here on demand, with no grace period: POST /_local/redrive)")
    response = api.post("/_local/redrive", json={"grace_seconds": 0})
    response.raise_for_status()
    report = response.json()["result"]
    outcomes = ", ".join(f"{name} {count}" for name, count in sorted(report["outcomes"].items()))
    step(f"   examined {report['examined']}: {outcomes or 'nothing'}")
    if report["outcomes"].get("parked:unmatched"):
        step(f"   (Moment does not know {UNKNOWN_CUSTOMER} either: it stays parked for an operator)")


def _bill_member(api: httpx.Client, moment: httpx.Client, step: Say, result: DemoResult) -> None:
    ref, name = BILL_MEMBER
    fee, fee_due, fee_date, fee_text = ANNUAL_FEE
    locker, locker_due, locker_date, locker_text = LOCKER
    step(f"\n7. A member on the bill model: {name} ({ref}), two bills (PUT /bills/{{ref}})")
    _ledger_call(api.put(f"/customers/{ref}", json={"currency": "ZAR", "name": name}))
    for bill, due, date, text in (
        (fee, fee_due, fee_date, fee_text),
        (locker, locker_due, locker_date, locker_text),
    ):
        body = {"customer": ref, "currency": "ZAR", "amount_due": due, "due_date": date, "description": text}
        _ledger_call(api.put(f"/bills/{bill}", json=body))
        step(f"   {bill}: {text}, {rand(due)} due {date}")
    _push(api, step, None)
    _show_bills(moment, step)
    step(f"   {name} pays {rand(100000)} of it at Moment (the webhook names the bill_id)")
    paid = _pay(moment, {"bill": fee, "amount": 100000})
    result.expected[paid["webhook_id"]] = "applied"
    _wait(api, step, "the webhook, reconciled to the bill")
    step(f"   She pays {rand(60000)} in cash at the front desk (POST /bills/{fee}/payments)")
    _ledger_call(
        api.post(
            f"/bills/{fee}/payments", json={"id": "CASH-3001-01", "amount": 60000, "description": "Cash"}
        )
    )
    step(f"   The locker is cancelled: the merchant voids {locker} (POST /bills/{locker}/void)")
    _ledger_call(api.post(f"/bills/{locker}/void"))
    _push(api, step, None)
    _show_bills(moment, step)
    step(f"   She pays the remaining {rand(80000)} at Moment")
    paid = _pay(moment, {"bill": fee, "amount": 80000})
    result.expected[paid["webhook_id"]] = "applied"
    _wait(api, step, "the webhook")
    _push(api, step, None)  # a Moment payment alone sends nothing: nothing pending
    _show_bills(moment, step)


def _ledger_call(response: httpx.Response) -> dict[str, Any]:
    if response.status_code not in (200, 201):
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
        )
    answer: dict[str, Any] = response.json()
    return answer


def _show_bills(moment: httpx.Client, step: Say) -> None:
    bills = moment.get("/_sandbox/state").json()["bills"]
    shown = [
        f"{b['external_reference']} {b['status']} {rand(b['amount_paid'])} of {rand(b['amount_due'])}"
        for b in bills
    ]
    step(f"   Moment's bills: {', '.join(shown) or 'none'}")


# --- checking and reporting -----------------------------------------------------------------------


def _check(stack: RunningStack, ledger: LedgerAccess, moment: httpx.Client, result: DemoResult) -> None:
    state = moment.get("/_sandbox/state").json()
    at_moment = {
        (kind, item["external_reference"]): item
        for kind in ("customer", "account")
        for item in state[f"{kind}s"]
    }
    holders = (
        [(h.kind, h.ref) for h in MEMBERS] + [("customer", FAMILY[0])] + [(h.kind, h.ref) for h in ACCOUNTS]
    )
    for kind, ref in holders:
        view = ledger.balance(kind, ref)
        theirs = at_moment.get((kind, ref))
        entries = view.get("entries", [])
        row = {
            "kind": kind,
            "ref": ref,
            "ledger": view.get("balance"),
            "moment": theirs.get("balance") if theirs else None,
            "entries": len(entries),
            "sync": view.get("sync", {}).get("state", "?"),
        }
        result.rows.append(row)
        if theirs is None:
            result.fail(f"{kind} {ref} was never created on Moment")
        elif row["ledger"] != row["moment"]:
            result.fail(f"{kind} {ref}: the ledger says {rand(row['ledger'])}, Moment {rand(row['moment'])}")
        if row["ledger"] is not None and row["ledger"] != sum(entry["amount"] for entry in entries):
            result.fail(f"{kind} {ref}: balance {row['ledger']} is not the sum of its entries")
        if row["ledger"] is not None and row["sync"] != "synced":
            result.fail(f"{kind} {ref}: still {row['sync']} after the last push")
    _check_events(stack, result)


def _check_bills(api: httpx.Client, moment: httpx.Client, result: DemoResult) -> None:
    at_moment = {item["external_reference"]: item for item in moment.get("/_sandbox/state").json()["bills"]}
    for ref, expected in ((ANNUAL_FEE[0], "paid"), (LOCKER[0], "voided")):
        view = _ledger_call(api.get(f"/bills/{ref}"))
        theirs = at_moment.get(ref)
        row = {
            "ref": ref,
            "due": view["amount_due"],
            "ledger": view["amount_paid"],
            "moment": theirs["amount_paid"] if theirs else None,
            "status": view["status"],
            "moment_status": theirs["status"] if theirs else None,
            "entries": len(view["entries"]),
            "sync": view["sync"]["state"],
        }
        result.bill_rows.append(row)
        if theirs is None:
            result.fail(f"bill {ref} was never created on Moment")
            continue
        if (row["ledger"], row["status"]) != (row["moment"], row["moment_status"]):
            result.fail(
                f"bill {ref}: the ledger says {row['status']} {rand(row['ledger'])}, "
                f"Moment {row['moment_status']} {rand(row['moment'])}"
            )
        if row["status"] != expected or row["sync"] != "synced":
            result.fail(f"bill {ref}: {row['status']} and {row['sync']}, expected {expected} and synced")
        if row["ledger"] != sum(entry["amount"] for entry in view["entries"]):
            result.fail(f"bill {ref}: amount_paid {row['ledger']} is not the sum of its payments")


def _check_events(stack: RunningStack, result: DemoResult) -> None:
    for item in stack.client("dynamodb").scan(TableName=stack.names["WebhookEventsTable"])["Items"]:
        status = item["status"]["S"] + (f":{item['reason']['S']}" if "reason" in item else "")
        result.statuses[item["webhook_id"]["S"]] = status
    for webhook_id, expected in result.expected.items():
        if result.statuses.get(webhook_id) != expected:
            result.fail(
                f"event {webhook_id}: {result.statuses.get(webhook_id, 'not stored')}, expected {expected}"
            )
    for webhook_id in set(result.statuses) - set(result.expected):
        result.fail(f"event {webhook_id} was stored but nobody sent it")
    for webhook_id in result.forged_ids:
        if webhook_id in result.statuses:
            result.fail(f"the forged webhook {webhook_id} was stored")


def _report(result: DemoResult, say: Say) -> None:
    say("\nWhere everything ended")
    say(f"   {'balance':<24} {'ledger':>12} {'Moment':>12} {'entries':>8}  sync")
    for row in result.rows:
        label = f"{row['kind']} {row['ref']}"
        ledger = rand(row["ledger"]) if row["ledger"] is not None else "(accounts)"
        say(
            f"   {label:<24} {ledger:>12} {rand(row['moment']):>12} {row['entries']:>8}  "
            f"{row['sync'] if row['ledger'] is not None else '-'}"
        )
    if result.bill_rows:
        say(f"   {'bill':<24} {'due':>12} {'paid':>12} {'Moment':>12} {'entries':>8}  status, sync")
    for row in result.bill_rows:
        say(
            f"   {row['ref']:<24} {rand(row['due']):>12} {rand(row['ledger']):>12} {rand(row['moment']):>12} "
            f"{row['entries']:>8}  {row['status']}, {row['sync']}"
        )
    counts = Counter(result.statuses.values())
    say("   events: " + ", ".join(f"{status} {count}" for status, count in sorted(counts.items())))
    say(f"   forged webhooks stored: {sum(1 for w in result.forged_ids if w in result.statuses)}")
    for problem in result.problems:
        say(f"   PROBLEM: {problem}")
    if result.ok:
        balances = sum(1 for row in result.rows if row["ledger"] is not None)
        say(
            f"   OK: the ledger and Moment agree on all {balances} balances and "
            f"{len(result.bill_rows)} bills, and all {len(result.statuses)} events ended as expected"
        )


# --- main -----------------------------------------------------------------------------------------


def modes(environ: Mapping[str, str]) -> list[bool]:
    """Whether Moment lowers balances itself: as SANDBOX_APPLIES_PAYMENTS says, else both ways."""
    if environ.get("SANDBOX_APPLIES_PAYMENTS", "").strip():
        return [LocalSettings.from_environment(environ).sandbox.applies_payments]
    return [True, False]


def demo_settings(applies_payments: bool, environ: Mapping[str, str] = os.environ) -> LocalSettings:
    """The stack the demo plays on: the environment's settings, free ports, nothing on a timer (the
    demo runs the pusher and the re-drive itself, in order), and Moment lowering balances or not."""
    base = LocalSettings.from_environment(environ)
    return replace(
        base,
        api_port=0,
        sandbox_port=0,
        aws_port=0,
        push_interval_seconds=None,
        redrive_interval_seconds=None,
        sandbox=replace(base.sandbox, applies_payments=applies_payments),
    )


def main() -> int:
    started = time.monotonic()
    environ = dict(os.environ)
    passed = True
    with function_output_to(FUNCTION_LOG) as terminal:

        def say(line: str) -> None:
            print(line, file=terminal, flush=True)

        def activity(line: str) -> None:
            if not line.startswith("ledger API"):  # the demo says what it asks of the ledger itself
                say(f"      . {line}")

        for number, applies in enumerate(modes(environ)):
            settings = demo_settings(applies, environ)
            verbose = number == 0
            with running_stack(settings, notify=activity if verbose else None) as stack:
                if verbose:
                    say("Moment Balance Sync: the whole flow on this machine (no AWS account, no Docker)")
                    say(f"   API: {stack.api_url}   Moment sandbox: {stack.sandbox_url}")
                    say(f"   AWS: moto on {stack.aws_endpoint}")
                    say(f"   Function logs and metrics: {FUNCTION_LOG.relative_to(ROOT)}")
                mode = "on" if applies else "off"
                lowers = "lowers" if applies else "does not lower"
                say(
                    f"\n== SANDBOX_APPLIES_PAYMENTS={mode}: Moment {lowers} a balance as it applies a payment"
                )
                if not verbose:
                    say("   The same month again, told briefly:")
                result = play(stack, say, verbose=verbose)
            passed &= result.ok
        say(f"\ndemo {'passed' if passed else 'FAILED'} in {time.monotonic() - started:.1f}s")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
