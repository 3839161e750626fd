"""The invariants (docs/architecture.md, "Invariants"), checked on a World: some after every step, the
rest once the world is driven quiet (`quiesce`)."""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from typing import Any

from moment_sync.ledger.sync import sync_state
from moment_sync.redrive import found_by_redrive
from simulation import bill_checks
from simulation.world import World, alarmed_metrics

FINAL = {"applied", "duplicate", "ignored", "parked"}
# The metric that counts each named sync state (the alarm on it is checked against template.yaml).
STATE_METRICS = {"deferred": "DriftDetected", "failing": "BalanceFailing", "pending": "PushFailed"}


@cache
def _alarmed() -> frozenset[str]:
    return frozenset(alarmed_metrics())


def every_step(world: World) -> list[str]:
    """Invariants 2 and 3, and the links, after every step; 1, 4 (a PATCH over a seen payment), 6 (a
    failed push not counted) and 7 are recorded by the world as they happen."""
    problems = list(world.violations)
    ledger = world.scan(world.ledger_table)
    heads = {item["pk"]: item for item in ledger if item["sk"] == "HEAD"}
    sums: dict[str, int] = defaultdict(int)
    applications: dict[str, list[str]] = defaultdict(list)
    for item in ledger:
        if item["sk"].startswith("ENTRY#"):
            sums[item["pk"]] += int(item["amount"])
            if item.get("kind") == "payment":
                applications[str(item["entry_id"]).removeprefix("payment:")].append(item["pk"])
    for pk, head in heads.items():
        if "balance" in head and int(head["balance"]) != sums.get(pk, 0):
            problems.append(f"invariant 3: {pk} balance {head['balance']} != its entries {sums.get(pk, 0)}")
    for application_id, balances in applications.items():
        if len(balances) > 1:
            problems.append(
                f"invariant 2: application {application_id} changed {len(balances)} balances: {balances}"
            )
    problems.extend(_duplicates_that_differ(world))
    problems.extend(_events_found_by_the_redrive(world, ledger))
    problems.extend(_links_disagreeing_with_moment(world, ledger))
    problems.extend(bill_checks.every_step(world))
    return problems


def _events_found_by_the_redrive(world: World, ledger: list[dict[str, Any]]) -> list[str]:
    """5, at every step: an event not final is where the scheduled re-drive still looks: received after
    its shard's cursor, in the retry list (both in the `redrive` lease's state), or parked unmatched.
    The `Unfinished` index no longer shrinks, so being in it says nothing."""
    [state] = [item.get("state") or {} for item in ledger if item["pk"] == "LEASE#redrive"] or [{}]
    return [
        f"invariant 5: {event['webhook_id']} is {event.get('status')!r} where no re-drive will look "
        f"(received_at {event.get('received_at')}, cursors {state.get('cursors')}, "
        f"retry {state.get('retry')})"
        for event in world.scan(world.events_table)
        if (event.get("status") not in FINAL or event.get("parked_reason") == "unmatched")
        and not found_by_redrive(event, state)
    ]


def _duplicates_that_differ(world: World) -> list[str]:
    """An event marked `duplicate` must repeat the applied one exactly; another target, amount or
    currency under the same application id is not a duplicate and must not be dropped silently."""
    events = world.scan(world.events_table)
    applied = {
        event.get("application_id"): event
        for event in events
        if event.get("status") == "applied" and event.get("application_id")
    }
    problems = []
    for event in events:
        if event.get("status") != "duplicate":
            continue
        first = applied.get(event.get("application_id"))
        if first is None:
            continue
        # A bill payment's target is its bill id (the most specific id decides; parent ids are optional).
        targets = ("bill_id",) if first.get("bill_id") else ("customer_id", "account_id")
        differs = [
            name for name in ("amount", "currency", *targets) if str(first.get(name)) != str(event.get(name))
        ]
        if differs:
            problems.append(
                f"invariant 2: {event['webhook_id']} marked duplicate of {first['webhook_id']} "
                f"though its {', '.join(differs)} differ (dropped silently)"
            )
    return problems


