"""The invariants on bills (issue 13: the same guarantees as balances), checked on a World by
`checks.every_step` and `checks.at_quiescence`. The ledger-wide application guard (one application
id changes one balance or bill, once) is `checks.every_step`'s: a bill's Moment payment is a
`payment` entry like a balance's.
"""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from typing import Any

from moment_sync.ledger.bills import status_for
from moment_sync.ledger.sync import sync_state
from simulation.world import World, alarmed_metrics

# The named states a bill may be left in once quiet, each with the metric its alarm watches.
BILL_STATE_METRICS = {"blocked": "BillPushBlocked", "conflict": "BillConflict", "failing": "BillPushFailing"}


@cache
def _alarmed() -> frozenset[str]:
    return frozenset(alarmed_metrics())


def _bills(world: World) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]], dict[str, str]]:
    """The bill heads by reference, their entries, and the Moment bill ids the ledger linked (id -> ref)."""
    heads: dict[str, dict[str, Any]] = {}
    entries: dict[str, list[dict[str, Any]]] = defaultdict(list)
    links: dict[str, str] = {}
    for item in world.scan(world.ledger_table):
        if item["pk"].startswith("BILL#"):
            ref = item["pk"].removeprefix("BILL#")
            if item["sk"] == "HEAD":
                heads[ref] = item
            elif item["sk"].startswith("ENTRY#"):
                entries[ref].append(item)
        elif item["sk"] == "MOMENT" and "bill_pk" in item:
            links[item["pk"].removeprefix("MOMENT#")] = item["bill_pk"].removeprefix("BILL#")
    return heads, entries, links


def every_step(world: World) -> list[str]:
    """3 for bills (amount_paid = its entries, by kind; the status they make), the links (Moment's bill
    under that reference, on the owner's Moment object), and 4's "never an outside payment counted
    twice" (Moment's amount_paid is at most its own payments plus the outside payments the ledger took)."""
    heads, entries, links = _bills(world)
    problems = []
    for ref, head in heads.items():
        problems.extend(_bill_adds_up(ref, head, entries.get(ref, [])))
    owners = {pk: head.get("moment_id") for pk, head in _owner_heads(world).items()}
    at_moment = {str(bill["id"]): bill for bill in world.moment.bills()}
    for moment_id, ref in links.items():
        problems.extend(_link_agrees(ref, moment_id, heads.get(ref, {}), at_moment.get(moment_id), owners))
    return problems


def _owner_heads(world: World) -> dict[str, dict[str, Any]]:
    return {
        item["pk"]: item
        for item in world.scan(world.ledger_table)
        if item["sk"] == "HEAD" and not item["pk"].startswith("BILL#")
    }


def _owner_key(head: dict[str, Any]) -> str:
    return f"{str(head.get('owner_kind', '')).upper()}#{head.get('owner_ref')}"


def _bill_adds_up(ref: str, head: dict[str, Any], entries: list[dict[str, Any]]) -> list[str]:
    by_kind: dict[str, int] = defaultdict(int)
    for entry in entries:
        by_kind[str(entry["kind"])] += int(entry["amount"])
    problems = []
    paid = int(head.get("amount_paid", 0))
    if paid != sum(by_kind.values()):
        problems.append(f"invariant 3: bill {ref} amount_paid {paid} != its entries {dict(by_kind)}")
    for field, kind in (("amount_paid_moment", "payment"), ("outside_paid", "outside_payment")):
        if int(head.get(field, 0)) != by_kind.get(kind, 0):
            problems.append(f"invariant 3: bill {ref} {field} {head.get(field)} != its {kind} entries")
    status = status_for(int(head["amount_due"]), paid, voided=bool(head.get("void_requested_at")))
    if head.get("status") != status.value:
        problems.append(f"invariant 3: bill {ref} is {head.get('status')!r}; its entries make {status}")
    return problems


def _link_agrees(
    ref: str,
    moment_id: str,
    head: dict[str, Any],
    bill: dict[str, Any] | None,
    owners: dict[str, Any],
) -> list[str]:
    if bill is None or bill["external_reference"] != ref:
        return [f"invariant 2: bill {ref} is linked to {moment_id}, which Moment keeps as {bill}"]
    problems = []
    owner_id = owners.get(_owner_key(head))
    moment_owner = bill.get("account_id") or bill.get("customer_id")
    if owner_id and moment_owner != owner_id:
        problems.append(
            f"invariant 2: bill {ref} is on {moment_owner} at Moment, not on its owner's {owner_id}"
        )
    most = int(bill["moment_payments"]) + int(head.get("outside_paid", 0))
    if int(bill["amount_paid"]) > most:
        problems.append(
            f"invariant 4: Moment shows amount_paid {bill['amount_paid']} for bill {ref}, more than its "
            f"own payments {bill['moment_payments']} and the ledger's outside payments "
            f"{head.get('outside_paid')}: an outside payment counted twice (debt forgiven)"
        )
    return problems


