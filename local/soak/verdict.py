"""What the tables and Moment hold once everything is quiet, against what was sent: invariants 1-5 of
docs/architecture.md, counted rather than asserted, so the soak can say how much went wrong, not only that
something did.

- lost: a valid webhook never stored (or never acknowledged), a payment with no entry, a charge the
  ledger API acknowledged with no entry;
- double-applied: a payment with more than one entry, or an entry for a payment no one made (a
  forged or stale webhook that got through), or an entry of a kind nobody asked for;
- balances agree: every balance is the sum of its entries, none is still waiting to be pushed, and
  Moment holds the ledger's balance for each; every bill's amount_paid is the sum of its payments,
  none is still waiting to be pushed, and Moment holds the same amount_paid and status (voided).
- payments announced: after deduplication by `event_id`, the bus carried exactly one `Payment
  Applied` per balance's payment entry, naming it, and none for anything else (a bill's payments
  included: docs/events.md#bills).
Every other broken rule (a forged webhook stored, an event left unfinished) is a problem too.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from soak.traffic import Sent

FINAL = {"applied", "duplicate", "ignored", "parked"}
MAX_LISTED = 10  # problems of one kind listed in full; the rest are counted


@dataclass
class Verdict:
    lost: int = 0
    double_applied: int = 0
    balances_agree: bool = True
    problems: list[str] = field(default_factory=list)
    payments_announced_once: bool = True

    @property
    def ok(self) -> bool:
        return (
            not self.problems
            and not self.lost
            and not self.double_applied
            and self.balances_agree
            and self.payments_announced_once
        )

    def problem(self, kind: str, details: list[str]) -> None:
        if details:
            shown = "; ".join(details[:MAX_LISTED])
            more = f" (and {len(details) - MAX_LISTED} more)" if len(details) > MAX_LISTED else ""
            self.problems.append(f"{kind}: {len(details)}: {shown}{more}")


# The detail-types that announce a Moment payment: on a balance, on a bill (docs/events.md).
ANNOUNCED_PAYMENTS = ("Payment Applied", "Bill Paid")


def judge(
    events: list[dict[str, Any]],
    ledger: list[dict[str, Any]],
    moment: dict[str, Any],
    sent: Sent,
    announced: list[dict[str, Any]] | None = None,
) -> Verdict:
    """`events` and `ledger`: every item of WebhookEvents and Ledger (plain Python values);
    `moment`: the sandbox's state; `announced`: the details of every `Payment Applied` the bus
    carried (None: not judged)."""
    verdict = Verdict()
    ledger = [_by_source(item) for item in ledger]
    if announced is not None:
        _announcements(verdict, ledger, announced)
    stored = {item["webhook_id"]: item for item in events}
    _webhooks(verdict, stored, sent)
    _payments(verdict, ledger, sent)
    _merchant_entries(verdict, ledger, sent)
    _balances(verdict, ledger, moment)
    _bills(verdict, ledger, moment, sent)
    _statuses(verdict, stored, sent)
    return verdict


def _by_source(item: dict[str, Any]) -> dict[str, Any]:
    """An entry keyed by time (`ENTRY#<created_at>#<entry id>`: docs/ledger.md#entries-keyed-by-time)
    as the checks below read it, `ENTRY#<entry id>`; its real sort key kept as `key_sk` (an event's
    id is `<pk>|<sk>`). `SOURCE#` guards are no entries: left as they are."""
    sort_key = str(item.get("sk", ""))
    if sort_key.startswith("ENTRY#") and "entry_id" in item and sort_key != f"ENTRY#{item['entry_id']}":
        return {**item, "sk": f"ENTRY#{item['entry_id']}", "key_sk": sort_key}
    return item


def _webhooks(verdict: Verdict, stored: dict[str, dict[str, Any]], sent: Sent) -> None:
    """1. Every valid webhook stored once, verbatim, and acknowledged; nothing forged or stale stored."""
    missing = sorted(set(sent.bodies) - set(stored))
    unacknowledged = sorted(set(sent.undelivered))
    verdict.lost += len(missing) + len(set(unacknowledged) - set(missing))
    verdict.problem("valid webhooks not stored", missing)
    verdict.problem("valid webhooks never acknowledged with 200", unacknowledged)
    altered = [
        webhook_id
        for webhook_id, body in sent.bodies.items()
        if webhook_id in stored and bytes(stored[webhook_id]["body"]) != body
    ]
    verdict.problem("webhooks stored with another body than Moment signed", sorted(altered))
    verdict.problem("forged or stale webhooks stored", sorted(sent.rejected_ids & set(stored)))
    unknown = sorted(set(stored) - set(sent.bodies))
    verdict.problem("webhooks stored that nobody sent validly", unknown)
    let_in = {status: count for status, count in sent.rejected_answers.items() if not 400 <= status < 500}
    if let_in:
        verdict.problems.append(f"forged or stale webhooks not refused with a 4xx: {let_in}")


def _payments(verdict: Verdict, ledger: list[dict[str, Any]], sent: Sent) -> None:
    """2. Each Moment application changed one balance, by its amount, once."""
    entries: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for item in ledger:
        if item["sk"].startswith("ENTRY#payment:"):
            entries[item["sk"].removeprefix("ENTRY#payment:")].append((item["pk"], int(item["amount"])))
    lost, twice, wrong = [], [], []
    for application_id, (kind, ref, amount) in sent.payments.items():
        found = entries.get(application_id, [])
        if not found:
            lost.append(application_id)
        elif len(found) > 1:
            twice.append(f"{application_id} {found}")
        elif found != [(f"{kind.upper()}#{ref}", amount if kind == "bill" else -amount)]:
            # A payment lowers a balance; it raises a bill's amount_paid.
            wrong.append(f"{application_id}: {found}, expected {kind} {ref} {amount} paid")
    never_made = sorted(set(entries) - set(sent.payments))
    verdict.lost += len(lost)
    verdict.double_applied += len(twice) + len(never_made)
    verdict.problem("payments never applied", lost)
    verdict.problem("payments applied more than once", twice)
    verdict.problem("payments applied to the wrong balance or amount", wrong)
    verdict.problem("entries for payments no one made", never_made)


def _merchant_entries(verdict: Verdict, ledger: list[dict[str, Any]], sent: Sent) -> None:
    """Charges: one entry per acknowledged charge id, of its amount; balance sets: at most one entry per
    acknowledged set; no other kind of entry."""
    charges: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    balance_sets: Counter[tuple[str, str]] = Counter()
    strange = []
    outside: dict[str, dict[str, int]] = defaultdict(dict)
    for item in ledger:
        if not item["sk"].startswith("ENTRY#") or item["sk"].startswith("ENTRY#payment:"):
            continue
        if item["sk"] == "ENTRY#void" and item["pk"].startswith("BILL#"):
            continue  # a bill's void (`Bill Voided`), no payment
        if item["sk"].startswith("ENTRY#outside_payment:") and item["pk"].startswith("BILL#"):
            outside[item["pk"].removeprefix("BILL#")][item["sk"].partition(":")[2]] = int(item["amount"])
            continue
        kind, _, ref = item["pk"].partition("#")
        key = (kind.lower(), ref)
        entry_kind, _, source = item["sk"].removeprefix("ENTRY#").partition(":")
        if entry_kind == "charge":
            charges[key][source] = int(item["amount"])
        elif entry_kind == "balance_set":
            balance_sets[key] += 1
        else:
            strange.append(f"{item['pk']} {item['sk']}")
    lost = [
        f"{kind} {ref} {charge_id}"
        for (kind, ref), sent_charges in sent.charges.items()
        for charge_id, amount in sent_charges.items()
        if charges.get((kind, ref), {}).get(charge_id) != amount
    ]
    unasked = [
        f"{kind} {ref} {charge_id}"
        for (kind, ref), found in charges.items()
        for charge_id in found
        if charge_id not in sent.charges.get((kind, ref), {})
    ]
    too_many_sets = [
        f"{kind} {ref}: {count} entries, {sent.balance_sets[(kind, ref)]} sets"
        for (kind, ref), count in balance_sets.items()
        if count > sent.balance_sets[(kind, ref)]
    ]
    cash_lost = [
        f"{ref} {payment_id}"
        for ref, payments in sent.outside_payments.items()
        for payment_id, amount in payments.items()
        if outside.get(ref, {}).get(payment_id) != amount
    ]
    cash_unasked = [
        f"{ref} {payment_id}"
        for ref, found in outside.items()
        for payment_id in found
        if payment_id not in sent.outside_payments.get(ref, {})
    ]
    verdict.lost += len(lost) + len(cash_lost)
    verdict.double_applied += len(unasked) + len(too_many_sets) + len(strange) + len(cash_unasked)
    verdict.problem("acknowledged outside bill payments missing or of another amount", cash_lost)
    verdict.problem("outside bill payments nobody acknowledged", cash_unasked)
    verdict.problem("acknowledged charges missing or of another amount", lost)
    verdict.problem("charge entries nobody acknowledged", unasked)
    verdict.problem("more balance-set entries than sets", too_many_sets)
    verdict.problem("entries of a kind nobody asked for", strange)
    verdict.problem("merchant requests that failed", list(sent.merchant_failures))


def _balances(verdict: Verdict, ledger: list[dict[str, Any]], moment: dict[str, Any]) -> None:
    """3. balance = the sum of its entries; 4. once quiet, nothing pending and Moment holds the ledger's
    balance."""
    sums: Counter[str] = Counter()
    for item in ledger:
        if item["sk"].startswith("ENTRY#"):
            sums[item["pk"]] += int(item["amount"])
    at_moment = {
        (kind, item["external_reference"]): item["balance"]
        for kind in ("customer", "account")
        for item in moment[f"{kind}s"]
    }
    off_sum, pending, disagree = [], [], []
    for head in (item for item in ledger if item["sk"] == "HEAD" and "balance" in item):
        pk, balance = head["pk"], int(head["balance"])
        if balance != sums[head["pk"]]:
            off_sum.append(f"{pk}: {balance}, entries sum to {sums[pk]}")
        if "push_shard" in head:
            pending.append(pk)
        if at_moment.get((head["kind"], head["ref"])) != balance:
            disagree.append(f"{pk}: ledger {balance}, Moment {at_moment.get((head['kind'], head['ref']))}")
    verdict.balances_agree = not (off_sum or pending or disagree)
    verdict.problem("balances that are not the sum of their entries", off_sum)
    verdict.problem("balances still waiting to be pushed", pending)
    verdict.problem("balances Moment holds differently", disagree)


def _bills(verdict: Verdict, ledger: list[dict[str, Any]], moment: dict[str, Any], sent: Sent) -> None:
    """amount_paid = the sum of the bill's payments; once quiet, nothing pending, and Moment holds the
    same amount_paid (its own payments once, each outside payment once) and the same voided status."""
    sums: Counter[str] = Counter()
    for item in ledger:
        if item["pk"].startswith("BILL#") and item["sk"].startswith("ENTRY#") and item["sk"] != "ENTRY#void":
            sums[item["pk"]] += int(item["amount"])
    at_moment = {item["external_reference"]: item for item in moment.get("bills", [])}
    off_sum, pending, disagree = [], [], []
    for head in (item for item in ledger if item["sk"] == "HEAD" and item["pk"].startswith("BILL#")):
        pk, paid = head["pk"], int(head.get("amount_paid", 0))
        if paid != sums[pk]:
            off_sum.append(f"{pk}: amount_paid {paid}, payments sum to {sums[pk]}")
        if "push_shard" in head:
            pending.append(f"{pk} ({head.get('last_push_error') or head.get('push_blocked') or 'pending'})")
        theirs = at_moment.get(str(head["ref"]))
        ours = (paid, head.get("status") == "voided")
        shown = (int(theirs["amount_paid"]), theirs["status"] == "voided") if theirs else None
        if theirs is None and ours[1] and not head.get("moment_id"):
            continue  # voided before Moment ever had it: never created there, by design
        if shown != ours:
            disagree.append(f"{pk}: ledger paid {ours[0]} voided {ours[1]}, Moment {shown}")
    voided = {str(head["ref"]) for head in ledger if head["sk"] == "HEAD" and head.get("status") == "voided"}
    verdict.problem("voids acknowledged and not in the ledger", sorted(sent.voided_bills - voided))
    verdict.balances_agree = verdict.balances_agree and not (off_sum or pending or disagree)
    verdict.problem("bills whose amount_paid is not the sum of their payments", off_sum)
    verdict.problem("bills still waiting to be pushed", pending)
    verdict.problem("bills Moment holds differently", disagree)


def _statuses(verdict: Verdict, stored: dict[str, dict[str, Any]], sent: Sent) -> None:
    """5. Every event final: one webhook of each application applied, the others duplicates,
    strangers parked unmatched, other types ignored."""
    unfinished = [
        f"{webhook_id} {item.get('status')}"
        for webhook_id, item in stored.items()
        if item.get("status") not in FINAL
    ]
    verdict.problem("events not final", sorted(unfinished))
    wrong = []
    for application_id, webhook_ids in sent.messages_of.items():
        found = [stored[webhook_id] for webhook_id in webhook_ids if webhook_id in stored]
        if application_id in sent.strangers:
            if {(item.get("status"), item.get("reason")) for item in found} != {("parked", "unmatched")}:
                wrong.append(f"{application_id} (nobody's): {[item.get('status') for item in found]}")
            continue
        statuses = sorted(str(item.get("status")) for item in found)
        if statuses != ["applied"] + ["duplicate"] * (len(found) - 1):
            wrong.append(f"{application_id}: {statuses}")
    wrong += [
        f"{webhook_id}: {stored[webhook_id].get('status')}"
        for webhook_id in sent.ignored
        if webhook_id in stored and stored[webhook_id].get("status") != "ignored"
    ]
    verdict.problem("events whose status is not what their webhooks call for", wrong)


def _announcements(verdict: Verdict, ledger: list[dict[str, Any]], announced: list[dict[str, Any]]) -> None:
    """Every applied payment announced exactly once after deduplication by `event_id` (EventBridge
    delivers at least once; a consumer keeps the first of each id), and each announcement names it: a
    balance's as `Payment Applied`, a Moment payment on a bill (`BILL#…`) as `Bill Paid`
    (docs/events.md#bills). A detail without `detail_type` is a `Payment Applied`."""
    entries = {
        f"{item['pk']}|{item.get('key_sk', item['sk'])}": item
        for item in ledger
        if str(item["sk"]).startswith("ENTRY#payment:")
    }
    kept: dict[str, dict[str, Any]] = {}
    for detail in announced:
        if detail.get("detail_type") == "Bill Paid" and detail.get("entry_kind") != "payment":
            continue  # cash taken outside Moment: not a Moment payment (checked by its entry)
        kept.setdefault(detail["event_id"], detail)
    never = sorted(set(entries) - set(kept))
    unknown = sorted(set(kept) - set(entries))
    wrong = [
        event_id
        for event_id, detail in kept.items()
        if event_id in entries
        and (detail.get("detail_type", "Payment Applied"), detail["application_id"], detail["amount"])
        != (
            "Bill Paid" if str(entries[event_id]["pk"]).startswith("BILL#") else "Payment Applied",
            str(entries[event_id]["sk"]).removeprefix("ENTRY#payment:"),
            str(entries[event_id]["amount"]),
        )
    ]
    verdict.payments_announced_once = not (never or unknown or wrong)
    verdict.problem("applied payments never announced", never)
    verdict.problem("payments announced that the ledger never applied", unknown)
    verdict.problem("payments announced as another application or amount", wrong)