def _links_disagreeing_with_moment(world: World, ledger: list[dict[str, Any]]) -> list[str]:
    """Every Moment id the ledger linked names the object Moment keeps under that reference (and, for
    an account, under the Moment customer linked to the account's customer)."""
    heads = {item["pk"]: item for item in ledger if item["sk"] == "HEAD"}
    problems = []
    for item in ledger:
        if item["sk"] != "MOMENT" or "bill_pk" in item:  # a bill's link: bill_checks.every_step
            continue
        moment_id = item["pk"].removeprefix("MOMENT#")
        kind = item["kind"]
        found = world.moment.find(kind, moment_id)
        if found is None:
            problems.append(
                f"invariant 2: {moment_id} is linked to {item['balance_pk']} but Moment has no such {kind}"
            )
            continue
        if found["external_reference"] != item["ref"]:
            problems.append(
                f"invariant 2: {kind} {item['ref']} is linked to {moment_id}, which Moment keeps for "
                f"{found['external_reference']!r}: its payments would change the wrong balance"
            )
        if kind == "account":
            account = heads.get(item["balance_pk"], {})
            owner = heads.get(f"CUSTOMER#{account.get('customer_ref')}", {})
            if owner.get("moment_id") and owner["moment_id"] != found["customer_id"]:
                problems.append(
                    f"invariant 2: account {item['ref']} is linked to {moment_id}, which Moment keeps under "
                    f"{found['customer_id']}, not under {owner['moment_id']} (its customer's Moment id)"
                )
    return problems


def at_quiescence(world: World) -> list[str]:
    """Invariants 4, 5 and 6 once everything was delivered, re-driven and pushed."""
    ledger = world.scan(world.ledger_table)
    heads = {item["pk"]: item for item in ledger if item["sk"] == "HEAD"}
    balances = {pk: head for pk, head in heads.items() if not pk.startswith("BILL#")}  # bills: bill_checks
    return (
        _events_final(world)
        + _moment_agrees(world, ledger, balances)
        + _nothing_stuck(world, balances)
        + bill_checks.at_quiescence(world)
    )


def _events_final(world: World) -> list[str]:
    """5: every event final; a parked one with a reason whose metric an alarm watches."""
    problems = []
    for event in world.scan(world.events_table):
        status = event.get("status")
        if status not in FINAL:
            problems.append(
                f"invariant 5: {event['webhook_id']} is still {status!r} after the system went quiet"
            )
            continue
        metric = f"EventParked_{event.get('reason')}"
        if status == "parked" and (not event.get("reason") or metric not in _alarmed()):
            problems.append(
                f"invariant 5: {event['webhook_id']} parked as {event.get('reason')!r}, no alarm on {metric}"
            )
    return problems


def _moment_agrees(world: World, ledger: list[dict[str, Any]], heads: dict[str, dict[str, Any]]) -> list[str]:
    """4: Moment shows the ledger's balances; every payment Moment applied, and every charge the
    merchant was told was taken, is an entry of its balance."""
    problems: list[str] = []
    links = {
        item["pk"].removeprefix("MOMENT#"): item["balance_pk"]
        for item in ledger
        if item["sk"] == "MOMENT" and "balance_pk" in item
    }
    # By entry id: an entry's sort key also holds its time (ENTRY#<created_at>#<entry id>).
    entries = {
        (item["pk"], f"ENTRY#{item['entry_id']}") for item in ledger if item["sk"].startswith("ENTRY#")
    }
    tracked = {pk for pk, head in heads.items() if "version" in head and sync_state(head) != "conflict"}
    for moment_id, balance_pk in links.items():
        head = heads.get(balance_pk, {})
        found = world.moment.find(str(head.get("kind")), moment_id)
        if balance_pk in tracked and found is not None and found.get("balance") != int(head["balance"]):
            problems.append(
                f"invariant 4: Moment shows {found.get('balance')} for {balance_pk} ({moment_id}), "
                f"the ledger {head['balance']} (sync state {sync_state(head)})"
            )
    for payment in world.moment.payments:
        balance_pk = links.get(payment.moment_id)
        if balance_pk is None:
            found = world.moment.find(payment.kind, payment.moment_id) or {}
            expected = f"{payment.kind.upper()}#{found.get('external_reference')}"
            if payment.kind == "account" and not _owned_by_ledger_customer(world, found, heads.get(expected)):
                continue  # another customer's account with our reference: never ours to apply
            if expected in tracked:
                problems.append(
                    f"invariant 4: payment {payment.application_id} to {payment.moment_id} never reached "
                    f"{expected}, which is never linked to it"
                )
        elif balance_pk in tracked and (balance_pk, f"ENTRY#payment:{payment.application_id}") not in entries:
            problems.append(
                f"invariant 4: payment {payment.application_id} ({payment.amount}) Moment applied to "
                f"{payment.moment_id} is not an entry of {balance_pk}: lost"
            )
    for charge_id, (path, amount) in world.charges_acknowledged.items():
        kind, ref = path.strip("/").split("/")
        if (f"{kind[:-1].upper()}#{ref}", f"ENTRY#charge:{charge_id}") not in entries:
            problems.append(
                f"invariant 4: charge {charge_id} ({amount}) on {path} was acknowledged and is lost"
            )
    return problems