def at_quiescence(world: World) -> list[str]:
    """4: every payment Moment took on a bill the ledger knows is an entry of it (or parked
    `bill_voided`: money for a voided bill, alarmed), every outside payment and void the merchant was
    told of is in the ledger; a synced bill is Moment's (amount_paid = the ledger's Moment payments +
    its outside payments, voided there if voided here). 6: a bill is synced or in a named, alarmed
    state whose metric was counted (blocked, conflict, failing)."""
    heads, entries, links = _bills(world)
    keys = {ref: {str(entry["entry_id"]) for entry in items} for ref, items in entries.items()}
    parked_voided = {
        str(event.get("application_id") or "")
        for event in world.scan(world.events_table)
        if event.get("status") == "parked" and event.get("reason") == "bill_voided"
    }
    problems = _moment_payments_reached(world, heads, links, keys, parked_voided)
    problems += _merchant_told(world, heads, keys)
    owners = _owner_heads(world)
    for ref, head in heads.items():
        owner = owners.get(_owner_key(head), {})
        problems.extend(_bill_settled(world, ref, head, owner, parked_voided, keys.get(ref, set())))
    return problems


def _moment_payments_reached(
    world: World,
    heads: dict[str, dict[str, Any]],
    links: dict[str, str],
    keys: dict[str, set[str]],
    parked_voided: set[str],
) -> list[str]:
    problems = []
    for payment in world.moment.bill_payments:
        ref = links.get(payment.moment_id)
        if ref is None:
            bill = world.moment.find("bill", payment.moment_id) or {}
            if bill.get("external_reference") in heads:
                problems.append(
                    f"invariant 4: payment {payment.application_id} on Moment's bill {payment.moment_id} "
                    f"never reached bill {bill.get('external_reference')}, which is never linked to it"
                )
        elif f"payment:{payment.application_id}" not in keys.get(ref, set()) and (
            payment.application_id not in parked_voided
        ):
            problems.append(
                f"invariant 4: payment {payment.application_id} ({payment.amount}) Moment took on bill "
                f"{ref} is not an entry of it: lost"
            )
    return problems


def _merchant_told(world: World, heads: dict[str, dict[str, Any]], keys: dict[str, set[str]]) -> list[str]:
    problems = []
    for payment_id, (ref, amount) in getattr(world, "outside_acknowledged", {}).items():
        if f"outside_payment:{payment_id}" not in keys.get(ref, set()):
            problems.append(
                f"invariant 4: outside payment {payment_id} ({amount}) on bill {ref} was acknowledged "
                "and is lost"
            )
    for ref in getattr(world, "voids_acknowledged", set()):
        if not heads.get(ref, {}).get("void_requested_at"):
            problems.append(f"invariant 4: the void of bill {ref} was acknowledged and is not in the ledger")
    return problems


def _bill_settled(
    world: World,
    ref: str,
    head: dict[str, Any],
    owner: dict[str, Any],
    parked_voided: set[str],
    entry_ids: set[str],
) -> list[str]:
    state = sync_state(head)
    if state == "synced":
        bill = world.moment.find("bill", str(head["moment_id"])) if head.get("moment_id") else None
        refused = sum(  # Moment's payments on the bill after the merchant voided it: parked, alarmed
            payment.amount
            for payment in world.moment.bill_payments
            if payment.moment_id == head.get("moment_id")
            and payment.application_id in parked_voided
            and f"payment:{payment.application_id}" not in entry_ids
        )
        return _synced_bill_agrees(ref, head, bill, refused)
    if state == "pending" and not head.get("moment_id") and owner and sync_state(owner) == "conflict":
        return []  # waits for its owner, whose conflict an operator is alarmed about
    metric = BILL_STATE_METRICS.get(state)
    if metric is not None and metric in _alarmed() and world.metrics.get(metric):
        return []
    detail = {
        name: head.get(name)
        for name in ("push_attempts", "last_push_error", "next_push_at", "push_intents", "push_blocked")
    }
    counted = f"; {metric} counted {world.metrics.get(metric, 0)}" if metric else ""
    return [f"invariant 6: bill {ref} is stuck {state!r} after the system went quiet{counted}: {detail}"]


def _synced_bill_agrees(
    ref: str, head: dict[str, Any], bill: dict[str, Any] | None, refused: int
) -> list[str]:
    voided = bool(head.get("void_requested_at"))
    if bill is None:
        if voided or not head.get("moment_id"):  # voided before Moment ever had it: never created
            return [] if voided else [f"invariant 6: bill {ref} is synced but Moment never had it"]
        return [f"invariant 4: bill {ref} is linked to {head.get('moment_id')}, which Moment lacks"]
    problems = []
    expected = int(head.get("amount_paid_moment", 0)) + int(head.get("outside_paid", 0)) + refused
    if int(bill["amount_paid"]) != expected:
        problems.append(
            f"invariant 4: Moment shows amount_paid {bill['amount_paid']} for bill {ref}, the ledger's "
            f"Moment payments and outside payments make {expected} (synced)"
        )
    if voided and bill["status"] != "voided":
        problems.append(f"invariant 4: bill {ref} is voided in the ledger, {bill['status']!r} at Moment")
    if (bill["amount_due"], bill["currency"]) != (int(head["amount_due"]), head["currency"]):
        problems.append(f"invariant 4: bill {ref} is {bill['amount_due']} {bill['currency']} at Moment")
    return problems