def _nothing_stuck(world: World, heads: dict[str, dict[str, Any]]) -> list[str]:
    """6: nothing left pending, deferred or failing once quiet and healthy; a conflict only with its alarm."""
    problems = []
    for pk, head in heads.items():
        state = sync_state(head) if "version" in head else "synced"
        if state == "synced" or (state == "conflict" and any("Conflict" in name for name in _alarmed())):
            continue
        detail = {
            name: head.get(name)
            for name in ("push_attempts", "defer_count", "last_push_error", "next_push_at")
        }
        metric = STATE_METRICS.get(state)
        alarm = f"; {metric} counted {world.metrics.get(metric, 0)}" if metric else ""
        problems.append(f"invariant 6: {pk} is stuck {state!r} after the system went quiet{alarm}: {detail}")
    return problems


def _owned_by_ledger_customer(world: World, account: dict[str, Any], head: dict[str, Any] | None) -> bool:
    """Moment's account is held under the Moment customer whose reference is the ledger account's
    customer (Moment keeps references unique per customer, so another customer's A2 is not ours)."""
    owner = world.moment.find("customer", str(account.get("customer_id"))) or {}
    return head is not None and owner.get("external_reference") == head.get("customer_ref")


# What a push leaves on a balance it looked at: booked, backing off, deferred, held, failing...
PUSH_TRACE = (
    "pushed_at",
    "push_attempts",
    "next_push_at",
    "defer_count",
    "push_conflict",
    "adoption_held",
    "push_waiting",
    "push_shard",
)


def due_for_a_push(world: World, within: float = 30 * 86400) -> dict[str, dict[str, Any]]:
    """The heads a push run would take once every backoff is over (`push_when_due`), by key."""
    due = {balance.partition_key for _since, balance in world.ledger.pending_pushes(world.clock() + within)}
    return {
        item["pk"]: item
        for item in world.scan(world.ledger_table)
        if item["sk"] == "HEAD" and item["pk"] in due
    }


def pushes_left_no_trace(world: World, due: dict[str, dict[str, Any]], report: Any) -> list[str]:
    """6: every balance a push run took is booked, or backs off with its attempt counted, or shows a
    state an alarm watches; one left exactly as it was (still due, no attempt) failed silently (a
    fault only logged), and is pushed again and again with nothing counting it. Only the run's
    skipped and not-reached balances, and those whose failure the run lists as an error (counted),
    may be left as they were."""
    if not isinstance(report, dict):
        return []  # the run died: nothing of it was recorded, by design
    heads = {item["pk"]: item for item in world.scan(world.ledger_table) if item["sk"] == "HEAD"}
    untouched = sorted(
        pk
        for pk, before in due.items()
        if all(str(before.get(name)) == str(heads.get(pk, {}).get(name)) for name in PUSH_TRACE)
    )
    # A failure that could not even be recorded is in the run's errors and counted by PushFailed.
    results = report.get("results", {})
    allowed = (
        int(results.get("skipped", 0)) + int(report.get("not_reached", 0)) + len(report.get("errors", []))
    )
    if len(untouched) <= allowed:
        return []
    return [
        f"invariant 6: the push run left {', '.join(untouched)} as it was (due, no attempt, no backoff, "
        f"no state an alarm watches) though it reported {results}: silently stuck"
    ]
